"""Training throughput (env steps/s) of symrl PPO against Stable-Baselines3 PPO and against plain
symrl, and of SPPO against PPO, on CartPole-v1 and HalfCheetah-v5.

    python bench/throughput.py                    # full run, 3 repeats (several minutes on 2 cores)
    python bench/throughput.py --quick            # smoke test: 1 repeat, 1 timed rollout (under a minute)
    python bench/throughput.py --envs cartpole --repeats 5

Timed: whole iterations (collect one rollout + the PPO update). symrl: ``OnPolicyTrainer``, ``reset_envs()``
once, then ``collect(); learn()``. Plain symrl: the same trainer with the textbook devices in place of its
speed devices (torch acting, not the NumPy snapshot; ``torch.optim.Adam`` and ``clip_grad_norm_`` per tensor,
not the flat buffer). SB3: ``PPO.learn(k · rollout, reset_num_timesteps=False)``, its env reset at build.
env: random actions through the bare vector env, the floor no training loop can beat ("env %"). SPPO
against PPO: a group of its own, interleaved, four times the timed rollouts. One table per environment makes
symrl's configuration and SB3's arguments; the built agents are read back and compared key by key.
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

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402

from bench.harness import (Contestant, Group, Loop, RandomActions, Ratio, benchmark,  # noqa: E402
                           optimizer_settings, parse, parser)
from symrl.algos.onpolicy import OnPolicyTrainer  # noqa: E402
from symrl.config import TrainConfig, build_config, get_key  # noqa: E402
from symrl.envs import make_vec_env as symrl_make_vec_env  # noqa: E402

# Off or fixed for every contestant here and in atari_throughput.py (evaluation is never called).
OFF = {"seed": 0, "device": "cpu", "anneal_lr": False, "anneal_clip": False, "clip_range_vf": None,
       "target_kl": None, "value_loss_scale": 1.0, "noise": "none", "eval_every": 0, "eval_episodes": 1}
# Every training setting spelled out, so no symrl default can differ unseen (SB3's PPO defaults).
COMMON = {**OFF, "vec_env": "sync", "lr": 3e-4, "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2,
          "norm_adv": True, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5, "net.hidden": [64, 64],
          "net.activation": "tanh", "net.log_std_init": 0.0, "net.ortho_init": True}
WEIGHTS = {"ppo": {"alpha": 1.0, "beta": 0.0}, "sppo": {"alpha": 0.5, "beta": 1.0}}  # the symmetric loss's


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
                                            "norm_obs": True, "norm_reward": True}, timed_rollouts=3, sppo_bins=11)}

RATIOS = [
    Ratio("symrl_ppo / sb3_ppo", "symrl_ppo", "sb3_ppo"),
    Ratio("symrl_ppo / plain_symrl_ppo (the speed devices)", "symrl_ppo", "plain_symrl_ppo"),
    Ratio("symrl_sppo / symrl_ppo", "symrl_sppo", "symrl_ppo", target=0.95),
    Ratio("symrl_sppo_d11 / symrl_ppo_d11", "symrl_sppo_d11", "symrl_ppo_d11", target=0.95),
    Ratio("symrl_ppo_d11 / symrl_ppo (cost of 11 bins)", "symrl_ppo_d11", "symrl_ppo")]
SAME_NAMES = ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "max_grad_norm", "target_kl", "seed")


def symrl_config(b: Bench, algo: str = "ppo", bins: int = 0) -> TrainConfig:
    return build_config(overrides={**COMMON, **b.settings, "env": b.env, "algo": algo, "discretize": bins,
                                   **WEIGHTS[algo]})


def network(pi: list[nn.Module], vf: list[nn.Module], shared_trunk: bool, whole: nn.Module) -> dict[str, Any]:
    """The policy and value paths (modules in order, a shared trunk in both): shapes, activations, and each
    fresh weight's orthogonal-init gain (g times an orthogonal matrix has all singular values g)."""
    def path(modules: list[nn.Module]) -> dict[str, Any]:
        layers = [m for x in modules for m in x.modules()]
        svs = [torch.linalg.svdvals(m.weight.detach().reshape(m.weight.shape[0], -1).double()) for m in layers
               if isinstance(m, (nn.Linear, nn.Conv2d))]
        return {"shapes": [list(p.shape) for x in modules for p in x.parameters()],
                "init_gains": [round(float(sv.mean()), 4) if torch.allclose(sv, sv.mean().expand_as(sv), rtol=1e-4)
                               else "not orthogonal" for sv in svs],
                "activations": sorted({type(m).__name__ for m in layers if isinstance(m, (nn.Tanh, nn.ReLU))})}

    return {"pi": path(pi), "vf": path(vf), "shared_trunk": shared_trunk,
            "init_biases_zero": all(bool((m.bias == 0).all()) for m in whole.modules()
                                    if isinstance(m, (nn.Linear, nn.Conv2d)))}


def normalization(norm_obs: bool, norm_reward: bool, obs_clip, reward_clip, eps, reward_gamma) -> dict[str, Any]:
    """A switched-off normalizer's constants are None, not compared."""
    on = norm_obs or norm_reward
    return {"norm_obs": bool(norm_obs), "norm_reward": bool(norm_reward), "obs_clip": obs_clip if norm_obs else None,
            "reward_clip": reward_clip if norm_reward else None, "norm_epsilon": eps if on else None,
            "reward_gamma": reward_gamma if norm_reward else None}


class TorchParameters(list):
    """The textbook gradient handling, per parameter tensor, in place of ``FlatParameters``."""

    def zero_grad(self) -> None:
        for p in self:
            p.grad = None

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        return nn.utils.clip_grad_norm_(self, max_norm)


