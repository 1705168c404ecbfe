"""Misbehaving tiny environments for tests. ``tests.crashing_env:Crashy-v0`` raises a few steps in,
so that tests/test_sweep.py has a run that crashes; ``CRASHY_KILL=1``: the process kills itself
instead, as the out-of-memory killer would; ``CRASHY_FIXED=1``: it behaves, as a bug fixed between
two sweeps. ``tests.crashing_env:NanReward-v0`` pays NaN rewards after ``NAN_AFTER`` steps of an env
instance (across episodes), so that tests/test_train.py sees a run diverge after good checkpoints."""

from __future__ import annotations

import os
import signal

import gymnasium as gym
import numpy as np

CRASH_AFTER = 5
NAN_AFTER = 70


class TinyEnv(gym.Env):
    """Two observations, two actions, 20-step episodes."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    total = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        return np.zeros(2, np.float32), self.reward(), False, self.t >= 20, {}

    def reward(self) -> float:
        return 1.0


class NanRewardEnv(TinyEnv):
    def reward(self) -> float:
        return float("nan") if self.total > NAN_AFTER else 1.0


class CrashyEnv(TinyEnv):
    def reward(self) -> float:
        if self.t > CRASH_AFTER and os.environ.get("CRASHY_KILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.t > CRASH_AFTER and not os.environ.get("CRASHY_FIXED"):
            raise RuntimeError(f"Crashy-v0 crashed on purpose after {CRASH_AFTER} steps")
        return 1.0


gym.register("Crashy-v0", entry_point=CrashyEnv)
gym.register("NanReward-v0", entry_point=NanRewardEnv)
