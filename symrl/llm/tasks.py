"""Tasks: prompts, reference texts, and the held-out split used for evaluation.

- ``imdb``, as TRIL builds it (``tasks.py:192-229``): the reviews are shuffled with the run's seed
  and split 80/20 into training and validation prompts. A prompt is the first half of a review's
  words (the policy reads its last ≤ ``generation.prompt_tokens`` tokens: prompts are truncated
  from the left when encoded); the reference is the whole review, so the auxiliary NLL's target
  (its first ``max_new_tokens`` tokens) overlaps the prompt's source rather than continuing it.
  Raw text: ``<br />`` stays.
- ``tldr``, as TRIL builds it (``tasks.py:72-141``): ``prompt`` / ``label`` pairs (the label
  summary is the reference), each prompt cut to ≤ ``generation.prompt_tokens`` tokens with
  "TL;DR:" kept at its end (:func:`tldr_prompts`). From the hub: every post of the ``train`` split
  trains, the first ``eval_prompts`` of the ``valid`` split, in order, evaluate (TRIL: 100).
- ``custom``: a JSONL with ``prompt`` and optionally ``reference`` per line.
- ``arithmetic``: generated problems, no data (:mod:`symrl.llm.arithmetic`): ``ARITHMETIC_TRAIN``
  training problems drawn from the run's seed, and the first ``eval_prompts`` held-out problems,
  the same for every seed; a problem's reference is its answer.
- ``gsm8k``: grade-school math word problems, ``question`` / ``answer`` records (:mod:`symrl.llm.gsm8k`
  builds each prompt, through the tokenizer's chat template when it has one, and takes the
  reference, the final answer, from ``answer``). From the hub (``openai/gsm8k``, config ``main``):
  all of ``train`` to train on, the first ``eval_prompts`` problems of ``test``, in order, held out;
  a local JSONL is split as custom data is.

Data comes from ``data`` (a local JSONL(.gz)) or, for users with internet, the task's hub dataset.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from symrl.config import ConfigError
from symrl.llm import arithmetic, gsm8k
from symrl.llm.config import HUB_DATASETS, RLHFConfig
from symrl.llm.data import read_records, texts
from symrl.llm.hub import OFFLINE_HINT, hub_reachable

# custom data, and tldr and gsm8k from a local file (the hub's have their own held-out splits): the split
# does not depend on the run's seed, every seed evaluates on the same prompts.
SPLIT_SEED = 1234
IMDB_TRAIN_FRACTION = 0.8  # TRIL tasks.py:204
ARITHMETIC_TRAIN = 20_000  # draws over the ~1,900 training problems, in a seeded order
GSM8K_CONFIG = "main"  # openai/gsm8k's configs: main (worked solutions) and socratic (sub-questions)


@dataclass(frozen=True)
class Example:
    prompt: str
    reference: str | None


def _hub_records(dataset: str, split: str = "train", name: str | None = None) -> list[dict]:
    """The rows of one split of a hub dataset (``name``: its config, for datasets that have several)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"data: loading the hub dataset {dataset!r} needs `pip install 'symrl[datasets]'`; "
                          "or give data=PATH to a local JSONL") from None
    if not hub_reachable():
        raise ConfigError(f"data: the hub dataset {dataset!r} cannot be reached; give data=PATH to a local JSONL "
                          f"or {OFFLINE_HINT}")
    return [dict(row) for row in datasets.load_dataset(dataset, name, split=split)]


