"""``symrl rlhf``: PPO / SPPO / scaled PPO on a causal LM, the loop of ``symrl train`` with text.

One iteration: prompts → batched sampling → sequence score + per-token KL penalty → token GAE →
epochs of minibatch updates with the shared loss step (``symrl.losses.loss_step``) over a token mask
(+ auxiliary NLL on reference texts) → metrics → held-out evaluation (``symrl.llm.evaluate``) →
atomic checkpoint. The models and their accelerator are ``symrl.llm.agent.Agent``; what `accelerate
launch` set up is fitted in ``symrl.llm.distributed``. Every random draw comes from a named stream of
(seed, iteration, process) (``symrl.seeding``), so a killed run resumed from its last checkpoint
equals an uninterrupted one.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.profiler import record_function

from symrl import advantages as adv_ops
from symrl.device import resolve_device
from symrl.llm.agent import Agent
from symrl.llm.config import RLHFConfig
from symrl.llm.distributed import any_process, load_optimizer_state, optimizer_state
from symrl.llm.evaluate import checkpoint_folder, evaluate, load_eval_lms, print_eval
from symrl.llm.generation import Batch
from symrl.llm.kl import kl_penalized_rewards, next_kl_coef
from symrl.llm.policy import token_entropy, token_logprobs
from symrl.llm.tasks import Example, iteration_examples, load_examples
from symrl.losses import LossStep, loss_step, loss_weights, masked_mean, token_weights, update_statistics
from symrl.noise import noisy_rewards
from symrl.run import RunDirectory, load_checkpoint, non_finite, read_jsonl, read_summary, save_checkpoint
from symrl.seeding import generator, seeds


@dataclass
class Rollout:
    """One iteration's data; token tensors are (B, W) over the continuation window."""

    batch: Batch  # prompts + sampled completions
    reference: Batch | None  # prompts + reference texts (auxiliary NLL), same width
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    scores: Tensor  # clean: the noise of ``noise`` reaches the advantages only
    kl: Tensor | None  # per-token estimate, zero on padding; None: not measured (KL off)
    ref_logprobs: Tensor | None

    @property
    def mask(self) -> Tensor:
        return self.batch.continuation_mask


def _widen(batch: Batch, width: int, pad_id: int) -> Batch:
    extra = width - batch.continuation.shape[1]
    if extra <= 0:
        return batch
    pad = torch.full((batch.continuation.shape[0], extra), pad_id, dtype=batch.continuation.dtype,
                     device=batch.continuation.device)
    return Batch(batch.query, batch.query_mask, torch.cat([batch.continuation, pad], 1),
                 torch.cat([batch.continuation_mask, torch.zeros_like(pad)], 1))


def _cat(a: Batch, b: Batch) -> Batch:
    return Batch(*(torch.cat([x, y]) for x, y in zip(
        (a.query, a.query_mask, a.continuation, a.continuation_mask),
        (b.query, b.query_mask, b.continuation, b.continuation_mask))))


