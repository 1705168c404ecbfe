"""Tasks: prompts, reference texts, and the held-out split used for evaluation.

- ``imdb``: a prompt is the first ≤ ``generation.prompt_tokens`` tokens of a review and its
  reference the review's next ``max_new_tokens`` tokens (the auxiliary NLL's target).
- ``tldr``: ``prompt`` / ``label`` pairs (the label summary is the reference).
- ``custom``: a JSONL with ``prompt`` and optionally ``reference`` per line.

Data comes from ``data`` (a local JSONL(.gz)) or, for users with internet, the task's hub dataset.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from symrl.config import ConfigError
from symrl.llm.config import HUB_DATASETS, RLHFConfig
from symrl.llm.data import read_records, texts
from symrl.llm.hub import OFFLINE_HINT, hub_reachable

# The split does not depend on the run's seed: every seed evaluates on the same prompts.
SPLIT_SEED = 1234
# Characters per token kept from each review before tokenizing: enough for any BPE (whole reviews
# would be wasted work, and longer than small models' positions).
CHARS_PER_TOKEN = 8


@dataclass(frozen=True)
class Example:
    prompt: str
    reference: str | None


def _hub_records(dataset: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"data: loading the hub dataset {dataset!r} needs `pip install 'symrl[datasets]'`; "
                          "or give data=PATH to a local JSONL") from None
    if not hub_reachable():
        raise ConfigError(f"data: the hub dataset {dataset!r} cannot be reached; give data=PATH to a local JSONL "
                          f"or {OFFLINE_HINT}")
    return [dict(row) for row in datasets.load_dataset(dataset, split="train")]


def _imdb(records: list[dict], tokenizer, prompt_tokens: int, reference_tokens: int) -> list[Example]:
    keep = CHARS_PER_TOKEN * (prompt_tokens + reference_tokens)
    reviews = [t[:keep].replace("<br />", " ").replace("<br/>", " ") for t in texts(records, "text")]
    side, tokenizer.truncation_side = tokenizer.truncation_side, "right"  # keep each review's start
    try:
        ids = tokenizer(reviews, add_special_tokens=False, truncation=True,
                        max_length=prompt_tokens + reference_tokens)["input_ids"]
    finally:
        tokenizer.truncation_side = side
    return [Example(tokenizer.decode(row[:prompt_tokens]), tokenizer.decode(row[prompt_tokens:prompt_tokens + reference_tokens]))
            for row in ids if len(row) > prompt_tokens]


def load_examples(cfg: RLHFConfig, tokenizer) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out evaluation examples)."""
    records = read_records(cfg.data) if cfg.data else _hub_records(HUB_DATASETS[cfg.task])
    if cfg.task == "imdb":
        examples = _imdb(records, tokenizer, cfg.generation.prompt_tokens, cfg.generation.max_new_tokens)
    elif cfg.task == "tldr":
        examples = [Example(p, r) for p, r in zip(texts(records, "prompt"), texts(records, "label"))]
    else:
        references = [r.get("reference") for r in records]
        if any(ref is not None and not isinstance(ref, str) for ref in references):
            raise ConfigError("data: a record's 'reference' is not a string; allowed: a string or no 'reference'")
        examples = [Example(p, ref) for p, ref in zip(texts(records, "prompt"), references)]
    examples = list({e.prompt: e for e in reversed(examples)}.values())[::-1]  # one per prompt: none in both splits
    random.Random(SPLIT_SEED).shuffle(examples)
    if len(examples) < cfg.eval_prompts + cfg.rollouts:
        raise ConfigError(f"data: {len(examples)} usable examples, fewer than eval_prompts + rollouts "
                          f"({cfg.eval_prompts} + {cfg.rollouts}); allowed: a larger dataset or smaller settings")
    return examples[cfg.eval_prompts:], examples[:cfg.eval_prompts]


def iteration_examples(examples: list[Example], iteration: int, count: int, seed: int) -> list[Example]:
    """The prompts of one iteration: passes over a seeded permutation per epoch, a function of the
    iteration alone, so a resumed run sees exactly the prompts an uninterrupted one would."""
    out: list[Example] = []
    position = iteration * count
    while len(out) < count:
        epoch, offset = divmod(position, len(examples))
        order = list(range(len(examples)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        take = min(count - len(out), len(examples) - offset)
        out += [examples[i] for i in order[offset:offset + take]]
        position += take
    return out
