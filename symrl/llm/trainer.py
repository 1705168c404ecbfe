"""``symrl rlhf``: PPO / SPPO / scaled PPO on a causal LM, the loop of ``symrl train`` with text.

One iteration: prompts → batched sampling → sequence score + per-token KL penalty → token GAE →
epochs of minibatch updates with the shared symmetric loss over a token mask (+ auxiliary NLL on
reference texts) → metrics → held-out evaluation → atomic checkpoint. Every random draw is seeded
from (seed, iteration), so a killed run resumed from its last checkpoint equals an uninterrupted one.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor

from symrl import advantages as adv_ops
from symrl.algos.update import approx_kl
from symrl.config import ConfigError
from symrl.device import resolve_device
from symrl.llm import generation, metrics
from symrl.llm.config import RLHFConfig
from symrl.llm.generation import Batch
from symrl.llm.kl import kl_penalized_rewards, next_kl_coef
from symrl.llm.policy import (Reference, build_actor_critic, evaluating, load_causal_lm, load_tokenizer, token_entropy,
                              token_logprobs)
from symrl.llm.rewards import reward_from_config
from symrl.llm.sharding import load_whole_optimizer_state, whole_optimizer_state
from symrl.llm.tasks import Example, iteration_examples, load_examples
from symrl.losses import loss_weights, masked_mean, symmetric_loss
from symrl.run import (RunDirectory, load_checkpoint, non_finite, read_config_and_checkpoint, read_jsonl,
                       read_summary, save_checkpoint)

EVAL_SEED_OFFSET = 7_919  # evaluation draws its own samples, apart from the training stream


@dataclass
class Rollout:
    """One iteration's data; token tensors are (B, W) over the continuation window."""

    batch: Batch  # prompts + sampled completions
    reference: Batch | None  # prompts + reference texts (auxiliary NLL), same width
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    scores: Tensor
    kl: Tensor  # per-token estimate, zero on padding

    @property
    def mask(self) -> Tensor:
        return self.batch.continuation_mask


