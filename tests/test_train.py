"""Integration tests: short real runs on Gymnasium environments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from symrl.algos.onpolicy import OnPolicyTrainer, train
from symrl.config import ConfigError, build_config
from symrl.optim import FlatRMSpropTF
from symrl.run import CHECKPOINT, read_jsonl, run_dir

SMALL = dict(env="CartPole-v1", n_envs=2, n_steps=64, total_steps=768, eval_every=256,
             eval_episodes=2, checkpoint_every=256)


def _cfg(tmp_path: Path, **overrides):
    return build_config(None, {**SMALL, "out": str(tmp_path), **overrides})


def _params(cfg) -> dict[str, torch.Tensor]:
    return torch.load(run_dir(cfg) / CHECKPOINT, weights_only=False)["model"]


def _assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "sps"} for r in rows]


@pytest.mark.parametrize("case", ["ppo", "sppo", "a2c", "sa2c", "a2c-rmsprop_tf", "sppo-adv_flip"])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, case, train_until_killed):
    algo = case.partition("-")[0]
    extra = {
        # schedules and early stopping resume mid-way
        "ppo": {"anneal_lr": True, "anneal_clip": True, "target_kl": 0.02},
        # normalizer statistics and the noise generator resume too
        "sppo": {"norm_obs": True, "norm_reward": True, "noise": "gaussian", "noise_scale": 0.5},
        "a2c": {"n_steps": 8, "total_steps": 160, "checkpoint_every": 48, "eval_every": 64},
        "sa2c": {"n_steps": 8, "total_steps": 160, "checkpoint_every": 48, "eval_every": 64, "noise": "adv_flip"},
        # the TF-style RMSprop's second moment resumes too
        "a2c-rmsprop_tf": {"n_steps": 8, "total_steps": 160, "checkpoint_every": 48, "eval_every": 64,
                           "optimizer": "rmsprop_tf"},
        # a flip mask per minibatch and epoch, drawn from the saved noise generator
        "sppo-adv_flip": {"noise": "adv_flip", "noise_scale": 0.2},
    }[case]
    whole = _cfg(tmp_path, algo=algo, experiment="whole", **extra)
    train(whole)
    parts = _cfg(tmp_path, algo=algo, experiment="parts", **extra)
    train_until_killed(parts, 3)  # "killed" after 3 updates; last checkpoint earlier
    train(parts)
    _assert_same_params(_params(whole), _params(parts))
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert _without_timing(read_jsonl(run_dir(whole) / name)) == _without_timing(read_jsonl(run_dir(parts) / name))


def test_sigkilled_cli_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["env=CartPole-v1", "n_envs=2", "n_steps=64", "total_steps=3840", "checkpoint_every=256",
            "eval_every=0", "eval_episodes=1", f"out={tmp_path}"]
    cmd = [sys.executable, "-m", "symrl.cli", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd + args + ["experiment=whole"], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(cmd + args + ["experiment=killed"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed/CartPole-v1/ppo/seed0" / CHECKPOINT
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (ckpt.parent.parent / "summary.json").exists(), "the run finished before it could be killed"
    subprocess.run(cmd + args + ["experiment=killed"], check=True, env=env, capture_output=True)
    whole = torch.load(tmp_path / "whole/CartPole-v1/ppo/seed0" / CHECKPOINT, weights_only=False)["model"]
    _assert_same_params(whole, torch.load(ckpt, weights_only=False)["model"])


@pytest.mark.parametrize("plain,symmetric", [("ppo", "sppo"), ("ppo", "scaled_ppo"), ("a2c", "sa2c")])
def test_beta_zero_reproduces_the_plain_baseline_exactly(tmp_path, plain, symmetric):
    base = _cfg(tmp_path, algo=plain, experiment="plain")
    sym = _cfg(tmp_path, algo=symmetric, alpha=1.0, beta=0.0, experiment="sym")
    train(base)
    train(sym)
    _assert_same_params(_params(base), _params(sym))


@pytest.mark.parametrize("noise", ["reward_flip", "gaussian", "uniform", "adv_flip"])
def test_noise_changes_only_the_training_data(tmp_path, noise):
    clean = OnPolicyTrainer(_cfg(tmp_path, noise="none"))
    noisy = OnPolicyTrainer(_cfg(tmp_path, noise=noise, noise_scale=0.5))
    for t in (clean, noisy):
        t.reset_envs()
        t.collect()
    # the environment interaction and the stored rewards are untouched ...
    for name in ("obs", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(clean.buffer, name), getattr(noisy.buffer, name), err_msg=name)
    assert clean.finished_returns == noisy.finished_returns
    # ... the advantages the update sees are not (adv_flip acts inside the update, per minibatch) ...
    clean_adv, clean_ret = clean.advantages(clean.buffer.tensors(clean.device))
    noisy_adv, noisy_ret = noisy.advantages(noisy.buffer.tensors(noisy.device))
    assert torch.equal(clean_adv, noisy_adv) == (noise == "adv_flip")
    # adv_flip leaves the value targets clean; reward noise reaches them through GAE
    assert torch.equal(clean_ret, noisy_ret) == (noise == "adv_flip")
    clean.learn()
    noisy.learn()
    assert not torch.equal(clean.flat.param, noisy.flat.param)
    # ... and evaluation is clean: identical returns for identical models
    noisy.model.load_state_dict(clean.model.state_dict())
    assert clean.evaluate()["mean_return"] == noisy.evaluate()["mean_return"]
    clean.close()
    noisy.close()


def test_truncation_bootstraps_from_the_final_observation(tmp_path):
    # Pendulum never terminates; its 200-step time limit truncates.
    trainer = OnPolicyTrainer(_cfg(tmp_path, env="Pendulum-v1", n_envs=1, n_steps=256, total_steps=256))
    trainer.reset_envs()
    trainer.collect()
    buf = trainer.buffer
    assert buf.terminated.sum() == 0
    assert np.flatnonzero(buf.truncated[:, 0]).tolist() == [199]
    assert buf.bootstrap[199, 0] != 0 and buf.bootstrap[198, 0] == 0
    # step 199 bootstraps from V(final observation), not from the next episode's first state
    final_obs_value = buf.bootstrap[199, 0]
    assert final_obs_value != buf.values[200, 0]
    adv, _ = trainer.advantages(buf.tensors(trainer.device))
    expected = buf.rewards[199, 0] + trainer.cfg.loss.gamma * final_obs_value - buf.values[199, 0]
    assert abs(float(adv[199, 0]) - expected) < 1e-5
    trainer.close()


def test_finished_run_is_not_redone_unless_forced(tmp_path, capsys):
    cfg = _cfg(tmp_path, total_steps=128, eval_every=0)
    first = train(cfg)
    metrics = run_dir(cfg) / "metrics.jsonl"
    mtime = metrics.stat().st_mtime_ns
    assert train(cfg) == first
    assert "already finished" in capsys.readouterr().err
    assert metrics.stat().st_mtime_ns == mtime
    train(cfg, force=True)
    assert len(read_jsonl(metrics)) == 1


def test_a_changed_config_is_refused_in_an_existing_run_dir(tmp_path):
    train(_cfg(tmp_path, total_steps=128, eval_every=0))
    with pytest.raises(ConfigError, match="different configuration.*lr"):
        train(_cfg(tmp_path, total_steps=128, eval_every=0, lr=1e-3))


def test_run_directory_files(tmp_path):
    cfg = _cfg(tmp_path, algo="sppo")
    train(cfg)
    path = run_dir(cfg)
    assert path == tmp_path / "default/CartPole-v1/sppo/seed0"
    for name in ("config.yaml", "metrics.jsonl", "eval.jsonl", "summary.json", CHECKPOINT):
        assert (path / name).exists(), name
    assert list((path / "tb").glob("events.out.tfevents.*"))
    row = read_jsonl(path / "metrics.jsonl")[-1]
    for key in ("step", "sps", "policy_loss", "reverse_loss", "value_loss", "entropy", "approx_kl",
                "clip_fraction", "sign_change", "train_return_mean"):
        assert key in row, key
    assert row["reverse_loss"] != 0.0 and 0.0 <= row["sign_change"] <= 1.0
    evals = read_jsonl(path / "eval.jsonl")
    assert [e["step"] for e in evals] == [256, 512, 768]
    assert all(e["episodes"] == 2 for e in evals)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["final_eval_mean"] == evals[-1]["mean_return"]
    assert summary["best_eval_mean"] == max(e["mean_return"] for e in evals)


def test_discretized_sppo_on_mujoco_runs_with_multicategorical_actions(tmp_path):
    trainer = OnPolicyTrainer(_cfg(tmp_path, algo="sppo", env="InvertedPendulum-v5", discretize=11,
                                   n_envs=1, n_steps=64, norm_obs=True, norm_reward=True))
    trainer.reset_envs()
    trainer.collect()
    stats = trainer.learn()
    assert trainer.buffer.actions.dtype == np.int64
    assert 0 <= trainer.buffer.actions.min() and trainer.buffer.actions.max() <= 10
    assert np.isfinite(float(stats["policy_loss"])) and float(stats["reverse_loss"]) != 0.0
    trainer.close()


def test_gaussian_policy_refuses_the_reverse_term(tmp_path):
    with pytest.raises(ConfigError, match="beta.*discretize"):
        OnPolicyTrainer(_cfg(tmp_path, algo="sppo", env="Pendulum-v1"))


@pytest.mark.parametrize("optimizer,kind", [("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop),
                                            ("rmsprop_tf", FlatRMSpropTF)])
def test_network_init_and_optimizer_come_from_the_config(tmp_path, optimizer, kind):
    """net.ortho_init=false keeps torch's init (non-zero biases), and the optimizer is the one named."""
    for ortho in (True, False):
        trainer = OnPolicyTrainer(_cfg(tmp_path, optimizer=optimizer, **{"net.ortho_init": ortho}))
        assert (torch.count_nonzero(trainer.model.actor[0].bias) == 0) == ortho
        assert type(trainer.optimizer) is kind and trainer.optimizer.param_groups[0]["params"][0] is trainer.flat.param
        trainer.close()


