"""Atari (Pong) PPO training throughput of symrl against Stable-Baselines3, and SPPO against PPO.

    python bench/atari_throughput.py              # 2 timed iterations x 2 repeats, 1 and 2 threads (~10 min, 2 cores)
    python bench/atari_throughput.py --quick      # smoke test (~2 min): 1 thread, 1 iteration, 1 repeat
    python bench/atari_throughput.py --repeats 3 --threads 1

Timed: whole iterations of 8 envs x 128 steps (collect + 4 epochs of minibatch 256): symrl PPO on each
vector env (Gymnasium sync and async, envpool if installed) at each ``--threads``, SPPO on one of them
(``--sppo-on``), SB3 ``PPO("CnnPolicy")`` on PongNoFrameskip-v4, random actions through each bare vector
env. The atari-ppo-norm preset, annealing off, makes symrl's configuration and SB3's arguments; the built
agents are read back and compared (but the env id: symrl's ALE/Pong-v5 has v4 semantics).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import gymnasium as gym  # noqa: E402
from stable_baselines3.common.env_util import make_atari_env  # noqa: E402
from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage  # noqa: E402

from bench.harness import Contestant, Group, RandomActions, Ratio, benchmark, parse, parser  # noqa: E402
from bench.throughput import OFF, SB3PPO, WEIGHTS, SymrlPPO  # noqa: E402
from symrl.config import TrainConfig, build_config, get_key  # noqa: E402
from symrl.envs import make_vec_env as symrl_make_vec_env  # noqa: E402
from symrl.envs.atari import atari_settings  # noqa: E402

PRESET = "atari-ppo-norm"  # the paper's Atari PPO (8 envs x 128 steps, 4 epochs, minibatch 256) + normalization
SB3_ENV = "PongNoFrameskip-v4"
SETTINGS = {"sync": ("gymnasium", "sync"), "async": ("gymnasium", "async"), "envpool": ("envpool", "sync")}


def symrl_config(algo: str, setting: str) -> TrainConfig:
    backend, vec_env = SETTINGS[setting]
    return build_config(preset=PRESET, overrides={
        **OFF, "algo": algo, **WEIGHTS[algo], "env": "ALE/Pong-v5", "vec_env": vec_env, "env_backend": backend,
        # envpool cannot restart its frame stack: no FIRE and lost-life restarts (SB3's) there; Pong has no lives
        **({"atari.fire_reset": False, "atari.life_reset": False} if backend == "envpool" else {})})


class AtariSymrl(SymrlPPO):
    def settings(self) -> dict[str, Any]:
        m, space = self.trainer.model, self.trainer.envs.single_observation_space
        x = torch.randint(0, 256, (2, *space.shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():  # the CNN's input scale, checked numerically (channels_last rounds differently)
            scaled = torch.allclose(m.value(x), m.critic(m.trunk(x.float() / 255)).squeeze(-1), rtol=1e-4, atol=1e-5)
        return {**super().settings(), "observation": [*space.shape, str(space.dtype)],
                "obs_scale": 1 / 255 if scaled else "not 1/255",
                "training_reward_clip": bool(get_key(self.cfg, "atari.clip_reward")),
                "training_episodic_life": bool(get_key(self.cfg, "atari.episodic_life"))}


class AtariSB3(SB3PPO):
    def settings(self) -> dict[str, Any]:
        m, env, names = self.model, self.model.env.unwrapped.envs[0], set()
        while isinstance(env, gym.Wrapper):
            names.add(type(env).__name__)
            env = env.env
        return {**super().settings(), "observation": [*m.observation_space.shape, str(m.observation_space.dtype)],
                "obs_scale": 1 / 255 if m.policy.normalize_images else 1.0,
                "training_reward_clip": "ClipRewardEnv" in names, "training_episodic_life": "EpisodicLifeEnv" in names}


def sb3_env(cfg: TrainConfig):
    venv = make_atari_env(SB3_ENV, n_envs=get_key(cfg, "n_envs"), seed=get_key(cfg, "seed"))
    return VecFrameStack(venv, n_stack=get_key(cfg, "atari.frame_stack"))


def sb3_ppo() -> AtariSB3:
    cfg = symrl_config("ppo", "sync")
    return AtariSB3(cfg, "CnnPolicy", sb3_env(cfg))


def random_actions(setting: str) -> RandomActions:
    cfg = symrl_config("ppo", "sync" if setting == "sb3" else setting)
    if setting == "sb3":
        venv = VecTransposeImage(sb3_env(cfg))
        venv.reset()
        return RandomActions(venv, venv.action_space, cfg.n_steps)
    venv = symrl_make_vec_env(cfg.env, cfg.n_envs, cfg.vec_env, cfg.env_backend, atari_settings(cfg.atari))
    venv.reset(seed=list(range(cfg.n_envs)))
    return RandomActions(venv, venv.single_action_space, cfg.n_steps)


def lineup(threads: list[int], settings: list[str], sppo_on: str) -> tuple[list[Contestant], list[Ratio]]:
    """SB3 first (the reference), symrl PPO per setting and thread count, SPPO, the env floors."""
    out, ratios = [], []
    for n in threads:
        sb3 = f"sb3_ppo_t{n}"
        out.append(Contestant(sb3, f"SB3 PPO CnnPolicy, DummyVecEnv, {n} torch thread(s)", sb3_ppo, n,
                              equals=None if n == threads[0] else f"sb3_ppo_t{threads[0]}", floor="env_sb3"))
        for s in settings:
            name = f"symrl_ppo_{s}_t{n}"
            out.append(Contestant(name, f"symrl PPO, {' '.join(SETTINGS[s])} env, {n} torch thread(s)",
                                  lambda s=s: AtariSymrl(symrl_config("ppo", s)), n, equals=sb3,
                                  except_keys=("env_id",), floor=f"env_{s}"))
            ratios.append(Ratio(f"{name} / {sb3}", name, sb3))
    on, n = sppo_on.rsplit("_t", 1)
    sppo, ppo = f"symrl_sppo_{sppo_on}", f"symrl_ppo_{sppo_on}"
    out.append(Contestant(sppo, f"symrl SPPO {WEIGHTS['sppo']}, as {ppo}",
                          lambda: AtariSymrl(symrl_config("sppo", on)), int(n), equals=ppo, floor=f"env_{on}"))
    ratios.append(Ratio(f"{sppo} / {ppo}", sppo, ppo, target=0.95))
    ratios += [Ratio(f"{lib}_t{n} / {lib}_t1 (more threads)", f"{lib}_t{n}", f"{lib}_t1")
               for lib in ("sb3_ppo", *(f"symrl_ppo_{s}" for s in settings)) for n in threads if n != 1]
    out += [Contestant(f"env_{s}", f"random actions, {'SB3 AtariWrapper stack' if s == 'sb3' else SETTINGS[s]}",
                       lambda s=s: random_actions(s)) for s in ("sb3", *settings)]
    return out, ratios


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=2)
    p.add_argument("--rollouts", type=int, help="timed iterations per measurement (default 2; --quick 1)")
    p.add_argument("--threads", help="comma-separated torch thread counts (default 1,2; --quick: 1)")
    p.add_argument("--sppo-on", help="symrl setting of SPPO vs PPO, e.g. sync_t1 (default: envpool_t1, else sync_t1)")
    args = parse(p, argv, "rollouts")
    threads = sorted({int(x) for x in (args.threads or ("1" if args.quick else "1,2")).split(",")})
    if threads[0] < 1:
        p.error(f"--threads: got {args.threads}; allowed: integers >= 1")
    settings = [s for s in SETTINGS if s != "envpool" or importlib.util.find_spec("envpool")]
    allowed = [f"{s}_t{n}" for n in threads for s in settings]
    sppo_on = args.sppo_on or allowed[len(settings) - 1]  # envpool (or sync) at the first thread count
    if sppo_on not in allowed:
        p.error(f"--sppo-on: got {sppo_on}; allowed: {', '.join(allowed)}")
    contestants, ratios = lineup(threads, settings, sppo_on)
    timed = args.rollouts or (1 if args.quick else 2)  # after one warm-up iteration: first calls are slow
    benchmark("atari_throughput", __doc__, args, [Group("Pong", contestants, 1, timed)], ratios,
              {"preset": PRESET, "sb3_env": SB3_ENV, "threads": threads})


if __name__ == "__main__":
    main()
