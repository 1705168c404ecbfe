"""Every random draw of a run comes from a named stream of its seed.

A stream is numpy's ``SeedSequence([seed, stream, *index])``: streams never overlap, and a draw
indexed by what it is for (the n-th reset, the i-th iteration on process p) is the same in a run
resumed from a checkpoint as in an uninterrupted one. Both trainers use it.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = (
    "env_reset",  # symrl train: the training envs' resets, by reset index
    "init",  # the network's (value head's) initialization
    "actions",  # symrl train: action sampling
    "noise",  # symrl train: training-data noise
    "minibatches",  # symrl train: minibatch order
    "eval_actions",  # symrl train: evaluation's action sampling, by evaluation index
    "eval_episodes",  # symrl train: evaluation episodes' resets, by evaluation index
    "iteration",  # symrl rlhf: sampling and minibatch order, by (iteration, process)
    "evaluation",  # symrl rlhf: held-out sampling, by (iteration, process)
)


def seeds(seed: int, stream: str, *index: int, n: int = 1) -> list[int]:
    """``n`` independent 32-bit seeds of (run seed, ``stream``, ``index``)."""
    entropy = [seed, STREAMS.index(stream), *index]
    return [int(s) for s in np.random.SeedSequence(entropy).generate_state(n)]


def generator(seed: int, stream: str, *index: int) -> torch.Generator:
    """A torch generator seeded from the stream (index 0 when none is given)."""
    return torch.Generator().manual_seed(seeds(seed, stream, *(index or (0,)))[0])
