"""`symrl report` on a runs tree with every kind of data problem, and on two real tiny trainings."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from symrl.config import ConfigError
from symrl.report import build_report

LOSS_WEIGHTS = {"ppo": (1.0, 0.0), "sppo": (0.5, 1.0), "scaled_ppo": (0.5, 1.0)}


def write_run(out: Path, experiment: str, env: str, algo: str, seed: int, evals: dict[int, float], *,
              finished: bool = True, failed: str | None = None, noise: str = "none", noise_scale: float = 0.0) -> Path:
    """A run directory as `symrl train` leaves it: config, eval and metrics logs, summary when finished."""
    path = out / experiment / env.replace("/", "-") / algo / f"seed{seed}"
    path.mkdir(parents=True)
    alpha, beta = LOSS_WEIGHTS[algo]
    last = max(evals)
    config = {"algo": algo, "env": env, "seed": seed, "total_steps": last if finished else 1000, "alpha": alpha,
              "beta": beta, "Z": -1.0, "reverse": "rce", "noise": noise, "noise_scale": noise_scale,
              "net": {"hidden": [64, 64], "activation": "tanh"}, "eval_deterministic": True, "out": str(out),
              "experiment": experiment, "device": "cpu"}
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (path / "eval.jsonl").write_text("".join(json.dumps(
        {"step": step, "mean_return": ret, "std_return": 0.0, "min_return": ret, "max_return": ret, "episodes": 10,
         "deterministic": True}) + "\n" for step, ret in evals.items()))
    # sign_change 0.1 in the first half of training, 0.3 in the second
    (path / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": step, "sps": 1000.0, "policy_loss": 0.0, "reverse_loss": 0.0, "value_loss": 1.0, "entropy": 0.6,
         "approx_kl": 0.01, "clip_fraction": 0.1, "sign_change": 0.1 if step <= last / 2 else 0.3,
         "explained_variance": 0.5, "lr": 3e-4, "clip_range": 0.2, "train_return_mean": None, "train_episodes": 0})
        + "\n" for step in range(250, last + 1, 250)))
    if finished:
        (path / "summary.json").write_text(json.dumps(
            {"finished": True, "final_eval_mean": evals[last], "best_eval_mean": max(evals.values()),
             "total_steps": last, "wall_time_s": 1.0, "sps": 1000.0}))
    if failed:
        (path / "train.log").write_text(failed)
        (path / "failed.json").write_text(json.dumps({"error": failed, "log": str(path / "train.log")}))
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    cartpole = {("ppo", 0): {500: 100, 1000: 200}, ("ppo", 1): {500: 150, 1000: 300}, ("ppo", 2): {500: 450, 1000: 400},
                ("sppo", 0): {500: 300, 1000: 350}, ("sppo", 1): {500: 200, 1000: 450},
                ("scaled_ppo", 1): {500: 100, 1000: 250},
                ("scaled_ppo", 2): {500: 150, 750: 350}}  # finished early: an unequal length
    for (algo, seed), evals in cartpole.items():
        write_run(root, "main", "CartPole-v1", algo, seed, evals)
    write_run(root, "main", "CartPole-v1", "sppo", 2, {500: 100}, finished=False)
    write_run(root, "main", "CartPole-v1", "scaled_ppo", 0, {500: 50}, finished=False,
              failed="RuntimeError: CUDA error\n  in update")
    acrobot = {"ppo": (-200, -100, -150), "sppo": (-100, -80, -90), "scaled_ppo": (-120, -110, -130)}
    for algo, finals in acrobot.items():
        for seed, final in enumerate(finals):
            write_run(root, "main", "Acrobot-v1", algo, seed, {500: final - 50, 1000: final})
    crashed = root / "main" / "Hopper-v5" / "ppo" / "seed0"  # crashed before writing its config
    crashed.mkdir(parents=True)
    (crashed / "failed.json").write_text(json.dumps({"error": "ValueError: bad", "log": str(crashed / "train.log")}))
    for algo, finals in {"ppo": (-20.7, 14.6), "sppo": (-3.05, -3.05)}.items():
        for seed, final in enumerate(finals):
            write_run(root, "atari", "ALE/Pong-v5", algo, seed, {1000: final})
    # a noise sweep whose cells share an experiment name under different out folders
    for noise, scale, finals in (("none", 0.0, {"ppo": 300, "sppo": 400}),
                                 ("reward_flip", 0.1, {"ppo": 100, "sppo": 200})):
        for algo, final in finals.items():
            write_run(root / f"cell-{noise}", "noisy", "CartPole-v1", algo, 0, {1000: final}, noise=noise,
                      noise_scale=scale)
    return root


@pytest.fixture(scope="module")
def report(tree) -> Path:
    return build_report(tree, tree / "out")


def _csv(report: Path, name: str) -> list[dict]:
    with open(report.parent / f"{name}.csv") as f:
        return list(csv.DictReader(f))


def _row(rows: list[dict], **match) -> dict:
    (row,) = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return row


def test_per_env_table_holds_hand_computed_numbers(report):
    rows = _csv(report, "per_env")
    ppo = _row(rows, experiment="main", env="CartPole-v1", method="ppo")
    assert int(ppo["seeds"]) == 3
    assert float(ppo["final_mean"]) == pytest.approx(300.0)  # (200 + 300 + 400) / 3
    assert float(ppo["final_std"]) == pytest.approx(100.0)  # sample std
    assert float(ppo["iqm"]) == pytest.approx(300.0)  # 3 seeds: nothing trimmed
    assert 200 <= float(ppo["iqm_lo"]) < 300 < float(ppo["iqm_hi"]) <= 400
    assert float(ppo["best_mean"]) == pytest.approx((200 + 300 + 450) / 3)
    sppo = _row(rows, experiment="main", env="CartPole-v1", method="sppo")
    assert (int(sppo["seeds"]), float(sppo["final_mean"])) == (2, pytest.approx(400.0))
    assert float(sppo["final_std"]) == pytest.approx(2 ** 0.5 * 50)
    scaled = _row(rows, experiment="main", env="CartPole-v1", method="scaled_ppo")
    assert (int(scaled["seeds"]), float(scaled["final_mean"]), scaled["final_step"]) == (2, 300.0, "750–1000")
    text = report.read_text()
    assert "| ppo | 3 | 300.0 ± 100.0 | 300.0 [" in text and "| 316.7 | 1000 |" in text


def test_every_data_problem_is_listed(report, tree):
    text = report.read_text()
    problems = text.split("## Data problems")[1].split("## Experiment")[0]
    assert "Runs read: 27 (24 finished, 1 not finished, 2 failed)" in text
    assert ("`main/CartPole-v1/scaled_ppo/seed0`: RuntimeError: CUDA error in update "
            f"(log: `{tree}/main/CartPole-v1/scaled_ppo/seed0/train.log`)") in problems
    assert "`main/Hopper-v5/ppo/seed0`: ValueError: bad" in problems
    assert "`main/CartPole-v1/sppo/seed2`: last evaluation at step 500 of 1000 steps" in problems
    assert "main / CartPole-v1: `sppo` has 2 finished seed(s) (0, 1); missing (2)" in problems
    assert "main / CartPole-v1: `scaled_ppo` has 2 finished seed(s) (1, 2); missing (0)" in problems
    assert ("main / CartPole-v1: last evaluation at different steps: 750 (scaled_ppo seeds (2)); "
            "1000 (ppo seeds (0, 1, 2), sppo seeds (0, 1), scaled_ppo seeds (1))") in problems
    assert "min-max normalized" in text
    statuses = {r["path"]: r["status"] for r in _csv(report, "runs")}
    assert len(statuses) == 27 and statuses["main/Hopper-v5/ppo/seed0"] == "failed"


def test_aggregates_normalize_per_env_and_human_normalize_atari(report):
    rows = _csv(report, "aggregates")
    ppo = _row(rows, experiment="main", method="ppo")
    # min-max per env: CartPole 200..450 -> (0, .4, .8); Acrobot -200..-80 -> (0, 100/120, 50/120)
    assert ppo["normalization"] == "min-max normalized per env" and int(ppo["envs"]) == 2
    assert float(ppo["mean"]) == pytest.approx((0.4 + (100 / 120 + 50 / 120) / 3) / 2)
    assert float(ppo["iqm"]) == pytest.approx((0 + 0.4 + 50 / 120 + 0.8) / 4)
    assert float(ppo["optimality_gap"]) == pytest.approx(1 - float(ppo["mean"]))
    sppo = _row(rows, experiment="main", method="sppo")  # 2 seeds on CartPole, 3 on Acrobot
    assert float(sppo["mean"]) == pytest.approx(((0.6 + 1) / 2 + (100 / 120 + 1 + 110 / 120) / 3) / 2)
    assert float(sppo["iqm"]) == pytest.approx((100 / 120 + 110 / 120 + 1) / 3)
    for name in ("iqm", "mean", "median", "optimality_gap"):
        assert float(sppo[f"{name}_lo"]) <= float(sppo[name]) <= float(sppo[f"{name}_hi"])
    pong = _row(rows, experiment="atari", method="ppo")  # -20.7 is random play, 14.6 human
    assert pong["normalization"] == "Atari, human-normalized"
    assert float(pong["mean"]) == pytest.approx(0.5) and float(pong["optimality_gap"]) == pytest.approx(0.5)


def test_probability_of_improvement_pairs_methods_with_equal_settings(report):
    rows = _csv(report, "improvement")
    vs_ppo = _row(rows, experiment="main", x="sppo", y="ppo")
    # CartPole: 350 beats 200, 300; 450 beats all -> 5/6. Acrobot: -100 ties -100 -> 8.5/9
    assert float(vs_ppo["p"]) == pytest.approx((5 / 6 + 8.5 / 9) / 2)
    assert float(vs_ppo["p_lo"]) <= float(vs_ppo["p"]) <= float(vs_ppo["p_hi"]) <= 1
    assert float(_row(rows, experiment="main", x="sppo", y="scaled_ppo")["p"]) == pytest.approx((3.5 / 4 + 1) / 2)
    noisy = {(r["x"], r["y"]) for r in rows if r["experiment"] == "noisy"}
    assert noisy == {("sppo noise=none", "ppo noise=none"),
                     ("sppo noise=reward_flip:0.1", "ppo noise=reward_flip:0.1")}


def test_sign_change_is_averaged_over_training_and_each_half(report):
    row = _row(_csv(report, "sign_change"), experiment="main", env="CartPole-v1", method="ppo")
    assert (float(row["sign_change"]), float(row["sign_change_early"]), float(row["sign_change_late"])) == \
        pytest.approx((0.2, 0.1, 0.3))


def test_report_links_every_figure_and_names_its_command(report, tree):
    text = report.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == 8  # learning curves + sign changes for 4 (experiment, env) pairs
    assert all((report.parent / link).stat().st_size > 1000 for link in links)
    assert "figures/atari/ALE-Pong-v5/learning_curves.png" in links
    assert f"symrl report {tree} --out {tree / 'out'}" in text


def test_cli_report_exits_0_and_prints_the_short_table_and_the_report_path(tree, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "symrl.cli", "report", str(tree), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("Runs read: 27 (24 finished, 1 not finished, 2 failed).")
    cartpole = out.split("main / CartPole-v1\n")[1].split("\n\n")[0].splitlines()
    assert cartpole[0] == "| method | seeds | final eval mean ± std | IQM [95% CI] |"
    assert cartpole[2].startswith("| ppo | 3 | 300.0 ± 100.0 | 300.0 [")
    assert out.splitlines()[-1] == f"report: {tmp_path / 'report.md'}"
    assert (tmp_path / "report.md").exists()


def test_report_on_an_empty_folder_says_so_and_a_missing_one_is_an_error(tmp_path):
    text = build_report(tmp_path, tmp_path / "report").read_text()
    assert "Runs read: 0 (0 finished" in text
    with pytest.raises(ConfigError, match="runs_dir: '.*no-such' is not a folder"):
        build_report(tmp_path / "no-such", tmp_path / "report")


def test_a_run_finished_after_a_recorded_failure_counts_as_finished_as_symrl_sweep_reads_it(tmp_path):
    """A sweep run that failed, then was finished by hand with `symrl train`: its failed.json is stale."""
    write_run(tmp_path, "main", "CartPole-v1", "ppo", 0, {1000: 200}, failed="RuntimeError: an earlier attempt")
    text = build_report(tmp_path, tmp_path / "report").read_text()
    assert "Runs read: 1 (1 finished, 0 not finished, 0 failed)" in text and "earlier attempt" not in text


def test_report_over_real_tiny_trainings(tmp_path):
    from symrl.algos.onpolicy import train
    from symrl.config import build_config

    for algo in ("ppo", "sppo"):
        train(build_config(None, {"algo": algo, "env": "CartPole-v1", "n_envs": 2, "n_steps": 32, "total_steps": 128,
                                  "eval_episodes": 1, "out": str(tmp_path)}), progress=False)
    report = build_report(tmp_path, tmp_path / "report")
    assert "Runs read: 2 (2 finished, 0 not finished, 0 failed)" in report.read_text()
    per_env = _csv(report, "per_env")
    assert {(r["method"], r["seeds"], r["final_step"]) for r in per_env} == {("ppo", "1", "128"), ("sppo", "1", "128")}
    assert _row(_csv(report, "improvement"), x="sppo", y="ppo")["envs"] == "1"
    assert float(_row(_csv(report, "sign_change"), method="sppo")["sign_change"]) > 0
    assert (report.parent / "figures" / "default" / "CartPole-v1" / "learning_curves.png").exists()
