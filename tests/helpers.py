"""Shared pieces of the tests: configs as flat dicts, and for the language-model tests the synthetic
review corpus the tiny models are prepared on (``lm_setup`` in conftest.py), a few seconds' RLHF
settings, and builders."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import torch

from symrl.llm.config import build_rlhf_config
from symrl.llm.trainer import RLHFTrainer
from symrl.run import RunDirectory, load_checkpoint


def settings_view(cfg: Any) -> dict[str, Any]:
    """A config as one dict, the loss keys by their short names: configs compare key by key."""
    view = dataclasses.asdict(cfg)
    view.update(view.pop("loss", {}))
    return view


NOUNS = ["movie", "film", "plot", "cast", "ending", "story", "acting", "music"]
GOOD = ["great", "wonderful", "superb", "lovely"]
BAD = ["awful", "boring", "dull", "terrible"]


def corpus(n: int = 400) -> list[dict]:
    rng = random.Random(0)
    records = []
    for _ in range(n):
        label = rng.random() < 0.5
        words = GOOD if label else BAD
        sentences = [f"the {rng.choice(NOUNS)} was {rng.choice(words)}." for _ in range(rng.randint(4, 8))]
        records.append({"text": " ".join(sentences), "label": int(label)})
    return records


def settings(root, out) -> dict:
    """A few seconds of training on the tiny models of ``lm_setup``, with a trivially learnable reward."""
    return {"task": "imdb", "data": str(root / "reviews.jsonl"), "policy.model": str(root / "models" / "policy"),
            "reward.kind": "callable", "reward.function": "tests.llm_reward_fns:great_minus_awful",
            "generation.prompt_tokens": 6, "generation.max_new_tokens": 8, "generation.min_new_tokens": 8,
            "iterations": 3, "rollouts": 8, "minibatch_size": 4, "n_epochs": 2, "lr": 1e-3, "kl_coef": 0.05,
            "eval_every": 0, "eval_prompts": 8, "checkpoint_every": 1, "device": "cpu", "out": str(out),
            "algo": "ppo"}


def rlhf_cfg(root, tmp_path, **overrides):
    return build_rlhf_config(None, {**settings(root, tmp_path / "runs"), **overrides})


def rlhf_trainer(cfg):
    run = RunDirectory(cfg)
    run.prepare(force=False)
    return RLHFTrainer(cfg, run)


def checkpoint_tensors(path):
    """Every tensor of the latest checkpoint: policy (or its LoRA adapters), critic, value head."""
    from safetensors.torch import load_file

    folder = path / "checkpoints" / load_checkpoint(path)["folder"]
    return {f"{file.relative_to(folder)}:{key}": value for file in sorted(folder.rglob("*.safetensors"))
            for key, value in load_file(str(file)).items()}


def tiny_llama(root, folder) -> str:
    """A 2-layer Llama (rotary positions, a float32 frequency buffer) with the corpus's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(root / "models" / "policy")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
