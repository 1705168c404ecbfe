"""Running observation and reward normalization whose state is saved with checkpoints.

Same statistics as SB3's VecNormalize: observations standardized by a running mean/variance and
clipped; rewards divided by the running std of the discounted return. Evaluation uses the
statistics frozen (``normalize`` never updates them).
"""

from __future__ import annotations

import numpy as np


class RunningMeanStd:
    """Parallel (Chan et al.) running mean and variance over batches, in float64."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        # sum/square instead of mean/var: numpy's generic reductions cost ~20 µs each on the tiny
        # per-step batches this sees
        n = batch.shape[0]
        batch_mean = batch.sum(axis=0) / n
        batch_var = np.square(batch - batch_mean).sum(axis=0) / n
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = np.asarray(state["mean"]), np.asarray(state["var"]), float(state["count"])


class ObsNormalizer:
    """``clip((obs − mean)/sqrt(var + eps), ±clip)``; an identity (cast to float32) when disabled."""

    def __init__(self, shape: tuple[int, ...], enabled: bool, clip: float = 10.0, eps: float = 1e-8):
        self.enabled, self.clip, self.eps = enabled, clip, eps
        self.rms = RunningMeanStd(shape)

    def update(self, obs: np.ndarray) -> None:
        if self.enabled:
            self.rms.update(obs)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        if not self.enabled:  # images stay uint8 (the CNN scales them); vectors become float32
            return obs if obs.dtype == np.uint8 else obs.astype(np.float32, copy=False)
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.eps)
        return np.clip(out, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        return self.rms.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state)


class RewardNormalizer:
    """Scales rewards by the running std of each env's discounted return (SB3 VecNormalize)."""

    def __init__(self, n_envs: int, gamma: float, enabled: bool, clip: float = 10.0, eps: float = 1e-8):
        self.enabled, self.gamma, self.clip, self.eps = enabled, gamma, clip, eps
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(n_envs, np.float64)

    def __call__(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """Normalized rewards for one vector step; updates the statistics (training only)."""
        if not self.enabled:
            return rewards.astype(np.float32, copy=False)
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns)
        self.returns[episode_end] = 0.0
        out = np.clip(rewards / np.sqrt(self.rms.var + self.eps), -self.clip, self.clip)
        return out.astype(np.float32)

    def reset(self) -> None:
        self.returns[:] = 0.0

    def state_dict(self) -> dict:
        """The statistics and each env's running discounted return (episodes go on across checkpoints)."""
        return {**self.rms.state_dict(), "returns": self.returns.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state)
        if "returns" in state:  # checkpoints from before episodes ran on across them have none
            self.returns = np.asarray(state["returns"]).copy()
