"""`symrl sweep`: spec expansion and validation, overrides, crash isolation, Ctrl-C, skip/resume/retry,
dry-run states."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from symrl.algos.onpolicy import train
from symrl.cli import main
from symrl.config import build_config, preset_names
from symrl.report import build_report
from symrl.run import CHECKPOINT_STEP, run_dir, run_state
from symrl.sweep import COMMANDS, expand, load_spec, load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = {"n_envs": 2, "n_steps": 32, "total_steps": 128, "eval_episodes": 1}
CRASHY = "tests.crashing_env:Crashy-v0"
# 2 envs × 2 algos, one of which is swapped for a run on an env that raises mid-rollout
CRASHING_SPEC = {
    "description": "one run crashes",
    "base": {**TINY, "experiment": "t", "out": "runs"},
    "grid": {"env": ["CartPole-v1", "Acrobot-v1"], "algo": ["ppo", "a2c"], "seed": [0]},
    "exclude": [{"env": "Acrobot-v1", "algo": "a2c", "seed": 0}],
    "include": [{"env": CRASHY, "algo": "a2c", "seed": 0}],
}


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _sweep(spec: Path, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_sweep(spec, **kwargs)
    return code, out.getvalue()


def _runs(root: Path) -> tuple[list[Path], Path]:
    """The run dirs of CRASHING_SPEC under ``root``: the three good ones, and the crashing one."""
    dirs = sorted(p.parent for p in (root / "runs" / "t").glob("*/*/seed*/config.yaml"))
    crashed = root / "runs" / "t" / "tests.crashing_env-Crashy-v0" / "a2c" / "seed0"
    return [d for d in dirs if d != crashed], crashed


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> tuple[Path, int, str]:
    """The crashing sweep, run once from its own folder (out: runs is relative)."""
    root = tmp_path_factory.mktemp("sweep")
    spec = _write(root / "spec.yaml", CRASHING_SPEC)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code, out = _sweep(spec, workers=2)
    finally:
        os.chdir(cwd)
    return root, code, out


def test_a_crash_is_recorded_and_the_other_runs_finish(crashed):
    root, code, out = crashed
    good, bad = _runs(root)
    assert code == 1
    assert len(good) == 3 and all(json.loads((d / "summary.json").read_text())["finished"] for d in good)
    assert not any((d / "failed.json").exists() for d in good)
    failure = json.loads((bad / "failed.json").read_text())
    assert failure["error"] == "RuntimeError: Crashy-v0 crashed on purpose after 5 steps"
    log = root / failure["log"]
    assert log == bad / "train.log"
    assert "Traceback" in log.read_text() and "RuntimeError: Crashy-v0 crashed" in log.read_text()
    assert "3 ran, 0 resumed, 0 skipped (finished), 1 failed" in out
    assert f"FAILED {bad.relative_to(root)}" in out and f"log: {log.relative_to(root)}" in out
    assert out.count("] runs/t/") == 4  # one progress line per run


def test_dry_run_lists_finished_and_failed_runs(crashed, monkeypatch):
    root, _, _ = crashed
    monkeypatch.chdir(root)
    code, out = _sweep(root / "spec.yaml", dry_run=True)
    assert code == 0
    assert out.count("  finished ") == 3 and out.count("  failed ") == 1
    assert "RuntimeError: Crashy-v0 crashed on purpose" in out
    assert "0 new, 0 partial, 3 finished, 1 failed; nothing run" in out


def test_report_lists_the_failed_run(crashed, tmp_path):
    root, _, _ = crashed
    _, bad = _runs(root)
    text = Path(build_report(root / "runs" / "t", tmp_path / "report")).read_text()
    assert "RuntimeError: Crashy-v0 crashed on purpose after 5 steps" in text
    assert str((bad / "train.log").relative_to(root)) in text


def test_a_killed_worker_is_that_runs_failure_and_the_next_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("CRASHY_KILL", "1")  # the worker process dies as under the out-of-memory killer
    spec = _write(tmp_path / "spec.yaml", {"base": {**TINY, "out": str(tmp_path)},
                                           "grid": {"env": [CRASHY, "CartPole-v1"]}})
    code, out = _sweep(spec, workers=1)
    crashed = json.loads((tmp_path / "default" / "tests.crashing_env-Crashy-v0" / "ppo" / "seed0" / "failed.json")
                         .read_text())
    assert code == 1 and "killed by SIGKILL" in crashed["error"]
    assert (tmp_path / "default" / "CartPole-v1" / "ppo" / "seed0" / "summary.json").exists()


def test_rerun_skips_finished_runs_and_retries_the_failed_one(crashed, tmp_path, monkeypatch):
    root = tmp_path / "again"
    shutil.copytree(crashed[0], root)  # keeps mtimes; the first sweep's folder stays as it was
    monkeypatch.chdir(root)
    good, bad = _runs(root)
    mtimes = {d: (d / "metrics.jsonl").stat().st_mtime_ns for d in good}

    code, out = _sweep(root / "spec.yaml", workers=2)
    assert code == 1
    assert "4 runs, 1 to run (0 from a checkpoint), 3 finished" in out
    assert "0 ran, 0 resumed, 3 skipped (finished), 1 failed" in out
    assert {d: (d / "metrics.jsonl").stat().st_mtime_ns for d in good} == mtimes
    assert (bad / "train.log").read_text().count("Traceback") == 2  # the log keeps both attempts

    monkeypatch.setenv("CRASHY_FIXED", "1")  # the bug is fixed: the rerun succeeds
    code, out = _sweep(root / "spec.yaml", workers=2)
    assert code == 0 and "1 ran, 0 resumed, 3 skipped (finished), 0 failed" in out
    assert not (bad / "failed.json").exists() and (bad / "summary.json").exists()


def test_dry_run_states_new_partial_finished_failed(tmp_path, monkeypatch, train_until_killed):
    base = {"env": "CartPole-v1", **TINY, "total_steps": 256, "checkpoint_every": 64, "out": str(tmp_path)}
    spec = _write(tmp_path / "spec.yaml", {"base": base, "grid": {"seed": [0, 1, 2, 3]}})
    train(build_config(None, {**base, "seed": 1}))
    train_until_killed(build_config(None, {**base, "seed": 2}), 2)
    failed = run_dir(build_config(None, {**base, "seed": 3}))
    failed.mkdir(parents=True)
    (failed / "failed.json").write_text(json.dumps({"error": "RuntimeError: boom", "log": "x/train.log"}))
    partial = run_dir(build_config(None, {**base, "seed": 2}))
    assert json.loads((partial / CHECKPOINT_STEP).read_text()) == {"step": 128}

    def no_checkpoint_loading(*args, **kwargs):
        raise AssertionError("the state of a run is read from small JSON files, not from its checkpoint")

    monkeypatch.setattr(torch, "load", no_checkpoint_loading)
    code, out = _sweep(spec, dry_run=True)
    lines = out.splitlines()[1:5]
    assert code == 0
    assert lines[0].split() == ["new", f"{tmp_path}/default/CartPole-v1/ppo/seed0"]
    assert lines[1].startswith("  finished ") and "final eval" in lines[1]
    assert lines[2].endswith("seed2  checkpoint at step 128") and lines[2].startswith("  partial ")
    assert lines[3].endswith("seed3  RuntimeError: boom (log: x/train.log)") and lines[3].startswith("  failed ")
    assert not run_dir(build_config(None, {**base, "seed": 0})).exists()  # nothing ran


def test_overrides_apply_to_every_run_after_the_specs_own_values(capsys, tmp_path):
    spec = _write(tmp_path / "spec.yaml", {"base": {**TINY, "out": str(tmp_path), "experiment": "x-{n_envs}"},
                                           "grid": {"seed": [0, 1], "n_envs": [2, 4]},
                                           "include": [{"seed": 2, "total_steps": 64}]})
    # key=value before and after an option, as `symrl train` takes them
    assert main(["sweep", str(spec), "n_envs=8", "--dry-run", "total_steps=512"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines()[1:-1]] == [
        f"{tmp_path}/x-8/CartPole-v1/ppo/seed{seed}" for seed in (0, 1, 2)]  # the grid's n_envs collapse into 8
    runs = load_sweep(spec, {"n_envs": 8, "total_steps": 512})
    assert {(run.cfg.n_envs, run.cfg.total_steps) for run in runs} == {(8, 512)}


def test_expansion_grids_templates_include_exclude_and_duplicates(tmp_path):
    spec = _write(tmp_path / "spec.yaml", {
        "preset": "classic-ppo",
        "base": {"out": "r", "experiment": "x-{noise}-{preset}"},
        "grid": {"env": ["CartPole-v1", "Acrobot-v1"], "seed": [0, 1]},
        "grids": [{"noise": "none"}, {"noise": "gaussian", "noise_scale": 3.0, "preset": ["classic-sppo"]}],
        "exclude": [{"env": "Acrobot-v1", "noise": "gaussian"}],
        "include": [{"env": "CartPole-v1", "seed": 0, "noise": "none"}, {"env": "Acrobot-v1", "seed": 7}],
    })
    runs = load_sweep(spec)
    paths = [str(run.path) for run in runs]
    assert len(paths) == 4 + 2 + 1  # the first include duplicates a grid run and runs once
    assert "r/x-none-classic-ppo/Acrobot-v1/ppo/seed1" in paths
    assert "r/x-gaussian-classic-sppo/CartPole-v1/sppo/seed1" in paths
    assert "r/x-none-classic-ppo/Acrobot-v1/ppo/seed7" in paths
    noisy = next(run for run in runs if run.cfg.noise == "gaussian")
    assert noisy.cfg.noise_scale == 3.0 and noisy.cfg.n_envs == 8  # preset ← base ← the run's values


def _error(capsys, spec_path: Path, *flags: str) -> str:
    assert main(["sweep", str(spec_path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("symrl: error: "), err
    return err


@pytest.mark.parametrize("spec,expected", [
    ({"gird": {"seed": [0]}}, "unknown key 'gird'; did you mean 'grid'?"),
    ({"grid": {"sed": [0, 1]}}, "run sed=0: unknown key 'sed'; did you mean 'seed'?"),
    ({"grid": {"algo": ["ppo", "dqn"]}}, "run algo=dqn: algo: got 'dqn', allowed: a2c, sa2c, ppo"),
    ({"grid": {"seed": []}}, "grid axis 'seed': got [], allowed: a value or a non-empty list"),
    ({"grid": {"noise": ["none", "gaussian"]}},
     "runs (noise=none) and (noise=gaussian) would share the run dir runs/default/CartPole-v1/ppo/seed0 but "
     "differ in noise, noise_scale; give each its own experiment, e.g. experiment: \"default-{noise}\""),
    ({"base": {"experiment": "x-{nosie}"}, "grid": {"seed": [0]}}, "the template 'x-{nosie}' names 'nosie'"),
    ({"grid": {"seed": [0, 1]}, "exclude": [{"seed": 2}]}, "exclude[0] (seed=2) matches no run of the grid"),
    ({"grid": {"seed": [0]}, "include": ["seed=1"]}, "include[0]: got 'seed=1', allowed: a mapping"),
    ({"description": "nothing"}, "the spec has no runs; give grid, grids or include"),
])
def test_bad_spec_gives_one_clear_line(capsys, tmp_path, spec, expected):
    assert expected in _error(capsys, _write(tmp_path / "spec.yaml", spec))


def test_run_dir_holding_another_config_is_refused_before_anything_runs(capsys, tmp_path):
    old = build_config(None, {**TINY, "out": str(tmp_path)})
    run_dir(old).mkdir(parents=True)
    (run_dir(old) / "config.yaml").write_text(yaml.safe_dump(old.to_dict()))
    spec = _write(tmp_path / "spec.yaml", {"base": {**TINY, "out": str(tmp_path), "total_steps": 256},
                                           "grid": {"seed": [0, 1]}})
    err = _error(capsys, spec)
    assert "seed0 (differs in: total_steps) holds a run with a different configuration" in err
    assert not run_dir(build_config(None, {**TINY, "out": str(tmp_path), "seed": 1})).exists()


def test_backend_ray_without_ray_says_what_to_install(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, installed or not
    spec = _write(tmp_path / "spec.yaml", {"base": {**TINY, "out": str(tmp_path)}, "grid": {"seed": [0]}})
    assert _error(capsys, spec, "--backend", "ray") == "symrl: error: --backend ray needs Ray: pip install 'symrl[ray]'"
    assert not (tmp_path / "default").exists()


def test_backend_ray_runs_the_sweep(tmp_path):
    pytest.importorskip("ray")
    spec = _write(tmp_path / "spec.yaml", {"base": {**TINY, "env": "CartPole-v1", "out": str(tmp_path)},
                                           "grid": {"seed": [0, 1]}})
    code, out = _sweep(spec, backend="ray")
    assert code == 0 and "2 ran" in out
    assert all((tmp_path / "default" / "CartPole-v1" / "ppo" / f"seed{s}" / "summary.json").exists() for s in (0, 1))


SHIPPED = sorted(p for p in (ROOT / "sweeps").glob("*.yaml") if load_spec(p).get("command", "train") == "train")
# the released budgets: PPO/SPPO longer on two envs (Symmetric_RL hyperparams/ppo.yml:42-54,
# sppo.yml:39-45), A2C/SA2C 2M everywhere (a2c.yml, ra2c.yml)
MUJOCO_STEPS = {("ppo", "Walker2d-v4"): 5_000_000, ("ppo", "HumanoidStandup-v4"): 10_000_000}
RELEASED_SEEDS = {"atari": list(range(10000, 10005)), "mujoco": list(range(10000, 10030))}
# runs in all; total_steps by (algorithm family, env) where it is not the default; the default; the seeds
SHIPPED_FACTS = {
    "lite": (36, {}, 81_920, [0, 1, 2]),
    "atari": (360, {}, 5_000_000, RELEASED_SEEDS["atari"]),
    "atari-noise": (360, {}, 5_000_000, RELEASED_SEEDS["atari"]),
    "mujoco": (1260, MUJOCO_STEPS, 2_000_000, RELEASED_SEEDS["mujoco"]),
    "mujoco-noise": (1260, MUJOCO_STEPS, 2_000_000, RELEASED_SEEDS["mujoco"]),
    "box2d": (720, {}, 2_000_000, RELEASED_SEEDS["mujoco"]),
    "demo": (9, {}, 81_920, [0, 1, 2]),
}


def test_rlhf_demo_spec_expands_to_three_methods_by_three_seeds(monkeypatch):
    data = ROOT.parent / "shared" / "data" / "imdb_reviews_offline.jsonl.gz"
    if not data.exists():
        pytest.skip(f"the offline review corpus is not at {data}")
    monkeypatch.chdir(ROOT)  # the presets name the corpus relative to the repository, as `make demo-rlhf` runs
    runs = load_sweep(ROOT / "sweeps" / "rlhf-demo.yaml")
    assert sorted((run.cfg.loss.algo, run.cfg.seed) for run in runs) == [
        (algo, seed) for algo in ("ppo", "scaled_ppo", "sppo") for seed in (0, 1, 2)]
    assert {run.cfg.task for run in runs} == {"imdb"} and {run.cfg.experiment for run in runs} == {"imdb-offline"}


@pytest.mark.parametrize("name, count", [("rlvr-noise", 90), ("rlvr-demo", 20)])
def test_rlvr_specs_expand_to_every_loss_with_its_control_and_twin(name, count):
    """GRPO's five losses (the ratio form with its control, the logprob form with its plain twin),
    each experiment one advantage at one flip probability, on the offline arithmetic task."""
    runs = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
    assert len(runs) == count and {run.cfg.task for run in runs} == {"arithmetic"}
    assert {run.cfg.loss.algo for run in runs} == {"ppo", "sppo", "scaled_ppo", "a2c", "sa2c"}
    assert {run.cfg.noise for run in runs} == {"reward_flip"}
    by_experiment: dict[str, set] = {}
    for run in runs:
        by_experiment.setdefault(run.cfg.experiment, set()).add((run.cfg.advantage, run.cfg.noise_scale))
    assert all(len(settings) == 1 for settings in by_experiment.values()), by_experiment
    assert all(run.cfg.loss.n_epochs == 1 and run.cfg.minibatch_size == run.cfg.rollouts
               for run in runs if run.cfg.loss.algo in ("a2c", "sa2c")), "the logprob form: one on-policy step"


def _presets_of(spec: dict) -> set[str]:
    entries = [spec.get("grid") or {}, *(spec.get("grids") or []), *(spec.get("include") or [])]
    named = [spec.get("preset")]
    for entry in entries:
        value = entry.get("preset")
        named += value if isinstance(value, list) else [value]
    return {p for p in named if p}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_specs_expand(path):
    """Expanded with their first seed only: a seed changes nothing but seed<k> in the run dir, and
    all the seeds of the MuJoCo specs take half a minute to validate."""
    spec = load_spec(path)
    missing = _presets_of(spec) - set(preset_names())
    if missing:
        pytest.skip(f"presets not written yet: {', '.join(sorted(missing))}")
    seeds = spec["grid"]["seed"]
    runs = expand({**spec, "grid": {**spec["grid"], "seed": seeds[:1]}}, str(path))
    count, steps, default_steps, released_seeds = SHIPPED_FACTS[path.stem]
    assert seeds == released_seeds
    assert len(runs) * len(seeds) == count
    assert all(run.cfg.out == "runs" for run in runs)
    # each run's process rebuilds its config from the resolved settings it is handed
    assert all(COMMANDS["train"](None, run.cfg.to_dict()) == run.cfg for run in runs)
    assert {(run.preset, run.cfg.env): run.cfg.total_steps for run in runs} == {
        (run.preset, run.cfg.env): steps.get((run.cfg.loss.family, run.cfg.env), default_steps) for run in runs}


@pytest.mark.parametrize("name", ["mujoco", "mujoco-noise"])
def test_mujoco_specs_run_every_preset_on_every_env_with_swimmers_a2c_gamma(name):
    """Swimmer-v4 gamma 0.9999 for A2C/SA2C only (Symmetric_RL hyperparams/a2c.yml:41-43,
    ra2c.yml:61-63; ppo.yml and sppo.yml set none)."""
    spec = load_spec(ROOT / "sweeps" / f"{name}.yaml")
    runs = expand({**spec, "grid": {**spec["grid"], "seed": [10000]}}, name)
    envs = {"Ant-v4", "HalfCheetah-v4", "Hopper-v4", "Swimmer-v4", "InvertedDoublePendulum-v4", "Walker2d-v4",
            "HumanoidStandup-v4"}
    presets = {"mujoco-ppo", "mujoco-dppo", "mujoco-dsppo", "mujoco-scaled_ppo", "mujoco-a2c", "mujoco-sa2c"}
    assert sorted((run.preset, run.cfg.env) for run in runs) == sorted(itertools.product(presets, envs))
    gammas = {(run.preset, run.cfg.env): run.cfg.loss.gamma for run in runs}
    assert {key for key, gamma in gammas.items() if gamma != 0.99} == {("mujoco-a2c", "Swimmer-v4"),
                                                                         ("mujoco-sa2c", "Swimmer-v4")}
    assert gammas["mujoco-a2c", "Swimmer-v4"] == gammas["mujoco-sa2c", "Swimmer-v4"] == 0.9999


def test_demo_spec_is_ppo_sppo_and_scaled_ppo_on_cartpole_under_gaussian_reward_noise():
    runs = load_sweep(ROOT / "sweeps" / "demo.yaml")
    assert sorted((run.preset, run.cfg.seed) for run in runs) == [
        (f"classic-{method}", seed) for method in ("ppo", "scaled_ppo", "sppo") for seed in (0, 1, 2)]
    assert {(run.cfg.env, run.cfg.noise, run.cfg.noise_scale, run.cfg.total_steps, run.cfg.eval_every,
             run.cfg.eval_episodes, str(run.path.parents[2])) for run in runs} == {
        ("CartPole-v1", "gaussian", 3.0, 81_920, 8192, 10, "runs/demo")}


def test_ctrl_c_stops_every_run_and_each_keeps_its_checkpoint(tmp_path):
    """Ctrl-C in a terminal signals the sweep and its runs' processes (one process group)."""
    base = {"env": "CartPole-v1", **TINY, "total_steps": 10**7, "checkpoint_every": 64, "eval_every": 0,
            "out": str(tmp_path)}
    spec = _write(tmp_path / "spec.yaml", {"base": base, "grid": {"seed": [0, 1]}})
    dirs = [run.path for run in load_sweep(spec)]
    sweep = subprocess.Popen([sys.executable, "-m", "symrl.cli", "sweep", str(spec), "--workers", "2"], cwd=ROOT,
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not all((d / CHECKPOINT_STEP).exists() for d in dirs):
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.2)
        runs = psutil.Process(sweep.pid).children()
        assert len(runs) == 2
        os.killpg(sweep.pid, signal.SIGINT)
        _, err = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 130 and "interrupted; run the same command again to resume" in err
    assert not [p for p in runs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert [run_state(d).status for d in dirs] == ["partial", "partial"]
