"""Training throughput (env steps/s) of symrl PPO against Stable-Baselines3 PPO and against plain
symrl, and of SPPO against PPO, on CartPole-v1 and HalfCheetah-v5.

    python bench/throughput.py                    # full run, 3 repeats (several minutes on 2 cores)
    python bench/throughput.py --quick            # smoke test: 1 repeat, 1 timed rollout (under a minute)
    python bench/throughput.py --envs cartpole --repeats 5

Timed: whole iterations (collect one rollout + the PPO update). symrl: ``OnPolicyTrainer``,
``reset_envs()`` once, then ``collect(); learn()``. Plain symrl: the same trainer with its speed
devices swapped for the textbook ones (acting through the torch model under no_grad, not the NumPy
snapshot; ``torch.optim.Adam`` and ``nn.utils.clip_grad_norm_`` per parameter tensor, not on the
flat buffer): symrl / plain is what those devices buy. SB3: ``PPO.learn(k · rollout,
reset_num_timesteps=False)``, its env reset at build. env: random actions through the bare
Gymnasium vector env, the floor no training loop can beat ("env %" for symrl and SB3 alike).

SPPO against PPO: a group of its own, interleaved (the harness alternates single iterations of the
two), twice the timed rollouts; with bins, both discretized.

Settings: one table per environment makes symrl's configuration, and SB3's arguments are taken from
it; both built agents are read back and compared key by key (symrl's variants with symrl PPO).
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import gymnasium as gym  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402

from bench.harness import Contestant, Group, Loop, RandomActions, Ratio, benchmark, parse, parser  # noqa: E402
from symrl.algos.onpolicy import OnPolicyTrainer  # noqa: E402
from symrl.config import TrainConfig, build_config, get_key  # noqa: E402
from symrl.envs import make_vec_env as symrl_make_vec_env  # noqa: E402

# Every training setting spelled out, so no symrl default can differ unseen (SB3's PPO defaults).
COMMON = {"seed": 0, "vec_env": "sync", "device": "cpu", "lr": 3e-4, "anneal_lr": False, "gamma": 0.99,
          "gae_lambda": 0.95, "clip_range": 0.2, "anneal_clip": False, "clip_range_vf": None, "norm_adv": True,
          "ent_coef": 0.0, "vf_coef": 0.5, "value_loss_scale": 1.0, "max_grad_norm": 0.5, "target_kl": None,
          "noise": "none", "net.hidden": [64, 64], "net.activation": "tanh", "net.log_std_init": 0.0,
          "net.ortho_init": True, "eval_every": 0, "eval_episodes": 1}  # evaluation is never called
SPPO = {"alpha": 0.5, "beta": 1.0}


@dataclass(frozen=True)
class Bench:
    """One environment: its settings besides COMMON, and how many rollouts a measurement times."""

    env: str
    settings: dict[str, Any]
    timed_rollouts: int
    warmup_rollouts: int = 1
    sppo_bins: int = 0  # symrl refuses beta > 0 with a Gaussian: SPPO (and its PPO twin) on this many bins


BENCHES = {
    "cartpole": Bench("CartPole-v1", {"n_envs": 8, "n_steps": 256, "batch_size": 256, "n_epochs": 10,
                                      "norm_obs": False, "norm_reward": False}, timed_rollouts=20),
    "halfcheetah": Bench("HalfCheetah-v5", {"n_envs": 1, "n_steps": 2048, "batch_size": 64, "n_epochs": 10,
                                            "norm_obs": True, "norm_reward": True}, timed_rollouts=3, sppo_bins=11),
}

RATIOS = [
    Ratio("symrl_ppo / sb3_ppo", "symrl_ppo", "sb3_ppo"),
    Ratio("symrl_ppo / plain_symrl_ppo (the speed devices)", "symrl_ppo", "plain_symrl_ppo"),
    Ratio("symrl_sppo / symrl_ppo", "symrl_sppo", "symrl_ppo", target=0.95),
    Ratio("symrl_sppo_d11 / symrl_ppo_d11", "symrl_sppo_d11", "symrl_ppo_d11", target=0.95),
    Ratio("symrl_ppo_d11 / symrl_ppo (cost of 11 bins)", "symrl_ppo_d11", "symrl_ppo"),
]


def symrl_config(b: Bench, algo: str = "ppo", bins: int = 0) -> TrainConfig:
    return build_config(overrides={**COMMON, **b.settings, "env": b.env, "algo": algo, "discretize": bins,
                                   **(SPPO if algo == "sppo" else {"alpha": 1.0, "beta": 0.0})})


def network(pi: list[nn.Module], vf: list[nn.Module], shared_trunk: bool, whole: nn.Module) -> dict[str, Any]:
    """The policy and value paths (their modules in order, a shared trunk in both): parameter shapes,
    activations, and the orthogonal-init gain of each weight read off the fresh weights (an
    orthogonal matrix scaled by g has all singular values equal to g)."""
    def path(modules: list[nn.Module]) -> dict[str, Any]:
        gains: list[float | str] = []
        for w in (m.weight for x in modules for m in x.modules() if isinstance(m, (nn.Linear, nn.Conv2d))):
            sv = torch.linalg.svdvals(w.detach().reshape(w.shape[0], -1).double())
            g = float(sv.mean())
            gains.append(round(g, 4) if torch.allclose(sv, torch.full_like(sv, g), rtol=1e-4) else "not orthogonal")
        return {"shapes": [list(p.shape) for x in modules for p in x.parameters()], "init_gains": gains,
                "activations": sorted({type(m).__name__ for x in modules for m in x.modules()
                                       if isinstance(m, (nn.Tanh, nn.ReLU))})}

    return {"pi": path(pi), "vf": path(vf), "shared_trunk": shared_trunk,
            "init_biases_zero": all(bool((m.bias == 0).all()) for m in whole.modules()
                                    if isinstance(m, (nn.Linear, nn.Conv2d)))}


def optimizer_settings(optimizer) -> dict[str, Any]:
    group = optimizer.param_groups[0]
    return {"optimizer": type(optimizer).__name__, "lr": group["lr"], "adam_eps": group["eps"],
            "adam_betas": list(group["betas"]), "weight_decay": group["weight_decay"]}


def normalization(norm_obs: bool, norm_reward: bool, obs_clip, reward_clip, eps, reward_gamma) -> dict[str, Any]:
    """A switched-off normalizer's constants are None, not compared."""
    on = norm_obs or norm_reward
    return {"norm_obs": bool(norm_obs), "norm_reward": bool(norm_reward), "obs_clip": obs_clip if norm_obs else None,
            "reward_clip": reward_clip if norm_reward else None, "norm_epsilon": eps if on else None,
            "reward_gamma": reward_gamma if norm_reward else None}