def test_ppo_return_rises_on_cartpole(tmp_path):
    cfg = build_config("classic-ppo", {"total_steps": 16384, "eval_every": 2048, "eval_episodes": 5,
                                       "out": str(tmp_path)})
    train(cfg)
    evals = [e["mean_return"] for e in read_jsonl(run_dir(cfg) / "eval.jsonl")]
    assert evals[-1] > 3 * evals[0] and evals[-1] >= 200, evals


def test_async_vector_env_trains_exactly_like_sync(tmp_path):
    sync = _cfg(tmp_path, experiment="sync", n_envs=3, total_steps=384, eval_every=0)
    asynchronous = _cfg(tmp_path, experiment="async", n_envs=3, total_steps=384, eval_every=0, vec_env="async")
    train(sync)
    train(asynchronous)
    _assert_same_params(_params(sync), _params(asynchronous))


def test_evaluation_reads_but_never_updates_the_normalizer(tmp_path):
    trainer = OnPolicyTrainer(_cfg(tmp_path, norm_obs=True, norm_reward=True))
    trainer.reset_envs()
    trainer.collect()
    before = trainer.obs_norm.state_dict()
    trainer.evaluate()
    after = trainer.obs_norm.state_dict()
    assert before["count"] == after["count"] > 1
    np.testing.assert_array_equal(before["mean"], after["mean"])
    trainer.close()


