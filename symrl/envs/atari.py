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
    fire_reset: bool = False  # press FIRE (then action 2) after every reset and life restart, as SB3's FireResetEnv
    life_reset: bool = False  # a lost life restarts the frame stack after a no-op step, as SB3's EpisodicLifeEnv


def atari_settings(cfg) -> AtariSettings:
    """The settings of a run config's ``atari`` block (``symrl.config.AtariConfig``)."""
    return AtariSettings(cfg.noop_max, cfg.frame_skip, cfg.frame_stack, cfg.screen_size, cfg.max_episode_frames,
                         cfg.fire_reset, cfg.life_reset)


def game_name(env_id: str) -> str:
    """'ALE/Pong-v5' or 'PongNoFrameskip-v4' → 'Pong'."""
    name = env_id.rpartition(":")[2]
    match = re.fullmatch(r"ALE/(\w+)-v5|(\w+?)NoFrameskip-v4", name)
    if not match:
        raise ValueError(f"env: '{env_id}' is not an Atari id; allowed: ALE/<Game>-v5 or <Game>NoFrameskip-v4")
    return match.group(1) or match.group(2)


def semantics_note(env_id: str, s: AtariSettings) -> str:
    """What the run does to the id the user gave, in one line (printed at the start of a run)."""
    rules = "".join(["; FIRE after every reset" if s.fire_reset else "",
                     "; a lost life restarts the frame stack" + (" with FIRE" if s.fire_reset else "")
                     if s.life_reset else ""])
    if env_id.rpartition(":")[2].startswith("ALE/"):
        return (f"{env_id}: using the paper's v4 semantics (ALE frameskip=1 and repeat_action_probability=0; "
                f"frame skip {s.frame_skip} with max-pool, {s.screen_size}×{s.screen_size} gray, "
                f"{s.frame_stack}-frame stack in the wrapper{rules})")
    return (f"{env_id}: v4 semantics (no sticky actions; frame skip {s.frame_skip} with max-pool, "
            f"{s.screen_size}×{s.screen_size} gray, {s.frame_stack}-frame stack{rules})")


def make_atari_env(env_id: str, s: AtariSettings) -> gym.Env:
    """One preprocessed Atari env (Gymnasium backend); observations uint8 (stack, 84, 84)."""
    name = ensure_registered(env_id)
    kwargs = {"frameskip": 1, "repeat_action_probability": 0.0, "full_action_space": False,
              "max_num_frames_per_episode": s.max_frames}
    env = gym.make(name, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=s.noop_max, frame_skip=s.frame_skip,
                                          screen_size=s.screen_size, terminal_on_life_loss=False,
                                          grayscale_obs=True, scale_obs=False)
    return AtariFrameStack(env, s.frame_stack, s.fire_reset, s.life_reset)


class AtariFrameStack(gym.Wrapper):
    """The frame stack, zero-filled at every (re)start as SB3's ``VecFrameStack``, and SB3's
    ``AtariWrapper`` rules for starting play, in training and evaluation alike:

    * ``fire_reset``: after a reset, FIRE then action 2 (games whose action 1 is FIRE; others are
      left alone, as SB3's ``FireResetEnv``). Many games wait for FIRE to launch a ball or a life.
    * ``life_reset``: when a life is lost (and the game goes on), a no-op step, FIRE and action 2
      with ``fire_reset``, and the stack restarts from that frame; the returned observation is the
      restarted one, as after SB3's episodic-life reset. Rewards of these steps count (SB3's
      training reward drops them, its Monitor counts them; they are almost always 0).

    The episode itself never ends at a lost life: the trainer turns lost lives into training-only
    terminations (``training_signal``), so reported scores stay full-game scores.
    """

    def __init__(self, env: gym.Env, stack: int, fire_reset: bool, life_reset: bool):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.fire = fire_reset and len(meanings) >= 3 and meanings[1] == "FIRE"
        self.life_reset = life_reset
        self.ale = env.unwrapped.ale
        space = env.observation_space
        self.frames = np.zeros((stack,) + space.shape, space.dtype)
        self.observation_space = gym.spaces.Box(0, 255, self.frames.shape, space.dtype)
        self.lives = 0

    def _push(self, frame: np.ndarray, restart: bool) -> np.ndarray:
        if restart:
            self.frames[:] = 0
        self.frames[:-1] = self.frames[1:]
        self.frames[-1] = frame
        return self.frames.copy()

    def _play(self, actions: list[int]) -> tuple[np.ndarray | None, float, bool, bool, dict]:
        """Step ``actions`` in order, stopping early if the episode ends."""
        frame, total, terminated, truncated, info = None, 0.0, False, False, {}
        for action in actions:
            frame, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return frame, total, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        frame, info = self.env.reset(seed=seed, options=options)
        if self.fire:
            fired, _, terminated, truncated, step_info = self._play([1, 2])
            if terminated or truncated:
                fired, info = self.env.reset()
            else:
                info = {**info, **step_info}
            frame = fired
        self.lives = self.ale.lives()
        return self._push(frame, restart=True), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(action)
        restart = False
        if self.life_reset:  # lives are read only when a lost one restarts play
            restart = not (terminated or truncated) and self.ale.lives() < self.lives
            if restart:
                frame, extra, terminated, truncated, info = self._play([0, 1, 2] if self.fire else [0])
                reward = float(reward) + extra
            self.lives = self.ale.lives()
        return self._push(frame, restart), reward, terminated, truncated, info


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
