"""Evaluation metrics of generated text: sentiment judge, diversity, ROUGE, win rate, perplexities.

Every function is pure: it reads its inputs (and, for the perplexities, runs a frozen model) and
returns numbers. None of them is used as a training signal except ``vader_judge``, which
:class:`symrl.llm.rewards.LexiconReward` reuses so that the lexicon reward and the judge can never
disagree about what VADER says.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from symrl.llm.generation import right_pad
from symrl.llm.policy import evaluating, token_logprobs


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


# (input_ids, attention_mask) -> (B, L-1) log-probabilities of tokens 1..L-1 given the ones before
LogProbs = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lm_logprobs(model: Any) -> LogProbs:
    """The next-token log-probabilities of a Hugging Face causal LM, for the perplexities below
    (the trainer passes its policy's own, which run through the wrapped model's forward)."""
    def logprobs(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        return token_logprobs(logits, input_ids[:, 1:])
    return logprobs


def max_positions(model: Any) -> int | None:
    """The longest input a causal LM's positions allow (None: no limit)."""
    return getattr(model.config, "max_position_embeddings", None)


def _nll(logprobs: LogProbs, rows: Sequence[tuple[list[int], int]], batch_size: int,
         device: str | torch.device) -> tuple[float, int]:
    """Summed NLL of the last ``n`` tokens of each ``(ids, n)`` row, and the number of tokens scored.
    Rows are right-padded with masked positions, so a tokenizer without a pad token works."""
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, allowed: an integer >= 1")
    rows = [row for row in rows if row[1] > 0]
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            input_ids, attention_mask = right_pad([ids for ids, _ in chunk], 0, torch.device(device))
            logp = logprobs(input_ids, attention_mask)
            scored = torch.zeros(logp.shape, dtype=torch.bool, device=logp.device)
            for i, (ids, n) in enumerate(chunk):  # token t is predicted at position t - 1
                scored[i, len(ids) - 1 - n:len(ids) - 1] = True
            total_nll -= float(logp[scored].double().sum())
            total_tokens += sum(n for _, n in chunk)
    return total_nll, total_tokens


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
    Sequences longer than the model's positions keep their last tokens.
    """
    _check_pairs(prompts, completions, "prompts", "completions")
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    positions = max_positions(model)
    rows: list[tuple[list[int], int]] = []  # (token ids, number of completion tokens among them)
    for prompt, completion in zip(prompts, completions):
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if not context and start_id is not None:
            context = [start_id]
        ids = context + target
        if positions and len(ids) > positions:
            ids = ids[-positions:]
        # the first token of a window has no context, so at most len(ids) - 1 tokens are predicted
        rows.append((ids, min(len(target), len(ids) - 1)))
    with evaluating(model):
        total_nll, total_tokens = _nll(lm_logprobs(model), rows, batch_size, device)
    if total_tokens == 0:
        raise ValueError("completions: no completion has a token to score")
    return math.exp(total_nll / total_tokens)


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, n)`` per window of a token stream: tokens ``[begin, end)`` are read and their
    last ``n`` scored, each token once. Hugging Face's fixed-length-model recipe, as TRIL uses it
    (``model_metrics.py:232-242``): targets advance by ``stride``, and each window reaches back to
    ``i + stride − window`` for context. A stride of the window or more is cut to window − 1, so
    every window has a token of context and every token but the first is scored."""
    if window < 2 or stride < 1:
        raise ValueError(f"window, stride: got {window}, {stride}, allowed: window >= 2, stride >= 1")
    stride = min(stride, window - 1)
    out = []
    for i in range(0, n_tokens, stride):
        begin, end = max(i + stride - window, 0), min(i + stride, n_tokens)
        out.append((begin, end, min(end - i, end - begin - 1)))  # the stream's first token has no context
    return out


def joined_perplexity(
    logprobs: LogProbs,
    tokenizer: Any,
    texts: Sequence[str],
    window: int,
    stride: int = 512,
    separator: str = "\n\n",
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> float:
    """Perplexity of ``texts`` joined by ``separator`` into one stream, scored in sliding windows.

    TRIL's IMDB metrics (``model_metrics.py:155-340``): ``causal_perplexity`` is the policy's on
    the human reference reviews, ``causal_output_perplexity`` the IMDB LM's on the generations
    alone, both joined by a blank line, in windows of the model's positions with stride 512. The
    text is tokenized whole, with the tokenizer's own special tokens, as TRIL does. Every token but
    the stream's first is scored exactly once (TRIL multiplies each window's mean loss by its
    target count and divides by all tokens: a 1/N difference).
    """
    if not texts:
        raise ValueError("texts: got an empty list, allowed: at least one text")
    ids = tokenizer(separator.join(texts), verbose=False)["input_ids"]  # no "longer than the model" warning
    rows = [(ids[begin:end], n) for begin, end, n in sliding_windows(len(ids), window, stride)]
    total_nll, total_tokens = _nll(logprobs, rows, batch_size, device)
    if total_tokens == 0:
        raise ValueError("texts: fewer than two tokens to score")
    return math.exp(total_nll / total_tokens)


def _check_pairs(first: Sequence[Any], second: Sequence[Any], first_name: str, second_name: str) -> None:
    if len(first) != len(second):
        raise ValueError(f"{first_name} and {second_name} must pair up: got {len(first)} and {len(second)}")
    if len(first) == 0:
        raise ValueError(f"{first_name}: got an empty list, allowed: at least one item")
