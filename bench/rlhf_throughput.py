"""RLHF throughput (generated tokens per second): symrl PPO, SPPO and scaled PPO, and TRL's PPO trainer.

    python bench/rlhf_throughput.py                  # tiny and small models, 3 repeats (several minutes, 2 cores)
    python bench/rlhf_throughput.py --quick          # smoke test: tiny model, 2 iterations, well under a minute
    python bench/rlhf_throughput.py --models small --repeats 5 --iterations 8

Run with OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1. TRL is optional (not a symrl dependency): without it the
TRL contestant is skipped with one line. TRL removed its PPO trainer in 1.13.0; the last release that
has one is 1.12.0 (``pip install trl==1.12.0``, where it lives in ``trl.experimental.ppo``).

What is timed: whole RLHF iterations (sample + reward + score + update), after one warm-up iteration,
on the same models, prompts and settings. Setup, evaluation and checkpoints are not timed.
  * symrl: ``RLHFTrainer.collect(examples)`` then ``update(rollout, generator)``, seeded as ``train``
           seeds them, with the per-iteration statistics turned into floats as its loop does.
  * TRL:   ``PPOTrainer.train()`` over warm-up + timed iterations; a callback stamps the end of every
           iteration, and the timed span runs from the end of the warm-up to the end of the last one.
The phase split wraps the trainers' own functions with timers (nothing in either library is changed):
symrl's ``_sample`` (generation; its ``reward`` is timed inside it), ``_score`` (policy log-probs and
values; ``reference.logprobs`` inside it) and ``update``; TRL's module functions ``batch_generation``,
``forward`` on the reference model and ``get_reward`` on the value and reward models. What no timer
covers (GAE, KL, whitening, statistics; TRL's whole update) is the rest of the iteration.

Shared machines are noisy, so every number that matters is a ratio against a baseline measured in
the same run: within a repeat all contestants run back to back, and the order rotates between
repeats. Each repeat builds fresh trainers with the same seed. Both wall-clock and process-CPU rates
are recorded; ``on_cpu`` (CPU time / wall time) below ~0.95 flags a measurement where another
process took the core (everything runs on one torch thread).

Settings: one table (``Bench``) is turned into both libraries' arguments; after construction the
settings are read back from the built trainers and compared key by key for the contestants that
claim equal settings (a mismatch aborts the run). The JSON lists every setting of both sides, the
ones that could not be aligned, and the implementation differences that remain.

Output: a table on stdout and JSON at bench/results/rlhf_throughput.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "rlhf_throughput.json"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "imdb_reviews_offline.jsonl.gz"
PREPARED_SMALL = REPO / "models" / "imdb-offline"  # what `make demo-rlhf` builds, reused when present
MODEL_CACHE = REPO / "bench" / "results" / "rlhf_models"  # git-ignored
SMALL_FALLBACK_STEPS = 200  # only speed is measured here: a briefly pretrained small model will do
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from bench.common import cpu_model, git_state, ratio_line  # noqa: E402

import transformers  # noqa: E402

from symrl.llm.config import build_rlhf_config  # noqa: E402
from symrl.llm.kl import next_kl_coef  # noqa: E402
from symrl.llm.tasks import iteration_examples, load_examples  # noqa: E402
from symrl.llm.trainer import RLHFTrainer, _seed  # noqa: E402
from symrl.run import RunDirectory  # noqa: E402

TRL_PPO_LAST_VERSION = "1.12.0"


# ---------------------------------------------------------------------------- what is benchmarked

@dataclass(frozen=True)
class Bench:
    """One model size and the RLHF settings every contestant gets: the ``imdb-offline`` presets,
    except where TRL cannot follow (top-k off, no auxiliary NLL; see ``NOT_ALIGNED``)."""

    key: str
    size: str  # symrl.llm.prepare size of the models
    iterations: int  # timed iterations per measurement
    warmup: int = 1
    rollouts: int = 32  # trajectories per iteration (TRL: batch_size)
    minibatch_size: int = 8  # one optimizer step each (TRL: batch_size / num_mini_batches)
    n_epochs: int = 4  # TRL: num_ppo_epochs
    prompt_tokens: int = 32
    new_tokens: int = 24  # exactly this many per completion in both (TRL: response_length)
    temperature: float = 1.0
    lr: float = 1e-4  # AdamW, constant
    weight_decay: float = 0.0
    kl_coef: float = 0.05  # fixed, k1 estimate per token
    clip_range: float = 0.2
    clip_range_vf: float = 0.2
    value_weight: float = 0.5  # weight of the (clipped) squared value error: symrl vf_coef, TRL 0.5 * vf_coef
    gamma: float = 0.99
    gae_lambda: float = 0.95
    max_grad_norm: float = 1.0  # symrl only: TRL's PPO loop never clips gradients
    sppo_alpha: float = 0.5
    sppo_beta: float = 0.4
    seed: int = 0


BENCHES = {"tiny": Bench("tiny", "tiny", iterations=10), "small": Bench("small", "small", iterations=4)}

# (label, numerator, denominator, metric, target): "time" ratios are seconds per iteration
# (target: at most), "tokens" ratios are generated tokens per second.
RATIOS = [
    ("symrl_sppo / symrl_ppo, time per iteration", "symrl_sppo", "symrl_ppo", "time", 1.05),
    ("symrl_scaled_ppo / symrl_ppo, time per iteration", "symrl_scaled_ppo", "symrl_ppo", "time", 1.05),
    # the reverse term alone: both weight the policy loss by alpha + beta|Z|, only SPPO computes the term
    ("symrl_sppo / symrl_scaled_ppo, time per iteration", "symrl_sppo", "symrl_scaled_ppo", "time", 1.05),
    ("symrl_ppo_critic / trl_ppo, tokens/s (equal architecture)", "symrl_ppo_critic", "trl_ppo", "tokens", None),
    ("symrl_ppo / trl_ppo, tokens/s (symrl's shared value head)", "symrl_ppo", "trl_ppo", "tokens", None),
    ("symrl_ppo_critic / symrl_ppo, tokens/s (cost of a separate critic)", "symrl_ppo_critic", "symrl_ppo",
     "tokens", None),
]


# ---------------------------------------------------------------------------- models

def model_folder(size: str, data: Path, log: Callable[[str], None] = print) -> Path:
    """Folder with ``policy/`` and ``classifier/``: the prepared small models if they exist, else
    built once into bench/results/rlhf_models/ (tiny: its preset; small: fewer pretraining steps)."""
    if size == "small" and _finished_size(PREPARED_SMALL) == "small":
        return PREPARED_SMALL
    out = MODEL_CACHE / size
    if _finished_size(out) == size:
        return out
    from symrl.llm.data import read_records
    from symrl.llm.prepare import prepare_models

    log(f"building the {size} models from {data} into {out} (once; reused afterwards)")
    prepare_models(read_records(data, field="--data"), out, size=size, seed=0, device="cpu", source=str(data),
                   steps=SMALL_FALLBACK_STEPS if size == "small" else None, log=log)
    return out


def _finished_size(folder: Path) -> str | None:
    try:
        return json.loads((folder / "prepared.json").read_text())["size"]
    except (OSError, ValueError, KeyError):
        return None


def vocab_size(models: Path) -> int:
    return transformers.AutoConfig.from_pretrained(models / "policy").vocab_size


# ---------------------------------------------------------------------------- timers

class PhaseTimer:
    """Wall and CPU seconds per named phase, accumulated while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.seconds: dict[str, list[float]] = {}

    def reset(self) -> None:
        self.seconds = {}

    def wrap(self, fn: Callable, name: str, when: Callable[..., bool] | None = None) -> Callable:
        def timed(*args, **kwargs):
            if not self.on or (when is not None and not when(*args, **kwargs)):
                return fn(*args, **kwargs)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc = self.seconds.setdefault(name, [0.0, 0.0])
                acc[0] += time.perf_counter() - wall0
                acc[1] += time.process_time() - cpu0

        return timed

    def wall(self, name: str) -> float:
        return self.seconds.get(name, [0.0, 0.0])[0]


