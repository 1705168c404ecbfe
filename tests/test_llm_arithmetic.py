"""``task=arithmetic``: the checker's rule on edge cases, seeded disjoint problems, the verifier as a
``reward.kind=callable`` reward, and ``symrl lm prepare --task arithmetic`` at the tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from symrl.cli import main
from symrl.config import ConfigError
from symrl.llm import arithmetic
from symrl.llm.arithmetic import Problem, is_correct, parse_answer
from symrl.llm.config import build_rlhf_config
from symrl.llm.prepare import prepare_arithmetic
from symrl.llm.rewards import reward_from_config
from symrl.llm.tasks import ARITHMETIC_TRAIN, load_examples
from symrl.llm.trainer import train_rlhf
from symrl.run import read_jsonl, run_dir


@pytest.mark.parametrize("completion, expected", [
    ("122", 122),  # exact
    (" 122", 122),  # the space the prompt's "A:" leaves
    ("  122  \n", 122),  # spaces and a newline around
    ("\n\n122", 122),  # newlines first
    ("-48", -48),
    (" - 48", -48),  # a space between the sign and the digits
    ("\u221248", -48),  # the typographic minus
    ("+122", 122),
    ("-0", 0),
    ("The answer is 122.", 122),  # text around; the full stop is no decimal part
    ("A: 122\nQ: 3 + 4 = ?\nA: 7", 122),  # the model runs on: only the first answer counts
    ("122 or 123", 122),  # several numbers: the first
    ("12 34", 12),  # a plain space separates numbers
    ("x=122apples", 122),  # glued to words
    ("pre-48", 48),  # a hyphen after a letter is no sign
    ("5-3", 5),  # an operator after a digit is no sign
    ("1,234", 1234),  # thousands separators
    ("1_234_567", 1234567),
    ("1,23", 1),  # not a group of three: a list
    ("122, 123", 122),
    ("122.0", 122),
    ("122.5", None),  # the first number is no integer
    ("123456789012345678901234567890", 123456789012345678901234567890),  # large
    ("", None),
    ("no number here", None),
    ("-", None),
])
def test_parse_answer_reads_the_first_integer(completion, expected):
    assert parse_answer(completion) == expected


@pytest.mark.parametrize("completion, answer, correct", [
    (" 122", 122, True),
    (" 122", " 122", True),  # the answer as a reference text
    ("-0", 0, True),
    (" 0", " -0", True),
    ("The answer is -48.", " -48", True),
    ("48", -48, False),  # the sign matters
    (" 1220", 122, False),  # extra digits are a different number
    (" 12", 122, False),
    ("122.5", 122, False),
    ("", 122, False),
    ("I do not know", 122, False),
    ("123 or 122", 122, False),  # the first guess counts
])
def test_is_correct(completion, answer, correct):
    assert is_correct(completion, answer) is correct


def test_is_correct_refuses_an_answer_without_an_integer():
    with pytest.raises(ValueError, match="answer: got 'twelve'"):
        is_correct("12", "twelve")


def test_problems_are_seeded_and_answered_in_their_prompt_format():
    first = arithmetic.problems(3, 300, "train")
    assert first == arithmetic.problems(3, 300, "train")
    assert first != arithmetic.problems(4, 300, "train")
    assert arithmetic.problems(3, 5000, "train")[:300] == first, "a longer list extends the shorter one"
    assert {p.op for p in first} == set(arithmetic.OPERATIONS)
    assert any(p.answer < 0 for p in first), "differences may be negative"
    for p in first:
        most_a, most_b = arithmetic.OPERATIONS[p.op]
        assert 0 <= p.a < 10 ** most_a and 0 <= p.b < 10 ** most_b
    assert Problem(37, "+", 85).prompt == "Q: 37 + 85 = ?\nA:"
    assert Problem(37, "-", 85).reference == " -48" and Problem(12, "*", 7).answer == 84
    assert Problem(37, "+", 85).text == "Q: 37 + 85 = ?\nA: 122"


def test_held_out_problems_are_disjoint_from_training_ones_of_every_seed():
    held_out = arithmetic.held_out_problems(500)
    assert held_out == arithmetic.held_out_problems(500), "every run evaluates on the same problems"
    assert all(arithmetic.is_held_out(p) for p in held_out)
    train = {p for seed in range(3) for p in arithmetic.problems(seed, 5000, "train")}
    assert not train & set(held_out)
    assert not any(arithmetic.is_held_out(p) for p in train)


def test_task_arithmetic_builds_examples_without_data():
    cfg = build_rlhf_config(None, {"task": "arithmetic", "eval_prompts": 16, "rollouts": 8, "minibatch_size": 4})
    train, held_out = load_examples(cfg, tokenizer=None)
    assert len(train) == ARITHMETIC_TRAIN and len(held_out) == 16
    assert [e.prompt for e in held_out] == [p.prompt for p in arithmetic.held_out_problems(16)]
    assert {e.prompt for e in train}.isdisjoint(e.prompt for e in held_out)
    for example in train[:50] + held_out:
        a, op, b = example.prompt.removeprefix("Q: ").removesuffix(" = ?\nA:").split(" ")
        assert parse_answer(example.reference) == Problem(int(a), op, int(b)).answer
    other_seed = load_examples(build_rlhf_config(None, {"task": "arithmetic", "seed": 1, "eval_prompts": 16}), None)
    assert other_seed[1] == held_out and other_seed[0][:20] != train[:20]
    with pytest.raises(ConfigError, match="data: got .* with task=arithmetic"):
        load_examples(build_rlhf_config(None, {"task": "arithmetic", "data": __file__}), None)


def test_verifier_scores_through_the_callable_reward():
    cfg = build_rlhf_config(None, {"task": "arithmetic", "reward.kind": "callable",
                                   "reward.function": "symrl.llm.arithmetic:reward"})
    reward = reward_from_config(cfg.reward, "cpu")
    prompts = [Problem(37, "+", 85).prompt, Problem(3, "-", 9).prompt, Problem(12, "*", 7).prompt, "Q"]
    scores = reward(prompts, [" 122", " The answer is -6.", " 48", ""], [" 122", " -6", " 84", " 5"])
    assert scores.dtype == torch.float32 and scores.tolist() == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="reads each answer from the example's reference"):
        reward(prompts[:1], [" 122"], [None])
    with pytest.raises(ConfigError, match="a reference holds no integer answer: 'twelve'"):
        reward(prompts[:1], [" 12"], ["twelve"])


@pytest.fixture(scope="module")
def tiny_arithmetic(tmp_path_factory, hub_offline) -> tuple[dict, Path, list[str]]:
    out = tmp_path_factory.mktemp("arithmetic") / "models"
    lines: list[str] = []
    return prepare_arithmetic(out, size="tiny", device="cpu", threads=1, log=lines.append), out, lines


def test_tiny_prepare_runs_offline_and_reports_its_accuracy(tiny_arithmetic, capsys):
    result, out, lines = tiny_arithmetic
    report = json.loads((out / "arithmetic.json").read_text())
    assert 0.0 <= result["arithmetic"]["accuracy"] == report["accuracy"] <= 1.0
    assert report["problems"] == 32 and set(report["by_operation"]) == set(arithmetic.OPERATIONS)
    assert any(line.startswith("arithmetic: held-out accuracy") for line in lines)
    assert result["paths"]["policy"] == str((out / "policy").resolve())
    tokenizer = AutoTokenizer.from_pretrained(out / "policy")
    assert tokenizer.tokenize("Q: 123 + 4") == ["Q", ":", "Ġ", "1", "2", "3", "Ġ", "+", "Ġ", "4"], "one token a byte"
    policy = AutoModelForCausalLM.from_pretrained(out / "policy")
    assert policy.config.n_layer == 2
    assert main(["lm", "prepare", "--task", "arithmetic", "--size", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reusing it" in printed and json.loads(printed[printed.index("{"):])["reused"]


def test_prepare_command_names_what_each_task_needs(capsys):
    assert main(["lm", "prepare"]) == 2
    assert "--data: required for --task imdb" in capsys.readouterr().err
    assert main(["lm", "prepare", "--task", "arithmetic", "--data", "x.jsonl"]) == 2
    assert "--data: got 'x.jsonl' with --task arithmetic" in capsys.readouterr().err
    assert main(["lm", "prepare", "--task", "arithmetic", "--size", "medium"]) == 2
    assert "--size: got 'medium', allowed: tiny, small" in capsys.readouterr().err


def test_rlhf_on_arithmetic_with_the_verifier(tiny_arithmetic, tmp_path):
    _, out, _ = tiny_arithmetic
    cfg = build_rlhf_config(None, {
        "task": "arithmetic", "policy.model": str(out / "policy"), "reward.kind": "callable",
        "reward.function": "symrl.llm.arithmetic:reward", "generation.prompt_tokens": 24,
        "generation.max_new_tokens": 6, "generation.min_new_tokens": 0, "generation.eval_greedy": True,
        "iterations": 2, "rollouts": 8, "minibatch_size": 4, "n_epochs": 1, "target_coef": 0.0, "eval_every": 0,
        "eval_prompts": 8, "device": "cpu", "out": str(tmp_path / "runs"), "algo": "sppo"})
    summary = train_rlhf(cfg, progress=False)
    evaluation = read_jsonl(run_dir(cfg) / "eval.jsonl")[-1]
    assert summary["finished"] and 0.0 <= evaluation["mean_return"] <= 1.0
    assert all(s["prompt"].startswith("Q: ") and s["reward"] in (0.0, 1.0) for s in evaluation["samples"])


def test_the_careless_teacher_writes_the_given_share_of_near_misses():
    train = arithmetic.problems(0, 4000, "train")
    texts = arithmetic.worked_texts(train, 0.4, seed=0)
    assert texts == arithmetic.worked_texts(train, 0.4, seed=0), "seeded"
    slips = [parse_answer(t.split("A:")[1]) - p.answer for t, p in zip(texts, train)]
    assert abs(sum(s != 0 for s in slips) / len(slips) - 0.4) < 0.03
    assert set(slips) == {0, *arithmetic.SLIPS}
    assert all(t.startswith(p.prompt) for t, p in zip(texts, train))
    assert arithmetic.worked_texts(train, 0.0, seed=0) == [p.text for p in train]
