"""The command line: clear one-line errors for bad input, explain, eval, presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from symrl.cli import main


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("symrl: error: "), err
    return err


@pytest.mark.parametrize("argv,expected", [
    (["train", "bta=1.0"], "unknown key 'bta'; did you mean 'beta'?"),
    (["train", "net.hiden=[32]"], "did you mean 'net.hidden'?"),
    (["train", "env=CartPol-v1"], "env: 'CartPol-v1' is not a registered Gymnasium id; did you mean CartPole-v1"),
    (["train", "algo=sppo", "Z=0"], "Z: got 0, allowed: a negative number"),
    (["train", "algo=sppo", "Z=1.5"], "Z: got 1.5, allowed: a negative number"),
    (["train", "algo=sppo", "beta=-1"], "beta: got -1, allowed: a number >= 0"),
    (["train", "discretize=1", "env=Pendulum-v1"], "discretize: got 1, allowed: 0 (off) or an integer >= 2"),
    (["train", "--preset", "no-such-preset"], "preset: 'no-such-preset' does not exist"),
    (["train", "total_steps=abc"], "total_steps: got 'abc', allowed: an integer"),
    (["train", "alpha=[1"], "alpha: malformed value"),
    (["train", "algo=dqn"], "algo: got 'dqn', allowed: a2c, sa2c, ppo, sppo, scaled_ppo"),
    (["train", "noise=label_flip"], "noise: got 'label_flip', allowed: none, reward_flip, gaussian, uniform, adv_flip"),
    (["train", "noise=reward_flip", "noise_scale=1.5"], "noise_scale: got 1.5 for noise=reward_flip, allowed: a probability 0..1"),
    (["train", "algo=ppo", "beta=1"], "beta: got 1 with algo=ppo, the plain baseline; allowed: 0 (use algo=sppo"),
    (["train", "norm_obs=maybe"], "norm_obs: got 'maybe', allowed: true or false"),
    (["train", "seed"], "'seed': expected key=value"),
    (["explain", "algo=sppo", "Z=0"], "Z: got 0"),
])
def test_bad_input_gives_one_clear_line(capsys, argv, expected):
    assert expected in _error(capsys, argv)


def test_gaussian_sppo_error_names_beta_and_discretize(capsys, tmp_path):
    err = _error(capsys, ["train", "algo=sppo", "env=Pendulum-v1", f"out={tmp_path}"])
    assert "beta" in err and "discretize=K" in err


def test_bad_input_prints_no_traceback_from_the_installed_command():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "symrl.cli", "train", "env=NotAnEnv-v0"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "env: 'NotAnEnv-v0'" in proc.stderr


def test_explain_reports_the_effective_multiplier(capsys):
    assert main(["explain", "algo=sppo", "alpha=0.5", "beta=20"]) == 0
    out = capsys.readouterr().out
    assert "= 20.5" in out and "scaled_ppo" in out
    assert main(["explain", "algo=sa2c", "alpha=0.5", "beta=1", "Z=-2"]) == 0
    assert "π(a|s)" in capsys.readouterr().out
    assert main(["explain", "algo=sppo", "alpha=0.5", "beta=1", "reverse_kind=mae"]) == 0
    assert "= 2.5" in capsys.readouterr().out
    assert main(["explain", "--preset", "arithmetic-grpo-sa2c"]) == 0  # a language-model preset
    assert "0.5 + 0.4·π(a|s)  (between 0.5 and 0.9)" in capsys.readouterr().out


def test_presets_are_listed_with_sources(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "classic-ppo" in out and "source:" in out


def test_train_then_eval_the_latest_checkpoint(capsys, tmp_path, monkeypatch):
    args = ["train", "env=CartPole-v1", "n_envs=2", "n_steps=32", "total_steps=128", "eval_episodes=2",
            f"out={tmp_path}"]
    assert main(args) == 0
    capsys.readouterr()
    run = tmp_path / "default/CartPole-v1/ppo/seed0"
    from symrl.algos import onpolicy

    for builder in ("make_vec_env", "make_optimizer"):  # evaluation builds no training envs, no optimizer
        monkeypatch.setattr(onpolicy, builder, lambda *args: pytest.fail(f"symrl eval called {builder}"))
    assert main(["eval", str(run), "--episodes", "3", "--stochastic"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["episodes"] == 3 and row["deterministic"] is False and row["checkpoint_step"] == 128
    err = _error(capsys, ["eval", str(tmp_path)])
    assert "run_dir" in err
