"""Batched sampling of completions: prompts left-padded, completions cut after their first eos."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from symrl.llm.config import GenerationConfig


@dataclass
class Batch:
    """Prompts (left-padded, width P) followed by continuations (right-padded, width T).

    ``continuation_mask`` is a prefix of ones per row: the generated tokens up to and including the
    first eos. ``input_ids``/``attention_mask`` are the two concatenated, ready for scoring.
    """

    query: Tensor
    query_mask: Tensor
    continuation: Tensor
    continuation_mask: Tensor

    @property
    def start(self) -> int:
        return self.query.shape[1]

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.query, self.continuation], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.query_mask, self.continuation_mask], dim=1)

    def rows(self, index: Tensor) -> "Batch":
        return Batch(self.query[index], self.query_mask[index], self.continuation[index],
                     self.continuation_mask[index])


def encode_prompts(tokenizer, prompts: list[str], max_tokens: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Left-padded prompt ids, truncated from the left (the end of a prompt is what it asks)."""
    enc = tokenizer(prompts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def mask_after_eos(tokens: Tensor, eos_id: int | None, pad_id: int) -> tuple[Tensor, Tensor]:
    """Keep each row up to and including its first eos; the rest becomes ``pad_id`` with mask 0."""
    if eos_id is None:
        return tokens, torch.ones_like(tokens)
    is_eos = (tokens == eos_id).long()
    valid = (is_eos.cumsum(dim=1) - is_eos) == 0
    return torch.where(valid, tokens, torch.full_like(tokens, pad_id)), valid.long()


def right_pad(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def sample(generate: Callable[..., Tensor], tokenizer, prompts: list[str], gen: GenerationConfig,
           device: torch.device, greedy: bool = False) -> Batch:
    """One completion per prompt: sampled with the paper's settings (top-k, top-p, temperature,
    min/max new tokens), or the greedy one (``greedy``: TRIL's TL;DR evaluation, ``tldr.yaml:20-22``).
    ``generate`` takes ``transformers``' ``generate`` arguments (the trainer routes it through the
    wrapped model's forward, see ``ActorCritic.forward``)."""
    query, query_mask = encode_prompts(tokenizer, prompts, gen.prompt_tokens, device)
    decoding = {"do_sample": False} if greedy else {
        "do_sample": True, "top_k": gen.top_k, "top_p": gen.top_p, "temperature": gen.temperature}
    out = generate(input_ids=query, attention_mask=query_mask, max_new_tokens=gen.max_new_tokens,
                   min_new_tokens=gen.min_new_tokens, pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id, **decoding)
    completion, mask = mask_after_eos(out[:, query.shape[1]:], tokenizer.eos_token_id, tokenizer.pad_token_id)
    return Batch(query, query_mask, completion, mask)


def decode(tokenizer, tokens: Tensor, mask: Tensor) -> list[str]:
    return [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True) for row, m in zip(tokens, mask)]
