"""task=gsm8k offline: the math-verify verifier, the reference and prompt building, a local JSONL,
and the one-line failure of the hub preset without network."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from symrl.config import ConfigError
from symrl.llm import gsm8k
from symrl.llm.config import build_rlhf_config
from symrl.llm.rewards import CallableReward
from symrl.llm.tasks import load_examples

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
            "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")

# (completion, reference, reward): what math-verify judges, read after the first "####" when there is one
CASES = [
    ("#### 72", "72", 1.0),
    ("She sold 48 + 24 = 72 clips.\n#### 72", "72", 1.0),
    ("####\n\n72", "72", 1.0),  # the answer on the line after the marker
    ("#### 72 clips", "72", 1.0),
    ("#### 72\nThat is 3 more than yesterday.", "72", 1.0),  # text after the answer is not read
    ("#### 71\nWait, no: #### 72", "72", 0.0),  # the first answer counts, not a second guess
    ("So the total is \\boxed{72}.", "72", 1.0),
    ("The answer is $1,234.", "1234", 1.0),
    ("#### 1,000,000", "1000000", 1.0),
    ("The final answer is 18 dollars.", "18", 1.0),
    ("#### $18.00", "18", 1.0),
    ("#### -5", "-5", 1.0),
    ("#### 5", "-5", 0.0),
    ("#### 1/2", "0.5", 1.0),
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("#### 0.5", "1/2", 1.0),
    ("#### 71", "72", 0.0),
    ("I do not know.", "72", 0.0),
    ("", "72", 0.0),
    ("####", "72", 0.0),  # cut off before the answer
    ("#### seventy-two", "72", 0.0),
    ("She has 18 apples and 3 pears", "3", 1.0),  # no marker, no box: math-verify takes the last number
    ("She has 18 apples and 3 pears", "18", 0.0),
]


@pytest.mark.parametrize("completion, reference, expected", CASES)
def test_the_verifier_judges_the_final_answer(completion, reference, expected):
    assert gsm8k.reward(["q"], [completion], [reference]) == [expected]


def test_the_verifier_scores_a_batch_through_reward_kind_callable():
    completions, references, expected = zip(*CASES)
    scores = CallableReward("symrl.llm.gsm8k:reward")(["q"] * len(CASES), list(completions), list(references))
    assert scores.tolist() == list(expected)


def test_the_verifier_runs_off_the_main_thread_where_math_verify_has_no_timeout():
    """math-verify's SIGALRM timeout only works in the main thread; elsewhere it would raise."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(gsm8k.reward(["q", "q"], ["#### 72", "#### 7"], ["72", "72"])))
    worker.start()
    worker.join()
    assert out == [[1.0, 0.0]]


def test_the_verifier_needs_readable_references_and_math_verify(monkeypatch):
    with pytest.raises(ConfigError, match="reward.function: symrl.llm.gsm8k:reward reads each answer"):
        gsm8k.reward(["q"], ["#### 72"], [None])
    with pytest.raises(ConfigError, match="data: a reference holds no answer math-verify can read: 'none'"):
        gsm8k.reward(["q"], ["#### 72"], ["none"])
    monkeypatch.setitem(sys.modules, "math_verify", None)  # as if not installed
    needs = r"^reward.function: symrl.llm.gsm8k:reward needs `pip install 'symrl\[math\]'`$"
    with pytest.raises(ConfigError, match=needs):
        gsm8k.reward(["q"], ["#### 72"], ["72"])


def test_the_reference_is_the_final_answer_without_commas():
    assert gsm8k.reference_answer(SOLUTION) == "72"
    assert gsm8k.reference_answer("10 * 100 = <<10*100=1000>>1,000\n#### 1,000") == "1000"
    assert gsm8k.reference_answer("5 - 8 = -3\n#### -3") == "-3"
    with pytest.raises(ConfigError, match="data: a gsm8k 'answer' has no '#### <final answer>' line"):
        gsm8k.reference_answer("72 clips")