def phase_split(timer: PhaseTimer, total_wall: float, nested: dict[str, str]) -> dict[str, float]:
    """Exclusive wall seconds per phase: a nested phase (e.g. reward inside sampling) is subtracted
    from its parent; ``other`` is what no timer covered."""
    out = {name: timer.wall(name) for name in timer.seconds}
    for child, parent in nested.items():
        if child in out and parent in out:
            out[parent] -= out[child]
    out["other"] = total_wall - sum(timer.wall(n) for n in timer.seconds if n not in nested)
    return out


# ---------------------------------------------------------------------------- symrl

def symrl_overrides(b: Bench, models: Path, data: Path, out: str, algo: str, value_head: str) -> dict[str, Any]:
    """Every setting that affects an iteration spelled out, so no symrl default can silently differ."""
    alpha, beta = (b.sppo_alpha, b.sppo_beta) if algo in ("sppo", "scaled_ppo") else (1.0, 0.0)
    return {
        "algo": algo, "alpha": alpha, "beta": beta, "task": "imdb", "data": str(data), "seed": b.seed,
        "policy.model": str(models / "policy"), "policy.tokenizer": None, "policy.value_head": value_head,
        "reward.kind": "classifier", "reward.model": str(models / "classifier"), "reward.label": "POSITIVE",
        "reward.score": "logit",
        "generation.prompt_tokens": b.prompt_tokens, "generation.max_new_tokens": b.new_tokens,
        "generation.min_new_tokens": b.new_tokens,
        # top-k as large as the vocabulary keeps every token: TRL samples without top-k
        "generation.top_k": vocab_size(models), "generation.top_p": 1.0, "generation.temperature": b.temperature,
        "iterations": b.warmup + b.iterations, "rollouts": b.rollouts, "minibatch_size": b.minibatch_size,
        "grad_accum": 1, "n_epochs": b.n_epochs, "lr": b.lr, "weight_decay": b.weight_decay, "gamma": b.gamma,
        "gae_lambda": b.gae_lambda, "clip_range": b.clip_range, "clip_range_vf": b.clip_range_vf,
        "vf_coef": b.value_weight, "value_loss_scale": 1.0, "adam_eps": 1e-8, "ent_coef": 0.0, "max_grad_norm": b.max_grad_norm, "norm_adv": True,
        "kl_coef": b.kl_coef, "kl_controller": "fixed", "target_coef": 0.0,
        "eval_every": 0, "eval_prompts": 32, "checkpoint_every": 10**6, "device": "cpu", "mixed_precision": "no",
        "out": out, "experiment": f"bench-{algo}-{value_head}",
    }


