"""Evaluation of an RLHF policy on held-out prompts, during training and by ``symrl eval``.

One sample per prompt: the task reward, the VADER judge, the KL to the reference, perplexities (the
policy's on the reference texts, the generations' under ``eval_lms``), diversity, and for TL;DR
ROUGE and the win rate against the reference summaries.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from symrl.config import ConfigError
from symrl.llm import metrics
from symrl.llm.agent import Agent
from symrl.llm.config import RLHFConfig
from symrl.llm.policy import evaluating, load_causal_lm, load_tokenizer, token_logprobs
from symrl.llm.tasks import Example, load_examples
from symrl.run import read_config_and_checkpoint
from symrl.seeding import seeds

EvalLMs = dict[str, tuple[torch.nn.Module, Any]]  # name → (LM, its tokenizer)
# tasks whose reward is a verifier: the held-out reward is the accuracy, and the sentiment judge and the
# policy's perplexity on the answers would measure nothing
VERIFIABLE_TASKS = ("arithmetic", "gsm8k")


def load_eval_lms(cfg: RLHFConfig, device: torch.device) -> EvalLMs:
    """The LMs that score the generations' perplexity (``eval_lms``)."""
    return {name: (load_causal_lm(name, "eval_lms").eval().to(device), load_tokenizer(name, "eval_lms"))
            for name in cfg.eval_lms}


def checkpoint_folder(run_path: Path, state: dict[str, Any] | None) -> Path | None:
    """The models' folder a checkpoint names; absolute, since the loaders read relative paths from
    the symrl root (``symrl.paths``) while run dirs are relative to here."""
    return (run_path / "checkpoints" / state["folder"]).absolute() if state else None


@torch.no_grad()
def evaluate(agent: Agent, examples: list[Example], eval_lms: EvalLMs, iteration: int) -> dict[str, Any]:
    """Held-out prompts, one sample each: task reward, VADER judge, KL to the reference,
    perplexities (the policy's on the reference texts, the generations' under ``eval_lms``),
    diversity (and ROUGE / win rate for TL;DR), with a few sample generations."""
    cfg = agent.cfg
    torch.manual_seed(seeds(cfg.seed, "evaluation", iteration, agent.accelerator.process_index)[0])
    scores, completions, read, kls, ref_lps, masks = [], [], [], [], [], []
    for lo in range(0, len(examples), cfg.rollouts):
        part = examples[lo:lo + cfg.rollouts]
        batch, texts, part_scores, part_read = agent.sample(part, full_prompts=cfg.eval_reward_prompt == "full",
                                                            greedy=cfg.generation.eval_greedy)
        read += part_read
        logprobs, _, ref_logprobs = agent.score(batch)
        mask = batch.continuation_mask
        scores.append(part_scores.float().cpu())
        completions += texts
        kls += ((logprobs - ref_logprobs) * mask).sum(1).cpu().tolist()
        ref_lps.append((ref_logprobs * mask).sum().item())
        masks.append(mask.sum().item())
    scores_t = torch.cat(scores)
    prompts = [e.prompt for e in examples]
    verifiable = cfg.task in VERIFIABLE_TASKS
    row: dict[str, Any] = {
        "mean_return": scores_t.mean().item(), "reward_std": scores_t.std().item() if len(scores_t) > 1 else 0.0,
        **({} if verifiable else {"judge_vader": sum(metrics.vader_judge(completions)) / len(completions)}),
        "kl": sum(kls) / len(kls), "ppl_reference": math.exp(-sum(ref_lps) / max(1, sum(masks))),
        "distinct_1": metrics.distinct_n(completions, 1), "distinct_2": metrics.distinct_n(completions, 2)}
    references = [e.reference for e in examples]
    if all(r is not None for r in references) and not verifiable:
        row["ppl_policy_on_references"] = policy_perplexity(agent, references)
    for name, (lm, tokenizer) in eval_lms.items():
        row[f"ppl:{name}"] = (
            _joined_perplexity(agent, metrics.lm_logprobs(lm), lm, tokenizer, completions)
            if cfg.eval_lms_mode == "joined" else
            metrics.perplexity(lm, tokenizer, prompts, completions, device=agent.device))
    if cfg.task == "tldr" and all(r is not None for r in references):
        row.update(metrics.rouge(completions, references))
        if cfg.reward.kind in ("reward_model", "adapter"):
            # a relative reward is already RM(sample) − RM(reference): it wins where it is above 0
            ref_scores = (torch.zeros_like(scores_t) if cfg.reward.relative_to_reference
                          else agent.reward(read, references, None))  # the prompts the samples were scored with
            row["win_rate"] = metrics.win_rate(scores_t, ref_scores)
    row["samples"] = [{"prompt": p, "completion": c, "reward": round(s, 4)}
                      for p, c, s in zip(prompts, completions, scores_t.tolist())][:cfg.eval_samples]
    return row


def policy_perplexity(agent: Agent, texts: list[str]) -> float:
    """The policy's perplexity on ``texts`` (TRIL's ``causal_perplexity``), through the wrapped
    model's forward (sharded weights are gathered there) at temperature 1."""
    def logprobs(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return token_logprobs(agent.actor(input_ids, attention_mask, 1, mode="logits"), input_ids[:, 1:])

    with evaluating(agent.actor):
        return _joined_perplexity(agent, logprobs, agent.model.lm, agent.tokenizer, texts)


def _joined_perplexity(agent: Agent, logprobs: metrics.LogProbs, lm: torch.nn.Module, tokenizer,
                       texts: list[str]) -> float:
    """``metrics.joined_perplexity`` in windows of the LM's positions (twice the stride for one
    without a limit), as many windows per forward as a training micro-batch holds tokens."""
    cfg = agent.cfg
    window = metrics.max_positions(lm) or 2 * cfg.eval_ppl_stride
    tokens = cfg.minibatch_size // cfg.grad_accum * (cfg.generation.prompt_tokens + cfg.generation.max_new_tokens)
    return metrics.joined_perplexity(logprobs, tokenizer, texts, window, cfg.eval_ppl_stride,
                                     batch_size=max(1, tokens // window), device=agent.device)


def print_eval(row: dict[str, Any]) -> None:
    vader = f"  vader {row['judge_vader']:.3f}" if "judge_vader" in row else ""
    print(f"eval @ {row['step']}: reward {row['mean_return']:.3f}{vader}  "
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
    agent = Agent(cfg, checkpoint_folder(path, state), optimizer=False)
    held_out = load_examples(cfg, agent.tokenizer)[1]
    if prompts is not None and not 1 <= prompts <= len(held_out):
        raise ConfigError(f"episodes: got {prompts}, allowed: 1..{len(held_out)} (the run's held-out prompts)")
    row = evaluate(agent, held_out[:prompts], load_eval_lms(cfg, agent.device), state["step"])
    return {"run": str(path), "checkpoint_step": state["step"], **{k: v for k, v in row.items() if k != "samples"}}
