"""Clean evaluation: separate environments, no training noise, frozen normalization, raw returns."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from symrl.distributions import HeadSpec
from symrl.envs.normalize import ObsNormalizer
from symrl.nets import ActorCritic


def evaluate(model: ActorCritic, spec: HeadSpec, envs: list[gym.Env], seeds: list[int],
             obs_normalizer: ObsNormalizer, deterministic: bool, gen: torch.Generator,
             discretized: bool) -> np.ndarray:
    """One full episode in each of ``envs`` (reset with ``seeds``), stepped together; returns the
    undiscounted raw episode returns. Running one episode per env keeps short episodes from being
    over-represented. The observation normalizer is only read, never updated."""
    policy = model.inference_snapshot()
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds)])
    returns = np.zeros(len(envs))
    active = np.ones(len(envs), dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        out, _ = policy(obs_normalizer.normalize(obs[idx]))
        noise = None if deterministic else spec.draw_noise((len(idx),), gen)
        actions = spec.to_env(spec.act(out, noise, policy.std), discretized)
        for j, i in enumerate(idx):
            o, r, terminated, truncated, _ = envs[i].step(actions[j])
            returns[i] += float(r)
            obs[i] = o
            if terminated or truncated:
                active[i] = False
    return returns


def return_stats(returns: np.ndarray) -> dict[str, float | int]:
    """The numbers an evaluation row reports about its episodes' raw returns."""
    return {"mean_return": float(returns.mean()), "std_return": float(returns.std()),
            "min_return": float(returns.min()), "max_return": float(returns.max()), "episodes": len(returns)}