class SymrlRunner:
    """symrl's RLHF loop body (``RLHFTrainer.train`` without logging, evaluation and checkpoints)."""

    nested = {"reward": "sample", "score_ref": "score"}

    def __init__(self, b: Bench, models: Path, data: Path, algo: str, value_head: str = "shared"):
        self.tmp = tempfile.mkdtemp(prefix="symrl-rlhf-bench-")
        self.cfg = build_rlhf_config(None, symrl_overrides(b, models, data, self.tmp, algo, value_head))
        run = RunDirectory(self.cfg)
        run.prepare(force=True)
        self.trainer = t = RLHFTrainer(self.cfg, run)
        self.timer = PhaseTimer()
        self.reward = t.reward
        t._sample = self.timer.wrap(t._sample, "sample")
        t.reward = self.timer.wrap(t.reward, "reward")
        t._score = self.timer.wrap(t._score, "score")
        t.reference.logprobs = self.timer.wrap(t.reference.logprobs, "score_ref")
        t.update = self.timer.wrap(t.update, "update")
        self.tokens = 0

    def run(self, warmup: int, iterations: int) -> dict[str, Any]:
        self._iterate(warmup)
        torch.set_num_threads(1)  # in case a library changed it
        gc.collect()
        self.tokens = 0
        self.timer.reset()
        self.timer.on = True
        wall0, cpu0 = time.perf_counter(), time.process_time()
        self._iterate(iterations)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        self.timer.on = False
        return {"wall_s": wall, "cpu_s": cpu, "tokens": self.tokens,
                "phases_wall_s": phase_split(self.timer, wall, self.nested)}

    def _iterate(self, n: int) -> None:
        t, cfg = self.trainer, self.cfg
        for _ in range(n):
            torch.manual_seed(_seed(cfg.seed, t.iteration, 0))
            generator = torch.Generator().manual_seed(_seed(cfg.seed, t.iteration, 0))
            examples = iteration_examples(t.train_examples, t.iteration, cfg.rollouts, cfg.seed)
            rollout = t.collect(examples)
            stats = t.update(rollout, generator)
            # what train() turns into floats for its log
            row = {"reward_mean": rollout.scores.mean().item(), "kl": rollout.kl.sum(1).mean().item(),
                   "response_length": rollout.mask.sum(1).float().mean().item(), **stats}
            t.kl_coef = next_kl_coef(cfg.kl_controller, t.kl_coef, row["kl"], cfg.kl_target, cfg.kl_horizon,
                                     cfg.rollouts)
            t.iteration += 1
            self.tokens += int(rollout.mask.sum())

    def settings(self) -> dict[str, Any]:
        """Read back from the built trainer, its optimizer and models, not from the overrides."""
        t, cfg, g = self.trainer, self.cfg, self.trainer.optimizer.param_groups[0]
        inner = getattr(t.optimizer, "optimizer", t.optimizer)  # accelerate's wrapper
        model = t.model
        return {
            "rollouts_per_iteration": cfg.rollouts, "minibatch_size": cfg.minibatch_size,
            "optimizer_steps_per_epoch": cfg.rollouts // cfg.minibatch_size, "n_epochs": cfg.n_epochs,
            "prompt_tokens_max": cfg.generation.prompt_tokens, "new_tokens_max": cfg.generation.max_new_tokens,
            "new_tokens_exact": cfg.generation.min_new_tokens == cfg.generation.max_new_tokens,
            "temperature": cfg.generation.temperature,
            "top_k": None if cfg.generation.top_k >= model.lm.config.vocab_size else cfg.generation.top_k,
            "top_p": cfg.generation.top_p, "kl_coef": t.kl_coef, "kl_controller": cfg.kl_controller,
            "kl_estimator": "k1 (log pi - log pi_ref)", "clip_range": cfg.clip_range,
            "clip_range_vf": cfg.clip_range_vf, "value_error_weight": t.weights.vf, "ent_coef": t.weights.ent,
            "gamma": cfg.gamma, "gae_lambda": cfg.gae_lambda, "reward_whitening": False,
            "optimizer": type(inner).__name__, "lr": g["lr"], "lr_schedule": "constant",
            "weight_decay": g["weight_decay"], "adam_betas": list(g["betas"]), "adam_eps": g["eps"],
            "policy_params": _count(model.lm), "reference_params": _count(t.reference.model),
            "value_trunk_params": _count(model.critic) if model.critic is not None else None,
            "reward_params": _count(self.reward.scorer.model),
            "dtype": str(next(model.lm.parameters()).dtype), "dropout_off": _dropout_off(model),
            "gradient_checkpointing": False, "mixed_precision": cfg.mixed_precision, "device": str(t.device),
            "seed": cfg.seed,
        }

    def symrl_only(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"algo": cfg.algo, "alpha": cfg.alpha, "beta": cfg.beta, "Z": cfg.Z, "reverse": cfg.reverse,
                "loss_weights": {k: getattr(self.trainer.weights, k) for k in ("pg", "reverse", "vf", "ent")
                                 if hasattr(self.trainer.weights, k)},
                "value_head": cfg.policy.value_head, "max_grad_norm": cfg.max_grad_norm,
                "advantage_whitening": cfg.norm_adv_scope, "full_config": cfg.to_dict()}

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _dropout_off(*modules: nn.Module) -> bool:
    return all(m.p == 0 for module in modules for m in module.modules() if isinstance(m, nn.Dropout))


# ---------------------------------------------------------------------------- TRL

