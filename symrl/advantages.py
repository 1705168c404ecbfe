"""Generalized advantage estimation and minibatch advantage normalization.

Gymnasium semantics: an episode that *terminates* has no future value; one that is *truncated*
(time limit) does, so its last step bootstraps from V(final observation).
"""

from __future__ import annotations

import torch
from torch import Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    episode_end: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Advantages and returns over time-major tensors of shape (T, ...).

    ``next_values[t]`` is V(s_{t+1}) of the *same* episode: V(next observation) normally, V(final
    observation) when step t was truncated. ``terminated[t]`` zeroes it (no future after a true end);
    ``episode_end[t]`` (terminated or truncated) stops the advantage recursion at the boundary.
    """
    not_terminated = 1.0 - terminated.to(values.dtype)
    carries = gamma * lam * (1.0 - episode_end.to(values.dtype))
    deltas = rewards + gamma * next_values * not_terminated - values
    advantages = torch.empty_like(values)
    running = torch.zeros_like(values[0])
    for t in range(values.shape[0] - 1, -1, -1):
        running = deltas[t] + carries[t] * running
        advantages[t] = running
    return advantages, advantages + values


def next_values_from_rollout(values: Tensor, last_values: Tensor, bootstrap: Tensor,
                             truncated: Tensor) -> Tensor:
    """V(s_{t+1}) for each step: the next step's value, V(s_T) at the end, V(final obs) on truncation."""
    following = torch.cat([values[1:], last_values.unsqueeze(0)], dim=0)
    return torch.where(truncated.bool(), bootstrap, following)


def token_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE over generated tokens, batch-major (B, T): each sequence is one episode that terminates
    at its last valid token (``mask`` is a prefix of ones). Padding gets zero advantage and return."""
    valid = mask.bool()
    values = values * valid
    next_valid = torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], dim=1)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    ended = (~next_valid).T
    advantages, returns = gae(rewards.T * valid.T, values.T, next_values.T, ended, ended, gamma, lam)
    return advantages.T * valid, returns.T * valid


def normalize(advantages: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """``(Â − mean) / (std + eps)`` over one minibatch, as SB3/CleanRL (unbiased std); with a token
    ``mask`` the statistics come from the valid tokens only and padding stays 0."""
    if mask is None:
        std, mean = torch.std_mean(advantages)
        return (advantages - mean) / (std + eps)
    valid = mask.bool()
    if valid.sum() < 2:  # no spread to normalize by
        return advantages * valid
    std, mean = torch.std_mean(advantages[valid])
    return torch.where(valid, (advantages - mean) / (std + eps), torch.zeros_like(advantages))


def sign_change_share(before: Tensor, after: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of elements (valid tokens, with a ``mask``) whose advantage sign changed under
    normalization (a 0-d tensor).

    The paper's argument: per-minibatch normalization flips the sign of some advantages, and the
    reverse term is meant to make PPO robust to that.
    """
    changed = torch.sign(before) != torch.sign(after)
    return changed.to(before.dtype).mean() if mask is None else changed[mask.bool()].to(before.dtype).mean()


def group_advantages(scores: Tensor, group_size: int, kind: str, eps: float = 1e-4) -> Tensor:
    """Critic-free advantages of sequence scores laid out as consecutive groups of ``group_size``
    completions of one prompt. ``grpo``: (r − group mean) / (group std + eps), the unbiased std as
    TRL's GRPO; ``drgrpo``: r − group mean (Dr. GRPO drops the std); ``rloo``: r minus the mean of
    the group's other completions (REINFORCE leave-one-out)."""
    groups = scores.reshape(-1, group_size)
    mean = groups.mean(1, keepdim=True)
    if kind == "grpo":
        out = (groups - mean) / (groups.std(1, keepdim=True) + eps)
    elif kind == "drgrpo":
        out = groups - mean
    elif kind == "rloo":
        out = (groups - mean) * group_size / (group_size - 1)  # r − (Σ − r)/(G − 1)
    else:
        raise ValueError(f"advantage: got {kind!r}, allowed: grpo, rloo, drgrpo")
    return out.reshape(scores.shape)
