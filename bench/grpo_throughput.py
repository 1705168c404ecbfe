"""Critic-free GRPO throughput (generated tokens per second): symrl against TRL's GRPOTrainer.

    python bench/grpo_throughput.py                  # 3 repeats (about two minutes, 2 cores)
    python bench/grpo_throughput.py --quick          # smoke test: 1 repeat, 2 iterations, well under a minute
    python bench/grpo_throughput.py --repeats 5 --iterations 20

Run with OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1; TRL's part needs trl>=1.16 (symrl's dev extra). Model:
models/arithmetic/policy (``symrl lm prepare --task arithmetic``), else a tiny one built into bench/results/.
Timed: whole iterations (sample + reward + score + update) of the ``arithmetic-grpo`` preset on symrl's
problems and verifier: ``RLHFTrainer.iteration()``; ``GRPOTrainer.train()`` stamped after each optimizer
step (a generation batch's steps make an iteration). Units: generated tokens up to and including eos,
counted alike. symrl's SPPO runs interleaved with its GRPO, symrl's plug-in (``SymmetricGRPOTrainer``)
beside TRL. The built trainers are read back and compared; what could not be aligned: ``NOT_ALIGNED``.
"""

from __future__ import annotations

import sys
import tempfile
from functools import partial
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import transformers  # noqa: E402
from packaging.version import Version  # noqa: E402

from bench.harness import (REPO, RESULTS, Contestant, Group, Ratio, benchmark, optimizer_settings,  # noqa: E402
                           parse, parser, span)
from bench.rlhf_throughput import TRL_QUIET, SymrlRLHF, TRLRunner, dropout_off, llm_setup, prepared  # noqa: E402
from symrl.config import get_key  # noqa: E402
from symrl.llm.config import RLHFConfig, build_rlhf_config  # noqa: E402

TRL_MIN = "1.16"  # what symrl.llm.trl_grpo supports
ITERATIONS = 10  # timed per measurement, after one warm-up iteration
GRPO, SPPO = "arithmetic-grpo", "arithmetic-grpo-sppo"  # the presets
SYMMETRIC = ("algo", "alpha", "beta")  # what the SPPO contestants change
ARGS = {  # GRPOConfig field: symrl key; TRL's arguments are made and both sides read back through it
    "generation_batch_size": "rollouts", "num_generations": "group_size", "num_iterations": "n_epochs",
    "max_completion_length": "generation.max_new_tokens", "temperature": "generation.temperature",
    "top_k": "generation.top_k", "top_p": "generation.top_p", "learning_rate": "lr", "weight_decay": "weight_decay",
    "adam_epsilon": "adam_eps", "max_grad_norm": "max_grad_norm", "epsilon": "clip_range", "entropy_coef": "ent_coef",
    "seed": "seed"}
RATIOS = [
    Ratio("symrl_grpo / trl_grpo, tokens/s", "symrl_grpo", "trl_grpo"),
    Ratio("symrl_grpo_sppo / symrl_grpo, time per token", "symrl_grpo_sppo", "symrl_grpo", 1.05, time=True),
    Ratio("trl_symmetric_grpo / trl_grpo, time per token (plug-in)", "trl_symmetric_grpo", "trl_grpo", time=True)]
NOT_ALIGNED = {
    "prompt_order": "symrl in its seeded order, TRL through its shuffled RepeatSampler: the problems differ",
    "epochs": "TRL reuses one split of a generation batch for every num_iterations pass, symrl reshuffles per epoch",
    "optimizer": "TRL's default optim is adamw_torch_fused: set to adamw_torch, symrl's torch.optim.AdamW"}


def model_folder() -> Path:
    """The prepared arithmetic policy, else a tiny one built once (reused afterwards)."""
    if (REPO / "models" / "arithmetic" / "policy" / "config.json").is_file():
        return REPO / "models" / "arithmetic"
    from symrl.llm.prepare import prepare_arithmetic

    prepare_arithmetic(RESULTS / "rlhf_models" / "arithmetic-tiny", size="tiny", device="cpu", log=print)
    return RESULTS / "rlhf_models" / "arithmetic-tiny"


def grpo_config(models: Path, preset: str, iterations: int, out: str) -> RLHFConfig:
    """The preset on the benchmark's model, without evaluation or checkpoints."""
    return build_rlhf_config(preset, {
        "policy.model": str(models / "policy"), "iterations": iterations, "out": out, "eval_every": 0,
        "eval_prompts": 8, "checkpoint_every": 10**6, "mixed_precision": "no", "experiment": f"bench-{preset}"})