def trl_ppo() -> tuple[Any, str | None]:
    """(trl.experimental.ppo module or None, why not)."""
    try:
        import trl
    except ImportError:
        return None, "trl is not installed (pip install trl==1.12.0, the last release with a PPO trainer)"
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        from trl.experimental import ppo
    except ImportError:
        try:
            import trl.trainer.ppo_trainer as ppo  # before 1.0 PPO lived in trl.trainer
        except ImportError:
            return None, (f"trl {trl.__version__} has no PPO trainer (TRL removed it in 1.13.0); "
                          f"pip install trl=={TRL_PPO_LAST_VERSION} to compare")
    return ppo, None


class ClassifierRewardForTRL(nn.Module):
    """symrl's reward (the POSITIVE logit of the DistilBERT classifier on prompt + completion) behind
    the interface TRL's ``get_reward`` calls: ``model.<base_model_prefix>(...)`` then ``model.score``
    on the last hidden state, read at the last response token. The classifier pools its first token,
    so each row is repacked as the classifier's tokenizer would lay it out (eos first, right padding)
    from the ids TRL passes (same vocabulary: ``symrl lm prepare`` builds both from one BPE), and its
    logit is spread over every position."""

    base_model_prefix = "backbone"

    def __init__(self, folder: Path, label: str):
        super().__init__()
        clf = transformers.AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        self.backbone = _RepackedClassifier(clf.eval().requires_grad_(False), clf.config.label2id[label],
                                            tok.eos_token_id, tok.pad_token_id, tok.model_max_length)
        self.score = nn.Identity()


class _RepackedClassifier(nn.Module):
    def __init__(self, clf: nn.Module, index: int, eos_id: int, pad_id: int, max_length: int):
        super().__init__()
        self.clf, self.index, self.eos_id, self.pad_id, self.max_length = clf, index, eos_id, pad_id, max_length

    @torch.no_grad()
    def forward(self, input_ids, attention_mask, **_):
        valid = attention_mask.bool()
        order = torch.sort((~valid).int(), dim=1, stable=True).indices  # valid tokens first, in order
        ids = torch.cat([torch.full_like(input_ids[:, :1], self.eos_id), input_ids.gather(1, order)], 1)
        n = (valid.sum(1) + 1).clamp(max=self.max_length)
        ids = ids[:, :int(n.max())]
        keep = torch.arange(ids.shape[1], device=ids.device) < n[:, None]
        logit = self.clf(input_ids=torch.where(keep, ids, self.pad_id), attention_mask=keep.long()).logits
        spread = logit[:, self.index, None, None].expand(-1, input_ids.shape[1], 1)
        return SimpleNamespace(hidden_states=(spread,))


