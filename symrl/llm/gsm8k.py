"""``task=gsm8k``: grade-school math word problems (Cobbe et al., 2021), their prompts and their verifier.

A record is the hub's (``openai/gsm8k``, config ``main``) or a local JSONL line with the same
columns: ``question``, and ``answer``, a worked solution whose last line is ``#### <final answer>``.
The reference is that final answer without thousands separators (``"#### 1,234"`` gives ``"1234"``,
:func:`reference_answer`): what the verifier compares against, and what the auxiliary NLL would
target. The prompt (:func:`prompt`) is the question and one instruction, to solve it step by step
and give the final answer after ``####`` (or in ``\\boxed{}``); an instruct model reads it through
its tokenizer's chat template, a base model as plain ``Question: …`` / ``Answer:`` text.

:func:`reward` is the verifier in the form ``reward.kind=callable`` loads (``reward.function=
symrl.llm.gsm8k:reward``): 1.0 when Hugging Face's math-verify judges the completion's final answer
equal to the reference, else 0.0. The final answer (:func:`final_answer`) is the rest of the line
after the completion's *first* ``####`` (as :mod:`symrl.llm.arithmetic` reads the first integer: a
second guess does not count, nor a number in text generated after the answer); without ``####``,
math-verify reads the whole completion, where it takes a ``\\boxed{}`` answer, then one after
"the final answer is", then the last number. It compares numbers as numbers: ``18.00`` and ``$18``
answer 18, ``1/2`` and ``\\frac{1}{2}`` answer 0.5, ``1,234`` answers 1234.

math-verify bounds its parsing and each comparison by a ``SIGALRM`` timeout (5 s), which Python
allows only in the main thread; called from another thread, the verifier runs it without one (a
completion is at most ``max_new_tokens`` long, but an answer such as ``9^9^9^9`` then takes as long
as sympy does).
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

from symrl.config import ConfigError

MARKER = "####"
INSTRUCTION = ("Solve the problem step by step, then give the final answer as a number on the last line, "
               "after \"####\" (or in \\boxed{}).")
MATH_VERIFY_TIMEOUT = 5  # seconds, math-verify's default for parsing and for each comparison


def reference_answer(answer: str) -> str:
    """The final answer of a gsm8k ``answer`` field: the text after its last ``####``, commas removed
    (gsm8k writes some answers as ``1,000``)."""
    if MARKER not in answer:
        raise ConfigError(f"data: a gsm8k 'answer' has no '{MARKER} <final answer>' line: {answer[-80:]!r}; "
                          "allowed: gsm8k's answers (a worked solution ending in '#### 72')")
    return answer.rsplit(MARKER, 1)[1].strip().replace(",", "")


def prompt(question: str, tokenizer: Any) -> str:
    """The question and the instruction, as one user turn of the tokenizer's chat template followed
    by the assistant's opening (an instruct model answers in the format it was tuned on), or as
    plain ``Question:``/``Answer:`` text when the tokenizer has no template (a base model)."""
    request = f"{question.strip()}\n{INSTRUCTION}"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                             add_generation_prompt=True)
    return f"Question: {request}\nAnswer:"


def final_answer(completion: str) -> str:
    """The rest of the line after the first ``####`` (blank lines right after it skipped), or the
    whole completion when it has no ``####`` (math-verify then finds the answer itself)."""
    if MARKER not in completion:
        return completion
    return completion.split(MARKER, 1)[1].strip().split("\n", 1)[0]


def reward(prompts: list[str], completions: list[str], references: list[str | None] | None) -> list[float]:
    """1.0 where math-verify judges a completion's final answer equal to its reference, else 0.0
    (``reward.kind=callable``)."""
    if references is None or len(references) != len(completions) or any(r is None for r in references):
        raise ConfigError("reward.function: symrl.llm.gsm8k:reward reads each answer from the example's "
                          "reference, and some examples have none; allowed: task=gsm8k, or task=custom with "
                          "a 'reference' answer on every line")
    math_verify = _math_verify()
    timeout = MATH_VERIFY_TIMEOUT if threading.current_thread() is threading.main_thread() else None
    golds = {ref: math_verify.parse(ref, parsing_timeout=timeout) for ref in set(references)}
    unreadable = next((ref for ref, gold in golds.items() if not gold), None)
    if unreadable is not None:
        raise ConfigError(f"data: a reference holds no answer math-verify can read: {unreadable!r}; allowed: "
                          "references such as '72' or '-3.5' for reward.function=symrl.llm.gsm8k:reward")
    return [float(math_verify.verify(golds[ref], math_verify.parse(final_answer(c), parsing_timeout=timeout),
                                     timeout_seconds=timeout))
            for c, ref in zip(completions, references)]


def _math_verify() -> ModuleType:
    """math-verify, imported on first use: an optional dependency (the ``math`` extra)."""
    try:
        import math_verify
    except ImportError:
        raise ConfigError("reward.function: symrl.llm.gsm8k:reward needs `pip install 'symrl[math]'`") from None
    return math_verify
