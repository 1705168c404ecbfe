"""Atari (Pong) PPO training throughput of symrl against Stable-Baselines3, SPPO against PPO, and a
profile of where one symrl iteration spends its time.

    python bench/atari_throughput.py              # default: 2 timed iterations x 2 repeats (~8 min on 2 idle cores)
    python bench/atari_throughput.py --quick      # smoke test (< 2 min): 1 thread, 1 iteration, 1 repeat
    python bench/atari_throughput.py --repeats 3 --threads 1

What is timed: whole training iterations of 8 envs x 128 steps = 1,024 env steps (collect one
rollout + the PPO update: 4 epochs of minibatch 256), after one warm-up iteration. Setup,
evaluation and checkpoints are not timed.
  * symrl: ``OnPolicyTrainer`` driven directly: ``reset_envs()`` at build, then ``collect(); learn()``.
  * SB3:   ``PPO("CnnPolicy").learn(total_timesteps=k * 1024, reset_num_timesteps=False)``; its env is
           reset at build (as symrl's), so every learn call continues the same episodes.
  * env:   random actions (drawn beforehand) through each bare vector env: the floor no training
           loop can beat, and with it the share of an iteration that is the environment.

Contestants: SB3 and symrl PPO (Gymnasium sync / async vector env, envpool) at torch threads 1 and
2 (torch.set_num_threads, set before building and again before timing; the value in force at the
end of the timed section is recorded), and the raw env baselines. SPPO (alpha 0.5, beta 1) runs on
the fastest symrl PPO setting of the first repeat (or --sppo-on) in a paired measurement at the
end of every repeat: an SPPO and a PPO agent built side by side, warmed up, and their timed
iterations interleaved (PPO SPPO SPPO PPO, reversed on odd repeats), so both see the same load.

Contention. The machine has 2 cores shared with other work, so each measurement records, from
/proc, over exactly its timed interval: the CPU time of this process and all its descendants (the
async env workers), the CPU time every other process used (system busy time minus ours, in cores),
hypervisor steal, and the kernel's CPU pressure (PSI "some": the share of time some runnable task
waited for a core). ``cpu_sps`` (steps per CPU-second of our process tree) is less sensitive to
contention than wall-clock SPS for one-thread runs; for two-thread runs it includes OpenMP
spin-waiting, so it is a lower bound there. Within a repeat all contestants run back to back; the
order is reversed on odd repeats and rotated between pairs of repeats, and ratios are taken per
repeat (numerator and denominator measured minutes apart, under similar load) before the median.

Settings: both agents are built from one table (``AtariBench``, equal to the atari-ppo preset with
annealing off); every measured agent's settings are read back from the built object (SB3's model,
policy and optimizer; symrl's trainer, network and optimizer) and compared key by key with the
reference; a mismatch aborts the run. Environment semantics are read back from the built env
stacks too and their differences listed (they are expected: e.g. SB3 presses FIRE on reset, symrl
does not).

Profile (after the timed runs): one symrl PPO iteration at 1 thread on the fastest setting's env
backend, with timers around collect (env step / acting forward / rest), advantages and the update
(forward / loss / backward / grad clip / Adam / rest), torch.profiler's operator breakdown of one
update, each conv layer alone in NCHW and channels_last, a gradient step and an acting forward at
1 and 2 threads, and the compute floor they imply; then SPPO's and PPO's update on the same rollout
and weights (CPU time, 1 thread), which isolates the loss's cost from load noise.

Output: a table on stdout and JSON at bench/results/atari_throughput.json (--quick:
atari_throughput_quick.json; or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from bench.common import cpu_model, git_state, ratio_line  # noqa: E402

import gymnasium as gym  # noqa: E402
import stable_baselines3  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_atari_env  # noqa: E402
from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage  # noqa: E402

from symrl.algos.onpolicy import OnPolicyTrainer  # noqa: E402
from symrl.config import build_config, load_preset  # noqa: E402
from symrl.envs import make_vec_env as symrl_make_vec_env  # noqa: E402


# ---------------------------------------------------------------------------- what is benchmarked

@dataclass(frozen=True)
class AtariBench:
    """The paper's Atari PPO settings (PAPER.md section 4, preset atari-ppo), annealing off."""

    symrl_env: str = "ALE/Pong-v5"  # symrl's Atari presets give it v4 semantics
    sb3_env: str = "PongNoFrameskip-v4"
    n_envs: int = 8
    n_steps: int = 128
    n_epochs: int = 4
    batch_size: int = 256
    lr: float = 2.5e-4  # constant for the measurement (the preset anneals it)
    clip_range: float = 0.1  # constant (the preset anneals it)
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    gae_lambda: float = 0.95
    gamma: float = 0.99
    max_grad_norm: float = 0.5
    clip_range_vf: float | None = None
    norm_adv: bool = True
    target_kl: float | None = None
    frame_stack: int = 4
    seed: int = 0
    timed_rollouts: int = 2
    warmup_rollouts: int = 1
    sppo_alpha: float = 0.5
    sppo_beta: float = 1.0

    @property
    def rollout_steps(self) -> int:
        return self.n_envs * self.n_steps


PRESET = "atari-ppo"
# preset key -> AtariBench field; annealing is the one deliberate difference (off here)
PRESET_KEYS = {"n_envs": "n_envs", "n_steps": "n_steps", "n_epochs": "n_epochs", "batch_size": "batch_size",
               "lr": "lr", "clip_range": "clip_range", "vf_coef": "vf_coef", "ent_coef": "ent_coef",
               "gamma": "gamma", "gae_lambda": "gae_lambda", "max_grad_norm": "max_grad_norm"}


def check_preset(b: AtariBench) -> dict[str, Any]:
    """The benchmark table must be the preset's settings; returns the preset's config for the JSON."""
    cfg = load_preset(PRESET)["config"]
    diff = {k: (cfg.get(k), getattr(b, f)) for k, f in PRESET_KEYS.items() if not _same(cfg.get(k), getattr(b, f))}
    if diff:
        raise SystemExit(f"benchmark table differs from preset {PRESET}: {diff}")
    return {"preset": PRESET, "config": cfg,
            "changed_for_measurement": {"anneal_lr": [cfg.get("anneal_lr"), False],
                                        "anneal_clip": [cfg.get("anneal_clip"), False]}}