class RLHFTrainer:
    """The loop's state: the agent and its optimizer, the prompts, the KL coefficient, the counter of
    completed iterations and the run directory."""

    def __init__(self, cfg: RLHFConfig, run: RunDirectory):
        self.cfg = cfg
        self.run = run
        state = load_checkpoint(run.path)
        self.agent = Agent(cfg, checkpoint_folder(run.path, state), optimizer=True)
        self.optimizer = self.agent.optimizer
        self.train_examples, self.eval_examples = load_examples(cfg, self.agent.tokenizer)
        self.eval_lms = load_eval_lms(cfg, self.agent.device)
        self.weights = loss_weights(cfg.loss)
        self.completed = 0  # iterations
        self.kl_coef = cfg.kl_coef
        if state:
            load_optimizer_state(self.agent.actor, self.optimizer.optimizer, state["optimizer"])
            if state.get("scaler") is not None and self.agent.accelerator.scaler is not None:
                self.agent.accelerator.scaler.load_state_dict(state["scaler"])
            self.completed = state["step"]
            self.kl_coef = state["kl_coef"]
        self.saved_iteration = self.completed if state else None  # the last good checkpoint's

    # ------------------------------------------------------------ one iteration

    def collect(self, examples: list[Example]) -> Rollout:
        cfg = self.cfg
        batch, _, scores, _ = self.agent.sample(examples)
        reference = self.agent.references(examples, batch)
        if reference is not None:
            width = max(batch.continuation.shape[1], reference.continuation.shape[1])
            batch = _widen(batch, width, self.agent.tokenizer.pad_token_id)
            reference = _widen(reference, width, self.agent.tokenizer.pad_token_id)
        # with the KL off nothing needs the reference, so it is not run (as TRL's GRPO with beta=0): about a
        # seventh of a critic-free iteration; the training KL goes unlogged, evaluation still reports it
        measure_kl = cfg.kl_in != "off" or cfg.kl_controller == "adaptive"
        logprobs, values, ref_logprobs = self.agent.score(batch, reference=measure_kl)
        mask = batch.continuation_mask
        noise_gen = generator(cfg.seed, "noise", self.completed, self.agent.accelerator.process_index)
        trained = noisy_rewards(scores, cfg.noise, cfg.noise_scale, noise_gen)  # training only
        rewards, kl = kl_penalized_rewards(trained, logprobs, logprobs if ref_logprobs is None else ref_logprobs,
                                           mask, self.kl_coef if cfg.kl_in == "reward" else 0.0)
        kl = kl if measure_kl else None
        if cfg.advantage == "gae":
            advantages, returns = adv_ops.token_gae(rewards, values, mask, cfg.loss.gamma, cfg.loss.gae_lambda)
        else:  # critic-free: each completion's score against its prompt's group, on every token
            advantages = adv_ops.group_advantages(trained.float(), cfg.group_size, cfg.advantage)[:, None] * mask
            returns = torch.zeros_like(advantages)
        return Rollout(batch, reference, logprobs, values * mask, advantages, returns, scores, kl, ref_logprobs)

    # ------------------------------------------------------------ the update

    @record_function("symrl.rlhf.update")
    def update(self, rollout: Rollout, generator: torch.Generator) -> dict[str, float]:
        """``n_epochs`` passes over shuffled minibatches, each accumulated from ``grad_accum``
        micro-batches; the statistics are those of ``symrl train`` (``update_statistics``)."""
        cfg = self.cfg
        n = rollout.batch.query.shape[0]
        micro = cfg.minibatch_size // cfg.grad_accum
        steps: list[LossStep] = []
        extra: dict[str, list[Tensor]] = {}  # grad_norm per step, target_nll per micro-batch
        self.agent.actor.train()
        for _ in range(cfg.loss.n_epochs):
            order = torch.randperm(n, generator=generator).to(self.agent.device)
            for lo in range(0, n - cfg.minibatch_size + 1, cfg.minibatch_size):
                rows = order[lo:lo + cfg.minibatch_size]
                whitened = (whiten(rollout.advantages[rows], rollout.mask[rows], cfg.norm_adv_scope, micro,
                                   cfg.generation.max_new_tokens) if cfg.loss.norm_adv else None)
                shares = _shares(rollout, rows, cfg)
                for part in range(0, cfg.minibatch_size, micro):
                    with self.agent.accelerator.accumulate(self.agent.actor):
                        steps.append(self._micro_step(rollout, rows[part:part + micro],
                                                      None if whitened is None else whitened[part:part + micro],
                                                      shares.rows(part, part + micro), extra))
                norm = self.agent.accelerator.clip_grad_norm_(self.agent.actor.parameters(), cfg.loss.max_grad_norm)
                self.optimizer.step()
                # an fp16 loss scaler skips a step whose gradient overflowed (routine, not divergence);
                # DeepSpeed reports its engine's norm of the previous step, or None before the first
                if norm is not None and not self.agent.accelerator.optimizer_step_was_skipped:
                    extra.setdefault("grad_norm", []).append(norm.detach().float())
                self.optimizer.zero_grad(set_to_none=True)
        stats = update_statistics(steps, cfg.loss.clip_range)
        stats.update({key: torch.stack(values).mean() for key, values in extra.items()})
        return {key: value.item() for key, value in stats.items()}

    def _micro_step(self, rollout: Rollout, rows: Tensor, whitened: Tensor | None, shares: Shares,
                    extra: dict[str, list[Tensor]]) -> LossStep:
        """Loss and backward of one micro-batch. Each term is aggregated with the minibatch's token
        weights (``loss_aggregation``) and weighted by the micro-batch's share of them, so
        accumulating ``grad_accum`` micro-batches gives the minibatch's loss exactly, whatever the
        completion lengths."""
        cfg = self.cfg
        batch = rollout.batch.rows(rows)
        scored = batch if rollout.reference is None else _cat(batch, rollout.reference.rows(rows))
        logits, values = self.agent.actor(scored.input_ids, scored.attention_mask, scored.start)
        logits = logits.float() / cfg.generation.temperature  # float32, as generate divides them
        k = rows.shape[0]
        logprobs = token_logprobs(logits[:k], batch.continuation)
        mask = batch.continuation_mask
        with torch.set_grad_enabled(cfg.loss.ent_coef != 0):
            entropy = token_entropy(logits[:k])
        total, step = loss_step(self.weights, logprobs, rollout.logprobs[rows], rollout.advantages[rows], entropy,
                                values[:k], rollout.returns[rows], rollout.values[rows], cfg.loss.clip_range,
                                cfg.loss.clip_range_vf, False, shares.weights, whitened, cfg.loss.clip_range_high)
        if cfg.kl_in == "loss":  # k3 estimate of KL(π_θ || π_ref) per token, as GRPO
            log_ratio = rollout.ref_logprobs[rows] - logprobs
            kl = masked_mean(torch.expm1(log_ratio) - log_ratio, shares.weights)
            total = total + self.kl_coef * kl
            extra.setdefault("kl_loss", []).append(kl.detach().float())
        # accelerate divides by grad_accum: undo it, the micro-batches' shares already sum to one
        loss = total * (shares.weights.sum() / shares.norm) * cfg.grad_accum  # = accelerate's (checked)
        if rollout.reference is not None:
            ref = rollout.reference.rows(rows)
            nll = -masked_mean(token_logprobs(logits[k:], ref.continuation), ref.continuation_mask)
            share = ref.continuation_mask.sum() / shares.reference_tokens
            loss = loss + cfg.target_coef * nll * share * cfg.grad_accum
            extra.setdefault("target_nll", []).append(nll.detach().float())
        self.agent.accelerator.backward(loss)
        return step

    @record_function("symrl.rlhf.iteration")
    def iteration(self) -> dict[str, Any]:
        """One iteration: this process's prompts → rollout → update → the KL coefficient's next value;
        returns its metrics row (the benchmark times this). All draws come from the "iteration"
        stream of (iteration, process)."""
        cfg, accelerator = self.cfg, self.agent.accelerator
        start = time.perf_counter()
        process = accelerator.process_index
        seed = seeds(cfg.seed, "iteration", self.completed, process)[0]
        torch.manual_seed(seed)  # sampling
        prompts = iteration_examples(self.train_examples, self.completed * accelerator.num_processes + process,
                                     cfg.rollouts // cfg.group_size, cfg.seed)
        examples = [example for example in prompts for _ in range(cfg.group_size)]  # groups: consecutive rows
        rollout = self.collect(examples)
        stats = self.update(rollout, torch.Generator().manual_seed(seed))
        scores = accelerator.gather(rollout.scores.float())
        kl_per_sequence = None if rollout.kl is None else accelerator.gather(rollout.kl.sum(1)).mean().item()
        trajectories = cfg.rollouts * accelerator.num_processes
        row = {"step": self.completed + 1, "samples": (self.completed + 1) * trajectories,
               "reward_mean": scores.mean().item(), "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
               "kl": kl_per_sequence, "kl_coef": self.kl_coef,
               "response_length": rollout.mask.sum(1).float().mean().item(), **stats,
               "time_s": time.perf_counter() - start}
        if kl_per_sequence is not None:
            self.kl_coef = next_kl_coef(cfg.kl_controller, self.kl_coef, kl_per_sequence, cfg.kl_target,
                                        cfg.kl_horizon, trajectories)
        self.completed += 1
        return row

    def evaluate(self) -> dict[str, Any]:
        return evaluate(self.agent, self.eval_examples, self.eval_lms, self.completed)

    # ------------------------------------------------------------ checkpoints

    def save(self) -> None:
        """Models by ``save_pretrained`` into a fresh folder renamed into place, then the small state
        file (optimizer, KL coefficient, iteration) written atomically: it names the folder, so a kill
        at any moment leaves the previous checkpoint whole."""
        # every process gathers (a collective when the weights are sharded); the main one writes
        agent = self.agent
        state = agent.accelerator.get_state_dict(agent.actor)
        optimizer = optimizer_state(agent.accelerator, agent.actor, self.optimizer.optimizer)
        self.saved_iteration = self.completed
        if not agent.accelerator.is_main_process:
            return
        root = self.run.path / "checkpoints"
        name = f"iter-{self.completed:06d}"
        tmp = root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        agent.model.save(tmp, state)
        agent.tokenizer.save_pretrained(tmp / "policy")
        shutil.rmtree(root / name, ignore_errors=True)
        tmp.rename(root / name)
        scaler = agent.accelerator.scaler
        save_checkpoint(self.run.path, {"step": self.completed, "folder": name, "kl_coef": self.kl_coef,
                                        "optimizer": optimizer,
                                        "scaler": scaler.state_dict() if scaler is not None else None})
        for old in root.glob("iter-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------ the loop

    def train(self, progress: bool = True) -> dict[str, Any]:
        """Iterations to ``cfg.iterations``: log → stop if diverged → evaluate → checkpoint."""
        from tqdm import tqdm

        cfg, main = self.cfg, self.agent.accelerator.is_main_process
        resumed = self.completed > 0
        if main:  # lines after the checkpoint (all, without one) are written again
            self.run.truncate_logs(self.completed if resumed else -1)
            self.run.tensorboard(purge_step=self.completed + 1 if resumed else 0)
        last_eval = self._last_eval() if resumed else None
        bar = tqdm(total=cfg.iterations, initial=self.completed, dynamic_ncols=True, disable=not (progress and main),
                   desc=f"{cfg.loss.algo} {cfg.task} seed{cfg.seed}")
        if not resumed and cfg.eval_every:  # the starting point of every curve: the initial policy
            last_eval = self._evaluate_and_log()
        while self.completed < cfg.iterations:
            row = self.iteration()
            if main:
                self.run.log("metrics.jsonl", row, "train")
            self._stop_if_diverged(row)
            last = self.completed == cfg.iterations
            if last or (cfg.eval_every and self.completed % cfg.eval_every == 0):
                last_eval = self._evaluate_and_log()
            if last or self.completed % cfg.checkpoint_every == 0:
                self.save()
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.3f}", **({} if row["kl"] is None else {"kl": f"{row['kl']:.3f}"}))
        bar.close()
        summary = {"finished": True, "task": cfg.task, "algo": cfg.loss.algo, "seed": cfg.seed,
                   "iterations": cfg.iterations, "final_eval_mean": last_eval["mean_return"] if last_eval else None,
                   "final_eval": {k: v for k, v in (last_eval or {}).items() if k != "samples"}}
        if main:
            self.run.write_summary(summary)
        self.run.close()
        return summary

    def _stop_if_diverged(self, row: dict[str, Any]) -> None:
        """Stop every process (one line, ``failed.json``) when any of them saw a non-finite loss term
        or gradient norm in this iteration; the last checkpoint stays the last good one."""
        diverged = non_finite(row)
        if any_process(self.agent.accelerator, bool(diverged)):
            self.run.stop_diverged(f"iteration {self.completed}", diverged or ["a loss on another process"],
                                   self.saved_iteration, record=self.agent.accelerator.is_main_process)

    def _evaluate_and_log(self) -> dict[str, Any]:
        row = {"step": self.completed, **self.evaluate()}
        if self.agent.accelerator.is_main_process:
            self.run.log("eval.jsonl", row, "eval")
            print_eval(row)
        return row

    def _last_eval(self) -> dict[str, Any] | None:
        rows = read_jsonl(self.run.path / "eval.jsonl")
        return rows[-1] if rows else None


def whiten(advantages: Tensor, mask: Tensor, scope: str, micro: int, width: int) -> Tensor:
    """A minibatch's advantages whitened (``norm_adv_scope``). ``minibatch_tokens``: over its valid
    tokens, padding left at 0: statistics of the tokens that are trained, from the whole minibatch,
    whatever the padding or the accumulation. ``microbatch_padded``: TRIL's (``ppo.py:106-108``),
    over every position of each micro-batch of ``micro`` rows, the zero advantages of padding
    included, in tensors ``width`` = max_new_tokens wide as TRIL's (``base_online.py:176-181``)."""
    if scope == "minibatch_tokens":
        return adv_ops.normalize(advantages, mask)
    cols = advantages.shape[1]
    padded = torch.nn.functional.pad(advantages * mask, (0, max(0, width - cols)))
    return torch.cat([adv_ops.normalize(part) for part in padded.split(micro)])[:, :cols]


class Shares(NamedTuple):
    """How a minibatch's loss is split over its micro-batches: per-token weights (rows of the
    minibatch's), the minibatch's normalizer, and its reference texts' tokens (auxiliary NLL)."""

    weights: Tensor
    norm: Tensor
    reference_tokens: Tensor | None

    def rows(self, lo: int, hi: int) -> Shares:
        return Shares(self.weights[lo:hi], self.norm, self.reference_tokens)


def _shares(rollout: Rollout, rows: Tensor, cfg: RLHFConfig) -> Shares:
    weights, norm = token_weights(rollout.mask[rows], cfg.loss_aggregation, cfg.generation.max_new_tokens)
    reference = None if rollout.reference is None else rollout.reference.continuation_mask[rows].sum().clamp(min=1)
    return Shares(weights, norm, reference)


def train_rlhf(cfg: RLHFConfig, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one RLHF run; a finished run returns its summary unless ``force``."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    run = RunDirectory(cfg)
    if not torch.distributed.is_initialized():  # a sweep worker runs several runs, each with its own settings
        AcceleratorState._reset_state(reset_partial_state=True)
    state = PartialState(cpu=resolve_device(cfg.device).type == "cpu")
    if state.is_main_process:
        run.prepare(force)
    state.wait_for_everyone()
    summary = read_summary(run.path)
    if summary and summary.get("finished"):
        return summary
    return RLHFTrainer(cfg, run).train(progress)