# ---------------------------------------------------------------------------- symrl

class TorchParameters:
    """The textbook gradient handling, per parameter tensor, in place of ``FlatParameters``."""

    def __init__(self, model: nn.Module):
        self.params = list(model.parameters())

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        return nn.utils.clip_grad_norm_(self.params, max_norm)


class TorchActing:
    """The textbook acting, through the torch model under no_grad, in place of the NumPy snapshot."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.std = None if model.log_std is None else model.log_std.detach().exp().numpy()

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(obs, dtype=torch.float32)
        return self.model.actor(x).numpy(), self.model.critic(x).squeeze(-1).numpy()


def make_plain(trainer: OnPolicyTrainer) -> None:
    """Swap the trainer's speed devices for the textbook ones (nothing in symrl changes)."""
    model = trainer.model
    for p in model.parameters():
        p.data = p.data.clone()  # out of the flat buffer: every parameter its own tensor
    trainer.flat = TorchParameters(model)
    trainer.optimizer = torch.optim.Adam(model.parameters(), lr=trainer.optimizer.param_groups[0]["lr"], eps=1e-5)
    model.inference_snapshot = lambda: TorchActing(model)


class SymrlPPO(Loop):
    """symrl's training loop without its logging, evaluation and checkpoints."""

    def __init__(self, cfg: TrainConfig, plain: bool = False):
        self.cfg = cfg
        with contextlib.redirect_stderr(io.StringIO()) as note:  # the trainer's Atari semantics note
            self.trainer = OnPolicyTrainer(cfg)
        self.note = note.getvalue().strip()
        if plain:
            make_plain(self.trainer)
        self.trainer.reset_envs()

    def iterate(self, n: int) -> int:
        for _ in range(n):
            self.trainer.collect()
            _ = {k: float(v) for k, v in self.trainer.learn().items()}  # as symrl's loop logs them
        return n * get_key(self.cfg, "n_envs") * get_key(self.cfg, "n_steps")

    def settings(self) -> dict[str, Any]:
        """Read back from the built trainer, network and normalizers, not from the overrides."""
        t, m, key = self.trainer, self.trainer.model, partial(get_key, self.cfg)
        trunk = list(getattr(m, "trunk", []))
        return {"env_id": key("env"), "n_envs": t.envs.num_envs, "ent_coef": t.weights.ent, "vf_coef": t.weights.vf,
                **{k: key(k) for k in ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
                                       "clip_range_vf", "norm_adv", "max_grad_norm", "target_kl", "seed")},
                "lr_schedule": "linear" if key("anneal_lr") else "constant",
                "clip_range_schedule": "linear" if key("anneal_clip") else "constant",
                **optimizer_settings(t.optimizer), "device": str(t.device),
                **network(trunk + [m.actor], trunk + [m.critic], bool(trunk), m),
                "action_dist": {"gaussian": "diag_gaussian"}.get(t.spec.kind, t.spec.kind),
                "log_std_init": m.log_std.detach()[0].item() if m.log_std is not None else None,
                **normalization(t.obs_norm.enabled, t.rew_norm.enabled, t.obs_norm.clip, t.rew_norm.clip,
                                t.obs_norm.eps, t.rew_norm.gamma)}

    def details(self) -> dict[str, Any]:
        group = self.trainer.optimizer.param_groups[0]  # symrl's: one flat tensor, fused; plain: per tensor
        return {"optimizer_tensors": len(group["params"]), "fused": group.get("fused"), "note": self.note,
                "config": self.cfg.to_dict()}

    def close(self) -> None:
        self.trainer.close()


