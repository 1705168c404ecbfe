"""``tests.crashing_env:Crashy-v0``: a tiny environment that raises a few steps in, so that
tests/test_sweep.py has a run that crashes. ``CRASHY_KILL=1``: the process kills itself instead, as
the out-of-memory killer would; ``CRASHY_FIXED=1``: it behaves, as a bug fixed between two sweeps."""

from __future__ import annotations

import os
import signal

import gymnasium as gym
import numpy as np

CRASH_AFTER = 5


class CrashyEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t > CRASH_AFTER and os.environ.get("CRASHY_KILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.t > CRASH_AFTER and not os.environ.get("CRASHY_FIXED"):
            raise RuntimeError(f"Crashy-v0 crashed on purpose after {CRASH_AFTER} steps")
        return np.zeros(2, np.float32), 1.0, False, self.t >= 20, {}


gym.register("Crashy-v0", entry_point=CrashyEnv)
