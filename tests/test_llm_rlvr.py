"""GRPO on the prepared arithmetic model: held-out accuracy rises within the demo's budget.

The model is the one ``symrl lm prepare --task arithmetic`` builds by default (3 minutes on one CPU
thread), built here into a temporary folder; the run is the ``arithmetic-grpo`` preset as ``make
demo-rlvr`` runs it (45 iterations, about a minute), on clean rewards, evaluated every 15 iterations
on 2000 draws from the ~210 held-out problems, one sample each at temperature 1. Marked ``slow``: `make
test-slow` runs it, CI runs it after `make test`."""

from __future__ import annotations

import pytest

from symrl.llm.config import build_rlhf_config
from symrl.llm.prepare import prepare_arithmetic
from symrl.llm.trainer import train_rlhf
from symrl.run import read_jsonl, run_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, hub_offline):
    out = tmp_path_factory.mktemp("arithmetic")
    info = prepare_arithmetic(out, size="small", seed=0, device="cpu", log=lambda *a: None)
    return out, info


def test_prepared_model_starts_with_partial_accuracy(prepared):
    _, info = prepared
    assert 0.2 <= info["arithmetic"]["accuracy"] <= 0.8, info["arithmetic"]


def test_grpo_raises_held_out_accuracy_within_the_demo_budget(prepared, tmp_path):
    out, _ = prepared
    cfg = build_rlhf_config("arithmetic-grpo", {"policy.model": str(out / "policy"), "eval_prompts": 2000,
                                                 "out": str(tmp_path / "runs")})
    summary = train_rlhf(cfg, progress=False)
    accuracy = [e["mean_return"] for e in read_jsonl(run_dir(cfg) / "eval.jsonl")]
    assert summary["finished"] and len(accuracy) == 4
    # 2000 samples: a standard error of ~0.01 per evaluation; the last two average out the run's wobble
    # (the sweep's clean GRPO runs rose by 0.04 to 0.07 over 45 iterations)
    assert (accuracy[2] + accuracy[3]) / 2 >= accuracy[0] + 0.02, accuracy