class TRLRunner:
    """TRL's PPOTrainer on the same folders; ``run`` trains warm-up + timed iterations in one call."""

    nested: dict[str, str] = {}

    def __init__(self, b: Bench, models: Path, data: Path):
        ppo, why = trl_ppo()
        if ppo is None:
            raise RuntimeError(why)
        from datasets import Dataset
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from symrl.llm.policy import load_tokenizer

        self.b = b
        self.module = sys.modules[ppo.PPOTrainer.__module__]
        self.tmp = tempfile.mkdtemp(prefix="trl-rlhf-bench-")
        tokenizer = load_tokenizer(str(models / "policy"))  # symrl's: left padding and truncation
        # the same training prompts symrl draws from (its split of the same corpus)
        cfg = build_rlhf_config(None, symrl_overrides(b, models, data, self.tmp, "ppo", "separate"))
        examples, _ = load_examples(cfg, tokenizer)
        ids = tokenizer([e.prompt for e in examples], truncation=True, max_length=b.prompt_tokens)["input_ids"]
        f32 = {"dtype": torch.float32}
        policy = transformers.AutoModelForCausalLM.from_pretrained(models / "policy", **f32)
        ref = transformers.AutoModelForCausalLM.from_pretrained(models / "policy", **f32)
        torch.manual_seed(b.seed)  # the value head's initialization
        value = transformers.AutoModelForSequenceClassification.from_pretrained(models / "policy", num_labels=1, **f32)
        value.config.pad_token_id = tokenizer.pad_token_id
        self.args = ppo.PPOConfig(
            output_dir=self.tmp, report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
            logging_steps=10**6, num_sample_generations=0, seed=b.seed, use_cpu=True, bf16=False, fp16=False,
            gradient_checkpointing=False, dataloader_num_workers=0,
            per_device_train_batch_size=b.rollouts, gradient_accumulation_steps=1,
            num_mini_batches=b.rollouts // b.minibatch_size, num_ppo_epochs=b.n_epochs,
            total_episodes=b.rollouts * (b.warmup + b.iterations), local_rollout_forward_batch_size=b.rollouts,
            response_length=b.new_tokens, stop_token=None, temperature=b.temperature, missing_eos_penalty=None,
            learning_rate=b.lr, lr_scheduler_type="constant", weight_decay=b.weight_decay,
            max_grad_norm=b.max_grad_norm, kl_coef=b.kl_coef, kl_estimator="k1", cliprange=b.clip_range,
            cliprange_value=b.clip_range_vf, vf_coef=2 * b.value_weight, gamma=b.gamma, lam=b.gae_lambda,
            whiten_rewards=False)
        self.trainer = ppo.PPOTrainer(
            args=self.args, processing_class=tokenizer, model=policy, ref_model=ref,
            reward_model=ClassifierRewardForTRL(models / "classifier", "POSITIVE"),
            train_dataset=Dataset.from_dict({"input_ids": ids}), value_model=value)
        for cb in (PrinterCallback, ProgressCallback):
            self.trainer.remove_callback(cb)
        self.timer = PhaseTimer()
        self.marks: list[tuple[float, float]] = []
        self.trainer.add_callback(_Stamp(self))
        self.originals = {n: getattr(self.module, n) for n in ("batch_generation", "forward", "get_reward")}
        t = self.trainer
        self.module.batch_generation = self.timer.wrap(self.originals["batch_generation"], "sample")
        self.module.forward = self.timer.wrap(self.originals["forward"], "score_ref",
                                              when=lambda model, *a, **k: model is t.ref_model)
        reward_model = t.reward_model
        self.module.get_reward = _by_model(self.timer, self.originals["get_reward"], reward_model)

    def run(self, warmup: int, iterations: int) -> dict[str, Any]:
        self.warmup = warmup
        torch.set_num_threads(1)
        gc.collect()
        with contextlib.redirect_stdout(io.StringIO()):  # its "===training policy===" banner
            self.trainer.train()
        torch.set_num_threads(1)
        (w0, c0), (w1, c1) = self.marks[warmup], self.marks[warmup + iterations]
        return {"wall_s": w1 - w0, "cpu_s": c1 - c0, "tokens": iterations * self.args.batch_size * self.b.new_tokens,
                "phases_wall_s": phase_split(self.timer, w1 - w0, self.nested)}

    def settings(self) -> dict[str, Any]:
        t, a = self.trainer, self.args
        g = t.optimizer.param_groups[0]
        inner = getattr(t.optimizer, "optimizer", t.optimizer)
        wrapper = t.accelerator.unwrap_model(t.model)
        return {
            "rollouts_per_iteration": a.batch_size, "minibatch_size": a.mini_batch_size,
            # accelerate steps the optimizer every gradient_accumulation_steps micro-batches
            "optimizer_steps_per_epoch": a.num_mini_batches * math.ceil(a.local_mini_batch_size / a.per_device_train_batch_size)
            // a.gradient_accumulation_steps,
            "n_epochs": a.num_ppo_epochs,
            "prompt_tokens_max": max(len(x) for x in t.train_dataset["input_ids"]),
            "new_tokens_max": a.response_length, "new_tokens_exact": t.stop_token_id is None,
            "temperature": a.temperature, "top_k": None, "top_p": 1.0,  # hard-coded in PPOTrainer.train
            "kl_coef": a.kl_coef, "kl_controller": "fixed",
            "kl_estimator": "k1 (log pi - log pi_ref)" if a.kl_estimator == "k1" else a.kl_estimator,
            "clip_range": a.cliprange, "clip_range_vf": a.cliprange_value, "value_error_weight": 0.5 * a.vf_coef,
            "ent_coef": 0.0,  # TRL's PPO loss has no entropy term
            "gamma": a.gamma, "gae_lambda": a.lam, "reward_whitening": a.whiten_rewards,
            "optimizer": type(inner).__name__, "lr": g["lr"],
            "lr_schedule": getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type),
            "weight_decay": g["weight_decay"], "adam_betas": list(g["betas"]), "adam_eps": g["eps"],
            "policy_params": _count(wrapper.policy), "reference_params": _count(t.ref_model),
            "value_trunk_params": _count(wrapper.critic_backbone), "reward_params": _count(t.reward_model.backbone.clf),
            "dtype": str(next(wrapper.policy.parameters()).dtype),
            "dropout_off": _dropout_off(wrapper, t.ref_model, t.reward_model),
            "gradient_checkpointing": bool(a.gradient_checkpointing),
            "mixed_precision": "no" if not (a.bf16 or a.fp16) else ("bf16" if a.bf16 else "fp16"),
            "device": str(t.accelerator.device), "seed": a.seed,
        }

    def trl_only(self) -> dict[str, Any]:
        a = self.args
        return {"trl_version": sys.modules["trl"].__version__, "trainer": f"{self.module.__name__}.PPOTrainer",
                "vf_coef": a.vf_coef, "per_device_train_batch_size": a.per_device_train_batch_size,
                "gradient_accumulation_steps": a.gradient_accumulation_steps, "num_mini_batches": a.num_mini_batches,
                "local_rollout_forward_batch_size": a.local_rollout_forward_batch_size,
                "max_grad_norm_set_but_unused": a.max_grad_norm, "stop_token": a.stop_token,
                "advantage_whitening": "once per rollout batch over valid tokens",
                "value_model": "AutoModelForSequenceClassification(policy folder, num_labels=1): a separate GPT-2 trunk",
                "reward_model": "ClassifierRewardForTRL (this file): the DistilBERT classifier's POSITIVE logit"}

    def close(self) -> None:
        for name, fn in self.originals.items():
            setattr(self.module, name, fn)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _by_model(timer: PhaseTimer, get_reward: Callable, reward_model: nn.Module) -> Callable:
    as_reward = timer.wrap(get_reward, "reward")
    as_values = timer.wrap(get_reward, "score_values")
    return lambda model, *a, **k: (as_reward if model is reward_model else as_values)(model, *a, **k)