def imdb_split(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Training and validation indices of ``n`` reviews. TRIL shuffles the train split with the run's
    seed (``datasets``' ``shuffle(seed)``, a numpy ``default_rng(seed).permutation``) and keeps the
    first 80% for training: the same reviews as TRIL's for the hub dataset and the same seed."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    cut = int(n * IMDB_TRAIN_FRACTION)
    return order[:cut], order[cut:]


def imdb_prompt(review: str) -> str:
    """The first half of a review's words, as TRIL cuts it: split on single spaces, the first
    ``int(0.5·count)`` words (the shorter half for an odd count), joined by single spaces."""
    words = review.split(" ")
    return " ".join(words[:int(len(words) * 0.5)])


def _imdb(records: list[dict], cfg: RLHFConfig) -> tuple[list[Example], list[Example]]:
    """TRIL keeps every review; one of under two words would give an empty prompt and is left out."""
    reviews = texts(records, "text")
    train, validation = imdb_split(len(reviews), cfg.seed)

    def examples(indices: list[int]) -> list[Example]:
        return [Example(prompt, reviews[i]) for i in indices if (prompt := imdb_prompt(reviews[i]))]

    held_out = examples(validation)[:cfg.eval_prompts or None]
    return _large_enough(f"{len(reviews)} reviews", examples(train), held_out, cfg)


def _large_enough(source: str, train: list[Example], held_out: list[Example],
                  cfg: RLHFConfig) -> tuple[list[Example], list[Example]]:
    """(train, held_out), or the one-line error when they cannot fill an iteration or the evaluation."""
    if len(train) < cfg.rollouts or len(held_out) < max(1, cfg.eval_prompts):
        raise ConfigError(f"data: {source} give {len(train)} training and {len(held_out)} held-out prompts, fewer "
                          f"than rollouts ({cfg.rollouts}) or eval_prompts ({cfg.eval_prompts}); allowed: a larger "
                          "dataset or smaller settings")
    return train, held_out


def _arithmetic(cfg: RLHFConfig) -> tuple[list[Example], list[Example]]:
    if cfg.data:
        raise ConfigError(f"data: got {cfg.data!r} with task=arithmetic, which generates its problems; allowed: "
                          "null, or task=custom for a JSONL of prompts and reference answers")
    train = arithmetic.problems(cfg.seed, ARITHMETIC_TRAIN, "train")
    held_out = arithmetic.held_out_problems(cfg.eval_prompts)
    return _large_enough(f"{ARITHMETIC_TRAIN} generated problems",
                         [Example(p.prompt, p.reference) for p in train],
                         [Example(p.prompt, p.reference) for p in held_out], cfg)


def tldr_prompts(posts: list[str], tokenizer, max_tokens: int) -> list[str]:
    """TRIL's TL;DR prompts (``tasks.py:88-112``): each post cut before its first "TL;DR:", its
    first ``max_tokens`` − 5 tokens kept (room for the marker), stripped, "\nTL;DR:" appended, and
    the result's first ``max_tokens`` tokens kept and stripped. A long post thus loses its end, not
    its subreddit and title; with GPT-2's tokenizer (the marker is 5 tokens) every prompt ends with
    the marker."""
    def first(texts: list[str], count: int) -> list[str]:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return tokenizer.batch_decode([row[:count] for row in ids], skip_special_tokens=True)

    heads = first([post.split("TL;DR:")[0] for post in posts], max_tokens - 5)
    return [text.strip() for text in first([head.strip() + "\nTL;DR:" for head in heads], max_tokens)]


def _tldr(records: list[dict], tokenizer, max_tokens: int) -> list[Example]:
    prompts = tldr_prompts(texts(records, "prompt"), tokenizer, max_tokens)
    return [Example(p, r) for p, r in zip(prompts, texts(records, "label"))]


def _tldr_hub(cfg: RLHFConfig, tokenizer) -> tuple[list[Example], list[Example]]:
    """TRIL's splits (``tasks.py:80,114-122``): all of ``train`` to train on, the first
    ``eval_prompts`` posts of ``valid``, in order, held out."""
    dataset = HUB_DATASETS["tldr"]
    train = _tldr(_hub_records(dataset), tokenizer, cfg.generation.prompt_tokens)
    held_out = _tldr(_hub_records(dataset, "valid")[:cfg.eval_prompts], tokenizer, cfg.generation.prompt_tokens)
    return _large_enough(f"the train and valid splits of {dataset!r}", train, held_out, cfg)


def _gsm8k(records: list[dict], tokenizer) -> list[Example]:
    """Examples of gsm8k's ``question`` / ``answer`` records, from the hub or a local file alike."""
    return [Example(gsm8k.prompt(question, tokenizer), gsm8k.reference_answer(answer))
            for question, answer in zip(texts(records, "question"), texts(records, "answer"))]


def _gsm8k_hub(cfg: RLHFConfig, tokenizer) -> tuple[list[Example], list[Example]]:
    """The hub's splits: all of ``train`` (7,473 problems) to train on, the first ``eval_prompts``
    of ``test`` (1,319), in order, held out."""
    dataset = HUB_DATASETS["gsm8k"]
    train = _gsm8k(_hub_records(dataset, "train", GSM8K_CONFIG), tokenizer)
    held_out = _gsm8k(_hub_records(dataset, "test", GSM8K_CONFIG)[:cfg.eval_prompts], tokenizer)
    return _large_enough(f"the train and test splits of {dataset!r}", train, held_out, cfg)


def _split(examples: list[Example], cfg: RLHFConfig) -> tuple[list[Example], list[Example]]:
    """A local file's examples, one per prompt (none in both splits), shuffled with ``SPLIT_SEED``:
    the first ``eval_prompts`` held out, the same whatever the run's seed."""
    examples = list({e.prompt: e for e in reversed(examples)}.values())[::-1]
    random.Random(SPLIT_SEED).shuffle(examples)
    return _large_enough(f"{len(examples)} distinct prompts", examples[cfg.eval_prompts:], examples[:cfg.eval_prompts],
                         cfg)


def load_examples(cfg: RLHFConfig, tokenizer) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out evaluation examples)."""
    if cfg.task == "arithmetic":
        return _arithmetic(cfg)
    if cfg.task == "tldr" and not cfg.data:
        return _tldr_hub(cfg, tokenizer)
    if cfg.task == "gsm8k" and not cfg.data:
        return _gsm8k_hub(cfg, tokenizer)
    records = read_records(cfg.data) if cfg.data else _hub_records(HUB_DATASETS[cfg.task])
    if cfg.task == "imdb":
        return _imdb(records, cfg)
    if cfg.task == "tldr":
        return _split(_tldr(records, tokenizer, cfg.generation.prompt_tokens), cfg)
    if cfg.task == "gsm8k":
        return _split(_gsm8k(records, tokenizer), cfg)
    references = [r.get("reference") for r in records]
    if any(ref is not None and not isinstance(ref, str) for ref in references):
        raise ConfigError("data: a record's 'reference' is not a string; allowed: a string or no 'reference'")
    return _split([Example(p, ref) for p, ref in zip(texts(records, "prompt"), references)], cfg)


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