# ---------------------------------------------------------------- checkpoints never cut episodes

ATARI = dict(env="ALE/Breakout-v5", n_envs=2, n_steps=32, batch_size=32, n_epochs=1, total_steps=384,
             eval_every=0, eval_episodes=1, **{"atari.max_episode_frames": 2000})


def _atari_cfg(tmp_path: Path, **overrides):
    return build_config("atari-ppo", {**ATARI, "out": str(tmp_path), **overrides})


def _episodes(cfg) -> list[tuple]:
    """What each update saw of finished training episodes: their count and mean raw return."""
    return [(r["train_episodes"], r["train_return_mean"]) for r in read_jsonl(run_dir(cfg) / "metrics.jsonl")]


def test_atari_checkpoints_never_cut_training_episodes(tmp_path):
    # episodes of up to 500 agent steps (2000 frames) against a checkpoint every 64 steps
    often = _atari_cfg(tmp_path, experiment="often", checkpoint_every=64)
    never = _atari_cfg(tmp_path, experiment="never", checkpoint_every=10**9)
    assert train(often)["env_checkpoint"] == "state"
    train(never)
    assert _episodes(often) == _episodes(never) and sum(n for n, _ in _episodes(never)) >= 1
    _assert_same_params(_params(often), _params(never))


def test_atari_killed_and_resumed_equals_uninterrupted(tmp_path, train_until_killed):
    # asynchronous envs: their states cross process boundaries
    whole = _atari_cfg(tmp_path, experiment="whole", checkpoint_every=64, vec_env="async")
    parts = _atari_cfg(tmp_path, experiment="parts", checkpoint_every=64, vec_env="async")
    train(whole)
    train_until_killed(parts, 3)
    state = torch.load(run_dir(parts) / CHECKPOINT, weights_only=False)
    assert state["env_state"]["envs"][0]["kind"] == "ale"
    train(parts)
    _assert_same_params(_params(whole), _params(parts))
    assert _without_timing(read_jsonl(run_dir(whole) / "metrics.jsonl")) == \
        _without_timing(read_jsonl(run_dir(parts) / "metrics.jsonl"))


def test_mujoco_killed_and_resumed_equals_uninterrupted_mid_episode(tmp_path, train_until_killed):
    extra = dict(env="HalfCheetah-v4", n_envs=1, n_steps=64, batch_size=64, n_epochs=1, total_steps=512,
                 checkpoint_every=128, eval_every=0, norm_obs=True, norm_reward=True)
    whole = _cfg(tmp_path, experiment="whole", **extra)
    parts = _cfg(tmp_path, experiment="parts", **extra)
    assert train(whole)["env_checkpoint"] == "state"
    train_until_killed(parts, 3)  # HalfCheetah's episodes last 1000 steps: all of it is mid-episode
    train(parts)
    _assert_same_params(_params(whole), _params(parts))
    assert _without_timing(read_jsonl(run_dir(whole) / "metrics.jsonl")) == \
        _without_timing(read_jsonl(run_dir(parts) / "metrics.jsonl"))