@pytest.fixture(scope="module")
def tokenizer(lm_setup):
    from symrl.llm.policy import load_tokenizer

    return load_tokenizer(str(lm_setup / "models" / "tokenizer"))


def test_prompts_are_plain_text_without_a_chat_template_and_templated_with_one(tokenizer):
    assert not tokenizer.chat_template
    question = "  How many clips did Natalia sell? "
    assert gsm8k.prompt(question, tokenizer) == (
        f"Question: How many clips did Natalia sell?\n{gsm8k.INSTRUCTION}\nAnswer:")
    instruct = copy.deepcopy(tokenizer)
    instruct.chat_template = TEMPLATE
    assert gsm8k.prompt(question, instruct) == (
        f"<|user|>How many clips did Natalia sell?\n{gsm8k.INSTRUCTION}\n<|assistant|>")
    assert '"####"' in gsm8k.INSTRUCTION and "\\boxed{}" in gsm8k.INSTRUCTION


def test_a_local_jsonl_of_questions_and_answers_loads_with_final_answers_as_references(tmp_path, tokenizer):
    records = [{"question": f"What is {k} + {k}?", "answer": f"{k} + {k} = {2 * k}\n#### {2 * k:,}"}
               for k in range(600, 606)]
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = build_rlhf_config(None, {"task": "gsm8k", "data": str(data), "rollouts": 4, "minibatch_size": 4,
                                   "eval_prompts": 2})
    train, held_out = load_examples(cfg, tokenizer)
    assert (len(train), len(held_out)) == (4, 2)
    expected = {gsm8k.prompt(r["question"], tokenizer): str(2 * k) for k, r in zip(range(600, 606), records)}
    assert {e.prompt: e.reference for e in train + held_out} == expected  # "1,200" → "1200"
    data.write_text(json.dumps({"question": "What is 1 + 1?", "solution": "#### 2"}) + "\n")
    with pytest.raises(ConfigError, match="data: a record has no string 'answer'"):
        load_examples(cfg, tokenizer)


def test_the_hub_dataset_offline_fails_naming_the_offline_verifiable_preset(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="data: the hub dataset 'openai/gsm8k' cannot be reached.*arithmetic-grpo"):
        load_examples(build_rlhf_config("gsm8k-grpo"), tokenizer)


def test_the_gsm8k_preset_offline_fails_within_seconds_in_one_line_naming_arithmetic_grpo(tmp_path):
    """The preset's device=auto: on any machine, offline, the first error is the hub's, naming the offline preset."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}  # no cache
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "symrl.cli", "rlhf", "--preset", "gsm8k-grpo",
                           f"out={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    err = done.stderr.strip()
    assert done.returncode != 0 and err.count("\n") == 0, err
    assert err.startswith("symrl: error: policy.") and "--preset arithmetic-grpo" in err, err
    assert "symrl lm prepare --task arithmetic" in err and elapsed < 30, (elapsed, err)


def test_the_gsm8k_presets_resolve_to_critic_free_grpo_and_its_symmetric_twin():
    grpo, sppo = build_rlhf_config("gsm8k-grpo"), build_rlhf_config("gsm8k-grpo-sppo")
    assert (grpo.task, grpo.advantage, grpo.group_size, grpo.kl_in, grpo.policy.value_head) == (
        "gsm8k", "grpo", 8, "off", "none")
    assert (grpo.reward.kind, grpo.reward.function, grpo.target_coef) == ("callable", "symrl.llm.gsm8k:reward", 0)
    assert (grpo.loss.algo, sppo.loss.algo, sppo.loss.alpha, sppo.loss.beta) == ("ppo", "sppo", 0.5, 0.4)
    differing = {key for key in grpo.to_dict()["loss"] if grpo.to_dict()["loss"][key] != sppo.to_dict()["loss"][key]}
    assert differing == {"algo", "alpha", "beta"} and grpo.to_dict() | {"loss": None} == sppo.to_dict() | {"loss": None}
