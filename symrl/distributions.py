"""Action heads with one interface: log_prob, entropy, prob (of the taken action), mode.

Written on raw tensor ops instead of ``torch.distributions`` to keep the per-minibatch op count
(and so CPU overhead) low.

Acting (``HeadSpec.act``) is separate and runs on NumPy arrays: the randomness of a whole rollout
is drawn ahead from one seeded ``torch.Generator`` (``HeadSpec.draw_noise``), then each step turns
the actor's output and its slice of noise into actions — Gumbel-max for categorical heads (an
exact sampler: argmax(logits + Gumbel) ~ softmax(logits)), mean + std·ε for the Gaussian. Zero
noise gives the mode. The log-probabilities of the taken actions are computed afterwards for the
whole rollout at once, with the same ``log_prob`` the loss uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

# Padding logit for MultiDiscrete spaces with unequal sizes: exp() underflows to exactly 0 while
# 0·log p stays finite (−inf would make the entropy NaN).
_PAD_LOGIT = -1e9


class Categorical:
    """One discrete choice per sample; logits of shape (B, K)."""

    def __init__(self, logits: Tensor):
        self.log_probs = torch.log_softmax(logits, dim=-1)

    def log_prob(self, actions: Tensor) -> Tensor:
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)



class MultiCategorical:
    """D independent discrete choices per sample; logits (B, D, K). π(a|s) is the joint Π_i π_i(a_i|s)."""

    def __init__(self, logits: Tensor):
        self.log_probs = torch.log_softmax(logits, dim=-1)

    def log_prob(self, actions: Tensor) -> Tensor:
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum((-2, -1))



class DiagGaussian:
    """Gaussian with a state-independent log std (the usual PPO baseline for continuous control).

    ``exp(log_prob)`` is a density, not a probability: the reverse term is undefined for it, which is
    why the configuration refuses β > 0 without ``discretize``.
    """

    def __init__(self, mean: Tensor, log_std: Tensor):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)

    def log_prob(self, actions: Tensor) -> Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> Tensor:
        return (self.log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)



ActionDist = Categorical | MultiCategorical | DiagGaussian


@dataclass(frozen=True)
class HeadSpec:
    """What an action space needs from the actor network, and how stored actions reach the env."""

    kind: str  # "categorical" | "multicategorical" | "gaussian"
    n_outputs: int  # width of the actor's last layer
    action_shape: tuple[int, ...]  # per-sample shape of a stored action
    action_dtype: torch.dtype
    nvec: tuple[int, ...] = ()  # choices per dimension (multicategorical)
    low: np.ndarray | None = None  # Box bounds (gaussian, or the bins of a discretized Box)
    high: np.ndarray | None = None
    start: np.ndarray | int = 0  # first action value of a Discrete/MultiDiscrete space
    env_shape: tuple[int, ...] = ()  # the Box's own action shape (heads work on it flattened)
    padding: np.ndarray | None = None  # (D, K) true where a MultiDiscrete dimension has fewer choices

    @staticmethod
    def padding_for(nvec: tuple[int, ...]) -> np.ndarray | None:
        """Built once per head, not per call: MultiDiscrete spaces with unequal sizes pad to max(nvec)."""
        if len(set(nvec)) == 1:
            return None
        return np.arange(max(nvec))[None, :] >= np.asarray(nvec)[:, None]

    @property
    def discrete(self) -> bool:
        return self.kind != "gaussian"

    def distribution(self, out: Tensor, log_std: Tensor | None = None) -> ActionDist:
        """The action distribution from the actor's raw output (B, n_outputs)."""
        if self.kind == "categorical":
            return Categorical(out)
        if self.kind == "multicategorical":
            k = max(self.nvec)
            logits = out.reshape(out.shape[0], len(self.nvec), k)
            if self.padding is not None:
                logits = logits.masked_fill(torch.from_numpy(self.padding).to(out.device), _PAD_LOGIT)
            return MultiCategorical(logits)
        return DiagGaussian(out, log_std)

    def draw_noise(self, shape: tuple[int, ...], gen: torch.Generator) -> np.ndarray:
        """The randomness for ``shape`` (e.g. (n_steps, n_envs)) actions, as float32 NumPy."""
        if self.kind == "gaussian":
            return torch.randn(shape + (self.n_outputs,), generator=gen).numpy()
        uniform = torch.rand(shape + (self.n_outputs,), generator=gen).clamp_min_(1e-20)
        return (-torch.log(-torch.log(uniform))).numpy()  # standard Gumbel

    def act(self, out: np.ndarray, noise: np.ndarray | None, std: np.ndarray | None = None) -> np.ndarray:
        """Actions (B, *action_shape) from the actor output (B, n_outputs); ``noise=None`` → the mode."""
        if self.kind == "gaussian":
            return out if noise is None else out + std * noise
        logits = out if noise is None else out + noise
        if self.kind == "categorical":
            return logits.argmax(-1)
        logits = logits.reshape(out.shape[0], len(self.nvec), max(self.nvec))
        if self.padding is not None:
            logits = np.where(self.padding, _PAD_LOGIT, logits)
        return logits.argmax(-1)

    def to_env(self, actions: np.ndarray, discretized: bool) -> np.ndarray:
        """Stored actions → what ``env.step`` takes: bin centres for a discretized Box, clipped
        values for a Gaussian (the unclipped sample stays in the buffer, as in SB3)."""
        if self.kind == "gaussian":
            values = np.clip(actions, self.low, self.high)
        elif discretized:
            k = np.asarray(self.nvec, dtype=np.float64)
            values = (self.low + actions * (self.high - self.low) / (k - 1)).astype(np.float32)
        else:
            return actions + self.start
        return values.reshape(values.shape[:1] + self.env_shape)


def head_spec(space: spaces.Space, discretize: int = 0) -> HeadSpec:
    """The action head for a Gymnasium space; ``discretize=K`` turns each Box dimension into K
    evenly spaced bins (the paper's DPPO/DSPPO use K = 11)."""
    if isinstance(space, spaces.Discrete):
        if discretize:
            raise ValueError("discretize: only applies to continuous (Box) action spaces; use 0")
        return HeadSpec("categorical", int(space.n), (), torch.long, start=int(space.start))
    if isinstance(space, spaces.MultiDiscrete):
        if discretize:
            raise ValueError("discretize: only applies to continuous (Box) action spaces; use 0")
        nvec = tuple(int(n) for n in np.asarray(space.nvec).ravel())
        return HeadSpec("multicategorical", len(nvec) * max(nvec), (len(nvec),), torch.long, nvec,
                        start=np.asarray(space.start).ravel(), padding=HeadSpec.padding_for(nvec))
    if isinstance(space, spaces.Box):
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError("env: the action space has infinite bounds; symrl needs a bounded Box")
        low = space.low.astype(np.float64).ravel()
        high = space.high.astype(np.float64).ravel()
        dims = low.size
        if discretize:
            nvec = (int(discretize),) * dims
            return HeadSpec("multicategorical", dims * discretize, (dims,), torch.long, nvec, low, high,
                            env_shape=space.shape)
        return HeadSpec("gaussian", dims, (dims,), torch.float32, (), low, high, env_shape=space.shape)
    raise ValueError(f"env: action space {type(space).__name__} is not supported; "
                     "allowed: Discrete, MultiDiscrete, Box")