# ---------------------------------------------------------------------------- CPU accounting

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: str) -> tuple[int, float] | None:
    """(ppid, utime + stime in seconds) of one process, None if it vanished."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK


def tree_cpu_seconds() -> float:
    """CPU time of this process (all threads) and all its living descendants."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(entry)
            if st is not None:
                table[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, [os.getpid()]
    while stack:
        pid = stack.pop()
        if pid in table:
            total += table[pid][1]
        stack.extend(children.get(pid, []))
    return total


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def psi_some_us() -> float | None:
    """Total microseconds some runnable task waited for a CPU (kernel PSI), None if unavailable."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return float(line.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


class CpuMeter:
    """Wall time, our CPU time and everybody else's over one interval."""

    def __enter__(self) -> "CpuMeter":
        gc.collect()
        self.psi0, (self.busy0, self.steal0) = psi_some_us(), system_cpu()
        self.tree0, self.proc0 = tree_cpu_seconds(), time.process_time()
        self.wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.proc_cpu = time.process_time() - self.proc0
        self.tree_cpu = tree_cpu_seconds() - self.tree0
        busy, steal = system_cpu()
        psi = psi_some_us()
        self.others_cores = max(0.0, (busy - self.busy0) - self.tree_cpu) / self.wall
        self.steal_cores = (steal - self.steal0) / self.wall
        self.psi_some = None if psi is None or self.psi0 is None else (psi - self.psi0) / 1e6 / self.wall

    def row(self, steps: int) -> dict[str, Any]:
        return {"steps": steps, "wall_s": self.wall, "cpu_s": self.tree_cpu, "main_process_cpu_s": self.proc_cpu,
                "wall_sps": steps / self.wall, "cpu_sps": steps / max(self.tree_cpu, 1e-9),
                "own_cores": self.tree_cpu / self.wall, "others_cores": self.others_cores,
                "steal_cores": self.steal_cores, "psi_some": self.psi_some, "loadavg_1m_after": os.getloadavg()[0]}


# ---------------------------------------------------------------------------- symrl

def symrl_overrides(b: AtariBench, algo: str, backend: str, vec_env: str) -> dict[str, Any]:
    """Every training setting spelled out on top of the preset, so no default can silently differ."""
    alpha, beta = (b.sppo_alpha, b.sppo_beta) if algo == "sppo" else (1.0, 0.0)
    return {
        "algo": algo, "env": b.symrl_env, "seed": b.seed, "n_envs": b.n_envs, "n_steps": b.n_steps,
        "vec_env": vec_env, "env_backend": backend, "device": "cpu", "alpha": alpha, "beta": beta,
        "lr": b.lr, "anneal_lr": False, "gamma": b.gamma, "gae_lambda": b.gae_lambda, "n_epochs": b.n_epochs,
        "batch_size": b.batch_size, "clip_range": b.clip_range, "anneal_clip": False,
        "clip_range_vf": b.clip_range_vf, "vf_coef": b.vf_coef, "ent_coef": b.ent_coef,
        "max_grad_norm": b.max_grad_norm, "target_kl": b.target_kl, "norm_adv": b.norm_adv,
        "norm_obs": False, "norm_reward": False, "noise": "none", "atari.frame_stack": b.frame_stack,
        **envpool_reset_rules(backend),
        # total_steps only sets the length of the (disabled) annealing; evaluation is never called,
        # and one eval env keeps the untimed setup small.
        "total_steps": b.rollout_steps * (b.warmup_rollouts + b.timed_rollouts), "eval_every": 0, "eval_episodes": 1,
    }


def envpool_reset_rules(backend: str) -> dict[str, bool]:
    """SB3's FIRE and lost-life restarts (the preset's) exist on the Gymnasium backend only."""
    return {"atari.fire_reset": False, "atari.life_reset": False} if backend == "envpool" else {}


class SymrlRunner:
    """symrl's training loop without its logging, evaluation and checkpoints."""

    def __init__(self, b: AtariBench, algo: str = "ppo", backend: str = "gymnasium", vec_env: str = "sync"):
        self.backend, self.vec_env = backend, vec_env
        self.cfg = build_config(preset=PRESET, overrides=symrl_overrides(b, algo, backend, vec_env))
        with contextlib.redirect_stderr(_Quiet()):  # the trainer prints its Atari semantics note
            self.trainer = OnPolicyTrainer(self.cfg)
        self.trainer.reset_envs()

    def iterate(self, rollouts: int) -> tuple[float, float]:
        """Returns (collect, update) wall seconds."""
        collect = update = 0.0
        for _ in range(rollouts):
            t0 = time.perf_counter()
            self.trainer.collect()
            t1 = time.perf_counter()
            stats = self.trainer.learn()
            # symrl's loop turns the stats into floats for its log; SB3 calls .item() in its update.
            _ = {k: float(v) for k, v in stats.items()}
            collect, update = collect + t1 - t0, update + time.perf_counter() - t1
        return collect, update

    def settings(self) -> dict[str, Any]:
        """Read back from the built trainer, network and optimizer, not from the overrides."""
        t, cfg = self.trainer, self.cfg
        group = t.optimizer.param_groups[0]
        m = t.model
        return {
            "n_envs": t.envs.num_envs, "n_steps": cfg.n_steps, "batch_size": cfg.batch_size,
            "n_epochs": cfg.n_epochs, "lr": group["lr"], "lr_schedule": "linear" if cfg.anneal_lr else "constant",
            "gamma": cfg.gamma, "gae_lambda": cfg.gae_lambda, "clip_range": cfg.clip_range,
            "clip_range_schedule": "linear" if cfg.anneal_clip else "constant", "clip_range_vf": cfg.clip_range_vf,
            "norm_adv": cfg.norm_adv, "ent_coef": t.weights.ent, "vf_coef": t.weights.vf,
            "max_grad_norm": cfg.max_grad_norm, "target_kl": cfg.target_kl,
            # FlatAdam is torch's Adam arithmetic on one flat buffer (tests/test_flat.py checks it)
            "optimizer": "Adam" if type(t.optimizer).__name__ == "FlatAdam" else type(t.optimizer).__name__,
            "adam_eps": group["eps"], "adam_betas": list(group["betas"]), "weight_decay": group["weight_decay"],
            "observation_shape": list(t.envs.single_observation_space.shape),
            "observation_dtype": str(t.envs.single_observation_space.dtype),
            "obs_scale": _symrl_obs_scale(m, tuple(t.envs.single_observation_space.shape)),
            "trunk": describe_layers(list(m.trunk)), "pi_head": describe_layers([m.actor]),
            "vf_head": describe_layers([m.critic]), "shared_trunk": True,  # CNNActorCritic: one trunk, two heads
            "init_gains": init_gains(list(m.trunk) + [m.actor, m.critic]), "init_biases_zero": biases_zero(m),
            "n_parameters": sum(p.numel() for p in m.parameters()),
            "action_dist": t.spec.kind, "n_actions": t.spec.n_outputs,
            "training_reward_clip": bool(cfg.atari.clip_reward), "training_episodic_life": bool(cfg.atari.episodic_life),
            "seed": cfg.seed, "device": str(t.device),
        }

    def env_semantics(self) -> dict[str, Any]:
        t, a = self.trainer, self.trainer.atari
        out: dict[str, Any] = {"backend": self.backend, "vec_env": self.vec_env,
                               "episodic_life": "in the trainer (GAE only), env plays on" if self.cfg.atari.episodic_life else False,
                               "clip_reward": "in the trainer (training reward only)" if self.cfg.atari.clip_reward else False,
                               "autoreset": "same-step (final obs in info)", "fire_reset": self.cfg.atari.fire_reset}
        if self.backend == "envpool":
            c = t.envs.pool.config
            out.update({k: c[k] for k in ("noop_max", "frame_skip", "stack_num", "img_height", "img_width",
                                          "gray_scale", "repeat_action_probability", "max_episode_steps",
                                          "use_fire_reset", "episodic_life", "reward_clip", "use_inter_area_resize",
                                          "num_threads", "batch_size")})
            out.update(frame_stack=c["stack_num"], screen_size=c["img_height"], fire_reset=bool(c["use_fire_reset"]),
                       max_num_frames_per_episode=c["max_episode_steps"] * c["frame_skip"],
                       resize="envpool C++ (use_inter_area_resize=%s)" % c["use_inter_area_resize"],
                       max_pool_last_two_frames=True, frame_stack_padding="envpool internal")
        elif self.vec_env == "sync":
            out.update(gym_env_semantics(t.envs.envs[0]))
        else:  # async: ask a worker
            def attr(name):
                try:
                    return t.envs.call("get_wrapper_attr", name)[0]
                except Exception as err:  # noqa: BLE001  (recorded, not fatal)
                    return f"unreadable ({type(err).__name__})"
            out.update({"noop_max": attr("noop_max"), "frame_skip": attr("frame_skip"),
                        "screen_size": _side(attr("screen_size")), "frame_stack": len(attr("frames")),
                        "same_env_factory_as_sync": True})
        out["symrl_atari_settings"] = asdict(a)
        return out

    def symrl_only(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"algo": cfg.algo, "alpha": cfg.alpha, "beta": cfg.beta, "Z": cfg.Z, "reverse": cfg.reverse,
                "vec_env": cfg.vec_env, "env_backend": cfg.env_backend, "full_config": cfg.to_dict()}

    def close(self) -> None:
        self.trainer.close()


class _Quiet:
    def write(self, *_): pass
    def flush(self): pass


def _symrl_obs_scale(model: nn.Module, obs_shape: tuple[int, ...]) -> float | str:
    """Checked numerically: the trunk's features equal trunk(obs / 255), up to the float rounding of
    a different convolution algorithm (symrl feeds the trunk in channels_last layout)."""
    x = torch.randint(0, 256, (2, *obs_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ok = torch.allclose(model._features(x), model.trunk(x.float() / 255.0), rtol=1e-4, atol=1e-5)
    return 1 / 255 if ok else "not 1/255"


# ---------------------------------------------------------------------------- Stable-Baselines3

class SB3Runner:
    """SB3 PPO CnnPolicy; each ``iterate`` is one ``learn`` call that continues where the last stopped."""

    def __init__(self, b: AtariBench):
        self.b = b
        env = VecFrameStack(make_atari_env(b.sb3_env, n_envs=b.n_envs, seed=b.seed), n_stack=b.frame_stack)
        self.model = PPO("CnnPolicy", env, **sb3_kwargs(b))
        # reset at build, as symrl's reset_envs(); learn(reset_num_timesteps=False) then keeps these
        # (the same two fields SB3's _setup_learn sets when it resets)
        self.model._last_obs = self.model.env.reset()
        self.model._last_episode_starts = np.ones((self.model.env.num_envs,), dtype=bool)
        self.timers = {"collect": 0.0, "update": 0.0}
        for name, attr in (("collect", "collect_rollouts"), ("update", "train")):
            setattr(self.model, attr, _accumulate(self.timers, name, getattr(self.model, attr)))

    def iterate(self, rollouts: int) -> tuple[float, float]:
        self.timers.update(collect=0.0, update=0.0)
        self.model.learn(total_timesteps=rollouts * self.b.rollout_steps, reset_num_timesteps=False)
        return self.timers["collect"], self.timers["update"]

    def settings(self) -> dict[str, Any]:
        m = self.model
        policy = m.policy
        group = policy.optimizer.param_groups[0]
        clip_vf = m.clip_range_vf(1.0) if m.clip_range_vf is not None else None
        fe = policy.features_extractor
        return {
            "n_envs": m.n_envs, "n_steps": m.n_steps, "batch_size": m.batch_size, "n_epochs": m.n_epochs,
            "lr": group["lr"], "lr_schedule": _schedule_kind(m.lr_schedule), "gamma": m.gamma,
            "gae_lambda": m.gae_lambda, "clip_range": m.clip_range(1.0), "clip_range_schedule": _schedule_kind(m.clip_range),
            "clip_range_vf": clip_vf, "norm_adv": m.normalize_advantage, "ent_coef": m.ent_coef, "vf_coef": m.vf_coef,
            "max_grad_norm": m.max_grad_norm, "target_kl": m.target_kl,
            "optimizer": type(policy.optimizer).__name__, "adam_eps": group["eps"],
            "adam_betas": list(group["betas"]), "weight_decay": group["weight_decay"],
            "observation_shape": list(m.observation_space.shape), "observation_dtype": str(m.observation_space.dtype),
            "obs_scale": 1 / 255 if policy.normalize_images else 1.0,
            "trunk": describe_layers(list(fe.cnn) + list(fe.linear) + list(policy.mlp_extractor.policy_net)),
            "pi_head": describe_layers([policy.action_net]), "vf_head": describe_layers([policy.value_net]),
            "shared_trunk": bool(policy.share_features_extractor) and len(policy.mlp_extractor.policy_net) == 0
                            and len(policy.mlp_extractor.value_net) == 0,
            "init_gains": init_gains(list(fe.cnn) + list(fe.linear) + [policy.action_net, policy.value_net]),
            "init_biases_zero": biases_zero(policy),
            "n_parameters": sum(p.numel() for p in policy.parameters()),
            "action_dist": {"CategoricalDistribution": "categorical"}.get(type(policy.action_dist).__name__,
                                                                         type(policy.action_dist).__name__),
            "n_actions": int(m.action_space.n),
            "training_reward_clip": _has_wrapper(m.env, "ClipRewardEnv"),
            "training_episodic_life": _has_wrapper(m.env, "EpisodicLifeEnv"),
            "seed": m.seed, "device": str(m.device),
        }

    def env_semantics(self) -> dict[str, Any]:
        venv = self.model.env  # VecTransposeImage(VecFrameStack(DummyVecEnv)), the wrapping PPO added
        chain, v = [], venv
        while v is not None:
            chain.append(type(v).__name__)
            v = getattr(v, "venv", None)
        inner = self.model.env.unwrapped if hasattr(self.model.env, "unwrapped") else None
        base = inner.envs[0]
        out = {"backend": "gymnasium (ale-py)", "vec_env_chain": chain,
               "episodic_life": "EpisodicLifeEnv wrapper (life loss = terminal; reset after it is a no-op step)"
                                if _has_wrapper(self.model.env, "EpisodicLifeEnv") else False,
               "clip_reward": "ClipRewardEnv wrapper" if _has_wrapper(self.model.env, "ClipRewardEnv") else False,
               "autoreset": "same-step (DummyVecEnv; terminal_observation in info)",
               "frame_stack": self.model.env.venv.stacked_obs.n_stack if hasattr(self.model.env, "venv") else None,
               "frame_stack_padding": "zeros (VecFrameStack)"}
        out.update(gym_env_semantics(base))
        return out

    def sb3_only(self) -> dict[str, Any]:
        kwargs = sb3_kwargs(self.b)
        return {"policy": "CnnPolicy", "constructor_kwargs": kwargs,
                "features_extractor": type(self.model.policy.features_extractor).__name__,
                "share_features_extractor": self.model.policy.share_features_extractor,
                "ortho_init": self.model.policy.ortho_init,
                "env": f'VecFrameStack(make_atari_env("{self.b.sb3_env}", n_envs={self.b.n_envs}, seed={self.b.seed}), '
                       f"n_stack={self.b.frame_stack}) (DummyVecEnv, Monitor + AtariWrapper; PPO adds VecTransposeImage)",
                "stable_baselines3_version": stable_baselines3.__version__}

    def close(self) -> None:
        self.model.env.close()


def sb3_kwargs(b: AtariBench) -> dict[str, Any]:
    """PPO's constructor arguments, every one that affects training given explicitly (rl-zoo's Atari PPO)."""
    return dict(learning_rate=b.lr, n_steps=b.n_steps, batch_size=b.batch_size, n_epochs=b.n_epochs, gamma=b.gamma,
                gae_lambda=b.gae_lambda, clip_range=b.clip_range, clip_range_vf=b.clip_range_vf,
                normalize_advantage=b.norm_adv, ent_coef=b.ent_coef, vf_coef=b.vf_coef,
                max_grad_norm=b.max_grad_norm, use_sde=False, target_kl=b.target_kl, verbose=0, seed=b.seed,
                device="cpu")


def _accumulate(timers: dict[str, float], key: str, fn: Callable) -> Callable:
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers[key] += time.perf_counter() - t0
    return timed


def _has_wrapper(venv, name: str) -> bool:
    env = venv.unwrapped.envs[0]
    while isinstance(env, gym.Wrapper):
        if type(env).__name__ == name:
            return True
        env = env.env
    return False


def _schedule_kind(schedule: Callable[[float], float]) -> str:
    return "constant" if schedule(1.0) == schedule(0.0) == schedule(0.5) else "varies"


# ---------------------------------------------------------------------------- read-back helpers

def gym_env_semantics(env: gym.Env) -> dict[str, Any]:
    """Preprocessing of one Gymnasium Atari env stack, read from its wrappers and the ALE itself."""
    chain, out, e = [], {}, env
    while True:
        name = type(e).__name__
        chain.append(name)
        if name == "AtariPreprocessing":  # Gymnasium's (symrl)
            out.update(noop_max=e.noop_max, frame_skip=e.frame_skip, screen_size=_side(e.screen_size),
                       grayscale=e.grayscale_obs, terminal_on_life_loss=e.terminal_on_life_loss,
                       max_pool_last_two_frames=True, resize="cv2.resize INTER_AREA")
        elif name == "AtariFrameStack":  # symrl's
            out.update(frame_stack=e.frames.shape[0], frame_stack_padding="zeros (AtariFrameStack)",
                       fire_reset=e.fire, life_reset=e.life_reset)
        elif name == "NoopResetEnv":  # SB3's
            out["noop_max"] = e.noop_max
        elif name == "MaxAndSkipEnv":
            out.update(frame_skip=e._skip, max_pool_last_two_frames=True)
        elif name == "WarpFrame":
            out.update(screen_size=e.width, grayscale=True, resize="cv2.resize INTER_AREA")
        elif name == "FireResetEnv":
            out["fire_reset"] = True
        if not isinstance(e, gym.Wrapper):
            break
        e = e.env
    ale = env.unwrapped.ale
    out.update(wrappers=chain, repeat_action_probability=float(ale.getFloat("repeat_action_probability")),
               max_num_frames_per_episode=int(ale.getInt("max_num_frames_per_episode")),
               ale_frameskip=getattr(env.unwrapped, "_frameskip", None),
               n_actions=int(env.action_space.n))
    out.setdefault("fire_reset", False)
    return out


def _side(size) -> Any:
    """Gymnasium keeps screen_size as (h, w); SB3 and envpool as one side."""
    return size[0] if isinstance(size, (tuple, list)) and len(set(size)) == 1 else size


def describe_layers(modules: list[nn.Module]) -> list[str]:
    out = []
    for m in modules:
        if isinstance(m, nn.Conv2d):
            out.append(f"conv {m.in_channels}->{m.out_channels} k{m.kernel_size[0]} s{m.stride[0]} p{m.padding[0]}")
        elif isinstance(m, nn.Linear):
            out.append(f"linear {m.in_features}->{m.out_features}")
        elif isinstance(m, nn.Sequential):
            out.extend(describe_layers(list(m)))
        else:
            out.append(type(m).__name__.lower())
    return out


def init_gains(modules: list[nn.Module]) -> list[float | str]:
    """Orthogonal-init gain of every conv/linear layer, read off the fresh weights (viewed as
    (out, fan_in)): an orthogonal matrix scaled by g has all singular values equal to g."""
    gains: list[float | str] = []
    for m in modules:
        for layer in (x for x in m.modules() if isinstance(x, (nn.Linear, nn.Conv2d))):
            w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
            sv = torch.linalg.svdvals(w)
            g = float(sv.mean())
            gains.append(round(g, 4) if torch.allclose(sv, torch.full_like(sv, g), rtol=1e-4) else "not orthogonal")
    return gains


def biases_zero(module: nn.Module) -> bool:
    return all(bool((m.bias == 0).all()) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def diff_settings(a: dict[str, Any], b: dict[str, Any], skip: set[str] = frozenset()) -> dict[str, Any]:
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if k not in skip and not _same(a.get(k), b.get(k))}


# ---------------------------------------------------------------------------- raw environment stepping

class RandomActionRunner:
    """Random actions through a bare vector env: the floor that no training loop can beat."""

    def __init__(self, b: AtariBench, which: str):
        self.b = b
        if which == "sb3":
            self.venv = VecTransposeImage(VecFrameStack(make_atari_env(b.sb3_env, n_envs=b.n_envs, seed=b.seed),
                                                        n_stack=b.frame_stack))
            self.venv.reset()
            n_actions = self.venv.action_space.n
        else:
            backend, vec = {"gym_sync": ("gymnasium", "sync"), "gym_async": ("gymnasium", "async"),
                            "envpool": ("envpool", "sync")}[which]
            cfg = build_config(preset=PRESET, overrides={"env": b.symrl_env, "env_backend": backend,
                                                         **envpool_reset_rules(backend)})
            from symrl.envs.atari import atari_settings
            settings = atari_settings(cfg.atari)
            self.venv = symrl_make_vec_env(b.symrl_env, b.n_envs, vec, backend, settings)
            self.venv.reset(seed=list(range(b.seed, b.seed + b.n_envs)))
            n_actions = self.venv.single_action_space.n
        self.actions = np.random.default_rng(b.seed).integers(0, n_actions, (b.n_steps, b.n_envs))

    def iterate(self, rollouts: int) -> tuple[float, float]:
        step = self.venv.step
        for _ in range(rollouts):
            for action in self.actions:
                step(action)
        return 0.0, 0.0

    def close(self) -> None:
        self.venv.close()


# ---------------------------------------------------------------------------- contestants and timing

@dataclass(frozen=True)
class Contestant:
    name: str
    kind: str  # "train" | "env"
    library: str  # "sb3" | "symrl" | "env"
    description: str
    threads: int
    build: Callable[[AtariBench], Any]
    algo: str = "ppo"
    setting: str = ""  # symrl: backend/vec_env key; SB3: ""


SYMRL_SETTINGS = {"sync": ("gymnasium", "sync"), "async": ("gymnasium", "async"), "envpool": ("envpool", "sync")}


def ppo_contestants(threads: list[int]) -> list[Contestant]:
    out = []
    for n in threads:
        out.append(Contestant(f"sb3_ppo_t{n}", "train", "sb3", f"SB3 PPO CnnPolicy, DummyVecEnv, {n} torch thread(s)",
                              n, SB3Runner))
        for key, (backend, vec) in SYMRL_SETTINGS.items():
            out.append(Contestant(f"symrl_ppo_{key}_t{n}", "train", "symrl",
                                  f"symrl PPO, {backend} {vec if backend == 'gymnasium' else ''} env, {n} torch thread(s)",
                                  n, (lambda b, be=backend, ve=vec: SymrlRunner(b, "ppo", be, ve)), "ppo", key))
    return out


def sppo_twin_name(sppo: Contestant) -> str:
    return sppo.name.replace("symrl_sppo", "symrl_ppo")


def sppo_contestant(twin: Contestant, b: AtariBench) -> Contestant:
    backend, vec = SYMRL_SETTINGS[twin.setting]
    return Contestant(twin.name.replace("symrl_ppo", "symrl_sppo"), "train", "symrl",
                      f"symrl SPPO alpha={b.sppo_alpha} beta={b.sppo_beta}, same setting as {twin.name}", twin.threads,
                      (lambda b, be=backend, ve=vec: SymrlRunner(b, "sppo", be, ve)), "sppo", twin.setting)


def env_contestants() -> list[Contestant]:
    return [Contestant("env_gym_sync", "env", "env", "random actions, Gymnasium SyncVectorEnv (symrl's)", 1,
                       lambda b: RandomActionRunner(b, "gym_sync")),
            Contestant("env_gym_async", "env", "env", "random actions, Gymnasium AsyncVectorEnv (symrl's)", 1,
                       lambda b: RandomActionRunner(b, "gym_async")),
            Contestant("env_envpool", "env", "env", "random actions, envpool via symrl's EnvpoolAtari", 1,
                       lambda b: RandomActionRunner(b, "envpool")),
            Contestant("env_sb3_dummy", "env", "env",
                       "random actions, SB3 DummyVecEnv + AtariWrapper + VecFrameStack + VecTransposeImage", 1,
                       lambda b: RandomActionRunner(b, "sb3"))]


ENV_OF = {"sb3": "env_sb3_dummy", "sync": "env_gym_sync", "async": "env_gym_async", "envpool": "env_envpool"}


def measure(c: Contestant, b: AtariBench, reference: dict[str, Any] | None,
            settings_log: dict[str, Any]) -> dict[str, Any]:
    """Build (untimed), read its settings back and compare, warm up (untimed), time."""
    torch.set_num_threads(c.threads)
    t_build = time.perf_counter()
    runner = c.build(b)
    build_s = time.perf_counter() - t_build
    try:
        if c.kind == "train" and c.name not in settings_log:
            s = runner.settings()
            if reference is not None:
                d = diff_settings(reference, s)
                if d:
                    raise SystemExit(f"{c.name}: settings differ from the reference (sb3_ppo): {d}")
            settings_log[c.name] = {"settings": s, "env_semantics": runner.env_semantics(),
                                    c.library: runner.symrl_only() if c.library == "symrl" else runner.sb3_only()}
        runner.iterate(b.warmup_rollouts)
        torch.set_num_threads(c.threads)  # in case a library changed it
        with CpuMeter() as meter:
            collect_s, update_s = runner.iterate(b.timed_rollouts)
            threads_in_force = torch.get_num_threads()
    finally:
        runner.close()
    row = meter.row(b.timed_rollouts * b.rollout_steps)
    row.update(build_s=build_s, torch_threads=threads_in_force)
    if c.kind == "train":
        row.update(collect_s=collect_s, update_s=update_s)
    return row


def measure_pair(ppo: Contestant, sppo: Contestant, b: AtariBench, reference: dict[str, Any] | None,
                 settings_log: dict[str, Any], sppo_first: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """PPO and SPPO on the same setting, both built and warmed up, then their timed iterations
    interleaved A B B A ... (B A A B ... with ``sppo_first``), each iteration metered on its own;
    returns one row per algorithm, summed over its iterations. SPPO's settings must equal PPO's."""
    torch.set_num_threads(ppo.threads)
    runners = {"ppo": ppo.build(b), "sppo": None}
    try:
        runners["sppo"] = sppo.build(b)
        s_ppo, s_sppo = runners["ppo"].settings(), runners["sppo"].settings()
        for d in (diff_settings(s_ppo, s_sppo), diff_settings(reference, s_sppo) if reference else {}):
            if d:
                raise SystemExit(f"{sppo.name}: settings differ from {ppo.name} / the reference beyond the loss: {d}")
        settings_log.setdefault(sppo.name, {"settings": s_sppo, "env_semantics": runners["sppo"].env_semantics(),
                                            "symrl": runners["sppo"].symrl_only()})
        for r in runners.values():
            r.iterate(b.warmup_rollouts)
        first, second = ("sppo", "ppo") if sppo_first else ("ppo", "sppo")
        slots = [(first, second), (second, first)] * b.timed_rollouts
        order = [name for pair in slots[:b.timed_rollouts] for name in pair]
        acc = {name: {"wall": 0.0, "tree": 0.0, "proc": 0.0, "others": 0.0, "steal": 0.0, "psi": 0.0,
                      "collect": 0.0, "update": 0.0} for name in runners}
        torch.set_num_threads(ppo.threads)
        for name in order:
            with CpuMeter() as m:
                c, u = runners[name].iterate(1)
            a = acc[name]
            a["wall"] += m.wall
            a["tree"] += m.tree_cpu
            a["proc"] += m.proc_cpu
            a["others"] += m.others_cores * m.wall
            a["steal"] += m.steal_cores * m.wall
            a["psi"] += (m.psi_some or 0.0) * m.wall
            a["collect"] += c
            a["update"] += u
    finally:
        for r in runners.values():
            if r is not None:
                r.close()
    rows = []
    steps = b.timed_rollouts * b.rollout_steps
    for name in ("ppo", "sppo"):
        a = acc[name]
        rows.append({"steps": steps, "wall_s": a["wall"], "cpu_s": a["tree"], "main_process_cpu_s": a["proc"],
                     "wall_sps": steps / a["wall"], "cpu_sps": steps / max(a["tree"], 1e-9),
                     "own_cores": a["tree"] / a["wall"], "others_cores": a["others"] / a["wall"],
                     "steal_cores": a["steal"] / a["wall"], "psi_some": a["psi"] / a["wall"],
                     "loadavg_1m_after": os.getloadavg()[0], "torch_threads": torch.get_num_threads(),
                     "collect_s": a["collect"], "update_s": a["update"], "interleaved_order": order})
    return rows[0], rows[1]


def order_for(items: list, rep: int) -> list:
    """Repeat 0: as listed; 1: reversed; 2: rotated by one; 3: that reversed; ..."""
    k = (rep // 2) % len(items)
    base = items[k:] + items[:k]
    return base[::-1] if rep % 2 else base


# ---------------------------------------------------------------------------- profile

class PhaseTimers:
    """Accumulated wall and process-CPU time per labelled phase."""

    def __init__(self):
        self.t: dict[str, list[float]] = {}

    def wrap(self, label: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc = self.t.setdefault(label, [0.0, 0.0, 0])
                acc[0] += time.perf_counter() - w0
                acc[1] += time.process_time() - c0
                acc[2] += 1
        return timed

    def get(self, label: str) -> tuple[float, float, int]:
        return tuple(self.t.get(label, [0.0, 0.0, 0]))  # type: ignore[return-value]


class _TimedSnapshot:
    def __init__(self, snap, timed_call):
        self._snap, self._call = snap, timed_call
        self.std = snap.std

    def __call__(self, obs):
        return self._call(obs)


def profile_iteration(b: AtariBench, setting: str, threads: int, op_profile: bool, reps: int,
                      thread_counts: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """One symrl PPO iteration (after a warm-up) with timers around collect / advantages / update
    and, inside the update, forward / loss / backward / grad clip / Adam; optionally the update's
    operators by self CPU time (torch.profiler)."""
    import symrl.algos.update as update_mod

    torch.set_num_threads(threads)
    backend, vec = SYMRL_SETTINGS[setting]
    runner = SymrlRunner(b, "ppo", backend, vec)
    tr = runner.trainer
    try:
        runner.iterate(b.warmup_rollouts)
        pt = PhaseTimers()
        orig = {"step": tr.envs.step, "snap": tr.model.inference_snapshot, "adv": tr.advantages,
                "olp": tr.old_log_probs, "rule": tr.update_rule, "fwd": tr.model.forward,
                "loss": update_mod.symmetric_loss, "bwd": torch.Tensor.backward,
                "clip": tr.flat.clip_grad_norm_, "zero": tr.flat.zero_grad, "opt": tr.optimizer.step}
        tr.envs.step = pt.wrap("collect: env.step", orig["step"])
        tr.model.inference_snapshot = lambda: (lambda s: _TimedSnapshot(s, pt.wrap("collect: policy forward (acting)", s)))(orig["snap"]())
        tr.advantages = pt.wrap("learn: GAE", orig["adv"])
        tr.old_log_probs = pt.wrap("learn: old log-probs", orig["olp"])
        tr.update_rule = pt.wrap("learn: update (total)", orig["rule"])
        tr.model.forward = pt.wrap("update: forward (CNN + heads)", orig["fwd"])
        update_mod.symmetric_loss = pt.wrap("update: loss", orig["loss"])
        torch.Tensor.backward = pt.wrap("update: backward", orig["bwd"])
        tr.flat.clip_grad_norm_ = pt.wrap("update: clip grad norm", orig["clip"])
        tr.flat.zero_grad = pt.wrap("update: zero_grad", orig["zero"])
        tr.optimizer.step = pt.wrap("update: Adam step", orig["opt"])
        try:
            collect_fn, learn_fn = pt.wrap("collect (total)", tr.collect), pt.wrap("learn (total)", tr.learn)
            with CpuMeter() as meter:
                collect_fn()
                stats = learn_fn()
                _ = {k: float(v) for k, v in stats.items()}
            frozen = copy.deepcopy(pt.t)  # the op-profiled iteration below must not add to the timers
            ops = None
            if op_profile:
                tr.collect()
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    tr.learn()
                ops = op_breakdown(prof)
            pt.t = frozen
        finally:
            torch.Tensor.backward = orig["bwd"]
            update_mod.symmetric_loss = orig["loss"]
            tr.envs.__dict__.pop("step", None)
            for name in ("inference_snapshot", "forward"):
                tr.model.__dict__.pop(name, None)
            for name in ("advantages", "old_log_probs", "update_rule"):
                tr.__dict__.pop(name, None)
            tr.flat.__dict__.pop("clip_grad_norm_", None)
            tr.flat.__dict__.pop("zero_grad", None)
            tr.optimizer.__dict__.pop("step", None)
        kernels = kernel_microbench(tr, threads, reps, thread_counts) if thread_counts else None
    finally:
        runner.close()
    total_w = meter.wall
    phases: dict[str, Any] = {}

    def put(label: str, wall: float, cpu: float, calls: int | None = None) -> None:
        phases[label] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "share_of_iteration": round(wall / total_w, 4),
                         **({"calls": calls} if calls is not None else {})}

    cw, cc, _ = pt.get("collect (total)")
    put("collect (total)", cw, cc)
    sub_w = sub_c = 0.0
    for label in ("collect: env.step", "collect: policy forward (acting)"):
        w, c, n = pt.get(label)
        put(label, w, c, n)
        sub_w, sub_c = sub_w + w, sub_c + c
    put("collect: other (buffer writes, sampling, reward/life bookkeeping)", cw - sub_w, cc - sub_c)
    lw, lc, _ = pt.get("learn (total)")
    put("learn (total)", lw, lc)
    uw, uc, _ = pt.get("learn: update (total)")
    pre_w, pre_c = lw - uw, lc - uc
    for label in ("learn: GAE", "learn: old log-probs"):
        w, c, n = pt.get(label)
        put(label, w, c, n)
        pre_w, pre_c = pre_w - w, pre_c - c
    put("learn: other (rollout to tensors, flatten, stats)", pre_w, pre_c)
    put("learn: update (total)", uw, uc)
    in_w, in_c = uw, uc
    for label in ("update: forward (CNN + heads)", "update: loss", "update: backward", "update: clip grad norm",
                  "update: Adam step", "update: zero_grad"):
        w, c, n = pt.get(label)
        put(label, w, c, n)
        in_w, in_c = in_w - w, in_c - c
    put("update: other (shuffle gather, log-prob/entropy, adv. normalization, summary)", in_w, in_c)
    return {"setting": setting, "threads": threads, "iteration_wall_s": total_w, "iteration_sps": b.rollout_steps / total_w,
            "contention": {k: getattr(meter, k) for k in ("others_cores", "steal_cores", "psi_some")},
            "own_cores": meter.tree_cpu / meter.wall, "phases": phases, "update_ops_by_self_cpu": ops,
            "kernels": kernels}


def sppo_update_cost(b: AtariBench, setting: str) -> dict[str, Any]:
    """The update (``learn``) of PPO and of SPPO on the same rollout and the same starting weights,
    1 thread, process-CPU seconds, in the order PPO, SPPO, SPPO, PPO after one untimed learn each:
    the loss is the only difference, so this isolates its cost from env and load noise."""
    torch.set_num_threads(1)
    backend, vec = SYMRL_SETTINGS[setting]
    ppo_r, sppo_r = SymrlRunner(b, "ppo", backend, vec), SymrlRunner(b, "sppo", backend, vec)
    try:
        tp, ts = ppo_r.trainer, sppo_r.trainer
        tp.collect()
        ts.buffer, ts.last_values = tp.buffer, tp.last_values
        ts.model.load_state_dict(tp.model.state_dict())
        cpu: dict[str, list[float]] = {"ppo": [], "sppo": []}
        with CpuMeter() as meter:
            for i, (name, t) in enumerate([("ppo", tp), ("sppo", ts), ("ppo", tp), ("sppo", ts), ("sppo", ts), ("ppo", tp)]):
                c0 = time.process_time()
                t.learn()
                if i >= 2:
                    cpu[name].append(time.process_time() - c0)
    finally:
        ppo_r.close()
        sppo_r.close()
    return {"setting": setting, "threads": 1, "learn_cpu_s": cpu,
            "sppo_over_ppo_cpu": statistics.mean(cpu["sppo"]) / statistics.mean(cpu["ppo"]),
            "others_cores": meter.others_cores}


def op_group(key: str) -> str:
    """Which part of the update an operator (or autograd node) belongs to, by its name."""
    k = key.lower()
    if "conv" in k:
        return "conv backward" if "backward" in k else "conv forward"
    if any(x in k for x in ("addmm", "aten::mm", "mmbackward", "aten::linear", "matmul", "tbackward")):
        return "linear (fc 3136->512, heads) fwd/bwd"
    if any(x in k for x in ("relu", "threshold_backward", "clamp_min")):
        return "relu fwd/bwd"
    if k in ("aten::index", "indexbackward0"):
        return "shuffle gather (batch[order])"
    if k in ("aten::lerp_", "aten::addcmul_", "aten::addcdiv_", "aten::sqrt", "aten::linalg_vector_norm",
             "aten::clamp", "aten::mul_", "aten::zero_", "aten::add_", "aten::div_"):
        return "Adam, grad clip, zero_grad (flat, elementwise)"
    if k in ("aten::to", "aten::_to_copy", "aten::copy_", "aten::div", "divbackward0"):
        return "uint8->float copy, /255"
    return "other ops (loss, softmax, log-probs, autograd bookkeeping)"


def op_breakdown(prof) -> dict[str, Any]:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for e in events:
        g = op_group(e.key)
        groups[g] = groups.get(g, 0.0) + e.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return {"total_self_cpu_s": total / 1e6,
            "groups_share": {k: round(v / total, 4) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
            "top_ops": [{"op": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 4), "calls": e.count,
                         "share": round(e.self_cpu_time_total / total, 4)} for e in top]}


def conv_layer_bench(model: nn.Module, batch: int, reps: int) -> list[dict[str, Any]]:
    """Each conv layer of the trunk alone on a minibatch (1 thread): forward, and forward + backward
    (weight and bias gradients; input gradients except for the first layer, as in training), in
    the default NCHW layout and in channels_last. Process-CPU milliseconds, median of ``reps``."""
    import torch.nn.functional as F

    torch.set_num_threads(1)
    x = torch.rand(batch, *model.trunk[0].weight.shape[1:2], 84, 84)
    rows = []
    for conv in (m for m in model.trunk if isinstance(m, nn.Conv2d)):
        row: dict[str, Any] = {"layer": describe_layers([conv])[0]}
        for fmt_name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            xi = x.detach().contiguous(memory_format=fmt).requires_grad_(conv is not model.trunk[0])
            w = conv.weight.detach().clone().contiguous(memory_format=fmt).requires_grad_()
            bias = conv.bias.detach().clone().requires_grad_()
            y = F.conv2d(xi, w, bias, conv.stride)
            g = torch.randn_like(y)
            wrt = [w, bias] + ([xi] if xi.requires_grad else [])

            def cpu_ms(fn) -> float:
                fn()
                ts = []
                for _ in range(reps):
                    c0 = time.process_time()
                    fn()
                    ts.append(time.process_time() - c0)
                return round(1000 * statistics.median(ts), 2)

            row[f"{fmt_name}_fwd_ms"] = cpu_ms(lambda: F.conv2d(xi, w, bias, conv.stride))
            row[f"{fmt_name}_fwd_bwd_ms"] = cpu_ms(lambda: torch.autograd.grad(F.conv2d(xi, w, bias, conv.stride), wrt, g))
        rows.append(row)
        x = torch.relu(y.detach()).contiguous()
    return rows


def cnn_flops(model: nn.Module, obs_shape: tuple[int, ...]) -> dict[str, float]:
    """Multiply-adds x 2 per sample of the forward pass, and of a training step (forward + backward:
    weight gradients everywhere, input gradients for every layer but the first)."""
    fwd, first_layer = 0.0, None
    x = torch.zeros(1, *obs_shape)
    counts = []
    for m in list(model.trunk) + [model.actor, model.critic]:
        if m is model.actor or m is model.critic:
            counts.append(2.0 * m.in_features * m.out_features)
            continue
        y = m(x)
        if isinstance(m, nn.Conv2d):
            counts.append(2.0 * y.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, nn.Linear):
            counts.append(2.0 * m.in_features * m.out_features)
        x = y
    fwd = sum(counts)
    first_layer = counts[0]
    return {"forward_flop_per_sample": fwd, "train_flop_per_sample": fwd + fwd + (fwd - first_layer)}


def kernel_microbench(tr: OnPolicyTrainer, threads: int, reps: int = 4,
                      thread_counts: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """The update's and acting's building blocks alone, at 1 and 2 threads: one full gradient step
    on a minibatch of 256 (symrl's gradient_step), and the trunk+heads forward on 8 observations;
    plus fwd+bwd of a plain copy of the network in channels_last memory format (a candidate speedup).
    Times are medians of ``reps`` after one untimed call; CPU time is recorded next to wall time."""
    from symrl.algos.update import gradient_step

    cfg = tr.cfg
    rollout = tr.buffer.tensors(tr.device)
    adv, ret = tr.advantages(rollout)
    from symrl.buffer import flatten
    batch = flatten(rollout, tr.old_log_probs(rollout), adv, ret)
    mb = {k: v[:cfg.batch_size] for k, v in batch.items()}
    settings = tr.settings()
    obs8 = np.ascontiguousarray(tr.buffer.obs[0])
    snap = tr.model.inference_snapshot()
    plain = copy.deepcopy(tr.model)  # deep copy: own parameters, not views into the flat buffer
    plain_cl = copy.deepcopy(tr.model).to(memory_format=torch.channels_last)
    obs_f = mb["obs"]

    def fwd_bwd(model, obs):
        dist, v = model(obs)
        loss = dist.log_prob(mb["actions"]).mean() + v.mean()
        model.zero_grad(set_to_none=False)
        loss.backward()

    obs_cl = obs_f.contiguous(memory_format=torch.channels_last)
    cases = {
        "gradient_step_mb256 (symrl: fwd+bwd+clip+Adam)": lambda: gradient_step(tr.model, tr.flat, tr.optimizer, mb, settings, tr.noise_gen),
        "fwd_bwd_mb256 (plain copy, contiguous NCHW)": lambda: fwd_bwd(plain, obs_f),
        "fwd_bwd_mb256 (plain copy, channels_last)": lambda: fwd_bwd(plain_cl, obs_cl),
        "act_forward_8obs (TorchSnapshot)": lambda: snap(obs8),
    }
    out: dict[str, Any] = {"note": "median of %d calls (cases interleaved) after one warm-up call each; "
                                   "wall and process-CPU seconds" % reps}
    for n in thread_counts:
        torch.set_num_threads(n)
        meter = CpuMeter().__enter__()
        for fn in cases.values():
            fn()
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(reps):  # the cases interleaved, so that drifting load hits them alike
            for name, fn in cases.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append((time.perf_counter() - w0, time.process_time() - c0))
        for name, ts in times.items():
            out[f"{name} @ {n} thread(s)"] = {"wall_s": statistics.median(t[0] for t in ts),
                                              "cpu_s": statistics.median(t[1] for t in ts)}
        meter.__exit__(None, None, None)
        out[f"contention @ {n} thread(s)"] = {"others_cores": meter.others_cores, "psi_some": meter.psi_some,
                                              "own_cores": meter.tree_cpu / meter.wall}
    meter = CpuMeter().__enter__()
    out["conv_layers @ 1 thread"] = conv_layer_bench(tr.model, cfg.batch_size, reps)
    meter.__exit__(None, None, None)
    out["contention @ conv_layers"] = {"others_cores": meter.others_cores, "psi_some": meter.psi_some}
    torch.set_num_threads(threads)
    flops = cnn_flops(tr.model, tuple(obs_f.shape[1:]))
    out["flops"] = flops
    per_mb = cfg.batch_size * flops["train_flop_per_sample"]
    for n in thread_counts:
        step = out[f"gradient_step_mb256 (symrl: fwd+bwd+clip+Adam) @ {n} thread(s)"]["wall_s"]
        out[f"achieved_GFLOPs_gradient_step @ {n} thread(s)"] = per_mb / step / 1e9
    # the compute floor of one iteration = (n_epochs * minibatches) gradient steps + n_steps acting forwards
    n_grad = cfg.n_epochs * (cfg.n_envs * cfg.n_steps // cfg.batch_size)
    for n in thread_counts:
        g = out[f"gradient_step_mb256 (symrl: fwd+bwd+clip+Adam) @ {n} thread(s)"]["wall_s"]
        a = out[f"act_forward_8obs (TorchSnapshot) @ {n} thread(s)"]["wall_s"]
        out[f"compute_floor_s_per_iteration @ {n} thread(s)"] = {"gradient_steps": n_grad * g, "acting": cfg.n_steps * a,
                                                                 "total": n_grad * g + cfg.n_steps * a,
                                                                 "max_sps_if_env_free": cfg.n_envs * cfg.n_steps / (n_grad * g + cfg.n_steps * a)}
    return out


# ---------------------------------------------------------------------------- report

QUIET_OTHERS = 0.25  # a measurement is "quiet" when other processes used at most this many cores


def summarize(results: dict[str, list[dict]], contestants: dict[str, Contestant], sppo_pair: tuple[str, str] | None,
              sppo_pairs: dict[int, tuple[dict, dict]], threads: list[int]) -> tuple[dict, dict]:
    medians = {name: {m: statistics.median(r[m] for r in reps) for m in
                      ("wall_sps", "cpu_sps", "own_cores", "others_cores", "steal_cores")}
               for name, reps in results.items() if reps}
    for name, reps in results.items():
        quiet = [r["wall_sps"] for r in reps if r["others_cores"] <= QUIET_OTHERS]
        if name in medians:
            medians[name]["quiet_wall_sps"] = statistics.median(quiet) if quiet else None
            medians[name]["quiet_n"] = len(quiet)
    for name, reps in results.items():
        psis = [r["psi_some"] for r in reps if r.get("psi_some") is not None]
        if name in medians:
            medians[name]["psi_some"] = statistics.median(psis) if psis else None
            if contestants[name].kind == "train":
                medians[name]["update_share"] = statistics.median(r["update_s"] / r["wall_s"] for r in reps)
    pairs = []
    for n in threads:
        den = f"sb3_ppo_t{n}"
        for key in SYMRL_SETTINGS:
            pairs.append((f"symrl_ppo_{key}_t{n} / {den}", f"symrl_ppo_{key}_t{n}", den, None))
    for key in SYMRL_SETTINGS:
        if 1 in threads and 2 in threads:
            pairs.append((f"symrl_ppo_{key}_t2 / symrl_ppo_{key}_t1 (2nd thread)", f"symrl_ppo_{key}_t2", f"symrl_ppo_{key}_t1", None))
    if 1 in threads and 2 in threads:
        pairs.append(("sb3_ppo_t2 / sb3_ppo_t1 (2nd thread)", "sb3_ppo_t2", "sb3_ppo_t1", None))
    best_symrl = {n: max((f"symrl_ppo_{k}_t{n}" for k in SYMRL_SETTINGS if results.get(f"symrl_ppo_{k}_t{n}")),
                         key=lambda x: medians[x]["wall_sps"], default=None) for n in threads}
    if len(threads) > 1:
        best_any = max((v for v in best_symrl.values() if v), key=lambda x: medians[x]["wall_sps"], default=None)
        best_sb3 = max((f"sb3_ppo_t{n}" for n in threads if results.get(f"sb3_ppo_t{n}")),
                       key=lambda x: medians[x]["wall_sps"], default=None)
        if best_any and best_sb3:
            pairs.append((f"best symrl ({best_any}) / best SB3 ({best_sb3})", best_any, best_sb3, 2.0))
    ratios = {}
    rows_of = {name: {r["repeat"]: r for r in reps} for name, reps in results.items()}
    if sppo_pair and sppo_pairs:
        pairs.append((f"{sppo_pair[0]} / {sppo_pair[1]} (interleaved pairs)", sppo_pair[0], sppo_pair[1], 0.95))
    for label, num, den, target in pairs:
        if sppo_pair and (num, den) == sppo_pair and sppo_pairs:
            matched = [(s_, p) for p, s_ in sppo_pairs.values()]  # (numerator row, denominator row)
        elif results.get(num) and results.get(den):
            matched = [(r, rows_of[den][rep]) for rep, r in rows_of[num].items() if rep in rows_of[den]]
        else:
            continue
        entry: dict[str, Any] = {"numerator": num, "denominator": den}
        for metric in ("wall_sps", "cpu_sps"):
            paired = [n[metric] / d[metric] for n, d in matched]
            entry[metric] = {"per_repeat": paired, "median_of_paired": statistics.median(paired) if paired else None,
                             "ratio_of_medians": statistics.median(n[metric] for n, _ in matched)
                                                 / statistics.median(d[metric] for _, d in matched)}
        quiet = [n["wall_sps"] / d["wall_sps"] for n, d in matched
                 if n["others_cores"] <= QUIET_OTHERS and d["others_cores"] <= QUIET_OTHERS]
        entry["wall_sps"]["quiet_pairs"] = quiet
        entry["wall_sps"]["median_of_quiet_pairs"] = statistics.median(quiet) if quiet else None
        entry["others_cores_per_pair"] = [[round(n["others_cores"], 2), round(d["others_cores"], 2)] for n, d in matched]
        if target is not None:
            entry["target_min"] = target
            entry["meets_target"] = (entry["wall_sps"]["median_of_paired"] or 0) >= target
        ratios[label] = entry
    return medians, ratios


def print_table(results, medians, ratios, contestants) -> None:
    print()
    header = (f"{'contestant':<22}{'thr':>4}{'SPS med':>9}{'min':>7}{'max':>7}{'quiet (n)':>11}{'CPU-SPS':>9}{'upd %':>7}"
              f"{'env %':>7}{'own cores':>10}{'others':>8}{'PSI':>6}")
    print(header)
    print("-" * len(header))
    for name, reps in results.items():
        if not reps:
            continue
        c = contestants[name]
        wall = [r["wall_sps"] for r in reps]
        m = medians[name]
        env_name = ENV_OF.get("sb3" if c.library == "sb3" else c.setting)
        floor = medians.get(env_name, {}).get("wall_sps") if c.kind == "train" else None
        env_share = f"{100 * m['wall_sps'] / floor:.0f}" if floor else ""
        upd = f"{100 * m['update_share']:.0f}" if m.get("update_share") is not None else ""
        psi = f"{m['psi_some']:.2f}" if m.get("psi_some") is not None else ""
        quiet = f"{m['quiet_wall_sps']:.0f} ({m['quiet_n']})" if m.get("quiet_wall_sps") else "- (0)"
        print(f"{name:<22}{c.threads:>4}{m['wall_sps']:>9.0f}{min(wall):>7.0f}{max(wall):>7.0f}{quiet:>11}{m['cpu_sps']:>9.0f}"
              f"{upd:>7}{env_share:>7}{m['own_cores']:>10.2f}{m['others_cores']:>8.2f}{psi:>6}")
    print("\n(SPS: env steps/s of wall time over whole iterations; CPU-SPS: per CPU-second of our process tree;"
          "\n upd %: share of wall time in the update; env %: training SPS / raw SPS of the same vector env;"
          "\n own cores / others: cores' worth of CPU used by our process tree / by every other process"
          "\n during the measurement (2 cores in all); PSI: share of time some task waited for a CPU;"
          f"\n quiet (n): median SPS over the n measurements where others used <= {QUIET_OTHERS} cores)\n")
    for label, r in ratios.items():
        q = r["wall_sps"]["median_of_quiet_pairs"]
        print(ratio_line(label, r, 62, extra=f"  quiet {'-' if q is None else f'{q:.3f}'} "
                                             f"({len(r['wall_sps']['quiet_pairs'])})"))


def print_profile(p: dict[str, Any]) -> None:
    print(f"\nprofile: symrl PPO {p['setting']} at {p['threads']} thread(s): one iteration {p['iteration_wall_s']:.2f}s "
          f"({p['iteration_sps']:.0f} SPS; others used {p['contention']['others_cores']:.2f} cores)")
    for label, v in p["phases"].items():
        indent = "    " if ":" in label else "  "
        print(f"{indent}{label:<78}{v['wall_s']:>8.3f}s {100 * v['share_of_iteration']:>5.1f}%")
    if p.get("update_ops_by_self_cpu"):
        print("  update operators by self CPU time:")
        for k, v in p["update_ops_by_self_cpu"]["groups_share"].items():
            print(f"    {k:<50}{100 * v:>6.1f}%")
    k = p["kernels"] or {}
    for row in k.get("conv_layers @ 1 thread", []):
        print(f"  {row['layer']:<24} fwd+bwd ms (1 thread, CPU): NCHW {row['nchw_fwd_bwd_ms']:7.1f}  "
              f"channels_last {row['channels_last_fwd_bwd_ms']:7.1f}   (fwd {row['nchw_fwd_ms']:.1f} / {row['channels_last_fwd_ms']:.1f})")
    for key, v in k.items():
        if isinstance(v, dict) and "wall_s" in v:
            print(f"  {key:<70}{1000 * v['wall_s']:>8.1f} ms (cpu {1000 * v['cpu_s']:.1f})")
    for key, v in k.items():
        if key.startswith("contention @"):
            print(f"  {key:<70} others used {v['others_cores']:.2f} cores")
    for key, v in k.items():
        if key.startswith("achieved"):
            print(f"  {key:<70}{v:>8.1f}")
        if key.startswith("compute_floor"):
            print(f"  {key:<70}{v['total']:>8.2f}s -> at most {v['max_sps_if_env_free']:.0f} SPS if the env were free")


def machine_info() -> dict[str, Any]:
    commit, dirty = git_state()
    import ale_py
    import cv2
    try:
        import envpool
        envpool_version = envpool.__version__
    except ImportError:
        envpool_version = None
    try:
        flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags"))
        simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except (OSError, StopIteration):
        simd = None
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": cpu_model(),
            "simd_flags": simd, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_default_threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(), "stable_baselines3": stable_baselines3.__version__,
            "gymnasium": gym.__version__, "ale_py": ale_py.__version__, "envpool": envpool_version,
            "opencv": cv2.__version__, "opencv_threads": cv2.getNumThreads(), "numpy": np.__version__,
            "symrl_git_commit": commit, "symrl_worktree_dirty": dirty, "loadavg_at_start": os.getloadavg()}


IMPLEMENTATION_NOTES = [
    "Same network (Nature CNN trunk shared by a 6-way categorical head and a value head, orthogonal init "
    "sqrt(2)/0.01/1, zero biases, uint8 frames / 255) and the same PPO math in both (checked from the built objects).",
    "symrl acts through TorchSnapshot (torch inference_mode on the live weights, NumPy in/out) and draws the "
    "rollout's Gumbel noise up front; SB3 runs policy.forward under no_grad per step, with its callbacks.",
    "symrl steps Adam (FlatAdam, torch's single-tensor Adam arithmetic) on one flat parameter buffer and clips "
    "the flat gradient; SB3 uses torch.optim.Adam and nn.utils.clip_grad_norm_ per tensor.",
    "Environment semantics (read back below, 'env_semantics_differences'): on the Gymnasium backend symrl's "
    "AtariFrameStack follows SB3's AtariWrapper + VecFrameStack (FIRE after resets and lost lives, a zero-filled "
    "stack restarted after a lost life's no-op step) but keeps playing after a lost life and applies episodic "
    "life and reward clipping in the trainer (raw env, full-game scores); envpool runs without FIRE and life "
    "restarts (it cannot restart its stack). Pong has no lives, so episodic life changes nothing here.",
    "symrl ALE/Pong-v5 is built with frameskip=1, repeat_action_probability=0 and a 108,000-frame cap (v4 "
    "semantics), which SB3 gets from PongNoFrameskip-v4.",
]


def env_differences(settings_log: dict[str, Any]) -> dict[str, Any]:
    """Env semantics of each symrl setting against SB3's, key by key (expected differences, not failures)."""
    ref_name = next((n for n in settings_log if n.startswith("sb3")), None)
    if ref_name is None:
        return {}
    ref = settings_log[ref_name]["env_semantics"]
    keys = ("noop_max", "frame_skip", "max_pool_last_two_frames", "screen_size", "grayscale", "frame_stack",
            "repeat_action_probability", "max_num_frames_per_episode", "n_actions", "fire_reset", "episodic_life",
            "clip_reward", "autoreset", "frame_stack_padding", "resize")
    out = {}
    for name, entry in settings_log.items():
        if name.startswith("symrl"):
            sem = entry["env_semantics"]
            out[name] = {k: {"sb3": ref.get(k), "symrl": sem.get(k)} for k in keys
                         if k in sem and not _same(ref.get(k), sem.get(k))}
    return out


# ---------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="measurements per contestant (order alternates)")
    p.add_argument("--rollouts", type=int, default=None, help="timed iterations per measurement (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test (< 2 min): 1 thread, 1 timed iteration, no warm-up, 1 repeat, timers-only profile")
    p.add_argument("--threads", default=None, help="comma-separated torch thread counts (default 1,2; --quick: 1)")
    p.add_argument("--sppo-on", default="auto",
                   help="symrl setting for SPPO vs PPO, e.g. envpool_t1; auto: the fastest symrl PPO of repeat 1")
    p.add_argument("--no-profile", action="store_true", help="skip the profile of one symrl iteration")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = p.parse_args(argv)
    args.threads = [int(x) for x in (args.threads or ("1" if args.quick else "1,2")).split(",")]
    if args.repeats < 1 or (args.rollouts is not None and args.rollouts < 1) or any(t < 1 for t in args.threads):
        p.error("--repeats, --rollouts and --threads must be >= 1")
    if args.out is None:
        args.out = RESULTS / ("atari_throughput_quick.json" if args.quick else "atari_throughput.json")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    b = AtariBench()
    if args.quick:
        b = replace(b, timed_rollouts=1, warmup_rollouts=0)
    if args.rollouts is not None:
        b = replace(b, timed_rollouts=args.rollouts)
    repeats = 1 if args.quick else args.repeats
    preset = check_preset(b)

    ppo = ppo_contestants(args.threads)
    envs = env_contestants()
    contestants = {c.name: c for c in ppo + envs}
    sppo: Contestant | None = None
    if args.sppo_on != "auto":
        twin = contestants.get(f"symrl_ppo_{args.sppo_on}")
        if twin is None:
            raise SystemExit(f"--sppo-on: unknown setting {args.sppo_on!r}; allowed: "
                             f"{', '.join(c.name[len('symrl_ppo_'):] for c in ppo if c.library == 'symrl')}")
        sppo = sppo_contestant(twin, b)
        contestants[sppo.name] = sppo

    report: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv], "quick": args.quick, "repeats": repeats, "threads": args.threads,
        "machine": machine_info(), "method": __doc__.split("\n\n", 2)[2].strip(), "bench": asdict(b),
        "budget": {"warmup_rollouts": b.warmup_rollouts, "timed_rollouts": b.timed_rollouts,
                   "rollout_steps": b.rollout_steps, "timed_steps": b.timed_rollouts * b.rollout_steps},
        "preset_check": preset, "implementation_notes": IMPLEMENTATION_NOTES,
    }
    print(f"Pong PPO: {b.n_envs} envs x {b.n_steps} steps, {b.n_epochs} epochs, minibatch {b.batch_size}; timing "
          f"{b.timed_rollouts} x {b.rollout_steps} steps after {b.warmup_rollouts} warm-up iteration(s), "
          f"{repeats} repeat(s), torch threads {args.threads}", flush=True)

    results: dict[str, list[dict]] = {name: [] for name in contestants}
    settings_log: dict[str, Any] = {}
    reference: dict[str, Any] | None = None

    def run_one(c: Contestant, rep: int, position: int) -> None:
        nonlocal reference
        row = measure(c, b, reference, settings_log)
        if reference is None and c.library == "sb3":
            reference = settings_log[c.name]["settings"]
        row.update(repeat=rep, position=position)
        results.setdefault(c.name, []).append(row)
        extra = f", update {row['update_s'] / row['wall_s']:.0%}" if "update_s" in row else ""
        print(f"  repeat {rep + 1}/{repeats} {c.name:<22} {row['wall_sps']:>7.0f} steps/s (cpu-sps {row['cpu_sps']:.0f}, "
              f"{row['wall_s']:.1f}s, own {row['own_cores']:.2f} cores, others {row['others_cores']:.2f}{extra})",
              flush=True)

    # the lineup starts with SB3, whose settings become the reference every later agent is checked against
    # SPPO against PPO: one paired measurement per repeat (measure_pair), both agents alive at once
    # and their timed iterations interleaved, so the pair sees the same load; sppo_pairs[rep] = (PPO
    # row, SPPO row). The PPO row of a pair is not part of the PPO medians.
    sppo_pairs: dict[int, tuple[dict, dict]] = {}
    for rep in range(repeats):
        order = order_for(list(ppo) + list(envs), rep)
        for position, c in enumerate(order):
            run_one(c, rep, position)
        if sppo is None:
            # --sppo-on auto: the fastest symrl PPO setting of repeat 1 (judged on its uncontended
            # measurements where there are any)
            def speed(c: Contestant) -> float:
                rows = results[c.name]
                quiet = [r["wall_sps"] for r in rows if r["others_cores"] <= QUIET_OTHERS]
                return statistics.median(quiet or [r["wall_sps"] for r in rows])
            best = max((c for c in ppo if c.library == "symrl" and results[c.name]), key=speed)
            sppo = sppo_contestant(best, b)
            contestants[sppo.name] = sppo
            print(f"  SPPO vs PPO on the fastest symrl setting of repeat 1: {best.name}", flush=True)
        twin = contestants[sppo_twin_name(sppo)]
        ppo_row, sppo_row = measure_pair(twin, sppo, b, reference, settings_log, sppo_first=bool(rep % 2))
        for row, position in ((ppo_row, len(order)), (sppo_row, len(order))):
            row.update(repeat=rep, position=position)
        ppo_row["role"] = "PPO half of the SPPO pair (not in the PPO medians)"
        results.setdefault(sppo.name, []).append(sppo_row)
        sppo_pairs[rep] = (ppo_row, sppo_row)
        print(f"  repeat {rep + 1}/{repeats} pair: {twin.name} {ppo_row['wall_sps']:.0f} / {sppo.name} "
              f"{sppo_row['wall_sps']:.0f} steps/s = {sppo_row['wall_sps'] / ppo_row['wall_sps']:.3f} "
              f"(others {ppo_row['others_cores']:.2f} / {sppo_row['others_cores']:.2f} cores)", flush=True)

    sppo_pair = (sppo.name, sppo_twin_name(sppo)) if sppo else None
    results = {k: v for k, v in results.items() if v}
    medians, ratios = summarize(results, contestants, sppo_pair, sppo_pairs, args.threads)
    report.update(
        contestants={n: {"kind": c.kind, "library": c.library, "description": c.description, "threads": c.threads,
                         "algo": c.algo} for n, c in contestants.items() if n in results},
        settings={"compared_keys": sorted(reference), "identical_across_all_training_contestants": True,
                  "shared": reference, "per_contestant": settings_log},
        env_semantics_differences=env_differences(settings_log),
        results=results, medians=medians, ratios=ratios, sppo_pair=sppo_pair,
        sppo_pair_rows={rep: {"ppo": a, "sppo": s_} for rep, (a, s_) in sppo_pairs.items()},
    )
    print_table(results, medians, ratios, contestants)

    if not args.no_profile:
        setting = sppo.setting if sppo else "sync"
        report["profile"] = []
        # at 1 thread: the cleanest picture of where the work goes (2 threads are covered by the kernel
        # microbenchmark, which times the gradient step and acting at 1 and 2 threads)
        p = profile_iteration(b, setting, 1, op_profile=not args.quick, reps=3 if args.quick else 5,
                              thread_counts=(1,) if args.quick else (1, 2))
        report["profile"].append(p)
        print_profile(p)
        if not args.quick and sppo is not None:
            check = sppo_update_cost(b, sppo.setting)
            report["sppo_update_cost_same_data"] = check
            print(f"\nSPPO vs PPO update on the same rollout and weights (1 thread, CPU s): PPO {check['learn_cpu_s']['ppo']}, "
                  f"SPPO {check['learn_cpu_s']['sppo']} -> SPPO/PPO cost {check['sppo_over_ppo_cpu']:.3f} "
                  f"(others used {check['others_cores']:.2f} cores)")
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["total_runtime_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out} ({report['total_runtime_s']:.0f}s in all)")


if __name__ == "__main__":
    main()