def built(model, optimizer, tokenizer, prompts: list[str], gen, eos: list[int]) -> dict[str, Any]:
    """What both sides read back alike: optimizer, trained parameters, model, prompts, sampling."""
    groups = optimizer.param_groups
    return {**optimizer_settings(optimizer), "trainable_params": sum(p.numel() for g in groups for p in g["params"]),
            "decayed_params": sum(p.numel() for g in groups if g["weight_decay"] > 0 for p in g["params"]),
            "adam_fused": bool(groups[0].get("fused")), "dtype": str(next(model.parameters()).dtype),
            "dropout_off": dropout_off(model), "longest_prompt_tokens": max(map(len, tokenizer(prompts)["input_ids"])),
            **{f"sample.{k}": getattr(gen, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p")},
            "sample.min_new_tokens": gen.min_new_tokens or 0, "eos_ids": eos, "pad_id": tokenizer.pad_token_id}


class SymrlGRPO(SymrlRLHF):
    """symrl's trainer on a GRPO preset, its settings read back under TRL's names."""

    def settings(self) -> dict[str, Any]:
        cfg, loss, t, tok = self.cfg, self.cfg.loss, self.trainer, self.trainer.agent.tokenizer
        read = built(t.agent.model.lm, t.optimizer, tok, [e.prompt for e in t.train_examples], cfg.generation,
                     [tok.eos_token_id])
        return {**read, **{field: get_key(cfg, key) for field, key in ARGS.items()},
                "longest_prompt_tokens": min(read["longest_prompt_tokens"], cfg.generation.prompt_tokens),
                "minibatch_size": cfg.minibatch_size, "micro_batch_size": cfg.minibatch_size // cfg.grad_accum,
                "optimizer_steps_per_iteration": loss.n_epochs * (cfg.rollouts // cfg.minibatch_size),
                "advantage": cfg.advantage, "advantage_rewhitened": loss.norm_adv,
                "token_mean_over": "minibatch" if cfg.loss_aggregation == "token-mean" else cfg.loss_aggregation,
                "clip": [loss.clip_range, loss.clip_range_high or loss.clip_range],
                "kl_coef_in_loss": 0.0 if cfg.kl_in == "off" else t.kl_coef, "algo": loss.algo, "alpha": loss.alpha,
                "beta": loss.beta, "lr_schedule": "constant", "mixed_precision": cfg.mixed_precision,
                "device": str(t.agent.device)}


class TRLGRPO(TRLRunner):
    """TRL's GRPOTrainer (``symmetric``: symrl's plug-in with the preset's α, β) on symrl's model, problems
    and verifier, its arguments from symrl's resolved configuration."""

    def __init__(self, models: Path, preset: str, iterations: int, symmetric: bool = False):
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        from symrl.llm.arithmetic import reward
        from symrl.llm.policy import load_tokenizer
        from symrl.llm.tasks import load_examples
        from symrl.llm.trl_grpo import SymmetricGRPOConfig, SymmetricGRPOTrainer, verifiable_reward

        self.tmp = tempfile.mkdtemp(prefix="trl-grpo-bench-")
        cfg = grpo_config(models, preset, iterations, self.tmp)
        tokenizer = load_tokenizer(str(models / "policy"))  # symrl's
        examples = load_examples(cfg, tokenizer)[0]  # symrl's training problems
        data = Dataset.from_dict({"prompt": [e.prompt for e in examples], "reference": [e.reference for e in examples]})
        self.steps = cfg.loss.n_epochs * cfg.rollouts // cfg.minibatch_size  # optimizer steps per iteration
        config, trainer = (SymmetricGRPOConfig, SymmetricGRPOTrainer) if symmetric else (GRPOConfig, GRPOTrainer)
        self.args = config(
            output_dir=self.tmp, **TRL_QUIET, use_vllm=False, disable_dropout=True, max_steps=iterations * self.steps,
            per_device_train_batch_size=cfg.minibatch_size // cfg.grad_accum, optim="adamw_torch",
            gradient_accumulation_steps=cfg.grad_accum, scale_rewards="group", beta=0.0,
            generation_kwargs={"min_new_tokens": cfg.generation.min_new_tokens},
            # bnpo: the token mean of each micro-batch, here the minibatch (symrl's token-mean); dapo would divide by
            # the generation batch's tokens / steps_per_generation (the mean count of a minibatch, not its own)
            loss_type="bnpo", **{field: get_key(cfg, key) for field, key in ARGS.items()},
            **({"symmetric_alpha": cfg.loss.alpha, "symmetric_beta": cfg.loss.beta} if symmetric else {}))
        self.counts: list[int] = []
        self.verifier = verifiable_reward(reward)
        policy = transformers.AutoModelForCausalLM.from_pretrained(models / "policy", dtype=torch.float32)
        self.trainer = trainer(model=policy, reward_funcs=self.reward, args=self.args, train_dataset=data,
                               processing_class=tokenizer)
        self.trainer.create_optimizer()  # what train() would build: read back here, reused there

    def reward(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **columns: Any):
        """The verifier as TRL calls it, also counting the tokens of the completions it scores."""
        self.counts.append(sum(map(len, completion_ids)))
        return self.verifier(prompts, completions, **columns)

    def run(self, warmup: int, timed: int) -> dict[str, float]:
        stamps = self.stamped(warmup, timed)
        if len(self.counts) != warmup + timed:
            raise RuntimeError(f"TRL ran {len(self.counts)} generations, not {warmup} + {timed}")
        return span(stamps[0], stamps[-1], sum(self.counts[warmup:]))

    def settings(self) -> dict[str, Any]:
        t, a = self.trainer, self.args
        beta = getattr(a, "symmetric_beta", 0.0)
        return {**built(t.accelerator.unwrap_model(t.model), t.optimizer, t.processing_class,
                        list(t.train_dataset["prompt"]), t.generation_config, list(t.eos_token_ids)),
                **{field: getattr(a, field) for field in ARGS}, **self.trained_as(),
                "minibatch_size": a.per_device_train_batch_size * a.gradient_accumulation_steps,
                "micro_batch_size": a.per_device_train_batch_size, "optimizer_steps_per_iteration":
                a.num_iterations * a.steps_per_generation // a.gradient_accumulation_steps,
                "advantage": {"group": "grpo", "none": "drgrpo"}.get(a.scale_rewards, a.scale_rewards),
                "advantage_rewhitened": False,  # TRL's advantages are the group-normalized rewards
                "token_mean_over": "minibatch" if a.loss_type == "bnpo" and a.gradient_accumulation_steps == 1
                else a.loss_type, "clip": [t.epsilon_low, t.epsilon_high], "kl_coef_in_loss": t.beta,
                "algo": {"ratio": "sppo", "logprob": "sa2c"}[a.symmetric_form] if beta else "ppo",
                "alpha": getattr(a, "symmetric_alpha", 1.0), "beta": beta}


def trl_missing() -> str | None:
    """Why the TRL contestants cannot run here, or None."""
    found = metadata.version("trl") if find_spec("trl") else None
    return (None if found and Version(found) >= Version(TRL_MIN) else
            f"trl {found or 'not installed'}; needs trl>={TRL_MIN} (pip install -e '.[trl]')")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--iterations", type=int, help=f"timed iterations per measurement (default {ITERATIONS}; --quick 2)")
    args = parse(p, argv, "iterations")
    why_not = llm_setup(trl_missing)
    models, timed = model_folder(), args.iterations or (2 if args.quick else ITERATIONS)

    def symrl(preset: str) -> Callable[[], SymrlGRPO]:
        return lambda: SymrlGRPO(partial(grpo_config, models, preset, 1 + timed))

    grpo = Contestant("symrl_grpo", f"symrl, preset {GRPO}", symrl(GRPO))
    sppo = Contestant("symrl_grpo_sppo", f"symrl, preset {SPPO}", symrl(SPPO), equals="symrl_grpo",
                      except_keys=SYMMETRIC)
    trls = [Contestant("trl_grpo", "TRL GRPOTrainer", partial(TRLGRPO, models, GRPO, 1 + timed), equals="symrl_grpo"),
            Contestant("trl_symmetric_grpo", f"symrl's SymmetricGRPOTrainer, alpha and beta of {SPPO}",
                       partial(TRLGRPO, models, SPPO, 1 + timed, symmetric=True), equals="trl_grpo",
                       except_keys=SYMMETRIC)]
    groups = [*([] if why_not else [Group("arithmetic", [grpo, *trls], 1, timed, unit="tokens")]),
              Group("arithmetic-sppo", [grpo, sppo], 1, timed, unit="tokens", interleave=True)]
    benchmark("grpo_throughput", __doc__, args, groups, RATIOS, {
        "trl": {"included": not why_not, "why_not": why_not, "not_aligned": NOT_ALIGNED},
        "model": {"folder": str(models), **prepared(models)}})


if __name__ == "__main__":
    main()
