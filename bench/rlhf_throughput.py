"""RLHF throughput (generated tokens per second): symrl PPO, SPPO and scaled PPO, and TRL's PPO trainer.

    python bench/rlhf_throughput.py                  # tiny and small models, 3 repeats (several minutes, 2 cores)
    python bench/rlhf_throughput.py --quick          # smoke test: tiny model, 2 iterations, well under a minute
    python bench/rlhf_throughput.py --models small --repeats 5 --iterations 8

Run with OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1; TRL's part needs trl==1.12.0, its last PPO trainer (symrl's
dev extra pins trl>=1.16): run it in a separate venv, else it is skipped with one line. Timed: whole
iterations (sample + reward + score + update) on the same models and prompts: ``RLHFTrainer.iteration()``
(SPPO and scaled PPO interleaved with PPO); ``PPOTrainer.train()``, stamped after each. ``SETTINGS`` makes
both configurations; the built trainers are read back and compared (TRL with symrl PPO on a separate
critic, its architecture; the rest: ``NOT_ALIGNED``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from functools import partial
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import transformers  # noqa: E402

from bench.harness import (REPO, RESULTS, Contestant, Group, Loop, Ratio, Stamp, benchmark,  # noqa: E402
                           optimizer_settings, parse, parser, span)
from symrl.config import get_key  # noqa: E402
from symrl.llm.config import RLHFConfig, build_rlhf_config  # noqa: E402
from symrl.llm.tasks import load_examples  # noqa: E402
from symrl.llm.trainer import RLHFTrainer  # noqa: E402
from symrl.run import RunDirectory  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "imdb_reviews_offline.jsonl.gz"
PREPARED_SMALL = REPO / "models" / "imdb-offline"  # what `make demo-rlhf` builds, reused when present
SMALL_FALLBACK_STEPS = 200  # only speed is measured here: a briefly pretrained small model will do
TRL_PPO = "1.12.0"  # TRL's last release with a PPO trainer
ITERATIONS = {"tiny": 10, "small": 4}  # timed per measurement, after one warm-up iteration
# TRL's arguments here and in grpo_throughput.py: no saving, evaluation or logging; float32 on the CPU
TRL_QUIET = {"report_to": "none", "save_strategy": "no", "eval_strategy": "no", "disable_tqdm": True,
             "logging_steps": 10**6, "use_cpu": True, "bf16": False, "fp16": False, "lr_scheduler_type": "constant"}

# What every contestant gets: the imdb-offline presets, except where TRL cannot follow (NOT_ALIGNED).
SETTINGS = {
    "task": "imdb", "seed": 0, "reward.kind": "classifier", "reward.label": "POSITIVE", "reward.score": "logit",
    "generation.prompt_tokens": 32, "generation.max_new_tokens": 24, "generation.min_new_tokens": 24,
    "generation.top_p": 1.0, "generation.temperature": 1.0, "rollouts": 32, "minibatch_size": 8, "grad_accum": 1,
    "n_epochs": 4, "lr": 1e-4, "weight_decay": 0.0, "adam_eps": 1e-8, "gamma": 0.99, "gae_lambda": 0.95,
    "clip_range": 0.2, "clip_range_vf": 0.2, "vf_coef": 0.5, "value_loss_scale": 1.0, "ent_coef": 0.0,
    "max_grad_norm": 1.0, "norm_adv": True, "kl_coef": 0.05, "kl_controller": "fixed", "target_coef": 0.0,
    "eval_every": 0, "eval_prompts": 32, "checkpoint_every": 10**6, "device": "cpu", "mixed_precision": "no"}
SPPO = {"alpha": 0.5, "beta": 0.4}  # SPPO's and scaled PPO's

RATIOS = [
    Ratio("symrl_sppo / symrl_ppo, time per iteration", "symrl_sppo", "symrl_ppo", 1.05, time=True),
    Ratio("symrl_scaled_ppo / symrl_ppo, time per iteration", "symrl_scaled_ppo", "symrl_ppo", 1.05, time=True),
    # the reverse term alone: both weight the policy loss by alpha + beta|Z|, only SPPO computes the term
    Ratio("symrl_sppo / symrl_scaled_ppo, time per iteration", "symrl_sppo", "symrl_scaled_ppo", 1.05, time=True),
    Ratio("symrl_ppo_critic / trl_ppo, tokens/s (equal architecture)", "symrl_ppo_critic", "trl_ppo"),
    Ratio("symrl_ppo / trl_ppo, tokens/s (symrl's shared value head)", "symrl_ppo", "trl_ppo"),
    Ratio("symrl_ppo_critic / symrl_ppo, tokens/s (cost of a separate critic)", "symrl_ppo_critic", "symrl_ppo")]

NOT_ALIGNED = {
    "top_k": "TRL hard-codes top_k=0 (off); symrl samples with top_k = vocabulary size, the same distribution",
    "eos": "symrl suppresses eos; TRL (stop_token=None) samples it without stopping: both make max_new_tokens",
    "auxiliary_nll": "TRL has none: symrl runs with target_coef=0 (its imdb-offline preset: 0.1)",
    "value_model": "TRL: a separate trunk + score head without bias (symrl_ppo_critic's head has one)",
    "gradient_clipping": "TRL's PPO loop never clips gradients; symrl clips at max_grad_norm",
    "advantage_whitening": "TRL: once over the rollout batch; symrl: per minibatch (valid tokens)",
    "value_loss": "TRL's is 0.5 * max(unclipped, clipped squared error): TRL vf_coef = 2 * symrl's weight",
    "reward_input": "symrl decodes completions and re-tokenizes; TRL passes ids, repacked (one BPE for both)",
    "rollout_scoring": "TRL takes old log-probs from generate; symrl runs the policy again (with the values)",
    "logits_window": "TRL computes logits at every position; symrl only for the completion (logits_to_keep)",
    "prompt_order": "symrl in its seeded order, TRL through its shuffled DataLoader: an iteration's prompts differ"}


def prepared(folder: Path) -> dict[str, Any]:
    """What ``symrl lm prepare`` recorded about the models in ``folder`` ({} before it ran there)."""
    record = folder / "prepared.json"
    return json.loads(record.read_text()) if record.is_file() else {}


def model_folder(size: str, data: Path) -> Path:
    """The prepared small models (``policy/``, ``classifier/``), else ones built once into bench/results/."""
    if size == "small" and prepared(PREPARED_SMALL).get("size") == size:
        return PREPARED_SMALL
    out = RESULTS / "rlhf_models" / size
    if prepared(out).get("size") != size:
        from symrl.llm.data import read_records
        from symrl.llm.prepare import prepare_models

        print(f"building the {size} models from {data} into {out} (once; reused afterwards)")
        prepare_models(read_records(data, field="--data"), out, size=size, seed=0, device="cpu", source=str(data),
                       steps=SMALL_FALLBACK_STEPS if size == "small" else None, log=print)
    return out


def symrl_config(models: Path, data: Path, out: str, algo: str, value_head: str, iterations: int):
    vocabulary = transformers.AutoConfig.from_pretrained(models / "policy").vocab_size
    return build_rlhf_config(None, {
        **SETTINGS, "algo": algo, **(SPPO if algo in ("sppo", "scaled_ppo") else {"alpha": 1.0, "beta": 0.0}),
        "data": str(data), "policy.model": str(models / "policy"), "policy.tokenizer": None,
        "policy.value_head": value_head, "reward.model": str(models / "classifier"),
        "generation.top_k": vocabulary,  # keeps every token, as TRL
        "iterations": iterations, "out": out, "experiment": f"bench-{algo}-{value_head}"})


ALIGNED = {  # read-back name: (symrl key, PPOConfig field); TRL's arguments are made from it too
    "n_epochs": ("n_epochs", "num_ppo_epochs"), "new_tokens_max": ("generation.max_new_tokens", "response_length"),
    "temperature": ("generation.temperature", "temperature"), "clip_range": ("clip_range", "cliprange"),
    "clip_range_vf": ("clip_range_vf", "cliprange_value"), "gamma": ("gamma", "gamma"),
    "gae_lambda": ("gae_lambda", "lam"), "seed": ("seed", "seed")}


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def dropout_off(*modules: nn.Module) -> bool:
    return all(m.p == 0 for module in modules for m in module.modules() if isinstance(m, nn.Dropout))


def llm_setup(trl_check: Callable[[], str | None], **warning: Any) -> str | None:
    """One torch thread (models are built too), no transformers messages or ``warning``; why TRL is skipped."""
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, **warning)
    if why_not := trl_check():
        print(f"TRL part skipped: {why_not}", flush=True)
    return why_not


class SymrlRLHF(Loop):
    """symrl's RLHF trainer, one ``iteration()`` at a time; ``config(out)``: its configuration, run in a temp folder."""

    def __init__(self, config: Callable[[str], RLHFConfig]):
        self.tmp = tempfile.mkdtemp(prefix="symrl-rlhf-bench-")
        self.cfg = config(self.tmp)
        run = RunDirectory(self.cfg)
        run.prepare(force=True)
        self.trainer = RLHFTrainer(self.cfg, run)

    def iterate(self, n: int) -> int:
        """The generated tokens (eos included, padding not): the mean completion length × rollouts."""
        rows = [self.trainer.iteration() for _ in range(n)]
        return sum(round(row["response_length"] * self.cfg.rollouts) for row in rows)

    def settings(self) -> dict[str, Any]:
        """Read back from the built trainer, its optimizer and models, not from the overrides."""
        t, agent, key = self.trainer, self.trainer.agent, partial(get_key, self.cfg)
        model, reward = agent.model, agent.reward.scorer.model
        return {
            **{name: key(k) for name, (k, _) in ALIGNED.items()}, **optimizer_settings(t.optimizer),
            "rollouts_per_iteration": key("rollouts"), "minibatch_size": key("minibatch_size"),
            "prompt_tokens_max": key("generation.prompt_tokens"), "top_p": key("generation.top_p"),
            "kl_controller": key("kl_controller"), "mixed_precision": key("mixed_precision"),
            "lr_schedule": "constant", "optimizer_steps_per_epoch": key("rollouts") // key("minibatch_size"),
            "new_tokens_exact": key("generation.min_new_tokens") == key("generation.max_new_tokens"),
            "top_k": None if key("generation.top_k") >= model.lm.config.vocab_size else key("generation.top_k"),
            "kl_coef": t.kl_coef, "kl_estimator": "k1", "value_error_weight": t.weights.vf, "ent_coef": t.weights.ent,
            "reward_whitening": False, "policy_params": count(model.lm), "reward_params": count(reward),
            "reference_params": count(agent.reference.model), "value_trunk_params": count(model.critic) or None,
            "dtype": str(next(model.lm.parameters()).dtype), "dropout_off": dropout_off(model),
            "gradient_checkpointing": False, "device": str(agent.device)}

    def details(self) -> dict[str, Any]:
        return {"loss_weights": str(self.trainer.weights), "config": self.cfg.to_dict()}

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class TRLRunner(transformers.TrainerCallback):
    """Base of the TRL contestants (``trainer`` working in the temporary folder ``tmp``); this callback
    stamps the clocks after each optimizer step, ``steps`` of them per iteration."""

    trainer: Any
    tmp: str
    steps = 1

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(Stamp.end())

    def stamped(self, warmup: int, timed: int) -> list[Stamp]:
        """Warm-up + timed iterations in one ``train()`` call: the clocks from the first timed one on."""
        self.stamps = [Stamp.end()]
        self.trainer.add_callback(self)
        with contextlib.redirect_stdout(io.StringIO()):  # its banner and final log line
            self.trainer.train()
        if len(self.stamps) != 1 + self.steps * (warmup + timed):
            raise RuntimeError(f"TRL ran {len(self.stamps) - 1} steps, not {warmup} + {timed} iterations of "
                               f"{self.steps}")
        return self.stamps[warmup * self.steps:]

    def trained_as(self) -> dict[str, Any]:
        """The schedule, precision and device, read back alike from TRL's trainers."""
        a = self.trainer.args
        return {"lr_schedule": getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type),
                "mixed_precision": "bf16" if a.bf16 else "fp16" if a.fp16 else "no",
                "device": str(self.trainer.accelerator.device)}

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def trl_ppo_missing() -> str | None:
    """Why TRL's PPO trainer cannot run here, or None."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        from trl.experimental import ppo  # noqa: F401
    except ImportError:
        why = find_spec("trl") and f"trl {metadata.version('trl')} has no PPO trainer (removed in 1.13.0)"
        return f"{why or 'no trl'}; it needs trl=={TRL_PPO}: run it in a separate venv with pip install trl=={TRL_PPO}"
    return None


class ClassifierRewardForTRL(nn.Module):
    """symrl's reward (the POSITIVE logit of the classifier on prompt + completion) behind what TRL's
    ``get_reward`` calls: ``getattr(model, model.base_model_prefix)(ids, mask)``, then ``model.score``
    at the last response token. The classifier pools its first token, so each row of the ids TRL
    passes (one BPE for both models) is repacked as its tokenizer lays text out (eos first, right
    padding), and the logit is spread over every position."""

    base_model_prefix = "repacked"

    def __init__(self, folder: Path, label: str):
        super().__init__()
        self.clf = transformers.AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
        self.clf.eval().requires_grad_(False)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        self.index, self.eos_id, self.pad_id = self.clf.config.label2id[label], tok.eos_token_id, tok.pad_token_id
        self.max_length = tok.model_max_length
        self.score = nn.Identity()

    @torch.no_grad()
    def repacked(self, input_ids, attention_mask, **_):
        valid = attention_mask.bool()
        order = torch.sort((~valid).int(), dim=1, stable=True).indices  # valid tokens first, in order
        ids = torch.cat([torch.full_like(input_ids[:, :1], self.eos_id), input_ids.gather(1, order)], 1)
        n = (valid.sum(1) + 1).clamp(max=self.max_length)
        ids = ids[:, :int(n.max())]
        keep = torch.arange(ids.shape[1], device=ids.device) < n[:, None]
        logit = self.clf(input_ids=torch.where(keep, ids, self.pad_id), attention_mask=keep.long()).logits
        return SimpleNamespace(hidden_states=(logit[:, self.index, None, None].expand(-1, input_ids.shape[1], 1),))


class TRLPPO(TRLRunner):
    """TRL's PPOTrainer on the same models and prompts, its arguments from symrl's resolved configuration."""

    def __init__(self, models: Path, data: Path, iterations: int):
        from datasets import Dataset
        from trl.experimental import ppo

        from symrl.llm.policy import load_tokenizer

        self.tmp = tempfile.mkdtemp(prefix="trl-rlhf-bench-")
        cfg = symrl_config(models, data, self.tmp, "ppo", "separate", iterations)
        key = partial(get_key, cfg)
        self.prompt_tokens, self.tokens = key("generation.prompt_tokens"), key("generation.max_new_tokens")
        tokenizer = load_tokenizer(str(models / "policy"))  # symrl's: left padding and truncation
        prompts = [e.prompt for e in load_examples(cfg, tokenizer)[0]]  # symrl's training split
        ids = tokenizer(prompts, truncation=True, max_length=self.prompt_tokens)["input_ids"]
        f32 = {"dtype": torch.float32}
        policy, ref = (transformers.AutoModelForCausalLM.from_pretrained(models / "policy", **f32) for _ in range(2))
        torch.manual_seed(key("seed"))  # the value head's initialization
        value = transformers.AutoModelForSequenceClassification.from_pretrained(models / "policy", num_labels=1, **f32)
        value.config.pad_token_id = tokenizer.pad_token_id
        rollouts = key("rollouts")
        self.args = ppo.PPOConfig(
            output_dir=self.tmp, **TRL_QUIET, num_sample_generations=0, gradient_checkpointing=False,
            dataloader_num_workers=0, per_device_train_batch_size=rollouts, gradient_accumulation_steps=1,
            num_mini_batches=rollouts // key("minibatch_size"), total_episodes=rollouts * iterations,
            local_rollout_forward_batch_size=rollouts, stop_token=None, missing_eos_penalty=None,
            learning_rate=key("lr"), weight_decay=key("weight_decay"), adam_epsilon=key("adam_eps"),
            max_grad_norm=key("max_grad_norm"), kl_coef=key("kl_coef"), kl_estimator="k1", whiten_rewards=False,
            vf_coef=2 * key("vf_coef") * key("value_loss_scale"), **{field: key(k) for k, field in ALIGNED.values()})
        self.trainer = ppo.PPOTrainer(
            args=self.args, processing_class=tokenizer, model=policy, ref_model=ref,
            reward_model=ClassifierRewardForTRL(models / "classifier", key("reward.label")),
            train_dataset=Dataset.from_dict({"input_ids": ids}), value_model=value)

    def run(self, warmup: int, timed: int) -> dict[str, float]:
        stamps = self.stamped(warmup, timed)
        return span(stamps[0], stamps[-1], timed * self.args.batch_size * self.tokens)

    def settings(self) -> dict[str, Any]:
        t, a, wrapper = self.trainer, self.args, self.trainer.accelerator.unwrap_model(self.trainer.model)
        longest = max(len(x) for x in t.train_dataset["input_ids"])
        if longest > self.prompt_tokens:
            raise SystemExit(f"trl_ppo: got prompts of {longest} tokens; allowed: at most {self.prompt_tokens}")
        return {
            **{name: getattr(a, field) for name, (_, field) in ALIGNED.items()}, **optimizer_settings(t.optimizer),
            **self.trained_as(), "rollouts_per_iteration": a.batch_size, "minibatch_size": a.mini_batch_size,
            **{k: getattr(a, k) for k in ("kl_coef", "kl_estimator", "gradient_checkpointing")},
            "reward_whitening": a.whiten_rewards, "prompt_tokens_max": self.prompt_tokens,
            # accelerate steps the optimizer every gradient_accumulation_steps micro-batches
            "optimizer_steps_per_epoch": a.num_mini_batches * math.ceil(a.local_mini_batch_size
                                                                        / a.per_device_train_batch_size)
            // a.gradient_accumulation_steps,
            "new_tokens_exact": t.stop_token_id is None, "top_k": None, "top_p": 1.0,  # hard-coded in train()
            "kl_controller": "fixed", "value_error_weight": 0.5 * a.vf_coef, "ent_coef": 0.0,  # no entropy term
            "policy_params": count(wrapper.policy), "reference_params": count(t.ref_model),
            "value_trunk_params": count(wrapper.critic_backbone), "reward_params": count(t.reward_model.clf),
            "dtype": str(next(wrapper.policy.parameters()).dtype),
            "dropout_off": dropout_off(wrapper, t.ref_model, t.reward_model)}

    def details(self) -> dict[str, Any]:
        return {"trainer": f"{type(self.trainer).__module__}.PPOTrainer", "vf_coef": self.args.vf_coef,
                "max_grad_norm_set_but_unused": self.args.max_grad_norm, "not_aligned": NOT_ALIGNED}


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--iterations", type=int, help="timed iterations (default: tiny 10, small 4; --quick 2)")
    p.add_argument("--models", default="tiny,small", help="comma-separated subset of tiny, small (--quick: tiny)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="review corpus (.jsonl.gz) for prompts and models")
    p.add_argument("--no-trl", action="store_true", help="skip the TRL contestant")
    args = parse(p, argv, "iterations")
    sizes = ["tiny"] if args.quick else [m.strip().lower() for m in args.models.split(",") if m.strip()]
    if set(sizes) - set(ITERATIONS):
        p.error(f"--models: got {args.models}; allowed: a comma-separated subset of tiny, small")
    if not args.data.is_file():
        p.error(f"--data: {args.data} does not exist; allowed: the review corpus (.jsonl or .jsonl.gz)")
    why_not = llm_setup(lambda: "--no-trl" if args.no_trl else trl_ppo_missing(), message=".*checkpointing.*")
    models = {size: model_folder(size, args.data) for size in sizes}
    groups = []
    for size, folder in models.items():
        timed = args.iterations or (2 if args.quick else ITERATIONS[size])

        def symrl(algo: str, value_head: str = "shared", folder=folder, timed=timed):
            return lambda: SymrlRLHF(partial(symrl_config, folder, args.data, algo=algo, value_head=value_head,
                                             iterations=1 + timed))

        ppo = Contestant("symrl_ppo", "symrl PPO, value head on the policy", symrl("ppo"))
        groups.append(Group(size, [
            ppo, Contestant("symrl_ppo_critic", "symrl PPO, separate critic trunk (TRL's architecture)",
                            symrl("ppo", "separate"), equals="symrl_ppo", except_keys=("value_trunk_params",)),
            *([] if why_not else [Contestant("trl_ppo", "TRL experimental PPOTrainer", equals="symrl_ppo_critic",
                                             build=partial(TRLPPO, folder, args.data, 1 + timed))])],
            1, timed, unit="tokens"))
        groups.append(Group(f"{size} SPPO|PPO", [  # a few percent apart: interleaved
            ppo, Contestant("symrl_sppo", f"symrl SPPO {SPPO}", symrl("sppo"), equals="symrl_ppo"),
            Contestant("symrl_scaled_ppo", "symrl PPO with SPPO's policy-loss weight", symrl("scaled_ppo"),
                       equals="symrl_ppo")], 1, timed, unit="tokens", interleave=True))
    benchmark("rlhf_throughput", __doc__, args, groups, RATIOS, {
        "trl": {"included": not why_not, "why_not": why_not}, "data": str(args.data), "table": SETTINGS,
        "models": {k: {"folder": str(v), **prepared(v)} for k, v in models.items()}})


if __name__ == "__main__":
    main()