def _stamp_class():
    from transformers import TrainerCallback

    class Stamp(TrainerCallback):
        """Wall and CPU clock at the start of training and the end of every iteration; phase timers run
        from the end of the warm-up on."""

        def __init__(self, runner: "TRLRunner"):
            self.runner = runner

        def on_train_begin(self, args, state, control, **kw):
            self.runner.marks = [(time.perf_counter(), time.process_time())]
            self.runner.timer.reset()
            self.runner.timer.on = self.runner.warmup == 0

        def on_step_end(self, args, state, control, **kw):
            self.runner.marks.append((time.perf_counter(), time.process_time()))
            if len(self.runner.marks) - 1 == self.runner.warmup:
                self.runner.timer.on = True

    return Stamp


def _Stamp(runner: TRLRunner):
    return _stamp_class()(runner)


# ---------------------------------------------------------------------------- alignment

# What could not be made equal, and why (recorded in the JSON and the report).
NOT_ALIGNED = {
    "top_k": "TRL's PPOTrainer hard-codes top_k=0 (no top-k) in train(); symrl runs with top_k = vocabulary size, "
             "which keeps every token (the same distribution; transformers still runs its top-k warper).",
    "eos_handling": "symrl: min_new_tokens = max_new_tokens suppresses eos, so every completion has exactly "
                    "new_tokens tokens; TRL: stop_token=None, eos may be sampled but does not stop the response. "
                    "Both generate exactly new_tokens tokens per prompt; the sampled distributions differ by eos.",
    "auxiliary_nll": "TRL has no auxiliary NLL on reference texts: symrl runs with target_coef=0 (its imdb-offline "
                     "preset uses 0.1, an extra forward/backward of the reference texts per micro-batch).",
    "value_model": "TRL's value model is a separate model (AutoModelForSequenceClassification: own GPT-2 trunk + score "
                   "head). symrl_ppo_critic uses the same architecture (policy.value_head=separate); symrl_ppo, "
                   "symrl_sppo and symrl_scaled_ppo use symrl's default, a linear head on the policy's last hidden state "
                   "(one trunk fewer in scoring and in every update forward/backward). The value head itself: "
                   "symrl's nn.Linear(hidden, 1) has a bias, TRL's score head (GPT2ForSequenceClassification) has none.",
    "gradient_clipping": "TRL's PPO loop never calls clip_grad_norm_ (max_grad_norm is set but unused); symrl clips the "
                         "global gradient norm at max_grad_norm every optimizer step.",
    "advantage_whitening": "TRL whitens advantages once over the whole rollout batch (valid tokens); symrl whitens per "
                           "minibatch over valid tokens.",
    "value_loss_form": "TRL's value loss is 0.5 * max(unclipped, clipped squared error); symrl's is max(...) without "
                       "0.5, so TRL gets vf_coef = 2 * value_weight for the same effective weight.",
    "reward_input": "symrl decodes each completion to text and re-tokenizes prompt + completion with the classifier's "
                    "tokenizer (as for any reward model); TRL's interface passes token ids, so the adapter repacks the "
                    "ids (same BPE vocabulary) without decoding. Same classifier, same positions pooled; symrl also "
                    "pays decode + tokenize.",
    "rollout_scoring": "TRL takes the policy's old log-probs from generate's scores and runs the value model, the "
                       "reference and the reward model on the rollout; symrl runs the policy again (log-probs and values "
                       "in one forward; that the two agree is tested), plus the reference and the reward.",
    "scoring_batch": "TRL scores the rollout in chunks of local_rollout_forward_batch_size (= rollouts, one chunk, so "
                     "that generation is one batch as in symrl); symrl scores in micro-batches of minibatch_size.",
    "logits_window": "TRL's forward computes logits at every position (prompt included, output_hidden_states=True); "
                     "symrl computes them only for the completion window (logits_to_keep).",
    "prompt_order": "Both draw prompts from symrl's training split of the same corpus; symrl in its seeded per-epoch "
                    "permutation, TRL through its shuffled DataLoader, so the prompts of an iteration differ (lengths "
                    "vary by at most prompt_tokens).",
    "per_iteration_overhead": "TRL runs gc.collect() and a dozen .item() metric reductions per iteration and its "
                              "callback machinery; symrl's loop computes its statistics (stack + .item()) likewise.",
}


def check_settings(b: Bench, models: Path, data: Path, with_trl: bool) -> dict[str, Any]:
    """Build the contestants once, read their settings back and fail on a difference that should not be."""
    readback, symrl_only = {}, {}
    for name, algo, head in SYMRL_CONTESTANTS:
        runner = SymrlRunner(b, models, data, algo, head)
        try:
            readback[name], symrl_only[name] = runner.settings(), runner.symrl_only()
        finally:
            runner.close()
    # symrl's variants differ from its PPO only in the loss (and symrl_ppo_critic in its value model)
    for name in ("symrl_sppo", "symrl_scaled_ppo", "symrl_ppo_critic"):
        _fail_on_difference(b, "symrl_ppo", readback["symrl_ppo"], name, readback[name],
                            ignore={"value_trunk_params"} if name == "symrl_ppo_critic" else set())
    out: dict[str, Any] = {"symrl_readback": readback, "symrl": symrl_only,
                           "symrl_variants_equal_except": ["algo", "alpha", "beta", "value_head (symrl_ppo_critic)"]}
    if with_trl:
        trl = TRLRunner(b, models, data)
        try:
            readback["trl_ppo"], out["trl"] = trl.settings(), trl.trl_only()
        finally:
            trl.close()
        # prompt_tokens_max: the longest prompt TRL got must not exceed symrl's limit
        ignore = {"prompt_tokens_max"}
        if readback["trl_ppo"]["prompt_tokens_max"] > readback["symrl_ppo_critic"]["prompt_tokens_max"]:
            raise SystemExit(f"{b.key}: TRL got prompts longer than {b.prompt_tokens} tokens")
        diff = _difference(readback["symrl_ppo_critic"], readback["trl_ppo"], ignore)
        out["trl_vs_symrl_ppo_critic"] = {
            "compared_keys": sorted(set(readback["trl_ppo"]) - ignore),
            "differing": diff,
            "not_aligned": NOT_ALIGNED,
        }
        if diff:
            raise SystemExit(f"{b.key}: settings differ between symrl_ppo_critic and trl_ppo: {diff}")
    return out