# ---------------------------------------------------------------------------- Stable-Baselines3

def sb3_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """PPO's arguments from symrl's resolved configuration, every one that affects training."""
    key = partial(get_key, cfg)
    return {"learning_rate": key("lr"), "normalize_advantage": key("norm_adv"), "use_sde": False, "device": "cpu",
            "vf_coef": key("vf_coef") * key("value_loss_scale"), "verbose": 0,
            **{k: key(k) for k in ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
                                   "clip_range_vf", "ent_coef", "max_grad_norm", "target_kl", "seed")}}


class SB3PPO(Loop):
    """SB3 PPO; each ``iterate`` is one ``learn`` call that continues where the last one stopped."""

    def __init__(self, model: PPO):
        self.model = model
        # reset at build, as symrl's reset_envs(): learn(reset_num_timesteps=False) keeps these two
        model._last_obs = model.env.reset()
        model._last_episode_starts = np.ones((model.env.num_envs,), dtype=bool)

    def iterate(self, n: int) -> int:
        steps = n * self.model.n_envs * self.model.n_steps
        if steps:
            self.model.learn(total_timesteps=steps, reset_num_timesteps=False)
        return steps

    def settings(self) -> dict[str, Any]:
        """Read back from the built model, policy, optimizer and VecNormalize, not from the kwargs."""
        m, policy, vecnorm = self.model, self.model.policy, self.model.get_vec_normalize_env()
        trunk = [policy.features_extractor] if policy.share_features_extractor else []
        schedule = {True: "constant", False: "varies"}
        return {"env_id": m.env.get_attr("spec")[0].id, "norm_adv": m.normalize_advantage,
                **{k: getattr(m, k) for k in ("n_envs", "ent_coef", "vf_coef", "n_steps", "batch_size", "n_epochs",
                                              "gamma", "gae_lambda", "max_grad_norm", "target_kl", "seed")},
                "clip_range": m.clip_range(1.0), "clip_range_vf": m.clip_range_vf and m.clip_range_vf(1.0),
                "lr_schedule": schedule[m.lr_schedule(1.0) == m.lr_schedule(0.0)],
                "clip_range_schedule": schedule[m.clip_range(1.0) == m.clip_range(0.0)],
                **optimizer_settings(policy.optimizer), "device": str(m.device),
                **network(trunk + [policy.mlp_extractor.policy_net, policy.action_net],
                          trunk + [policy.mlp_extractor.value_net, policy.value_net],
                          any(True for t in trunk for _ in t.parameters()), policy),
                "action_dist": {"CategoricalDistribution": "categorical", "DiagGaussianDistribution": "diag_gaussian"}
                .get(type(policy.action_dist).__name__, type(policy.action_dist).__name__),
                "log_std_init": policy.log_std.detach()[0].item() if hasattr(policy, "log_std") else None,
                **normalization(*((vecnorm.norm_obs, vecnorm.norm_reward, vecnorm.clip_obs, vecnorm.clip_reward,
                                   vecnorm.epsilon, vecnorm.gamma) if vecnorm else (False,) * 2 + (None,) * 4))}

    def close(self) -> None:
        self.model.env.close()