def test_box2d_keeps_the_sync_point_and_says_so(tmp_path, capsys):
    cfg = _cfg(tmp_path, env="LunarLander-v3", n_envs=1, n_steps=32, batch_size=32, n_epochs=1, total_steps=64,
               checkpoint_every=32, eval_every=0)
    assert train(cfg)["env_checkpoint"] == "sync"
    assert "cannot save their state" in capsys.readouterr().err
    assert torch.load(run_dir(cfg) / CHECKPOINT, weights_only=False)["env_state"] is None


@pytest.mark.parametrize("after_rollout", [False, True])
def test_annealing_clock_is_cleanrls_or_sb3s(tmp_path, after_rollout):
    cfg = _cfg(tmp_path, anneal_lr=True, anneal_clip=True, total_steps=1000, anneal_after_rollout=after_rollout)
    trainer = OnPolicyTrainer(cfg)
    trainer.reset_envs()
    rollout = cfg.n_envs * cfg.n_steps  # 128: 8 updates, the last one past total_steps
    seen = []
    for _ in range(trainer.num_updates):
        trainer.collect()
        stats = trainer.learn()
        seen.append((float(stats["lr"]), float(stats["clip_range"])))
    trainer.close()
    for k, (lr, clip) in enumerate(seen):
        # SB3: progress after the rollout, 1 - steps/total (clamped at 0); CleanRL: 1 - update/updates
        remaining = max(0.0, 1 - (k + 1) * rollout / 1000) if after_rollout else 1 - k / 8
        assert lr == pytest.approx(cfg.lr * remaining) and clip == pytest.approx(cfg.loss.clip_range * remaining)


def test_a_diverging_run_stops_in_one_line_and_keeps_its_last_good_checkpoint(tmp_path):
    """NaN rewards from step 71 on: updates of 32 steps, a checkpoint after each; the third update
    diverges, the run stops (exit 1, one line), the checkpoint of step 64 stays and is finite, and
    the failure is recorded where `symrl sweep` reads it."""
    args = ["env=tests.crashing_env:NanReward-v0", "algo=a2c", "n_envs=1", "n_steps=32", "total_steps=320",
            "checkpoint_every=32", "eval_every=0", "eval_episodes=1", f"out={tmp_path}"]
    done = subprocess.run([sys.executable, "-m", "symrl.cli", "train", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1
    error = [line for line in done.stderr.splitlines() if line.startswith("symrl: error:")]
    assert len(error) == 1 and "diverged at update 3 (step 96)" in error[0] and "policy_loss" in error[0]
    assert "Traceback" not in done.stderr
    path = tmp_path / "default/tests.crashing_env-NanReward-v0/a2c/seed0"
    state = torch.load(path / CHECKPOINT, weights_only=False)
    assert state["step"] == 64 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert "diverged" in json.loads((path / "failed.json").read_text())["error"]
    assert not (path / "summary.json").exists()


@pytest.mark.parametrize("target_kl,expected_steps", [(None, 4 * 2), (1e-9, 1)])
def test_target_kl_stops_before_the_step_of_the_offending_minibatch(tmp_path, target_kl, expected_steps):
    """SB3's early stop: the first minibatch (ratio 1, KL 0) steps; the second already exceeds
    1.5·target_kl, so the update ends without its step."""
    trainer = OnPolicyTrainer(_cfg(tmp_path, n_epochs=4, batch_size=64, target_kl=target_kl))
    steps = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda: (steps.append(1), step())
    trainer.reset_envs()
    trainer.collect()
    trainer.learn()
    trainer.close()
    assert len(steps) == expected_steps


def test_a_run_resumes_on_the_backend_it_started_on(tmp_path, monkeypatch, train_until_killed):
    """envpool missing when the run started: it trained on Gymnasium, and goes on there once
    envpool is installed (its checkpoints hold Gymnasium's env state)."""
    from symrl.envs import make

    cfg = _atari_cfg(tmp_path, env_backend="envpool", checkpoint_every=64,
                     **{"atari.fire_reset": False, "atari.life_reset": False})
    with monkeypatch.context() as patch:
        patch.setattr(make, "envpool_available", lambda: False)
        train_until_killed(cfg, 2)
    summary = train(cfg)
    assert summary["env_backend"] == "gymnasium" and summary["env_checkpoint"] == "state"
