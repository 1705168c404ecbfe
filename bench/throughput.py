"""Training throughput (env steps per second) of symrl against Stable-Baselines3, and SPPO against PPO.

    python bench/throughput.py                    # full run, 3 repeats (several minutes on 2 cores)
    python bench/throughput.py --quick            # smoke test, well under a minute
    python bench/throughput.py --envs cartpole --repeats 5

What is timed: whole training iterations (collect one rollout + the PPO update), after one warm-up
iteration, for a fixed number of rollouts. Setup, evaluation and checkpoints are not timed.
  * symrl: ``OnPolicyTrainer`` driven directly: ``reset_envs()`` once, then ``collect(); learn()``.
  * SB3:   ``PPO.learn(total_timesteps=k · rollout, reset_num_timesteps=False)`` after a warm-up
           ``learn`` of one rollout (so the timed call continues the same episodes, as symrl does).
  * env:   random actions (generated beforehand) through each library's bare vector env, so a reader
           can see how much of a training iteration is the environment itself.

Shared machines are noisy, so every number that matters is a ratio against a baseline measured in
the same run: within a repeat all contestants run back to back, and the order rotates between
repeats. Each repeat builds fresh agents with the same seed, so every repeat times the same work.
Both wall-clock and process-CPU steps/s are recorded; CPU time is less sensitive to another
process competing for the cores (everything here runs on one thread), though not immune to it, and
``on_cpu`` (CPU time / wall time) flags the measurements where another process took the core.

Hyperparameters: one table per benchmark (``Bench``) is turned into both libraries' arguments, and
after construction the settings are read back from the built objects (SB3's model, VecNormalize
and optimizer; symrl's trainer, network and normalizers) and compared key by key. A mismatch aborts
the run; the JSON lists every setting of both sides.

Output: a table on stdout and JSON at bench/results/throughput.json (or --out).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "throughput.json"
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from bench.common import cpu_model, git_state, ratio_line  # noqa: E402

import gymnasium as gym  # noqa: E402
import stable_baselines3  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402

from symrl.algos.onpolicy import OnPolicyTrainer  # noqa: E402
from symrl.config import build_config  # noqa: E402
from symrl.envs import make_vec_env as symrl_make_vec_env  # noqa: E402


# ---------------------------------------------------------------------------- what is benchmarked

@dataclass(frozen=True)
class Bench:
    """One environment and the PPO hyperparameters both libraries get (SB3's names in comments)."""

    key: str
    env_id: str
    n_envs: int
    n_steps: int  # per env, per rollout (SB3 n_steps)
    batch_size: int  # minibatch size (SB3 batch_size)
    n_epochs: int
    norm_obs: bool  # SB3: VecNormalize(norm_obs=...)
    norm_reward: bool  # SB3: VecNormalize(norm_reward=...)
    timed_rollouts: int  # per measurement, after the warm-up
    warmup_rollouts: int = 1
    lr: float = 3e-4  # learning_rate, constant
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2  # constant
    clip_range_vf: float | None = None
    norm_adv: bool = True  # normalize_advantage (per minibatch, in both)
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    hidden: tuple[int, ...] = (64, 64)  # net_arch=dict(pi=[64, 64], vf=[64, 64])
    activation: str = "tanh"  # activation_fn=nn.Tanh
    log_std_init: float = 0.0
    seed: int = 0
    # symrl SPPO's symmetric-loss weights, and the action bins it needs on a Box action space
    sppo_alpha: float = 0.5
    sppo_beta: float = 1.0
    sppo_discretize: int = 0

    @property
    def rollout_steps(self) -> int:
        return self.n_envs * self.n_steps


BENCHES = {
    "cartpole": Bench("cartpole", "CartPole-v1", n_envs=8, n_steps=256, batch_size=256, n_epochs=10,
                      norm_obs=False, norm_reward=False, timed_rollouts=20),
    # SB3's PPO defaults. symrl refuses beta > 0 with a Gaussian policy (the reverse term needs
    # action probabilities), so SPPO runs on 11 bins per action dimension (the paper's DSPPO), and
    # its PPO baseline for the SPPO/PPO ratio is the same discretized PPO.
    "halfcheetah": Bench("halfcheetah", "HalfCheetah-v5", n_envs=1, n_steps=2048, batch_size=64, n_epochs=10,
                         norm_obs=True, norm_reward=True, timed_rollouts=3, sppo_discretize=11),
}

# Ratios reported: (name, env key, numerator, denominator, target: numerator/denominator >= target).
RATIOS = [
    ("symrl_ppo / sb3_ppo", "cartpole", "symrl_ppo", "sb3_ppo", None),
    ("symrl_ppo / sb3_ppo", "halfcheetah", "symrl_ppo", "sb3_ppo", None),
    ("symrl_sppo / symrl_ppo", "cartpole", "symrl_sppo", "symrl_ppo", 0.95),
    ("symrl_sppo_d11 / symrl_ppo_d11", "halfcheetah", "symrl_sppo_d11", "symrl_ppo_d11", 0.95),
    ("symrl_ppo_d11 / symrl_ppo (cost of 11 bins)", "halfcheetah", "symrl_ppo_d11", "symrl_ppo", None),
]


# ---------------------------------------------------------------------------- symrl

def symrl_overrides(b: Bench, algo: str = "ppo", discretize: int = 0) -> dict[str, Any]:
    """Every training setting spelled out, so no symrl default can silently differ from SB3's."""
    alpha, beta = (b.sppo_alpha, b.sppo_beta) if algo == "sppo" else (1.0, 0.0)
    return {
        "algo": algo, "env": b.env_id, "seed": b.seed, "n_envs": b.n_envs, "n_steps": b.n_steps,
        "vec_env": "sync", "device": "cpu", "alpha": alpha, "beta": beta, "discretize": discretize,
        "lr": b.lr, "anneal_lr": False, "gamma": b.gamma, "gae_lambda": b.gae_lambda,
        "n_epochs": b.n_epochs, "batch_size": b.batch_size, "clip_range": b.clip_range, "anneal_clip": False,
        "clip_range_vf": b.clip_range_vf, "vf_coef": b.vf_coef, "ent_coef": b.ent_coef,
        "max_grad_norm": b.max_grad_norm, "target_kl": b.target_kl, "norm_adv": b.norm_adv,
        "norm_obs": b.norm_obs, "norm_reward": b.norm_reward, "noise": "none",
        "net.hidden": list(b.hidden), "net.activation": b.activation, "net.log_std_init": b.log_std_init,
        # total_steps only sets the length of lr/clip annealing (off here); evaluation is never called,
        # one eval env keeps the untimed setup small.
        "total_steps": b.rollout_steps * (b.warmup_rollouts + b.timed_rollouts),
        "eval_every": 0, "eval_episodes": 1,
    }


class SymrlRunner:
    """symrl's training loop without its logging, evaluation and checkpoints."""

    def __init__(self, b: Bench, algo: str = "ppo", discretize: int = 0):
        self.cfg = build_config(overrides=symrl_overrides(b, algo, discretize))
        self.trainer = OnPolicyTrainer(self.cfg)
        self.trainer.reset_envs()

    def iterate(self, rollouts: int) -> None:
        for _ in range(rollouts):
            self.trainer.collect()
            stats = self.trainer.learn()
            # symrl's loop turns the stats into floats for its log; SB3 calls .item() in its update.
            _ = {k: float(v) for k, v in stats.items()}

    def settings(self) -> dict[str, Any]:
        """Read back from the built trainer, not from the overrides."""
        t, cfg = self.trainer, self.cfg
        group = t.optimizer.param_groups[0]
        actor_hidden, actor_act = _mlp_shape(t.model.actor)
        critic_hidden, critic_act = _mlp_shape(t.model.critic)
        return {
            "env_id": cfg.env, "n_envs": t.envs.num_envs, "n_steps": cfg.n_steps, "batch_size": cfg.batch_size,
            "n_epochs": cfg.n_epochs, "lr": group["lr"], "lr_schedule": "linear" if cfg.anneal_lr else "constant",
            "gamma": cfg.gamma, "gae_lambda": cfg.gae_lambda, "clip_range": cfg.clip_range,
            "clip_range_schedule": "linear" if cfg.anneal_clip else "constant", "clip_range_vf": cfg.clip_range_vf,
            "norm_adv": cfg.norm_adv, "ent_coef": t.weights.ent, "vf_coef": t.weights.vf,
            "max_grad_norm": cfg.max_grad_norm, "target_kl": cfg.target_kl,
            "pi_hidden": actor_hidden, "vf_hidden": critic_hidden, "activation": actor_act,
            "vf_activation": critic_act, "shared_layers": False,  # ActorCritic: two separate MLPs
            "init_gains_pi": init_gains(t.model.actor), "init_gains_vf": init_gains(t.model.critic),
            "init_biases_zero": biases_zero(t.model),
            "action_dist": {"categorical": "categorical", "gaussian": "diag_gaussian"}.get(t.spec.kind, t.spec.kind),
            "log_std_init": t.model.log_std.detach()[0].item() if t.model.log_std is not None else None,
            # FlatAdam is torch's Adam arithmetic on one flat buffer (tests/test_flat.py checks it)
            "optimizer": "Adam" if type(t.optimizer).__name__ == "FlatAdam" else type(t.optimizer).__name__,
            "adam_eps": group["eps"], "adam_betas": list(group["betas"]),
            "weight_decay": group["weight_decay"],
            **_normalization(t.obs_norm.enabled, t.rew_norm.enabled, t.obs_norm.clip, t.rew_norm.clip,
                             t.obs_norm.eps, t.rew_norm.gamma),
            "seed": cfg.seed, "device": str(t.device),
        }

    def symrl_only(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"algo": cfg.algo, "alpha": cfg.alpha, "beta": cfg.beta, "Z": cfg.Z, "reverse": cfg.reverse,
                "discretize": cfg.discretize, "policy_head": self.trainer.spec.kind, "vec_env": cfg.vec_env,
                "autoreset": "same-step", "noise": cfg.noise, "full_config": cfg.to_dict()}

    def close(self) -> None:
        self.trainer.close()


def _normalization(norm_obs: bool, norm_reward: bool, obs_clip, reward_clip, eps, reward_gamma) -> dict[str, Any]:
    """Normalization settings in one form for both libraries; the constants of a switched-off
    normalizer are reported as None rather than compared."""
    return {"norm_obs": bool(norm_obs), "norm_reward": bool(norm_reward),
            "obs_clip": obs_clip if norm_obs else None, "reward_clip": reward_clip if norm_reward else None,
            "norm_epsilon": eps if (norm_obs or norm_reward) else None,
            "reward_norm_gamma": reward_gamma if norm_reward else None}


def init_gains(*modules: nn.Module) -> list[float]:
    """The orthogonal-init gain of every Linear layer, read off the fresh weights: an orthogonal
    matrix scaled by g has all singular values equal to g (checked, then g is reported)."""
    gains = []
    for module in modules:
        for layer in (m for m in module.modules() if isinstance(m, nn.Linear)):
            sv = torch.linalg.svdvals(layer.weight.detach().double())
            g = float(sv.mean())
            gains.append(round(g, 4) if torch.allclose(sv, torch.full_like(sv, g), rtol=1e-4) else "not orthogonal")
    return gains


def biases_zero(module: nn.Module) -> bool:
    return all(bool((m.bias == 0).all()) for m in module.modules() if isinstance(m, nn.Linear))


def _mlp_shape(seq: nn.Sequential) -> tuple[list[int], str]:
    """Hidden widths (every Linear but the output one) and the activation's name, lower-case."""
    linears = [m for m in seq if isinstance(m, nn.Linear)]
    acts = {type(m).__name__.lower() for m in seq if not isinstance(m, nn.Linear)}
    return [m.out_features for m in linears[:-1]], "/".join(sorted(acts))


# ---------------------------------------------------------------------------- Stable-Baselines3

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
SB3_DISTS = {"CategoricalDistribution": "categorical", "DiagGaussianDistribution": "diag_gaussian"}


def sb3_venv(b: Bench):
    """SB3's usual vector env: make_vec_env (Monitor-wrapped envs) in a DummyVecEnv."""
    return sb3_make_vec_env(b.env_id, n_envs=b.n_envs, seed=b.seed, vec_env_cls=DummyVecEnv)


def sb3_kwargs(b: Bench) -> dict[str, Any]:
    """PPO's constructor arguments, every one that affects training given explicitly."""
    return dict(
        learning_rate=b.lr, n_steps=b.n_steps, batch_size=b.batch_size, n_epochs=b.n_epochs, gamma=b.gamma,
        gae_lambda=b.gae_lambda, clip_range=b.clip_range, clip_range_vf=b.clip_range_vf,
        normalize_advantage=b.norm_adv, ent_coef=b.ent_coef, vf_coef=b.vf_coef, max_grad_norm=b.max_grad_norm,
        use_sde=False, target_kl=b.target_kl, verbose=0, seed=b.seed, device="cpu",
        policy_kwargs=dict(net_arch=dict(pi=list(b.hidden), vf=list(b.hidden)),
                           activation_fn=ACTIVATIONS[b.activation], ortho_init=True,
                           log_std_init=b.log_std_init),
    )


class SB3Runner:
    """SB3 PPO; each ``iterate`` is one ``learn`` call that continues where the last one stopped."""

    def __init__(self, b: Bench):
        self.b = b
        env = sb3_venv(b)
        if b.norm_obs or b.norm_reward:
            env = VecNormalize(env, norm_obs=b.norm_obs, norm_reward=b.norm_reward, gamma=b.gamma)
        self.model = PPO("MlpPolicy", env, **sb3_kwargs(b))

    def iterate(self, rollouts: int) -> None:
        self.model.learn(total_timesteps=rollouts * self.b.rollout_steps, reset_num_timesteps=False)

    def settings(self) -> dict[str, Any]:
        """Read back from the built model, VecNormalize and optimizer, not from the kwargs."""
        m = self.model
        policy = m.policy
        group = policy.optimizer.param_groups[0]
        vecnorm = m.get_vec_normalize_env()
        clip_vf = m.clip_range_vf(1.0) if m.clip_range_vf is not None else None
        return {
            "env_id": m.env.get_attr("spec")[0].id,
            "n_envs": m.n_envs, "n_steps": m.n_steps, "batch_size": m.batch_size, "n_epochs": m.n_epochs,
            "lr": group["lr"], "lr_schedule": _schedule_kind(m.lr_schedule),
            "gamma": m.gamma, "gae_lambda": m.gae_lambda, "clip_range": m.clip_range(1.0),
            "clip_range_schedule": _schedule_kind(m.clip_range), "clip_range_vf": clip_vf,
            "norm_adv": m.normalize_advantage, "ent_coef": m.ent_coef, "vf_coef": m.vf_coef,
            "max_grad_norm": m.max_grad_norm, "target_kl": m.target_kl,
            "pi_hidden": list(policy.net_arch["pi"]), "vf_hidden": list(policy.net_arch["vf"]),
            "activation": policy.activation_fn.__name__.lower(),
            "vf_activation": policy.activation_fn.__name__.lower(),
            # the shared features extractor is SB3's FlattenExtractor, which has no parameters
            "shared_layers": len(list(policy.features_extractor.parameters())) > 0,
            "init_gains_pi": init_gains(policy.mlp_extractor.policy_net, policy.action_net),
            "init_gains_vf": init_gains(policy.mlp_extractor.value_net, policy.value_net),
            "init_biases_zero": biases_zero(policy),
            "action_dist": SB3_DISTS.get(type(policy.action_dist).__name__, type(policy.action_dist).__name__),
            "log_std_init": policy.log_std.detach()[0].item() if hasattr(policy, "log_std") else None,
            "optimizer": type(policy.optimizer).__name__, "adam_eps": group["eps"],
            "adam_betas": list(group["betas"]), "weight_decay": group["weight_decay"],
            **_normalization(vecnorm is not None and vecnorm.norm_obs, vecnorm is not None and vecnorm.norm_reward,
                             *((vecnorm.clip_obs, vecnorm.clip_reward, vecnorm.epsilon, vecnorm.gamma)
                               if vecnorm is not None else (None,) * 4)),
            "seed": m.seed, "device": str(m.device),
        }

    def sb3_only(self) -> dict[str, Any]:
        m = self.model
        kwargs = sb3_kwargs(self.b)
        kwargs["policy_kwargs"] = {**kwargs["policy_kwargs"], "activation_fn": kwargs["policy_kwargs"]["activation_fn"].__name__}
        return {"policy": "MlpPolicy", "constructor_kwargs": kwargs, "use_sde": m.use_sde,
                "ortho_init": m.policy.ortho_init, "share_features_extractor": m.policy.share_features_extractor,
                "features_extractor": type(m.policy.features_extractor).__name__,
                "vec_env": "make_vec_env(vec_env_cls=DummyVecEnv) (Monitor-wrapped)"
                           + (" + VecNormalize" if m.get_vec_normalize_env() else ""),
                "stable_baselines3_version": stable_baselines3.__version__}

    def close(self) -> None:
        self.model.env.close()


def _schedule_kind(schedule: Callable[[float], float]) -> str:
    return "constant" if schedule(1.0) == schedule(0.0) == schedule(0.5) else "varies"


# ---------------------------------------------------------------------------- raw environment stepping

class RandomActionRunner:
    """Random actions through a bare vector env: the floor that no training loop can beat."""

    def __init__(self, b: Bench, library: str):
        self.b = b
        self.venv = symrl_make_vec_env(b.env_id, b.n_envs, "sync") if library == "symrl" else sb3_venv(b)
        space = gym.make(b.env_id).action_space
        rng = np.random.default_rng(b.seed)
        shape = (b.n_steps, b.n_envs) + space.shape
        if isinstance(space, gym.spaces.Discrete):
            self.actions = rng.integers(0, space.n, shape)
        else:
            self.actions = rng.uniform(space.low, space.high, shape).astype(space.dtype)
        if library == "symrl":
            self.venv.reset(seed=b.seed)
        else:
            self.venv.reset()

    def iterate(self, rollouts: int) -> None:
        step = self.venv.step
        for _ in range(rollouts):
            for action in self.actions:
                step(action)

    def close(self) -> None:
        self.venv.close()


# ---------------------------------------------------------------------------- contestants and timing

@dataclass(frozen=True)
class Contestant:
    name: str
    kind: str  # "train" or "env"
    description: str
    build: Callable[[Bench], Any]


def contestants(b: Bench) -> list[Contestant]:
    out = [
        Contestant("sb3_ppo", "train", "SB3 PPO", SB3Runner),
        Contestant("symrl_ppo", "train", "symrl PPO", lambda b: SymrlRunner(b, "ppo")),
    ]
    if b.sppo_discretize:
        k = b.sppo_discretize
        out += [Contestant(f"symrl_ppo_d{k}", "train", f"symrl PPO, {k} bins/dim",
                           lambda b: SymrlRunner(b, "ppo", k)),
                Contestant(f"symrl_sppo_d{k}", "train", f"symrl SPPO a={b.sppo_alpha} b={b.sppo_beta}, {k} bins/dim",
                           lambda b: SymrlRunner(b, "sppo", k))]
    else:
        out.append(Contestant("symrl_sppo", "train", f"symrl SPPO a={b.sppo_alpha} b={b.sppo_beta}",
                              lambda b: SymrlRunner(b, "sppo")))
    out += [Contestant("env_gym_sync", "env", "random actions, gymnasium SyncVectorEnv (symrl's)",
                       lambda b: RandomActionRunner(b, "symrl")),
            Contestant("env_sb3_dummy", "env", "random actions, SB3 DummyVecEnv + Monitor",
                       lambda b: RandomActionRunner(b, "sb3"))]
    return out


def measure(c: Contestant, b: Bench) -> dict[str, float]:
    """Build (untimed), warm up (untimed), then time ``timed_rollouts`` whole iterations."""
    runner = c.build(b)
    try:
        runner.iterate(b.warmup_rollouts)
        torch.set_num_threads(1)  # in case a library changed it
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        runner.iterate(b.timed_rollouts)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        runner.close()
    steps = b.timed_rollouts * b.rollout_steps
    # on_cpu: the share of the wall time this (single-threaded) process actually ran; well below 1
    # means another process took the core, and the wall-clock number of this measurement is low.
    return {"steps": steps, "wall_s": wall, "cpu_s": cpu, "wall_sps": steps / wall, "cpu_sps": steps / cpu,
            "on_cpu": cpu / wall, "loadavg_1m_after": os.getloadavg()[0]}


def rotated(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------------------- hyperparameter check

def check_settings(b: Bench) -> dict[str, Any]:
    """Build both agents once, read their settings back and fail on any difference."""
    sb3, sym = SB3Runner(b), SymrlRunner(b, "ppo")
    try:
        s_sb3, s_sym = sb3.settings(), sym.settings()
        sb3_only = sb3.sb3_only()
        symrl_only, variant_settings = {}, {}
        for c, runner in _symrl_variants(b):
            symrl_only[c.name], variant_settings[c.name] = runner.symrl_only(), runner.settings()
    finally:
        sb3.close()
        sym.close()
    _fail_on_difference(b, "symrl_ppo", s_sym, "sb3_ppo", s_sb3)
    # symrl's variants must differ from its PPO only in the loss and the action head
    head_keys = {"action_dist", "log_std_init"}
    for name, settings in variant_settings.items():
        _fail_on_difference(b, "symrl_ppo", {k: v for k, v in s_sym.items() if k not in head_keys},
                            name, {k: v for k, v in settings.items() if k not in head_keys})
    return {
        "shared": {k: s_sym[k] for k in sorted(s_sym)},
        "compared_keys": sorted(s_sym),
        "identical": True,
        "symrl_variants_checked_equal_to_symrl_ppo_except": ["algo", "alpha", "beta", "discretize", *sorted(head_keys)],
        "symrl": symrl_only,
        "sb3": sb3_only,
        "not_settings_but_implementation": IMPLEMENTATION_NOTES,
    }


def _fail_on_difference(b: Bench, name_a: str, a: dict[str, Any], name_b: str, b_: dict[str, Any]) -> None:
    diff = {k: {name_a: a.get(k), name_b: b_.get(k)} for k in sorted(set(a) | set(b_)) if not _same(a.get(k), b_.get(k))}
    if diff:
        raise SystemExit(f"{b.env_id}: settings differ between {name_a} and {name_b}: {diff}")


def _symrl_variants(b: Bench):
    """Every symrl contestant's configuration (built briefly, to record its resolved config)."""
    for c in contestants(b):
        if c.name.startswith("symrl"):
            runner = c.build(b)
            try:
                yield c, runner
            finally:
                runner.close()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


IMPLEMENTATION_NOTES = [
    "Both: truncated episodes bootstrap with V(final observation); same-step autoreset.",
    "Both: value loss is plain MSE times vf_coef; advantages normalized per minibatch.",
    "Both: Gaussian actions clipped to the action bounds before env.step, unclipped sample kept for the update.",
    "symrl steps Adam (FlatAdam: torch's single-tensor Adam arithmetic) on one flat parameter buffer; "
    "SB3 uses torch.optim.Adam per parameter tensor (same eps/betas/lr).",
    "symrl normalizes observations/rewards inside the trainer; SB3 in VecNormalize (same statistics, clip 10, eps 1e-8).",
    "SB3 envs are Monitor-wrapped (make_vec_env); symrl tracks episode returns itself.",
    "SB3 computes logging statistics with .item() per minibatch and runs callback hooks per step (its defaults).",
]


# ---------------------------------------------------------------------------- report

def summarize(results: dict[str, dict[str, list[dict]]], benches: dict[str, Bench]) -> tuple[dict, dict]:
    medians = {env: {name: {"wall_sps": statistics.median(r["wall_sps"] for r in reps),
                            "cpu_sps": statistics.median(r["cpu_sps"] for r in reps)}
                     for name, reps in per_env.items()}
               for env, per_env in results.items()}
    ratios = {}
    for label, env, num, den, target in RATIOS:
        if env not in results or num not in results[env] or den not in results[env]:
            continue
        entry: dict[str, Any] = {"env": benches[env].env_id, "numerator": num, "denominator": den}
        for metric in ("wall_sps", "cpu_sps"):
            paired = [n[metric] / d[metric] for n, d in zip(results[env][num], results[env][den])]
            entry[metric] = {"per_repeat": paired, "median_of_paired": statistics.median(paired),
                             "ratio_of_medians": medians[env][num][metric] / medians[env][den][metric]}
        if target is not None:
            entry["target_min"] = target
            entry["meets_target"] = entry["wall_sps"]["median_of_paired"] >= target
        ratios[f"{env}: {label}"] = entry
    return medians, ratios


def print_table(results, medians, ratios, benches) -> None:
    print()
    header = (f"{'env':<16}{'contestant':<18}{'median SPS':>11}{'min':>9}{'max':>9}{'CPU SPS':>10}{'env %':>7}"
              f"{'min on-CPU':>11}")
    print(header)
    print("-" * len(header))
    for env, per_env in results.items():
        env_sps = {n: medians[env][n]["wall_sps"] for n in per_env if n.startswith("env_")}
        for name, reps in per_env.items():
            wall = [r["wall_sps"] for r in reps]
            floor = env_sps.get("env_sb3_dummy" if name.startswith("sb3") else "env_gym_sync")
            share = f"{100 * medians[env][name]['wall_sps'] / floor:.0f}" if floor and not name.startswith("env_") else ""
            print(f"{benches[env].env_id:<16}{name:<18}{statistics.median(wall):>11.0f}{min(wall):>9.0f}"
                  f"{max(wall):>9.0f}{medians[env][name]['cpu_sps']:>10.0f}{share:>7}"
                  f"{min(r['on_cpu'] for r in reps):>11.2f}")
    print("\n(env %: training SPS / raw env SPS of the same vector env = share of time spent stepping the env;"
          "\n min on-CPU: lowest CPU time / wall time over the repeats; below ~0.95 another process took the core,"
          "\n CPU SPS drops somewhat too then: shared caches, or virtual CPUs sharing a host core)\n")
    for label, r in ratios.items():
        print(ratio_line(label, r, 58))


def machine_info() -> dict[str, Any]:
    commit, dirty = git_state()
    import mujoco

    return {
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "stable_baselines3": stable_baselines3.__version__, "gymnasium": gym.__version__,
        "mujoco": mujoco.__version__, "numpy": np.__version__,
        "symrl_git_commit": commit, "symrl_worktree_dirty": dirty,
        "loadavg_at_start": os.getloadavg(),
    }


# ---------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="measurements per contestant (order rotates)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, 1 timed rollout, no warm-up")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    p.add_argument("--envs", default=",".join(BENCHES), help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--rollouts", type=int, default=None,
                   help="timed rollouts per measurement, all envs (default: cartpole 20, halfcheetah 3)")
    args = p.parse_args(argv)
    args.envs = [e.strip().lower() for e in args.envs.split(",") if e.strip()]
    unknown = [e for e in args.envs if e not in BENCHES]
    if unknown:
        p.error(f"--envs: unknown {unknown}; allowed: {', '.join(BENCHES)}")
    if args.repeats < 1 or (args.rollouts is not None and args.rollouts < 1):
        p.error("--repeats and --rollouts must be >= 1")
    return args


def selected_benches(args: argparse.Namespace) -> dict[str, Bench]:
    from dataclasses import replace

    benches = {}
    for key in args.envs:
        b = BENCHES[key]
        if args.quick:
            b = replace(b, timed_rollouts=1, warmup_rollouts=0)
        if args.rollouts is not None:
            b = replace(b, timed_rollouts=args.rollouts)
        benches[key] = b
    return benches


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(1)
    benches = selected_benches(args)
    report: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv], "quick": args.quick, "repeats": repeats,
        "machine": machine_info(),
        "method": __doc__.split("\n\n", 2)[2].strip(),
        "budget": {k: {"warmup_rollouts": b.warmup_rollouts, "timed_rollouts": b.timed_rollouts,
                       "rollout_steps": b.rollout_steps, "timed_steps": b.timed_rollouts * b.rollout_steps}
                   for k, b in benches.items()},
        "benches": {k: asdict(b) for k, b in benches.items()},
        "settings": {}, "contestants": {}, "results": {},
    }
    for key, b in benches.items():
        report["settings"][key] = check_settings(b)
        report["contestants"][key] = {c.name: {"kind": c.kind, "description": c.description} for c in contestants(b)}
        print(f"{b.env_id}: hyperparameters identical in symrl and SB3 ({len(report['settings'][key]['compared_keys'])} "
              f"settings compared); timing {b.timed_rollouts} x {b.rollout_steps} steps after "
              f"{b.warmup_rollouts} warm-up rollout(s)", flush=True)

    results: dict[str, dict[str, list[dict]]] = {k: {c.name: [] for c in contestants(b)} for k, b in benches.items()}
    for rep in range(repeats):
        for key, b in benches.items():
            for position, c in enumerate(rotated(contestants(b), rep)):
                row = measure(c, b)
                row.update(repeat=rep, position=position)
                results[key][c.name].append(row)
                print(f"  repeat {rep + 1}/{repeats} {b.env_id:<15} {c.name:<16} {row['wall_sps']:>8.0f} steps/s "
                      f"(cpu {row['cpu_sps']:.0f}, {row['wall_s']:.1f}s, on-CPU {row['on_cpu']:.2f})", flush=True)

    medians, ratios = summarize(results, benches)
    report.update(results=results, medians=medians, ratios=ratios)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    print_table(results, medians, ratios, benches)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
