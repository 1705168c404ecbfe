"""Atari with the paper's preprocessing on two backends: Gymnasium wrappers or envpool.

Both give the same semantics, whichever id the user passes (``PongNoFrameskip-v4`` or
``ALE/Pong-v5``): no sticky actions, up to ``noop_max`` no-op resets, frame skip 4 with a max over
the last two frames, 84×84 grayscale, a 4-frame stack, the minimal action set and a 108,000-frame
(27,000-step) cap. The ALE's own v5 frame skip and sticky actions are turned off, because the
paper's protocol is v4's.

Both return *raw* game rewards and the remaining ``lives``: reward clipping and episodic life are
training-only and applied by the trainer (``symrl.envs.atari.training_signal``), so reported scores
are full-game scores over all lives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from symrl.envs.registry import ensure_registered

MAX_FRAMES = 108_000


@dataclass(frozen=True)
class AtariSettings:
    noop_max: int = 30
    frame_skip: int = 4
    frame_stack: int = 4
    screen_size: int = 84
    max_frames: int = MAX_FRAMES  # episode cap in emulator frames (108,000 = 30 minutes of play)


def game_name(env_id: str) -> str:
    """'ALE/Pong-v5' or 'PongNoFrameskip-v4' → 'Pong'."""
    name = env_id.rpartition(":")[2]
    match = re.fullmatch(r"ALE/(\w+)-v5|(\w+?)NoFrameskip-v4", name)
    if not match:
        raise ValueError(f"env: '{env_id}' is not an Atari id; allowed: ALE/<Game>-v5 or <Game>NoFrameskip-v4")
    return match.group(1) or match.group(2)


def semantics_note(env_id: str) -> str:
    """What the presets do to the id the user gave, in one line (printed at the start of a run)."""
    if env_id.rpartition(":")[2].startswith("ALE/"):
        return (f"{env_id}: using the paper's v4 semantics (ALE frameskip=1 and repeat_action_probability=0; "
                "frame skip 4 with max-pool, 84×84 gray, 4-frame stack in the wrapper)")
    return f"{env_id}: v4 semantics (no sticky actions; frame skip 4 with max-pool, 84×84 gray, 4-frame stack)"


def make_atari_env(env_id: str, s: AtariSettings) -> gym.Env:
    """One preprocessed Atari env (Gymnasium backend); observations uint8 (stack, 84, 84)."""
    name = ensure_registered(env_id)
    kwargs = {"frameskip": 1, "repeat_action_probability": 0.0, "full_action_space": False,
              "max_num_frames_per_episode": s.max_frames}
    env = gym.make(name, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=s.noop_max, frame_skip=s.frame_skip,
                                          screen_size=s.screen_size, terminal_on_life_loss=False,
                                          grayscale_obs=True, scale_obs=False)
    return gym.wrappers.FrameStackObservation(env, s.frame_stack)


class EnvpoolAtari:
    """envpool's Atari behind the interface the trainer uses from Gymnasium vector envs.

    envpool resets a finished env on the *next* step; the trainer expects Gymnasium's same-step
    autoreset (the returned observation already starts the next episode, ``info['final_obs']``
    holds the last one), so finished envs are reset right away by id. envpool seeds only at
    construction, so ``reset(seed=...)`` rebuilds the pool (once per checkpoint sync point).
    """

    def __init__(self, env_id: str, n_envs: int, s: AtariSettings):
        import envpool  # noqa: F401  (checked by the caller, imported here for a clear traceback)

        self.task = f"{game_name(env_id)}-v5"
        self.n_envs, self.settings = n_envs, s
        self.pool = self._make(seed=0)
        self.single_observation_space = self.pool.observation_space
        self.single_action_space = self.pool.action_space
        self.num_envs = n_envs

    def _make(self, seed: int):
        import envpool

        s = self.settings
        return envpool.make(
            self.task, env_type="gymnasium", num_envs=self.n_envs, seed=seed,
            episodic_life=False, reward_clip=False, use_fire_reset=False,
            noop_max=s.noop_max, frame_skip=s.frame_skip, stack_num=s.frame_stack,
            img_height=s.screen_size, img_width=s.screen_size, repeat_action_probability=0.0,
            full_action_space=False, max_episode_steps=s.max_frames // s.frame_skip,
        )

    def reset(self, seed: list[int] | None = None):
        if seed is not None:
            self.pool.close()
            self.pool = self._make(int(seed[0]) % (2**31 - 1 - self.n_envs))  # envpool takes int32 seeds
        obs, info = self.pool.reset()
        return obs, {"lives": info["lives"]}

    def step(self, actions: np.ndarray):
        obs, reward, terminated, truncated, info = self.pool.step(np.asarray(actions))
        lives = info["lives"].copy()
        done = terminated | truncated
        out_info = {"lives": lives}
        if done.any():
            ids = np.flatnonzero(done)
            final = np.empty(self.n_envs, dtype=object)
            for i in ids:
                final[i] = obs[i].copy()
            new_obs, new_info = self.pool.reset(ids)
            obs = obs.copy()
            obs[ids] = new_obs
            lives[ids] = new_info["lives"]
            out_info["final_obs"] = final
        return obs, reward.astype(np.float64), terminated, truncated, out_info

    def close(self) -> None:
        self.pool.close()


def envpool_available() -> bool:
    try:
        import envpool  # noqa: F401
    except ImportError:
        return False
    return True


def training_signal(raw_reward: np.ndarray, lives: np.ndarray, previous_lives: np.ndarray,
                    episode_end: np.ndarray, clip_reward: bool, episodic_life: bool) -> tuple[np.ndarray, np.ndarray]:
    """The training reward (sign-clipped if ``clip_reward``) and the training-only terminations
    (a lost life, if ``episodic_life``), from the raw game signal. Evaluation never sees these."""
    reward = np.sign(raw_reward) if clip_reward else raw_reward
    life_lost = (lives < previous_lives) & ~episode_end if episodic_life else np.zeros_like(episode_end)
    return reward, life_lost