def sb3_ppo(cfg: TrainConfig) -> SB3PPO:
    key = partial(get_key, cfg)
    env = sb3_make_vec_env(key("env"), n_envs=key("n_envs"), seed=key("seed"), vec_env_cls=DummyVecEnv)
    if key("norm_obs") or key("norm_reward"):
        env = VecNormalize(env, norm_obs=key("norm_obs"), norm_reward=key("norm_reward"), gamma=key("gamma"))
    net = {"net_arch": {"pi": key("net.hidden"), "vf": key("net.hidden")}, "ortho_init": key("net.ortho_init"),
           "activation_fn": {"tanh": nn.Tanh, "relu": nn.ReLU}[key("net.activation")],
           "log_std_init": key("net.log_std_init")}
    return SB3PPO(PPO("MlpPolicy", env, policy_kwargs=net, **sb3_kwargs(cfg)))


def random_actions(cfg: TrainConfig) -> RandomActions:
    key = partial(get_key, cfg)
    venv = symrl_make_vec_env(key("env"), key("n_envs"), "sync")
    venv.reset(seed=key("seed"))
    space, rng = venv.single_action_space, np.random.default_rng(key("seed"))
    shape = (key("n_steps"), key("n_envs")) + space.shape
    return RandomActions(venv, rng.integers(0, space.n, shape) if isinstance(space, gym.spaces.Discrete)
                         else rng.uniform(space.low, space.high, shape).astype(space.dtype))


def groups(b: Bench) -> list[Group]:
    """The environment's group (symrl PPO against SB3, plain symrl and the raw env; with bins the
    cost of discretizing) and SPPO against its PPO twin, interleaved: the two differ by a few
    percent, less than a shared machine drifts between back-to-back measurements."""
    def symrl(name: str, description: str, algo="ppo", bins=0, plain=False, **kw) -> Contestant:
        return Contestant(name, description, lambda: SymrlPPO(symrl_config(b, algo, bins), plain),
                          floor="env_gym_sync", **kw)

    k = b.sppo_bins
    binned = (symrl(f"symrl_ppo_d{k}", f"symrl PPO, {k} bins/dim", bins=k, equals="symrl_ppo",
                    except_keys=("action_dist", "log_std_init", "pi")) if k else None)
    main = Group(b.env, [
        Contestant("sb3_ppo", "SB3 PPO", lambda: sb3_ppo(symrl_config(b)), floor="env_gym_sync"),
        symrl("symrl_ppo", "symrl PPO", equals="sb3_ppo"),
        symrl("plain_symrl_ppo", "symrl PPO: torch acting, Adam, clip_grad_norm_", plain=True, equals="symrl_ppo"),
        *([binned] if binned else []),
        Contestant("env_gym_sync", "random actions, Gymnasium SyncVectorEnv", lambda: random_actions(symrl_config(b))),
    ], b.warmup_rollouts, b.timed_rollouts)
    ppo = replace(binned, equals=None) if binned else symrl("symrl_ppo", "symrl PPO")
    sppo = symrl(ppo.name.replace("ppo", "sppo"), f"symrl SPPO {SPPO}{f', {k} bins/dim' if k else ''}", "sppo", k,
                 equals=ppo.name)
    pair = Group(f"{b.env} SPPO|PPO", [ppo, sppo], b.warmup_rollouts, 2 * b.timed_rollouts, interleave=True)
    return [main, pair]


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--envs", default=",".join(BENCHES), help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--rollouts", type=int, help="timed rollouts per measurement (default: cartpole 20, halfcheetah 3; "
                                                "--quick 1)")
    args = parse(p, argv, "rollouts")
    envs = [e.strip().lower() for e in args.envs.split(",") if e.strip()]
    if set(envs) - set(BENCHES):
        p.error(f"--envs: got {args.envs}; allowed: a comma-separated subset of {', '.join(BENCHES)}")
    torch.set_num_threads(1)
    override = {**({"timed_rollouts": 1} if args.quick else {}),  # still after a warm-up: first calls are slow
                **({"timed_rollouts": args.rollouts} if args.rollouts else {})}
    benches = [replace(BENCHES[e], **override) for e in envs]
    benchmark("throughput", __doc__, args, [g for b in benches for g in groups(b)], RATIOS,
              {"common": COMMON, "benches": {b.env: asdict(b) for b in benches}})


if __name__ == "__main__":
    main()
