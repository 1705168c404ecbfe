"""The one on-policy loop: collect → training noise → GAE → update → log → evaluate → checkpoint.

A2C, SA2C, PPO, SPPO and scaled PPO differ only in the loss weights (``loss_weights``) and in the
shape of the update: PPO takes ``n_epochs`` passes of shuffled minibatches, A2C one step on the
whole rollout. Each gradient step is ``symrl.losses.loss_step``, the step ``symrl rlhf`` takes too.

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

import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.profiler import record_function

from symrl import advantages as adv_ops
from symrl.buffer import RolloutBuffer, flatten
from symrl.config import ConfigError, TrainConfig, config_from_dict
from symrl.distributions import HeadSpec, head_spec
from symrl.envs import (ObsNormalizer, RewardNormalizer, is_image, make_env, make_vec_env,
                        observation_shape, saves_env_state)
from symrl.envs.atari import AtariSettings, EnvpoolAtari, atari_settings, semantics_note, training_signal
from symrl.envs.registry import is_atari
from symrl.envs.snapshot import arrays_to_tensors, tensors_to_arrays
from symrl.evaluate import evaluate, return_stats
from symrl.device import resolve_device
from symrl.flat import FlatParameters
from symrl.losses import LossStep, effective_pg_multiplier, loss_step, loss_weights, update_statistics
from symrl.nets import build_model
from symrl.noise import flip_advantages, noisy_rewards
from symrl.optim import make_optimizer
from symrl.run import (RunDirectory, load_checkpoint, non_finite, read_config_and_checkpoint, read_summary,
                       save_checkpoint)
from symrl.seeding import generator, seeds

ENV_CHECKPOINT_NOTE = {
    "state": "checkpoints save the training envs' state: episodes run on across checkpoints",
    "sync": "these training envs cannot save their state: every checkpoint resets them (a sync point that "
            "ends the episodes in flight, in a resumed run exactly as in an uninterrupted one)",
}


def _atari(cfg: TrainConfig) -> AtariSettings | None:
    return atari_settings(cfg.atari) if is_atari(cfg.env.rpartition(":")[2]) else None


def build_policy(cfg: TrainConfig, obs_shape: tuple[int, ...], spec: HeadSpec, device: torch.device) -> nn.Module:
    """The actor-critic of ``cfg``, initialized from the run's "init" stream (the caller's RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds(cfg.seed, "init", 0)[0])
        return build_model(obs_shape, spec, cfg.net.hidden, cfg.net.activation, cfg.net.log_std_init,
                           cfg.net.ortho_init).to(device)


