"""``task=arithmetic``: seeded integer problems with one exact answer, their checker and its reward.

A problem is ``a op b`` with ``op`` one of ``+``, ``-``, ``*`` (:data:`OPERATIONS` gives each
operand's most digits; an operand's digit count is drawn uniformly, then its value among the numbers
of that many digits, so one-digit sums sit beside two-digit differences and a small LM is right on
some and wrong on others). The prompt is ``"Q: 37 + 8 = ?\\nA:"`` and the reference, the answer as
the prompt's continuation, ``" 45"``; a difference may be negative (``" -4"``). There are about 2,100
problems, one tenth of them held out: runs draw with repeats.

Which problems are held out is fixed, not drawn: a problem is held out when a hash of it falls in
one tenth (:func:`is_held_out`). Training problems of any seed, those ``symrl lm prepare --task
arithmetic`` pretrains on and those ``symrl rlhf`` trains on alike, are never held-out ones; the
held-out problems are drawn with one fixed seed, so every run evaluates on the same ones.

The checker reads the *first integer* of a completion (:func:`parse_answer`), wherever it is and
whatever text surrounds it: ``" 122"``, ``"122\\n"``, ``"The answer is 122."`` and ``"x=122apples"``
all answer 122, and ``"122 or 123"`` answers 122 too (a second guess does not count). Within that
integer:

- a sign ``+``, ``-`` or ``−`` (U+2212) directly before it counts, spaces between them allowed
  (``"- 48"`` is −48), unless a letter or digit stands right before the sign (``"pre-48"``,
  ``"5-3"``: a hyphen or an operator); ``"-0"`` is 0;
- digits may be grouped in threes by one separator used throughout, ``,``, ``_`` or a thin space
  (``"1,234"``, ``"1_234"``); a plain space separates two numbers (``"12 34"`` answers 12);
- a decimal part makes the number no integer (``"122.5"`` answers nothing) unless it is all zeros
  (``"122.0"`` is 122); a full stop ending the sentence is no decimal part.

:func:`reward` is the verifier in the form ``reward.kind=callable`` loads (``reward.function:
symrl.llm.arithmetic:reward``): 1 for a correct answer, 0 otherwise, the answer read from each
example's reference. Any function of that signature plugs in the same way.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from symrl.config import ConfigError

# the most digits of each operand: within reach of the small model `symrl lm prepare` trains in
# minutes on a CPU (greedy held-out accuracy: two-digit sums and differences and two-by-one-digit
# products 0.32; these 0.56, with the answer noise of the default preparation)
OPERATIONS: dict[str, tuple[int, int]] = {"+": (2, 1), "-": (2, 1), "*": (1, 1)}
SPLITS = ("train", "held_out")
HELD_OUT_BUCKETS = 10  # one problem in ten is held out
HELD_OUT_SEED = 1234  # the held-out problems do not depend on the run's seed
_CHUNK = 4096  # candidates drawn at a time: fixed, so a longer list extends a shorter one
_OPERATOR = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}

_INTEGER = re.compile(
    r"(?:(?<![0-9A-Za-z])(?P<sign>[+\-\u2212])[ \t]*)?"
    r"(?P<digits>[0-9]{1,3}(?P<sep>[,_\u2009\u202f])[0-9]{3}(?:(?P=sep)[0-9]{3})*(?![0-9])|[0-9]+)"
    r"(?P<fraction>\.[0-9]+)?")


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        return _OPERATOR[self.op](self.a, self.b)

    @property
    def prompt(self) -> str:
        return f"Q: {self.a} {self.op} {self.b} = ?\nA:"

    @property
    def reference(self) -> str:
        """The answer as the prompt's continuation (the auxiliary NLL appends it to the prompt's tokens)."""
        return f" {self.answer}"

    @property
    def text(self) -> str:
        """The worked problem, as pretraining reads it."""
        return self.prompt + self.reference

    def slipped_text(self, slip: int) -> str:
        """The worked problem with a near miss, the answer off by ``slip``, as a careless teacher writes it."""
        return f"{self.prompt} {self.answer + slip}"


SLIPS = (-10, -1, 1, 10)  # a careless teacher's near misses: the units or the tens digit off by one


def worked_texts(problems: list[Problem], answer_noise: float, seed: int) -> list[str]:
    """Pretraining texts: each problem with its answer, or with probability ``answer_noise`` with a
    near miss (one of :data:`SLIPS`, drawn from ``seed``). A model trained on them keeps that share
    of its probability on near misses; reinforcement with the exact checker can take it away, and it
    is what training-reward noise then corrupts (docs/rlvr.md)."""
    rng = np.random.default_rng([seed, 7])
    slipped = rng.random(len(problems)) < answer_noise
    slips = rng.choice(SLIPS, size=len(problems))
    return [p.slipped_text(int(slip)) if wrong else p.text for p, wrong, slip in zip(problems, slipped, slips)]


def is_held_out(problem: Problem) -> bool:
    """Whether ``problem`` is in the held-out tenth: a hash of it, the same in every run and seed."""
    return zlib.crc32(f"{problem.a}{problem.op}{problem.b}".encode()) % HELD_OUT_BUCKETS == 0


def problems(seed: int, count: int, split: str) -> list[Problem]:
    """``count`` problems of ``split`` (``train`` or ``held_out``) drawn from ``seed``; repeats are
    allowed (small operands have few problems). A longer list starts with the shorter one."""
    if split not in SPLITS:
        raise ValueError(f"split: got {split!r}, allowed: {', '.join(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    ops = list(OPERATIONS)
    most = np.array([OPERATIONS[op] for op in ops])
    out: list[Problem] = []
    while len(out) < count:
        chosen = rng.integers(len(ops), size=_CHUNK)
        digits = rng.integers(1, most[chosen] + 1)  # (chunk, 2): each operand's digit count
        values = rng.integers(np.where(digits == 1, 0, 10 ** (digits - 1)), 10 ** digits)
        for k, (a, b) in zip(chosen.tolist(), values.tolist()):
            problem = Problem(a, ops[k], b)
            if is_held_out(problem) == (split == "held_out"):
                out.append(problem)
        del out[count:]
    return out


def held_out_problems(count: int) -> list[Problem]:
    """The first ``count`` held-out problems: the same for every run, whatever its seed."""
    return problems(HELD_OUT_SEED, count, "held_out")


def parse_answer(text: str) -> int | None:
    """The first integer of ``text`` by the rule in the module's docstring, or None if there is none
    (or the first number has a decimal part that is not zero)."""
    match = _INTEGER.search(text)
    if match is None or (match["fraction"] and match["fraction"].strip(".0")):
        return None
    value = int(re.sub(r"[^0-9]", "", match["digits"]))
    return -value if match["sign"] in ("-", "\u2212") else value


def is_correct(completion: str, answer: int | str) -> bool:
    """Whether the first integer of ``completion`` is ``answer`` (an int, or a text such as a reference)."""
    expected = answer if isinstance(answer, int) else parse_answer(answer)
    if expected is None:
        raise ValueError(f"answer: got {answer!r}, allowed: an integer or a text holding one")
    return parse_answer(completion) == expected


def reward(prompts: list[str], completions: list[str], references: list[str | None] | None) -> list[float]:
    """1.0 where a completion's first integer is its reference's, else 0.0 (``reward.kind=callable``)."""
    if references is None or len(references) != len(completions) or any(r is None for r in references):
        raise ConfigError("reward.function: symrl.llm.arithmetic:reward reads each answer from the example's "
                          "reference, and some examples have none; allowed: task=arithmetic, or task=custom with "
                          "a 'reference' answer on every line")
    unreadable = next((r for r in references if parse_answer(r) is None), None)
    if unreadable is not None:
        raise ConfigError(f"data: a reference holds no integer answer: {unreadable!r}; allowed: references such "
                          "as '122' or ' -48' for reward.function=symrl.llm.arithmetic:reward")
    return [float(is_correct(c, r)) for c, r in zip(completions, references)]