def _difference(a: dict, b_: dict, ignore: set[str] = frozenset()) -> dict:
    return {k: {"symrl": a.get(k), "trl_or_other": b_.get(k)} for k in sorted(set(a) | set(b_))
            if k not in ignore and not _same(a.get(k), b_.get(k))}


def _fail_on_difference(b: Bench, name_a: str, a: dict, name_b: str, b_: dict, ignore: set[str]) -> None:
    diff = _difference(a, b_, ignore)
    if diff:
        raise SystemExit(f"{b.key}: settings differ between {name_a} and {name_b}: {diff}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


# ---------------------------------------------------------------------------- contestants and timing

SYMRL_CONTESTANTS = [  # name, algo, value head
    ("symrl_ppo", "ppo", "shared"),
    ("symrl_sppo", "sppo", "shared"),
    ("symrl_scaled_ppo", "scaled_ppo", "shared"),
    ("symrl_ppo_critic", "ppo", "separate"),
]


@dataclass(frozen=True)
class Contestant:
    name: str
    description: str
    build: Callable[[Bench, Path, Path], Any]


def contestants(b: Bench, with_trl: bool) -> list[Contestant]:
    out = [Contestant("symrl_ppo", "symrl PPO, value head on the policy", lambda b, m, d: SymrlRunner(b, m, d, "ppo")),
           Contestant("symrl_sppo", f"symrl SPPO a={b.sppo_alpha} b={b.sppo_beta}",
                      lambda b, m, d: SymrlRunner(b, m, d, "sppo")),
           Contestant("symrl_scaled_ppo", "symrl PPO with SPPO's policy-loss weight",
                      lambda b, m, d: SymrlRunner(b, m, d, "scaled_ppo")),
           Contestant("symrl_ppo_critic", "symrl PPO, separate critic trunk (TRL's architecture)",
                      lambda b, m, d: SymrlRunner(b, m, d, "ppo", "separate"))]
    if with_trl:
        out.append(Contestant("trl_ppo", "TRL experimental PPOTrainer", TRLRunner))
    return out


def measure(c: Contestant, b: Bench, models: Path, data: Path) -> dict[str, Any]:
    runner = c.build(b, models, data)
    try:
        row = runner.run(b.warmup, b.iterations)
    finally:
        runner.close()
    wall, cpu, tokens = row["wall_s"], row["cpu_s"], row["tokens"]
    row.update(iterations=b.iterations, s_per_iteration=wall / b.iterations, cpu_s_per_iteration=cpu / b.iterations,
               wall_tokens_per_s=tokens / wall, cpu_tokens_per_s=tokens / cpu, on_cpu=cpu / wall,
               loadavg_1m_after=os.getloadavg()[0])
    return row


def rotated(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------------------- report

def summarize(results: dict[str, dict[str, list[dict]]]) -> tuple[dict, dict]:
    medians = {key: {name: {m: statistics.median(r[m] for r in reps)
                            for m in ("s_per_iteration", "cpu_s_per_iteration", "wall_tokens_per_s", "cpu_tokens_per_s")}
                     for name, reps in per.items() if reps}
               for key, per in results.items()}
    ratios: dict[str, Any] = {}
    for key, per in results.items():
        for label, num, den, kind, target in RATIOS:
            if not per.get(num) or not per.get(den):
                continue
            metrics = (("wall", "s_per_iteration"), ("cpu", "cpu_s_per_iteration")) if kind == "time" else \
                (("wall", "wall_tokens_per_s"), ("cpu", "cpu_tokens_per_s"))
            entry: dict[str, Any] = {"numerator": num, "denominator": den, "quantity": metrics[0][1]}
            for clock, m in metrics:
                paired = [n[m] / d[m] for n, d in zip(per[num], per[den])]
                entry[clock] = {"per_repeat": paired, "median_of_paired": statistics.median(paired),
                                "ratio_of_medians": medians[key][num][m] / medians[key][den][m]}
            if target is not None:
                entry["target_max"] = target
                entry["meets_target"] = entry["wall"]["median_of_paired"] <= target
            ratios[f"{key}: {label}"] = entry
    return medians, ratios


PHASES = ("sample", "reward", "score", "score_values", "score_ref", "update", "other")


def print_table(results, medians, ratios) -> None:
    print()
    header = (f"{'models':<7}{'contestant':<18}{'s/iter':>8}{'tok/s':>8}{'min':>8}{'max':>8}{'CPU tok/s':>10}"
              f"{'on-CPU':>7}  phase split of the wall time (median repeat)")
    print(header)
    print("-" * (len(header) + 40))
    for key, per in results.items():
        for name, reps in per.items():
            if not reps:
                continue
            tps = [r["wall_tokens_per_s"] for r in reps]
            mid = sorted(reps, key=lambda r: r["wall_s"])[len(reps) // 2]
            split = "  ".join(f"{p} {100 * mid['phases_wall_s'][p] / mid['wall_s']:.0f}%"
                              for p in PHASES if p in mid["phases_wall_s"])
            print(f"{key:<7}{name:<18}{medians[key][name]['s_per_iteration']:>8.3f}{statistics.median(tps):>8.0f}"
                  f"{min(tps):>8.0f}{max(tps):>8.0f}{medians[key][name]['cpu_tokens_per_s']:>10.0f}"
                  f"{min(r['on_cpu'] for r in reps):>7.2f}  {split}")
    print("\n(tok/s: generated tokens per second of whole iterations; on-CPU: lowest CPU/wall time over the repeats,"
          "\n below ~0.95 another process took the core. Phases: sample = generation, reward = reward model,"
          "\n score = policy log-probs + values (TRL: score_values, values only), score_ref = reference log-probs,"
          "\n update = epochs of minibatch updates (TRL: inside other), other = the rest of the iteration)\n")
    for label, r in ratios.items():
        print(ratio_line(label, r, 78, wall="wall", cpu="cpu"))


def machine_info() -> dict[str, Any]:
    commit, dirty = git_state()
    versions = {}
    for name in ("transformers", "accelerate", "peft", "tokenizers", "datasets", "trl"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": cpu_model(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), **versions,
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE")},
            "symrl_git_commit": commit, "symrl_worktree_dirty": dirty, "loadavg_at_start": os.getloadavg()}


# ---------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny models, 1 repeat, 2 timed iterations")
    p.add_argument("--repeats", type=int, default=3, help="measurements per contestant (order rotates)")
    p.add_argument("--iterations", type=int, default=None,
                   help="timed iterations per measurement, all sizes (default: tiny 10, small 4)")
    p.add_argument("--models", default=",".join(BENCHES), help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="review corpus (.jsonl.gz) for prompts and models")
    p.add_argument("--no-trl", action="store_true", help="skip the TRL contestant")
    p.add_argument("--out", type=Path, default=None,
                   help=f"JSON output path (default: {DEFAULT_OUT.relative_to(REPO)}, --quick: *_quick.json)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = DEFAULT_OUT.with_name(DEFAULT_OUT.stem + "_quick.json") if args.quick else DEFAULT_OUT
    args.models = ["tiny"] if args.quick else [m.strip().lower() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in BENCHES]
    if unknown:
        p.error(f"--models: unknown {unknown}; allowed: {', '.join(BENCHES)}")
    if args.repeats < 1 or (args.iterations is not None and args.iterations < 1):
        p.error("--repeats and --iterations must be >= 1")
    if not args.data.is_file():
        p.error(f"--data: {args.data} does not exist; allowed: the review corpus (.jsonl or .jsonl.gz)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*checkpointing.*")
    benches = {}
    for key in args.models:
        b = BENCHES[key]
        if args.quick:
            b = replace(b, iterations=2)
        if args.iterations is not None:
            b = replace(b, iterations=args.iterations)
        benches[key] = b
    ppo, why_not = (None, "--no-trl") if args.no_trl else trl_ppo()
    with_trl = ppo is not None
    if not with_trl:
        print(f"TRL part skipped: {why_not}", flush=True)
    models = {key: model_folder(b.size, args.data) for key, b in benches.items()}

    report: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv], "quick": args.quick, "repeats": repeats,
        "machine": machine_info(), "method": __doc__.split("\n\n", 2)[2].strip(),
        "trl": {"included": with_trl, "why_not": why_not},
        "data": str(args.data), "models": {k: str(v) for k, v in models.items()},
        "prepared": {k: json.loads((v / "prepared.json").read_text()) for k, v in models.items()},
        "benches": {k: asdict(b) for k, b in benches.items()},
        "settings": {}, "contestants": {}, "results": {},
    }
    for key, b in benches.items():
        report["settings"][key] = check_settings(b, models[key], args.data, with_trl)
        report["contestants"][key] = {c.name: c.description for c in contestants(b, with_trl)}
        print(f"{key} models ({models[key]}): settings read back and compared"
              f"{' (symrl_ppo_critic = trl_ppo on every aligned key)' if with_trl else ''}; timing "
              f"{b.iterations} iterations x {b.rollouts} x {b.new_tokens} tokens after {b.warmup} warm-up", flush=True)

    results: dict[str, dict[str, list[dict]]] = {k: {c.name: [] for c in contestants(b, with_trl)}
                                                 for k, b in benches.items()}
    for rep in range(repeats):
        for key, b in benches.items():
            for position, c in enumerate(rotated(contestants(b, with_trl), rep)):
                row = measure(c, b, models[key], args.data)
                row.update(repeat=rep, position=position)
                results[key][c.name].append(row)
                print(f"  repeat {rep + 1}/{repeats} {key:<6} {c.name:<17} {row['wall_tokens_per_s']:>7.0f} tok/s "
                      f"({row['s_per_iteration']:.3f} s/iter, cpu {row['cpu_tokens_per_s']:.0f} tok/s, "
                      f"on-CPU {row['on_cpu']:.2f})", flush=True)

    medians, ratios = summarize(results)
    report.update(results=results, medians=medians, ratios=ratios)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    print_table(results, medians, ratios)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
