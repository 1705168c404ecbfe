"""Clean evaluation: separate environments, no training noise, frozen normalization, raw returns."""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from symrl.distributions import HeadSpec
from symrl.envs.normalize import ObsNormalizer


def evaluate(model: torch.nn.Module, spec: HeadSpec, envs: list[gym.Env], seeds: list[int],
             obs_normalizer: ObsNormalizer, deterministic: bool, gen: torch.Generator,
             discretized: bool, device: torch.device) -> np.ndarray:
    """One full episode in each of ``envs`` (reset with ``seeds``), stepped together; returns the
    undiscounted raw episode returns. Running one episode per env keeps short episodes from being
    over-represented."""
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds)])
    returns = np.zeros(len(envs))
    active = np.ones(len(envs), dtype=bool)
    act = _policy(model, spec, obs_normalizer, deterministic, gen, discretized, device)
    while active.any():
        idx = np.flatnonzero(active)
        actions = act(obs[idx])
        for j, i in enumerate(idx):
            o, r, terminated, truncated, _ = envs[i].step(actions[j])
            returns[i] += float(r)
            obs[i] = o
            if terminated or truncated:
                active[i] = False
    return returns


def _policy(model, spec, obs_normalizer, deterministic, gen, discretized, device) -> Callable:
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.as_tensor(obs_normalizer.normalize(obs), device=device)
            dist = model.distribution(x)
            actions = dist.mode() if deterministic else dist.sample(gen)
        return spec.to_env(actions.cpu().numpy(), discretized)
    return act