class OnPolicyTrainer:
    """State of one training run; ``train`` drives it to ``total_steps``."""

    def __init__(self, cfg: TrainConfig, env_backend: str | None = None):
        """``env_backend``: the backend a resumed run's checkpoints come from (where envpool was
        missing when it started, Gymnasium), so that it goes on with the same simulator."""
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.atari = _atari(cfg)
        if self.atari is not None:
            print(f"symrl: {semantics_note(cfg.env, self.atari)}", file=sys.stderr)
        self.envs = make_vec_env(cfg.env, cfg.n_envs, cfg.vec_env, env_backend or cfg.env_backend, self.atari)
        self.env_checkpoint = "state" if saves_env_state(self.envs) else "sync"
        self.env_backend = "envpool" if isinstance(self.envs, EnvpoolAtari) else "gymnasium"  # after any fallback
        self.spec = head_spec(self.envs.single_action_space, cfg.discretize)
        obs_shape = observation_shape(self.envs.single_observation_space)
        problem = None
        if cfg.loss.beta > 0 and not self.spec.discrete:
            problem = (f"beta: got {cfg.loss.beta:g} with a Gaussian policy on {cfg.env}; the reverse term needs "
                       "action probabilities: set discretize=K (the paper uses 11) or beta=0")
        elif cfg.norm_obs and is_image(obs_shape):
            problem = f"norm_obs: {cfg.env} has image observations, which the CNN scales by 1/255; allowed: false"
        if problem:
            self.envs.close()
            raise ConfigError(problem)
        self.discretized = cfg.discretize > 0
        self.model = build_policy(cfg, obs_shape, self.spec, self.device)
        self.flat = FlatParameters(self.model)
        self.optimizer = make_optimizer(cfg.optimizer, self.flat, cfg.lr)
        self.weights = loss_weights(cfg.loss)
        self.obs_norm = ObsNormalizer(obs_shape, cfg.norm_obs)
        self.rew_norm = RewardNormalizer(cfg.n_envs, cfg.loss.gamma, cfg.norm_reward)
        self.action_gen, self.noise_gen, self.minibatch_gen = (generator(cfg.seed, s) for s in ("actions", "noise",
                                                                                          "minibatches"))
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
        raw, info = self.envs.reset(seed=seeds(self.cfg.seed, "env_reset", self.n_resets, n=self.cfg.n_envs))
        if self.atari is not None:
            self.lives = np.asarray(info["lives"]).copy()
        self.obs_norm.update(raw)
        self.obs = self.obs_norm.normalize(raw)
        self.rew_norm.reset()
        self.ep_return[:] = 0.0
        self.n_resets += 1

    # ------------------------------------------------------------------ collect
    @record_function("symrl.collect")
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
        minibatch of the update (``gradient_step``)."""
        cfg = self.cfg
        last_values = torch.from_numpy(self.last_values).to(self.device)
        rewards = noisy_rewards(rollout["rewards"], cfg.noise, cfg.noise_scale, self.noise_gen)
        next_values = adv_ops.next_values_from_rollout(rollout["values"], last_values, rollout["bootstrap"],
                                                       rollout["truncated"])
        episode_end = torch.maximum(rollout["terminated"], rollout["truncated"])
        advantages, returns = adv_ops.gae(rewards, rollout["values"], next_values, rollout["terminated"],
                                          episode_end, cfg.loss.gamma, cfg.loss.gae_lambda)
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

    def learn(self) -> dict[str, torch.Tensor]:
        """GAE over the rollout, then the update: PPO's ``n_epochs`` passes over minibatches of
        ``batch_size`` shuffled by the minibatch generator, A2C's one step on the whole rollout. With
        ``target_kl`` the update stops before the first minibatch whose approx KL exceeds
        1.5·target_kl, without its step (as SB3). Statistics are reduced once, at the end."""
        cfg, loss = self.cfg, self.cfg.loss
        progress = self.progress_remaining()
        if cfg.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * progress
        clip_scale = progress if cfg.anneal_clip else 1.0
        clip_range = loss.clip_range * clip_scale
        clip_high = None if loss.clip_range_high is None else loss.clip_range_high * clip_scale
        rollout = self.buffer.tensors(self.device)
        with record_function("symrl.advantages"):
            advantages, returns = self.advantages(rollout)
            batch = flatten(rollout, self.old_log_probs(rollout), advantages, returns)
            if self.weights.policy_loss == "ppo" and self.weights.reverse != 0.0:  # SPPO's 1/π_old, once a rollout
                batch["inv_old_probs"] = torch.exp(-batch["log_probs"])
        steps: list[LossStep] = []  # every minibatch's, the one that stops the update included (as SB3)
        grad_norms: list[torch.Tensor] = []  # one per step taken
        with record_function("symrl.update"):  # labels per phase, not per minibatch: one costs ~10 µs
            for minibatch in self.minibatches(batch):
                total, step = self.gradient_step(minibatch, clip_range, clip_high)
                steps.append(step)
                if loss.target_kl is not None and step.approx_kl().item() > 1.5 * loss.target_kl:
                    break  # SB3's early stop: this minibatch takes no step
                self.flat.zero_grad()
                total.backward()
                grad_norms.append(self.flat.clip_grad_norm_(loss.max_grad_norm))
                self.optimizer.step()
        stats = update_statistics(steps, clip_range)
        if grad_norms:
            stats["grad_norm"] = torch.stack(grad_norms).mean()
        stats["gradient_steps"] = torch.tensor(len(grad_norms))
        stats["explained_variance"] = _explained_variance(batch["values"], batch["returns"])
        stats["lr"] = torch.tensor(self.optimizer.param_groups[0]["lr"])
        stats["clip_range"] = torch.tensor(clip_range)
        self.update += 1
        return stats

    def minibatches(self, batch: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        """PPO: ``n_epochs`` shuffles, one gather each, then contiguous slices (views, no copies);
        A2C (no ``batch_size``): the whole rollout once, unshuffled."""
        if self.cfg.batch_size is None:
            yield batch
            return
        n, size = batch["obs"].shape[0], self.cfg.batch_size
        for _ in range(self.cfg.loss.n_epochs):
            order = torch.randperm(n, generator=self.minibatch_gen).to(batch["obs"].device)
            shuffled = {k: v[order] for k, v in batch.items()}
            for start in range(0, n, size):
                yield {k: v[start:start + size] for k, v in shuffled.items()}

    def gradient_step(self, mb: dict[str, torch.Tensor], clip_range: float,
                      clip_high: float | None = None) -> tuple[torch.Tensor, LossStep]:
        """The loss of one minibatch: adv_flip noise on its advantages (a fresh mask per minibatch),
        then the shared ``loss_step``. The sign-change share compares with the advantages after
        adv_flip, so it counts what normalization flips (upstream's counts the noise's flips too)."""
        loss = self.cfg.loss
        dist, values = self.model(mb["obs"])
        log_prob = dist.log_prob(mb["actions"])
        advantages = mb["advantages"]
        if self.cfg.noise == "adv_flip":
            advantages = flip_advantages(advantages, self.cfg.noise_scale, self.noise_gen)
        with torch.set_grad_enabled(self.weights.ent != 0.0):  # logged only: kept out of backward
            entropy = dist.entropy()
        return loss_step(self.weights, log_prob, mb["log_probs"], advantages, entropy, values, mb["returns"],
                         mb["values"], clip_range, loss.clip_range_vf, loss.norm_adv, clip_range_high=clip_high,
                         inv_old_prob=mb.get("inv_old_probs"))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, Any]:
        """Raw returns of one clean episode per eval env, with the policy's current weights."""
        cfg = self.cfg
        gen = generator(cfg.seed, "eval_actions", self.n_evals)
        returns = evaluate(self.model, self.spec, self.eval_envs,
                           seeds(cfg.seed, "eval_episodes", self.n_evals, n=cfg.eval_episodes), self.obs_norm,
                           cfg.eval_deterministic, gen, self.discretized)
        self.n_evals += 1
        row = {"step": self.step, **return_stats(returns), "deterministic": cfg.eval_deterministic}
        self.best_eval = max(self.best_eval, row["mean_return"])
        self.last_eval = row
        return row

    # ------------------------------------------------------------------ checkpoints
    def env_state_dict(self) -> dict[str, Any]:
        """The training envs mid-episode and the trainer's per-env bookkeeping (``state`` mode), as tensors."""
        return arrays_to_tensors({"envs": list(self.envs.get_attr("env_state")), "obs": self.obs,
                                  "ep_return": self.ep_return, "lives": self.lives})

    def load_env_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved episodes: the envs are built (and reset, which some need before a
        step) as in any run, then put into the saved state."""
        state = tensors_to_arrays(state)
        self.envs.reset(seed=seeds(self.cfg.seed, "env_reset", 0, n=self.cfg.n_envs))
        self.envs.set_attr("env_state", state["envs"])
        self.obs, self.ep_return, self.lives = state["obs"], state["ep_return"], state["lives"]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so that ``torch.load(weights_only=True)`` reads the checkpoint."""
        return {
            "env_state": self.env_state_dict() if self.env_checkpoint == "state" else None,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "obs_norm": arrays_to_tensors(self.obs_norm.state_dict()),
            "rew_norm": arrays_to_tensors(self.rew_norm.state_dict()),
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
        self.obs_norm.load_state_dict(tensors_to_arrays(state["obs_norm"]))
        self.rew_norm.load_state_dict(tensors_to_arrays(state["rew_norm"]))
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


def train(cfg: TrainConfig, force: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) the run described by ``cfg``; returns its summary."""
    run = RunDirectory(cfg)
    run.prepare(force)
    summary = read_summary(run.path)
    if summary is not None and summary.get("finished"):
        print(f"{run.path}: already finished (pass --force to run it again)", file=sys.stderr)
        return summary

    state = load_checkpoint(run.path)
    trainer = OnPolicyTrainer(cfg, state.get("env_backend") if state else None)
    try:
        return _train_loop(trainer, run, state, progress)
    finally:
        trainer.close()
        run.close()


def _train_loop(trainer: OnPolicyTrainer, run: RunDirectory, state: dict[str, Any] | None,
                progress: bool | None) -> dict[str, Any]:
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
               disable=not show, dynamic_ncols=True, desc=f"{cfg.loss.algo} {cfg.env} seed{cfg.seed}")
    started, steps_at_start = time.perf_counter(), trainer.step
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
    bar.close()
    summary = {
        "finished": True, "env": cfg.env, "algo": cfg.loss.algo, "seed": cfg.seed,
        "final_eval_mean": trainer.last_eval["mean_return"], "final_eval_std": trainer.last_eval["std_return"],
        "best_eval_mean": trainer.best_eval, "total_steps": trainer.step,
        "env_backend": trainer.env_backend, "env_checkpoint": trainer.env_checkpoint,
        "wall_time_s": round(trainer.elapsed, 2),
        "sps": round(trainer.step / max(trainer.elapsed, 1e-9), 1),
        "pg_multiplier": effective_pg_multiplier(cfg.loss.algo, cfg.loss.alpha, cfg.loss.beta, cfg.loss.Z,
                                                 cfg.loss.reverse_kind).formula,
    }
    run.write_summary(summary)
    return summary


def evaluate_run(path: Path, episodes: int | None, deterministic: bool, seed: int) -> dict[str, Any]:
    """Re-evaluate the latest checkpoint of the run in ``path`` on fresh, clean episodes: only the
    policy, its observation normalizer and the evaluation envs are built (no training envs, no optimizer)."""
    saved, state = read_config_and_checkpoint(path)
    cfg = config_from_dict(saved)
    n = episodes or cfg.eval_episodes
    if n < 1:
        raise ConfigError(f"episodes: got {n}, allowed: an integer >= 1")
    envs = [make_env(cfg.env, _atari(cfg)) for _ in range(n)]
    try:
        spec = head_spec(envs[0].action_space, cfg.discretize)
        obs_shape = observation_shape(envs[0].observation_space)
        model = build_policy(cfg, obs_shape, spec, resolve_device(cfg.device))
        model.load_state_dict(state["model"])
        obs_norm = ObsNormalizer(obs_shape, cfg.norm_obs)
        obs_norm.load_state_dict(state["obs_norm"])
        returns = evaluate(model, spec, envs, seeds(seed, "eval_episodes", 0, n=n), obs_norm, deterministic,
                           torch.Generator().manual_seed(seed), cfg.discretize > 0)
    finally:
        for env in envs:
            env.close()
    return {"run": str(path), "checkpoint_step": state["step"], **return_stats(returns),
            "deterministic": deterministic}


def _next_multiple(step: int, every: int) -> int:
    """The first multiple of ``every`` strictly after ``step`` (never, when every is 0)."""
    return (step // every + 1) * every if every else math.inf