class TorchActing:
    """The textbook acting, through the torch model under no_grad, in place of the NumPy snapshot."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.std = None if model.log_std is None else model.log_std.detach().exp().numpy()

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(obs, dtype=torch.float32)
        return self.model.actor(x).numpy(), self.model.critic(x).squeeze(-1).numpy()


class SymrlPPO(Loop):
    """symrl's training loop without its logging, evaluation and checkpoints; ``plain``: the textbook
    devices in place of the speed devices (nothing in symrl changes)."""

    def __init__(self, cfg: TrainConfig, plain: bool = False):
        self.cfg = cfg
        with contextlib.redirect_stderr(io.StringIO()) as note:  # the trainer's Atari semantics note
            self.trainer = t = OnPolicyTrainer(cfg)
        self.note = note.getvalue().strip()
        if plain:
            for p in t.model.parameters():
                p.data = p.data.clone()  # out of the flat buffer: every parameter its own tensor
            t.flat = TorchParameters(t.model.parameters())
            t.optimizer = torch.optim.Adam(t.model.parameters(), lr=t.optimizer.param_groups[0]["lr"], eps=1e-5)
            t.model.inference_snapshot = lambda: TorchActing(t.model)
        t.reset_envs()

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
                **{k: key(k) for k in (*SAME_NAMES, "clip_range", "clip_range_vf", "norm_adv")},
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


class SB3PPO(Loop):
    """SB3 PPO, its arguments from symrl's resolved configuration (every one that affects training);
    each ``iterate`` is one ``learn`` call that continues where the last one stopped."""

    def __init__(self, cfg: TrainConfig, policy: str, env, **policy_kwargs: Any):
        key = partial(get_key, cfg)
        self.model = model = PPO(
            policy, env, policy_kwargs=policy_kwargs, learning_rate=key("lr"), normalize_advantage=key("norm_adv"),
            use_sde=False, device="cpu", vf_coef=key("vf_coef") * key("value_loss_scale"), verbose=0,
            **{k: key(k) for k in (*SAME_NAMES, "clip_range", "clip_range_vf", "ent_coef")})
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
                **{k: getattr(m, k) for k in (*SAME_NAMES, "n_envs", "ent_coef", "vf_coef")},
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
    return SB3PPO(cfg, "MlpPolicy", env, net_arch={"pi": key("net.hidden"), "vf": key("net.hidden")},
                  activation_fn={"tanh": nn.Tanh, "relu": nn.ReLU}[key("net.activation")],
                  ortho_init=key("net.ortho_init"), log_std_init=key("net.log_std_init"))


def random_actions(cfg: TrainConfig) -> RandomActions:
    venv = symrl_make_vec_env(cfg.env, cfg.n_envs, "sync")
    venv.reset(seed=cfg.seed)
    return RandomActions(venv, venv.single_action_space, cfg.n_steps, cfg.seed)


def groups(b: Bench) -> list[Group]:
    """symrl PPO against SB3, plain symrl, the raw env (and with bins the cost of discretizing); SPPO against
    its PPO twin, interleaved: they differ by less than a shared machine drifts between measurements."""
    def symrl(name: str, description: str, algo="ppo", bins=0, plain=False, **kw) -> Contestant:
        return Contestant(name, description, lambda: SymrlPPO(symrl_config(b, algo, bins), plain),
                          floor="env_gym_sync", **kw)

    k = b.sppo_bins
    binned = [symrl(f"symrl_ppo_d{k}", f"symrl PPO, {k} bins/dim", bins=k, equals="symrl_ppo",
                    except_keys=("action_dist", "log_std_init", "pi"))] if k else []
    main = Group(b.env, [
        Contestant("sb3_ppo", "SB3 PPO", lambda: sb3_ppo(symrl_config(b)), floor="env_gym_sync"),
        symrl("symrl_ppo", "symrl PPO", equals="sb3_ppo"),
        symrl("plain_symrl_ppo", "symrl PPO: torch acting, Adam, clip_grad_norm_", plain=True, equals="symrl_ppo"),
        *binned,
        Contestant("env_gym_sync", "random actions, Gymnasium SyncVectorEnv", lambda: random_actions(symrl_config(b))),
    ], b.warmup_rollouts, b.timed_rollouts)
    ppo = replace(binned[0], equals=None) if k else symrl("symrl_ppo", "symrl PPO")
    sppo = symrl(ppo.name.replace("ppo", "sppo"), f"symrl SPPO {WEIGHTS['sppo']}{f', {k} bins/dim' if k else ''}",
                 "sppo", k, equals=ppo.name)
    pair = Group(f"{b.env} SPPO|PPO", [ppo, sppo], b.warmup_rollouts, 4 * b.timed_rollouts, interleave=True)
    return [main, pair]


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--envs", default=",".join(BENCHES), help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--rollouts", type=int, help="timed rollouts (default: cartpole 20, halfcheetah 3; --quick 1)")
    args = parse(p, argv, "rollouts")
    envs = [e.strip().lower() for e in args.envs.split(",") if e.strip()]
    if set(envs) - set(BENCHES):
        p.error(f"--envs: got {args.envs}; allowed: a comma-separated subset of {', '.join(BENCHES)}")
    timed = args.rollouts or (1 if args.quick else None)  # --quick: still after a warm-up (first calls are slow)
    benches = [replace(BENCHES[e], timed_rollouts=timed or BENCHES[e].timed_rollouts) for e in envs]
    benchmark("throughput", __doc__, args, [g for b in benches for g in groups(b)], RATIOS,
              {"common": COMMON, "benches": {b.env: asdict(b) for b in benches}})


if __name__ == "__main__":
    main()
