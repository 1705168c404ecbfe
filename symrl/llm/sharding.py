"""The optimizer's whole state, keyed by parameter names, whatever holds the weights.

A checkpoint holds the whole state so that a run resumes on any number of processes, sharded or
not: under FSDP each process holds only its shard, and torch's distributed state-dict functions
gather it onto the first process (every process calls them) and cut each process's shard out of
it when loading. Names rather than positions as keys: the same file loads into one process, DDP
or FSDP.
"""

from __future__ import annotations

import torch
from torch import nn


def whole_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_whole_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    from torch.distributed.fsdp import FSDPModule

    # full_state_dict: each FSDP process cuts its shard out of the whole state
    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=isinstance(model, FSDPModule)))
