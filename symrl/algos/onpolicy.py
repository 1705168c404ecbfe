"""The one on-policy loop: collect → training noise → GAE → update → log → evaluate → checkpoint.

A2C, SA2C, PPO, SPPO and scaled PPO differ only in the update rule (``ppo_update`` /
``a2c_update``) and in the loss weights (``loss_weights``).

Exact resume: all randomness comes from three seeded ``torch.Generator``s (actions, noise,
minibatches) saved with the checkpoint, and the training envs' own state goes with it where it can
be read (Atari on the Gymnasium backend, MuJoCo, classic control: ``symrl.envs.snapshot``), so
episodes run on across checkpoints. Where it cannot (Box2D, envpool, unknown custom envs) every
checkpoint is also a synchronisation point: right after it is written, all training envs are reset
with seeds derived from (seed, checkpoint index), in an uninterrupted run exactly as in a resumed
one, and episodes in flight end as truncated (their value is bootstrapped). The run says at its
start which of the two it uses, and its summary records it (``env_checkpoint``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from symrl import advantages as adv_ops
from symrl.algos import a2c, ppo
from symrl.algos.update import UpdateSettings
from symrl.buffer import RolloutBuffer, flatten
from symrl.config import ConfigError, TrainConfig, config_from_dict
from symrl.distributions import head_spec
from symrl.envs import (ObsNormalizer, RewardNormalizer, is_image, make_env, make_vec_env,
                        observation_shape, saves_env_state)
from symrl.envs.atari import EnvpoolAtari, atari_settings, semantics_note, training_signal
from symrl.envs.registry import is_atari
from symrl.evaluate import evaluate, return_stats
from symrl.flat import FlatParameters
from symrl.device import resolve_device
from symrl.losses import effective_pg_multiplier, loss_weights
from symrl.nets import build_model
from symrl.noise import noisy_rewards
from symrl.optim import make_optimizer
from symrl.run import (RunDirectory, load_checkpoint, non_finite, read_config_and_checkpoint, read_summary,
                       save_checkpoint)

UPDATE_RULES = {"ppo": ppo.ppo_update, "a2c": a2c.a2c_update}


ENV_CHECKPOINT_NOTE = {
    "state": "checkpoints save the training envs' state: episodes run on across checkpoints",
    "sync": "these training envs cannot save their state: every checkpoint resets them (a sync point that "
            "ends the episodes in flight, in a resumed run exactly as in an uninterrupted one)",
}


def _seeds(seed: int, stream: int, index: int, n: int) -> list[int]:
    """Independent, reproducible seeds for (run seed, purpose, occasion)."""
    return [int(s) for s in np.random.SeedSequence([seed, stream, index]).generate_state(n)]


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seeds(seed, stream, 0, 1)[0])


class OnPolicyTrainer:
    """State of one training run; ``train`` drives it to ``total_steps``."""

    def __init__(self, cfg: TrainConfig, env_backend: str | None = None):
        """``env_backend``: the backend a resumed run's checkpoints come from (where envpool was
        missing when it started, Gymnasium), so that it goes on with the same simulator."""
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.atari = atari_settings(cfg.atari) if is_atari(cfg.env.rpartition(":")[2]) else None
        if self.atari is not None:
            print(f"symrl: {semantics_note(cfg.env, self.atari)}", file=sys.stderr)
        self.envs = make_vec_env(cfg.env, cfg.n_envs, cfg.vec_env, env_backend or cfg.env_backend, self.atari)
        self.env_checkpoint = "state" if saves_env_state(self.envs) else "sync"
        self.env_backend = "envpool" if isinstance(self.envs, EnvpoolAtari) else "gymnasium"  # after any fallback
        self.spec = head_spec(self.envs.single_action_space, cfg.discretize)
        obs_shape = observation_shape(self.envs.single_observation_space)
        problem = None
        if cfg.beta > 0 and not self.spec.discrete:
            problem = (f"beta: got {cfg.beta:g} with a Gaussian policy on {cfg.env}; the reverse term needs "
                       "action probabilities: set discretize=K (the paper uses 11) or beta=0")
        elif cfg.norm_obs and is_image(obs_shape):
            problem = f"norm_obs: {cfg.env} has image observations, which the CNN scales by 1/255; allowed: false"
        if problem:
            self.envs.close()
            raise ConfigError(problem)
        self.discretized = cfg.discretize > 0
        with torch.random.fork_rng(devices=[]):  # seed the initialization without touching the caller's RNG
            torch.manual_seed(_seeds(cfg.seed, 1, 0, 1)[0])
            self.model = build_model(obs_shape, self.spec, cfg.net.hidden, cfg.net.activation,
                                     cfg.net.log_std_init, cfg.net.ortho_init).to(self.device)
        self.update_rule = UPDATE_RULES[cfg.family]
        self.flat = FlatParameters(self.model)
        self.optimizer = make_optimizer(cfg.optimizer, self.flat, cfg.lr)
        self.weights = loss_weights(cfg)
        self.obs_norm = ObsNormalizer(obs_shape, cfg.norm_obs)
        self.rew_norm = RewardNormalizer(cfg.n_envs, cfg.gamma, cfg.norm_reward)
        self.action_gen, self.noise_gen, self.minibatch_gen = (_generator(cfg.seed, s) for s in (2, 3, 4))
        obs_dtype = np.uint8 if is_image(obs_shape) else np.float32
        self.buffer = RolloutBuffer(cfg.n_steps, cfg.n_envs, obs_shape, obs_dtype, self.spec.n_outputs,
                                    self.spec.action_shape, self.spec.action_dtype)
        self.eval_envs = [make_env(cfg.env, self.atari) for _ in range(cfg.eval_episodes)]
        self.num_updates = math.ceil(cfg.total_steps / (cfg.n_envs * cfg.n_steps))
        # progress counters (all saved in checkpoints)
        self.update = 0
        self.step = 0
        self.n_resets = 0
        self.n_evals = 0
        self.best_eval = -math.inf
        self.last_eval: dict[str, Any] | None = None
        self.elapsed = 0.0
        # per-episode bookkeeping of the training envs (reset at every sync point)
        self.obs = np.zeros((cfg.n_envs,) + obs_shape, obs_dtype)
        self.ep_return = np.zeros(cfg.n_envs)
        self.lives = np.zeros(cfg.n_envs, np.int64)
        self.last_values = np.zeros(cfg.n_envs, np.float32)
        self.finished_returns: list[float] = []

    # ------------------------------------------------------------------ environment state
    def reset_envs(self) -> None:
        """Start new episodes in every training env, seeded by the reset's index (a sync point)."""
        raw, info = self.envs.reset(seed=_seeds(self.cfg.seed, 0, self.n_resets, self.cfg.n_envs))
        if self.atari is not None:
            self.lives = np.asarray(info["lives"]).copy()
        self.obs_norm.update(raw)
        self.obs = self.obs_norm.normalize(raw)
        self.rew_norm.reset()
        self.ep_return[:] = 0.0
        self.n_resets += 1

    # ------------------------------------------------------------------ collect
    def collect(self) -> None:
        """Fill the buffer with ``n_steps`` vector steps of the current policy (acting in NumPy)."""
        buf, spec, cfg = self.buffer, self.spec, self.cfg
        policy = self.model.inference_snapshot()
        noise = spec.draw_noise((cfg.n_steps, cfg.n_envs), self.action_gen)
        for t in range(cfg.n_steps):
            out, value = policy(self.obs)
            action = spec.act(out, noise[t], policy.std)
            buf.obs[t], buf.actor_out[t], buf.actions[t], buf.values[t] = self.obs, out, action, value
            raw_next, reward, terminated, truncated, info = self.envs.step(spec.to_env(action, self.discretized))
            episode_end = terminated | truncated
            self._track_episodes(reward, episode_end)  # raw, full-game returns
            if self.atari is not None:  # training-only reward clipping and episodic life
                reward, life_lost = training_signal(reward, info["lives"], self.lives, episode_end,
                                                    cfg.atari.clip_reward, cfg.atari.episodic_life)
                self.lives = np.asarray(info["lives"]).copy()
                terminated = terminated | life_lost
            buf.rewards[t] = self.rew_norm(reward, terminated | truncated)
            buf.terminated[t] = terminated
            cut = truncated & ~terminated
            buf.truncated[t] = cut
            buf.bootstrap[t] = 0.0
            if cut.any():
                idx = np.flatnonzero(cut)
                final = self.obs_norm.normalize(np.stack([info["final_obs"][i] for i in idx]))
                buf.bootstrap[t, idx] = policy(final)[1]
            self.obs_norm.update(raw_next)
            self.obs = self.obs_norm.normalize(raw_next)
        self.last_values = policy(self.obs)[1]
        self.step += cfg.n_steps * cfg.n_envs

    def _track_episodes(self, reward: np.ndarray, episode_end: np.ndarray) -> None:
        self.ep_return += reward
        if episode_end.any():
            self.finished_returns.extend(self.ep_return[episode_end].tolist())
            self.ep_return[episode_end] = 0.0

    # ------------------------------------------------------------------ advantages and update
    def advantages(self, rollout: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward noise, then GAE (bootstrapping truncated steps); adv_flip acts later, on every
        minibatch of the update (``UpdateSettings.adv_flip``)."""
        cfg = self.cfg
        last_values = torch.from_numpy(self.last_values).to(self.device)
        rewards = noisy_rewards(rollout["rewards"], cfg.noise, cfg.noise_scale, self.noise_gen)
        next_values = adv_ops.next_values_from_rollout(rollout["values"], last_values, rollout["bootstrap"],
                                                       rollout["truncated"])
        episode_end = torch.maximum(rollout["terminated"], rollout["truncated"])
        advantages, returns = adv_ops.gae(rewards, rollout["values"], next_values, rollout["terminated"],
                                          episode_end, cfg.gamma, cfg.gae_lambda)
        return advantages, returns

    def old_log_probs(self, rollout: dict[str, torch.Tensor]) -> torch.Tensor:
        """log π_old(a|s) of the whole rollout in one batched call, from the stored actor outputs."""
        n = self.cfg.n_steps * self.cfg.n_envs
        with torch.no_grad():
            dist = self.spec.distribution(rollout["actor_out"].reshape(n, -1), self.model.log_std)
            return dist.log_prob(rollout["actions"].reshape((n,) + rollout["actions"].shape[2:]))

    def progress_remaining(self) -> float:
        """The clock of the annealed lr and clip range, from 1 down: CleanRL's 1 − update/updates
        before this update, or with ``anneal_after_rollout`` SB3's 1 − steps/total_steps read after
        the rollout (one rollout lower; clamped at 0 where SB3 would end slightly below it)."""
        if self.cfg.anneal_after_rollout:
            return max(0.0, 1.0 - self.step / self.cfg.total_steps)
        return 1.0 - self.update / self.num_updates

    def settings(self) -> UpdateSettings:
        cfg = self.cfg
        clip = cfg.clip_range * self.progress_remaining() if cfg.anneal_clip else cfg.clip_range
        return UpdateSettings(cfg.family, self.weights, clip, cfg.clip_range_vf, cfg.norm_adv,
                              cfg.max_grad_norm, cfg.n_epochs, cfg.batch_size, cfg.target_kl,
                              adv_flip=cfg.noise_scale if cfg.noise == "adv_flip" else 0.0)

    def learn(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if cfg.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * self.progress_remaining()
        rollout = self.buffer.tensors(self.device)
        advantages, returns = self.advantages(rollout)
        settings = self.settings()
        batch = flatten(rollout, self.old_log_probs(rollout), advantages, returns)
        stats = self.update_rule(self.model, self.flat, self.optimizer, batch, settings, self.minibatch_gen,
                                 self.noise_gen)
        stats["explained_variance"] = _explained_variance(batch["values"], batch["returns"])
        stats["lr"] = torch.tensor(self.optimizer.param_groups[0]["lr"])
        stats["clip_range"] = torch.tensor(settings.clip_range)
        self.update += 1
        return stats

    # ------------------------------------------------------------------ evaluation
    def evaluate_episodes(self, gen_seed: int, episode_seeds: list[int]) -> np.ndarray:
        """Raw returns of one clean episode per eval env, with the policy's current weights."""
        gen = torch.Generator().manual_seed(gen_seed)
        return evaluate(self.model, self.spec, self.eval_envs, episode_seeds, self.obs_norm,
                        self.cfg.eval_deterministic, gen, self.discretized)

    def evaluate(self) -> dict[str, Any]:
        cfg = self.cfg
        returns = self.evaluate_episodes(_seeds(cfg.seed, 5, self.n_evals, 1)[0],
                                         _seeds(cfg.seed, 6, self.n_evals, cfg.eval_episodes))
        self.n_evals += 1
        row = {"step": self.step, **return_stats(returns), "deterministic": cfg.eval_deterministic}
        self.best_eval = max(self.best_eval, row["mean_return"])
        self.last_eval = row
        return row

    # ------------------------------------------------------------------ checkpoints
    def env_state_dict(self) -> dict[str, Any]:
        """The training envs mid-episode and the trainer's per-env bookkeeping (``state`` mode)."""
        return {"envs": list(self.envs.get_attr("env_state")), "obs": self.obs.copy(),
                "ep_return": self.ep_return.copy(), "lives": self.lives.copy()}

    def load_env_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved episodes: the envs are built (and reset, which some need before a
        step) as in any run, then put into the saved state."""
        self.envs.reset(seed=_seeds(self.cfg.seed, 0, 0, self.cfg.n_envs))
        self.envs.set_attr("env_state", state["envs"])
        self.obs, self.ep_return, self.lives = state["obs"].copy(), state["ep_return"].copy(), state["lives"].copy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "env_state": self.env_state_dict() if self.env_checkpoint == "state" else None,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "obs_norm": self.obs_norm.state_dict(), "rew_norm": self.rew_norm.state_dict(),
            "action_gen": self.action_gen.get_state(), "noise_gen": self.noise_gen.get_state(),
            "minibatch_gen": self.minibatch_gen.get_state(),
            "env_backend": self.env_backend,
            "update": self.update, "step": self.step, "n_resets": self.n_resets, "n_evals": self.n_evals,
            "best_eval": self.best_eval, "last_eval": self.last_eval, "elapsed": self.elapsed,
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.rew_norm.load_state_dict(state["rew_norm"])
        self.action_gen.set_state(state["action_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        self.minibatch_gen.set_state(state["minibatch_gen"])
        for key in ("update", "step", "n_resets", "n_evals", "best_eval", "last_eval", "elapsed"):
            setattr(self, key, state[key])

    def close(self) -> None:
        self.envs.close()
        for env in self.eval_envs:
            env.close()


def _explained_variance(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    var = returns.var()
    return torch.where(var == 0, torch.full_like(var, float("nan")), 1.0 - (returns - values).var() / var)


def _metrics_row(trainer: OnPolicyTrainer, stats: dict[str, torch.Tensor], sps: float) -> dict[str, Any]:
    row: dict[str, Any] = {"step": trainer.step, "update": trainer.update, "sps": round(sps, 1)}
    row.update({k: float(v) for k, v in stats.items()})
    finished = trainer.finished_returns
    row["train_return_mean"] = float(np.mean(finished)) if finished else None
    row["train_episodes"] = len(finished)
    trainer.finished_returns = []
    return row


def train(cfg: TrainConfig, force: bool = False, progress: bool | None = None,
          stop_after_updates: int | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) the run described by ``cfg``; returns its summary.

    ``stop_after_updates`` ends the process early, as a kill would (for tests of resume).
    """
    run = RunDirectory(cfg)
    run.prepare(force)
    summary = read_summary(run.path)
    if summary is not None and summary.get("finished"):
        print(f"{run.path}: already finished (pass --force to run it again)", file=sys.stderr)
        return summary

    state = load_checkpoint(run.path)
    trainer = OnPolicyTrainer(cfg, state.get("env_backend") if state else None)
    try:
        return _train_loop(trainer, run, state, progress, stop_after_updates)
    finally:
        trainer.close()
        run.close()


def _train_loop(trainer: OnPolicyTrainer, run: RunDirectory, state: dict[str, Any] | None, progress: bool | None,
                stop_after_updates: int | None) -> dict[str, Any]:
    from tqdm import tqdm

    cfg = trainer.cfg
    saved_step = None if state is None else state["step"]
    if state is not None:
        trainer.load_state_dict(state)
    run.truncate_logs(trainer.step)
    run.tensorboard(purge_step=trainer.step + 1 if trainer.step else None)
    print(f"symrl: {ENV_CHECKPOINT_NOTE[trainer.env_checkpoint]}", file=sys.stderr)
    if state is not None and state.get("env_state") is not None and trainer.env_checkpoint == "state":
        trainer.load_env_state_dict(state["env_state"])
    else:
        trainer.reset_envs()
    per_update = cfg.n_envs * cfg.n_steps
    next_eval = _next_multiple(trainer.step, cfg.eval_every)
    next_ckpt = _next_multiple(trainer.step, cfg.checkpoint_every)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=trainer.num_updates * per_update, initial=trainer.step, unit="step",
               disable=not show, dynamic_ncols=True, desc=f"{cfg.algo} {cfg.env} seed{cfg.seed}")
    started, steps_at_start = time.perf_counter(), trainer.step
    updates_this_process = 0
    while trainer.update < trainer.num_updates:
        t0 = time.perf_counter()
        trainer.collect()
        stats = trainer.learn()
        trainer.elapsed += time.perf_counter() - t0
        sps = (trainer.step - steps_at_start) / max(time.perf_counter() - started, 1e-9)
        row = _metrics_row(trainer, stats, sps)
        run.log("metrics.jsonl", row, "train")
        diverged = non_finite(row)
        if diverged or not torch.isfinite(trainer.flat.param).all():
            run.stop_diverged(f"update {trainer.update} (step {trainer.step})", diverged or ["the parameters"],
                              saved_step)
        bar.update(per_update)
        last = trainer.update == trainer.num_updates
        if (cfg.eval_every and trainer.step >= next_eval) or last:
            row = trainer.evaluate()
            run.log("eval.jsonl", row, "eval")
            bar.set_postfix(eval=f"{row['mean_return']:.1f}")
            next_eval = _next_multiple(trainer.step, cfg.eval_every)
        if trainer.step >= next_ckpt or last:
            save_checkpoint(run.path, trainer.state_dict())
            saved_step = trainer.step
            next_ckpt = _next_multiple(trainer.step, cfg.checkpoint_every)
            if not last and trainer.env_checkpoint == "sync":
                trainer.reset_envs()
        updates_this_process += 1
        if stop_after_updates is not None and updates_this_process >= stop_after_updates and not last:
            bar.close()
            return {"finished": False, "step": trainer.step}
    bar.close()
    summary = {
        "finished": True, "env": cfg.env, "algo": cfg.algo, "seed": cfg.seed,
        "final_eval_mean": trainer.last_eval["mean_return"], "final_eval_std": trainer.last_eval["std_return"],
        "best_eval_mean": trainer.best_eval, "total_steps": trainer.step,
        "env_backend": trainer.env_backend, "env_checkpoint": trainer.env_checkpoint,
        "wall_time_s": round(trainer.elapsed, 2),
        "sps": round(trainer.step / max(trainer.elapsed, 1e-9), 1),
        "pg_multiplier": effective_pg_multiplier(cfg.algo, cfg.alpha, cfg.beta, cfg.Z, cfg.reverse).formula,
    }
    run.write_summary(summary)
    return summary


def evaluate_run(path: Path, episodes: int | None, deterministic: bool, seed: int) -> dict[str, Any]:
    """Re-evaluate the latest checkpoint of the run in ``path`` on fresh, clean episodes."""
    saved, state = read_config_and_checkpoint(path)
    cfg = config_from_dict(saved)
    cfg = dataclasses.replace(cfg, eval_episodes=episodes or cfg.eval_episodes, eval_deterministic=deterministic)
    if cfg.eval_episodes < 1:
        raise ConfigError(f"episodes: got {cfg.eval_episodes}, allowed: an integer >= 1")
    trainer = OnPolicyTrainer(cfg)
    try:
        trainer.load_state_dict(state)
        returns = trainer.evaluate_episodes(seed, _seeds(seed, 6, 0, cfg.eval_episodes))
    finally:
        trainer.close()
    return {"run": str(path), "checkpoint_step": state["step"], **return_stats(returns),
            "deterministic": deterministic}


def _next_multiple(step: int, every: int) -> int:
    """The first multiple of ``every`` strictly after ``step`` (never, when every is 0)."""
    return (step // every + 1) * every if every else math.inf