def _seed(seed: int, stream: int, process: int) -> int:
    return (seed * 1_000_003 + stream) * 64 + process


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
    """Thin state holder: models, optimizer, KL coefficient, the run directory."""

    def __init__(self, cfg: RLHFConfig, run: RunDirectory):
        from accelerate import Accelerator

        self.cfg = cfg
        self.run = run
        device = resolve_device(cfg.device)
        self.accelerator = Accelerator(cpu=device.type == "cpu", gradient_accumulation_steps=cfg.grad_accum,
                                       mixed_precision=None if cfg.mixed_precision == "auto" else cfg.mixed_precision)
        self.device = self.accelerator.device
        self._check_distributed()
        self.tokenizer = load_tokenizer(cfg.policy.tokenizer or cfg.policy.model)
        self.train_examples, self.eval_examples = load_examples(cfg, self.tokenizer)
        state = load_checkpoint(run.path)
        folder = run.path / "checkpoints" / state["folder"] if state else None
        torch.manual_seed(_seed(cfg.seed, -1, 0))  # the value head's initialization
        actor = build_actor_critic(cfg.policy, folder)
        self.reference = Reference(cfg.policy, actor, self.device)
        self.reward = reward_from_config(cfg.reward, self.device, lm=actor.lm, tokenizer=self.tokenizer)
        self.eval_lms = {name: (load_causal_lm(name, "eval_lms").eval().to(self.device), load_tokenizer(name, "eval_lms"))
                         for name in cfg.eval_lms}
        optimizer = torch.optim.AdamW(decay_groups(actor, cfg.weight_decay), lr=cfg.lr, eps=cfg.adam_eps)
        self.actor, self.optimizer = self.accelerator.prepare(actor, optimizer)
        self.reference_precision = self._match_reference_precision()
        self.weights = loss_weights(cfg)
        self.iteration = 0
        self.kl_coef = cfg.kl_coef
        if state:
            if state["optimizer"] is not None:
                load_whole_optimizer_state(self.actor, self.optimizer.optimizer, state["optimizer"])
            else:
                print("symrl: this checkpoint holds no optimizer state (DeepSpeed run): Adam restarts",
                      file=sys.stderr)
            if state.get("scaler") is not None and self.accelerator.scaler is not None:
                self.accelerator.scaler.load_state_dict(state["scaler"])
            self.iteration = state["step"]
            self.kl_coef = state["kl_coef"]
        self.saved_iteration = self.iteration if state else None  # the last good checkpoint's

    def _check_distributed(self) -> None:
        """What `accelerate launch` set up must fit the run: FSDP version 2 only (the one tested: its
        gathered weights serve ``generate`` inside the root's forward), full-precision weights under
        FSDP, DeepSpeed ZeRO-2 (not 3), which gets its micro-batch size and must accumulate
        ``grad_accum`` micro-batches."""
        from accelerate.utils import DistributedType

        kind = self.accelerator.distributed_type
        if kind == DistributedType.FSDP and not self.accelerator.is_fsdp2:
            raise ConfigError("accelerate: fsdp_version 1 is not supported by symrl rlhf; allowed: fsdp_version: 2 "
                              "(configs/accelerate/fsdp.yaml), DDP or DeepSpeed ZeRO-2")
        if kind == DistributedType.FSDP and self.cfg.reward.kind == "adapter":
            raise ConfigError("reward.kind: adapter runs the policy's base outside the FSDP-wrapped forward; allowed "
                              "with FSDP: another kind (or the adapter reward with DDP, DeepSpeed ZeRO-2, one process)")
        if kind == DistributedType.FSDP and self.cfg.policy.load_in != "full":
            raise ConfigError(f"policy.load_in: {self.cfg.policy.load_in} weights are not sharded by symrl's FSDP "
                              "path; allowed with FSDP: full (or quantized with DDP / one process)")
        if self.accelerator.gradient_accumulation_steps != self.cfg.grad_accum:
            raise ConfigError(f"grad_accum: got {self.cfg.grad_accum} but the accelerate config accumulates "
                              f"{self.accelerator.gradient_accumulation_steps}; allowed: the same number in both")
        if kind == DistributedType.DEEPSPEED and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            raise ConfigError("accelerate: DeepSpeed ZeRO-3 is not supported by symrl rlhf; allowed: ZeRO-2 "
                              "(configs/accelerate/deepspeed_zero2.yaml), FSDP 2 (configs/accelerate/fsdp.yaml) or DDP")
        if kind == DistributedType.DEEPSPEED:
            self.accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
                self.cfg.minibatch_size // self.cfg.grad_accum)

    def _match_reference_precision(self) -> Callable[[], ContextManager]:
        """The reference copy must compute as the policy does, or the KL is above 0 before any update.
        accelerate autocasts the wrapped policy's forward (one process, DDP): the copy runs under the
        same autocast. FSDP 2 (its mixed-precision policy) and DeepSpeed compute in a parameter dtype
        without autocast: the copy is cast to that dtype. The LoRA reference runs through the wrapped
        forward itself."""
        from accelerate.utils import DistributedType

        if self.accelerator.is_fsdp2:
            dtype = getattr(self.accelerator.state.fsdp_plugin.mixed_precision_policy, "param_dtype", None)
        elif self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            dtype = next(self.model.parameters()).dtype
        else:
            return self.accelerator.autocast
        if dtype is not None and self.reference.model is not None:
            for param in self.reference.model.parameters():  # buffers (rotary frequencies) keep their
                param.data = param.data.to(dtype)            # dtype, as the policy's do
        return nullcontext

    def _optimizer_state(self) -> dict | None:
        """``None`` under DeepSpeed, whose sharded state is not saved (a resumed run says that Adam
        restarts); the whole state otherwise (gathered under FSDP: every process calls this)."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            return None
        return whole_optimizer_state(self.actor, self.optimizer.optimizer)

    @property
    def model(self):
        return self.accelerator.unwrap_model(self.actor)

    # ------------------------------------------------------------ rollouts

    def _references(self, examples: list[Example], batch: Batch) -> Batch | None:
        if self.cfg.target_coef == 0 or any(e.reference is None for e in examples):
            return None
        # IMDB references are whole reviews, longer than small models' positions: only their start is kept
        ids = self.tokenizer([e.reference for e in examples], add_special_tokens=False, verbose=False)["input_ids"]
        cut = [row[:self.cfg.generation.max_new_tokens] for row in ids]  # the start follows the prompt: keep it
        tokens, mask = generation.right_pad(cut, self.tokenizer.pad_token_id, self.device)
        return Batch(batch.query, batch.query_mask, tokens, mask)

    @torch.no_grad()
    def _score(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Log-probabilities, values and reference log-probabilities of the continuation tokens,
        in micro-batches (memory)."""
        out: list[tuple[Tensor, Tensor, Tensor]] = []
        step = self.cfg.minibatch_size // self.cfg.grad_accum
        with evaluating(self.actor):
            for lo in range(0, batch.query.shape[0], step):
                part = batch.rows(torch.arange(lo, min(lo + step, batch.query.shape[0]), device=self.device))
                logits, values = self.actor(part.input_ids, part.attention_mask, part.start)
                with self.reference_precision():
                    ref = self.reference.logprobs(self.actor, part.input_ids, part.attention_mask, part.start,
                                                  self.cfg.generation.temperature)
                out.append((token_logprobs(logits.float() / self.cfg.generation.temperature, part.continuation), values, ref))
        return tuple(torch.cat(parts) for parts in zip(*out))

    def _sample(self, examples: list[Example], full_prompts: bool = False,
                greedy: bool = False) -> tuple[Batch, list[str], Tensor, list[str]]:
        """Completions, their rewards and the prompt texts the reward read. The reward reads the prompt as the policy saw it (its last
        ``prompt_tokens`` tokens, decoded), as TRIL's training reward does (``agent.py:96-107``);
        ``full_prompts``: the whole prompt text instead, as TRIL's evaluation metric does.
        ``greedy``: greedy decoding instead of sampling (``generation.eval_greedy``)."""
        prompts = [e.prompt for e in examples]
        with evaluating(self.actor):
            # under FSDP every process runs each decoding step (sharded weights) until all are done;
            # elsewhere transformers decides (None)
            generate = partial(self.actor, mode="generate", synced_gpus=True if self.accelerator.is_fsdp2 else None)
            batch = generation.sample(generate, self.tokenizer, prompts, self.cfg.generation, self.device, greedy)
        completions = generation.decode(self.tokenizer, batch.continuation, batch.continuation_mask)
        read = prompts if full_prompts else generation.decode(self.tokenizer, batch.query, batch.query_mask)
        scores = self.reward(read, completions, [e.reference for e in examples]).to(self.device)
        return batch, completions, scores, read

    def collect(self, examples: list[Example]) -> Rollout:
        cfg = self.cfg
        batch, _, scores, _ = self._sample(examples)
        reference = self._references(examples, batch)
        if reference is not None:
            width = max(batch.continuation.shape[1], reference.continuation.shape[1])
            batch = _widen(batch, width, self.tokenizer.pad_token_id)
            reference = _widen(reference, width, self.tokenizer.pad_token_id)
        logprobs, values, ref_logprobs = self._score(batch)
        mask = batch.continuation_mask
        rewards, kl = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, self.kl_coef)
        advantages, returns = adv_ops.token_gae(rewards, values, mask, cfg.gamma, cfg.gae_lambda)
        return Rollout(batch, reference, logprobs, values * mask, advantages, returns, scores, kl)

    # ------------------------------------------------------------ the update

    def update(self, rollout: Rollout, generator: torch.Generator) -> dict[str, float]:
        cfg = self.cfg
        n = rollout.batch.query.shape[0]
        micro = cfg.minibatch_size // cfg.grad_accum
        stats: dict[str, list[Tensor]] = {}
        self.actor.train()
        for _ in range(cfg.n_epochs):
            order = torch.randperm(n, generator=generator).to(self.device)
            for lo in range(0, n - cfg.minibatch_size + 1, cfg.minibatch_size):
                rows = order[lo:lo + cfg.minibatch_size]
                mask = rollout.mask[rows]
                raw = rollout.advantages[rows]
                used = whiten(raw, mask, cfg.norm_adv_scope, micro, cfg.generation.max_new_tokens) if cfg.norm_adv \
                    else raw
                tokens = _token_counts(rollout, rows)
                for part in range(0, cfg.minibatch_size, micro):
                    with self.accelerator.accumulate(self.actor):
                        self._micro_step(rollout, rows[part:part + micro], used[part:part + micro], tokens, stats)
                norm = self.accelerator.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                # an fp16 loss scaler skips a step whose gradient overflowed (routine, not divergence);
                # DeepSpeed reports its engine's norm of the previous step, or None before the first
                if norm is not None and not self.accelerator.optimizer_step_was_skipped:
                    _append(stats, grad_norm=norm)
                self.optimizer.zero_grad(set_to_none=True)
                _append(stats, sign_change=adv_ops.sign_change_share(raw, used, mask))
        return {k: torch.stack(v).mean().item() for k, v in stats.items()}

    def _micro_step(self, rollout: Rollout, rows: Tensor, advantages: Tensor, tokens: tuple[Tensor, Tensor | None],
                    stats: dict[str, list[Tensor]]) -> None:
        """Loss and backward of one micro-batch. Each token-mean term is weighted by the micro-batch's
        share of the minibatch's valid tokens, so accumulating ``grad_accum`` micro-batches gives the
        minibatch's token mean exactly, whatever the completion lengths."""
        cfg = self.cfg
        batch = rollout.batch.rows(rows)
        scored = batch if rollout.reference is None else _cat(batch, rollout.reference.rows(rows))
        logits, values = self.actor(scored.input_ids, scored.attention_mask, scored.start)
        logits = logits.float() / cfg.generation.temperature  # float32, as generate divides them
        k = rows.shape[0]
        logprobs = token_logprobs(logits[:k], batch.continuation)
        mask = batch.continuation_mask
        with torch.set_grad_enabled(cfg.ent_coef != 0):
            entropy = token_entropy(logits[:k])
        terms, ratio = symmetric_loss("ppo", self.weights, logprobs, rollout.logprobs[rows], advantages, entropy,
                                      values[:k], rollout.returns[rows], rollout.values[rows], cfg.clip_range,
                                      cfg.clip_range_vf, mask)
        # accelerate divides by grad_accum: undo it, the token shares already sum to one
        loss = terms.total * (mask.sum() / tokens[0]) * cfg.grad_accum  # grad_accum = accelerate's (checked)
        if rollout.reference is not None:
            ref = rollout.reference.rows(rows)
            nll = -masked_mean(token_logprobs(logits[k:], ref.continuation), ref.continuation_mask)
            loss = loss + cfg.target_coef * nll * (ref.continuation_mask.sum() / tokens[1]) * cfg.grad_accum
            _append(stats, target_nll=nll.detach())
        self.accelerator.backward(loss)
        valid = mask.bool()
        log_ratio = (logprobs.detach() - rollout.logprobs[rows])[valid]
        _append(stats, policy_loss=terms.policy, reverse_loss=terms.reverse, value_loss=terms.value,
                entropy=terms.entropy, approx_kl=approx_kl(log_ratio),
                clip_fraction=((ratio.detach()[valid] - 1).abs() > cfg.clip_range).float().mean())

    # ------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Held-out prompts, one sample each: task reward, VADER judge, KL to the reference,
        perplexities (the policy's on the reference texts, the generations' under ``eval_lms``),
        diversity (and ROUGE / win rate for TL;DR), with a few sample generations."""
        cfg = self.cfg
        torch.manual_seed(_seed(cfg.seed, EVAL_SEED_OFFSET + self.iteration, self.accelerator.process_index))
        examples = self.eval_examples
        scores, completions, read, kls, ref_lps, masks = [], [], [], [], [], []
        for lo in range(0, len(examples), cfg.rollouts):
            part = examples[lo:lo + cfg.rollouts]
            batch, texts, part_scores, part_read = self._sample(part, full_prompts=cfg.eval_reward_prompt == "full",
                                                                greedy=cfg.generation.eval_greedy)
            read += part_read
            logprobs, _, ref_logprobs = self._score(batch)
            mask = batch.continuation_mask
            scores.append(part_scores.float().cpu())
            completions += texts
            kls += ((logprobs - ref_logprobs) * mask).sum(1).cpu().tolist()
            ref_lps.append((ref_logprobs * mask).sum().item())
            masks.append(mask.sum().item())
        scores_t = torch.cat(scores)
        prompts = [e.prompt for e in examples]
        row: dict[str, Any] = {
            "mean_return": scores_t.mean().item(), "reward_std": scores_t.std().item() if len(scores_t) > 1 else 0.0,
            "judge_vader": sum(metrics.vader_judge(completions)) / len(completions),
            "kl": sum(kls) / len(kls), "ppl_reference": math.exp(-sum(ref_lps) / max(1, sum(masks))),
            "distinct_1": metrics.distinct_n(completions, 1), "distinct_2": metrics.distinct_n(completions, 2)}
        references = [e.reference for e in examples]
        if all(r is not None for r in references):
            row["ppl_policy_on_references"] = self._policy_perplexity(references)
        for name, (lm, tokenizer) in self.eval_lms.items():
            row[f"ppl:{name}"] = (
                self._joined_perplexity(metrics.lm_logprobs(lm), lm, tokenizer, completions)
                if cfg.eval_lms_mode == "joined" else
                metrics.perplexity(lm, tokenizer, prompts, completions, device=self.device))
        if cfg.task == "tldr" and all(r is not None for r in references):
            row.update(metrics.rouge(completions, references))
            if cfg.reward.kind in ("reward_model", "adapter"):
                # a relative reward is already RM(sample) − RM(reference): it wins where it is above 0
                ref_scores = (torch.zeros_like(scores_t) if cfg.reward.relative_to_reference
                              else self.reward(read, references, None))  # the prompts the samples were scored with
                row["win_rate"] = metrics.win_rate(scores_t, ref_scores)
        row["samples"] = [{"prompt": p, "completion": c, "reward": round(s, 4)}
                          for p, c, s in zip(prompts, completions, scores_t.tolist())][:cfg.eval_samples]
        return row

    def _policy_perplexity(self, texts: list[str]) -> float:
        """The policy's perplexity on ``texts`` (TRIL's ``causal_perplexity``), through the wrapped
        model's forward (sharded weights are gathered there) at temperature 1."""
        def logprobs(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            return token_logprobs(self.actor(input_ids, attention_mask, 1, mode="logits"), input_ids[:, 1:])

        with evaluating(self.actor):
            return self._joined_perplexity(logprobs, self.model.lm, self.tokenizer, texts)

    def _joined_perplexity(self, logprobs: metrics.LogProbs, lm: torch.nn.Module, tokenizer, texts: list[str]) -> float:
        """``metrics.joined_perplexity`` in windows of the LM's positions (twice the stride for one
        without a limit), as many windows per forward as a training micro-batch holds tokens."""
        cfg = self.cfg
        window = metrics.max_positions(lm) or 2 * cfg.eval_ppl_stride
        tokens = cfg.minibatch_size // cfg.grad_accum * (cfg.generation.prompt_tokens + cfg.generation.max_new_tokens)
        return metrics.joined_perplexity(logprobs, tokenizer, texts, window, cfg.eval_ppl_stride,
                                         batch_size=max(1, tokens // window), device=self.device)

    # ------------------------------------------------------------ checkpoints

    def save(self) -> None:
        """Models by ``save_pretrained`` into a fresh folder renamed into place, then the small state
        file (optimizer, KL coefficient, iteration) written atomically: it names the folder, so a kill
        at any moment leaves the previous checkpoint whole."""
        # every process gathers (a collective when the weights are sharded); the main one writes
        state = self.accelerator.get_state_dict(self.actor)
        optimizer = self._optimizer_state()
        self.saved_iteration = self.iteration
        if not self.accelerator.is_main_process:
            return
        root = self.run.path / "checkpoints"
        name = f"iter-{self.iteration:06d}"
        tmp = root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save(tmp, state)
        self.tokenizer.save_pretrained(tmp / "policy")
        shutil.rmtree(root / name, ignore_errors=True)
        tmp.rename(root / name)
        scaler = self.accelerator.scaler
        save_checkpoint(self.run.path, {"step": self.iteration, "folder": name, "kl_coef": self.kl_coef,
                                        "optimizer": optimizer,
                                        "scaler": scaler.state_dict() if scaler is not None else None})
        for old in root.glob("iter-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------ the loop

    def train(self, progress: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        resumed = self.iteration > 0
        if self.accelerator.is_main_process:  # lines after the checkpoint (all, without one) are written again
            self.run.truncate_logs(self.iteration if resumed else -1)
            self.run.tensorboard(purge_step=self.iteration + 1 if resumed else 0)
        last_eval = self._last_eval() if resumed else None
        from tqdm import tqdm

        bar = tqdm(total=cfg.iterations, initial=self.iteration, dynamic_ncols=True,
                   disable=not (progress and self.accelerator.is_main_process),
                   desc=f"{cfg.algo} {cfg.task} seed{cfg.seed}")
        if not resumed and cfg.eval_every:  # the starting point of every curve: the initial policy
            last_eval = self._evaluate_and_log()
        while self.iteration < cfg.iterations:
            start = time.perf_counter()
            process = self.accelerator.process_index
            torch.manual_seed(_seed(cfg.seed, self.iteration, process))
            generator = torch.Generator().manual_seed(_seed(cfg.seed, self.iteration, process))
            examples = iteration_examples(self.train_examples, self.iteration * self.accelerator.num_processes
                                          + process, cfg.rollouts, cfg.seed)
            rollout = self.collect(examples)
            stats = self.update(rollout, generator)
            scores = self.accelerator.gather(rollout.scores.float())
            kl_per_sequence = self.accelerator.gather(rollout.kl.sum(1)).mean().item()
            trajectories = cfg.rollouts * self.accelerator.num_processes
            row = {"step": self.iteration + 1, "samples": (self.iteration + 1) * trajectories,
                   "reward_mean": scores.mean().item(), "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
                   "kl": kl_per_sequence, "kl_coef": self.kl_coef,
                   "response_length": rollout.mask.sum(1).float().mean().item(), **stats,
                   "time_s": time.perf_counter() - start}
            self.kl_coef = next_kl_coef(cfg.kl_controller, self.kl_coef, kl_per_sequence, cfg.kl_target,
                                        cfg.kl_horizon, trajectories)
            self.iteration += 1
            if self.accelerator.is_main_process:
                self.run.log("metrics.jsonl", row, "train")
            self._stop_if_diverged(row)
            due = self.iteration == cfg.iterations or (cfg.eval_every and self.iteration % cfg.eval_every == 0)
            if due:
                last_eval = self._evaluate_and_log()
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
                self.save()
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.3f}")
        bar.close()
        summary = {"finished": True, "task": cfg.task, "algo": cfg.algo, "seed": cfg.seed,
                   "iterations": cfg.iterations, "final_eval_mean": last_eval["mean_return"] if last_eval else None,
                   "final_eval": {k: v for k, v in (last_eval or {}).items() if k != "samples"}}
        if self.accelerator.is_main_process:
            self.run.write_summary(summary)
        self.run.close()
        return summary

    def _stop_if_diverged(self, row: dict[str, Any]) -> None:
        """Stop every process (one line, ``failed.json``) when any of them saw a non-finite loss term
        or gradient norm in this iteration; the last checkpoint stays the last good one."""
        diverged = non_finite(row)
        anywhere = self.accelerator.reduce(torch.tensor(float(bool(diverged)), device=self.device), "sum")
        if anywhere.item() > 0:
            self.run.stop_diverged(f"iteration {self.iteration}", diverged or ["a loss on another process"],
                                   self.saved_iteration, record=self.accelerator.is_main_process)

    def _evaluate_and_log(self) -> dict[str, Any]:
        row = {"step": self.iteration, **self.evaluate()}
        if self.accelerator.is_main_process:
            self.run.log("eval.jsonl", row, "eval")
            _print_eval(row)
        return row

    def _last_eval(self) -> dict[str, Any] | None:
        rows = read_jsonl(self.run.path / "eval.jsonl")
        return rows[-1] if rows else None


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` on the trainable weights, none on biases and on the
    weights of normalization layers (LayerNorm, RMSNorm), as TRIL groups them (``agent.py:173-187``).
    Tied parameters (GPT-2's embeddings) are counted once."""
    groups: list[dict[str, Any]] = [{"params": [], "weight_decay": weight_decay}, {"params": [], "weight_decay": 0.0}]
    seen: set[int] = set()
    for module in model.modules():
        norm = "Norm" in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                groups[int(norm or name == "bias")]["params"].append(param)
    return [group for group in groups if group["params"]]


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


def _token_counts(rollout: Rollout, rows: Tensor) -> tuple[Tensor, Tensor | None]:
    """Valid continuation tokens of a minibatch, and of its reference texts (at least 1 each)."""
    sampled = rollout.mask[rows].sum().clamp(min=1)
    if rollout.reference is None:
        return sampled, None
    return sampled, rollout.reference.continuation_mask[rows].sum().clamp(min=1)


def _append(stats: dict[str, list[Tensor]], **values: Tensor) -> None:
    for key, value in values.items():
        stats.setdefault(key, []).append(value.detach().float())


def _print_eval(row: dict[str, Any]) -> None:
    print(f"eval @ {row['step']}: reward {row['mean_return']:.3f}  vader {row['judge_vader']:.3f}  "
          f"kl {row['kl']:.3f}  ppl_ref {row['ppl_reference']:.1f}  distinct-2 {row['distinct_2']:.3f}",
          file=sys.stderr)
    for sample in row.get("samples", [])[:2]:
        print(f"  [{sample['reward']:+.2f}] {sample['prompt'][-60:]!r} → {sample['completion'][:100]!r}",
              file=sys.stderr)


def evaluate_rlhf_run(path: Path, prompts: int | None) -> dict[str, Any]:
    """Re-evaluate the latest checkpoint of an RLHF run on the first ``prompts`` of its held-out
    prompts (default: all those it evaluated on); nothing is written to the run."""
    from symrl.llm.config import build_rlhf_config

    saved, state = read_config_and_checkpoint(path)
    cfg = build_rlhf_config(None, saved)
    if prompts is not None and cfg.eval_prompts and not 1 <= prompts <= cfg.eval_prompts:  # before any loading
        raise ConfigError(f"episodes: got {prompts}, allowed: 1..{cfg.eval_prompts} (the run's held-out prompts)")
    run = RunDirectory(cfg)
    run.path = path
    trainer = RLHFTrainer(cfg, run)
    held_out = len(trainer.eval_examples)
    if prompts is not None and not 1 <= prompts <= held_out:
        raise ConfigError(f"episodes: got {prompts}, allowed: 1..{held_out} (the run's held-out prompts)")
    trainer.eval_examples = trainer.eval_examples[:prompts]
    return {"run": str(path), "checkpoint_step": state["step"],
            **{k: v for k, v in trainer.evaluate().items() if k != "samples"}}


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
