"""Evaluation metrics of generated text: sentiment judge, diversity, ROUGE, win rate, perplexity.

Every function is pure: it reads its inputs (and, for ``perplexity``, runs a frozen model) and
returns numbers. None of them is used as a training signal except ``vader_judge``, which
:class:`symrl.llm.rewards.LexiconReward` reuses so that the lexicon reward and the judge can never
disagree about what VADER says.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from symrl.llm.generation import right_pad
from symrl.llm.policy import evaluating


@functools.lru_cache(maxsize=1)
def _vader() -> Any:
    """One analyzer per process: building it parses the ~7,500-word lexicon file each time."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_judge(texts: Sequence[str]) -> list[float]:
    """VADER compound sentiment of each text, in [-1, 1].

    A lexicon-and-rules scorer shares no weights with any learned classifier, so a policy that
    exploits the classifier reward (adversarial tokens, degenerate repetition) shows up as a gap
    between the reward and this judge: it is the independent check for reward hacking.
    """
    analyzer = _vader()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in texts]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams over all n-grams of all texts (whitespace tokens); 0 when there are none.

    Pooled over the whole set rather than averaged per text, so a policy that writes the same
    sentence for every prompt scores low even if each sentence is internally varied.
    """
    if n < 1:
        raise ValueError(f"n: got {n}, allowed: an integer >= 1")
    total = 0
    unique: set[tuple[str, ...]] = set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (Porter stemming, as the TL;DR literature reports them)."""
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references, "predictions", "references")
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    sums = dict.fromkeys(keys, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # rouge_score's order is (target, prediction)
        for key in keys:
            sums[key] += scores[key].fmeasure
    return {key: sums[key] / len(predictions) for key in keys}


def win_rate(sample_scores: Sequence[float] | torch.Tensor, reference_scores: Sequence[float] | torch.Tensor) -> float:
    """Fraction of samples that beat their paired reference; a tie counts half.

    Counting ties as half keeps a policy that copies the reference at exactly 0.5, not 0 or 1.
    """
    samples = torch.as_tensor(sample_scores, dtype=torch.float64).flatten()
    references = torch.as_tensor(reference_scores, dtype=torch.float64).flatten()
    _check_pairs(samples, references, "sample_scores", "reference_scores")
    wins = (samples > references).double() + 0.5 * (samples == references).double()
    return float(wins.mean())


def perplexity(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> float:
    """Perplexity of the completions given their prompts under a causal LM.

    exp(total NLL of completion tokens / number of completion tokens): pooled over tokens, so a long
    completion weighs by its length, as in corpus perplexity. Prompt and completion are tokenized
    separately with ``tokenizer`` (which need not be the policy's), so the boundary is exact and
    every completion token is counted once. An empty prompt is replaced by the BOS token (EOS when
    there is none, as GPT-2 does) so the first completion token has something to condition on.
    Sequences longer than the model's positions keep their last tokens. Padding is done here, on
    the right with masked positions, so a tokenizer without a pad token works.
    """
    _check_pairs(prompts, completions, "prompts", "completions")
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, allowed: an integer >= 1")
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    max_positions = getattr(model.config, "max_position_embeddings", None)
    rows: list[tuple[list[int], int]] = []  # (token ids, number of completion tokens among them)
    for prompt, completion in zip(prompts, completions):
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if not context and start_id is not None:
            context = [start_id]
        ids = context + target
        if max_positions and len(ids) > max_positions:
            ids = ids[-max_positions:]
        # the first token of a window has no context, so at most len(ids) - 1 tokens are predicted
        rows.append((ids, min(len(target), len(ids) - 1)))

    total_nll = 0.0
    total_tokens = 0
    with evaluating(model), torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = [row for row in rows[start:start + batch_size] if row[1] > 0]
            if not chunk:
                continue
            input_ids, attention_mask = right_pad([ids for ids, _ in chunk], 0, torch.device(device))
            labels = torch.full_like(input_ids, -100)
            for i, (ids, n_target) in enumerate(chunk):
                labels[i, len(ids) - n_target:len(ids)] = input_ids[i, len(ids) - n_target:len(ids)]
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            nll = F.cross_entropy(
                logits[:, :-1].float().flatten(0, 1), labels[:, 1:].to(logits.device).flatten(),
                ignore_index=-100, reduction="sum",
            )
            total_nll += float(nll)
            total_tokens += sum(n_target for _, n_target in chunk)
    if total_tokens == 0:
        raise ValueError("completions: no completion has a token to score")
    return math.exp(total_nll / total_tokens)


def _check_pairs(first: Sequence[Any], second: Sequence[Any], first_name: str, second_name: str) -> None:
    if len(first) != len(second):
        raise ValueError(f"{first_name} and {second_name} must pair up: got {len(first)} and {len(second)}")
    if len(first) == 0:
        raise ValueError(f"{first_name}: got an empty list, allowed: at least one item")
