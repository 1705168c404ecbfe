"""Checkpoints hold only tensors and plain values: opening someone else's run dir runs no code."""

from __future__ import annotations

import collections
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from symrl.algos.onpolicy import train
from symrl.cli import main
from symrl.config import build_config
from symrl.envs.snapshot import SaveableState, arrays_to_tensors, tensors_to_arrays
from symrl.run import CHECKPOINT, load_checkpoint, read_jsonl, run_dir, save_checkpoint

SMALL = dict(env="CartPole-v1", n_envs=2, n_steps=64, total_steps=768, eval_every=256, eval_episodes=2,
             checkpoint_every=128, norm_obs=True, norm_reward=True)


def _cfg(tmp_path, **overrides):
    return build_config(None, {**SMALL, "out": str(tmp_path), **overrides})


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _leaves(item)
    else:
        yield tree


class _MakesADirectory:
    """Unpickling this calls ``os.mkdir``: what a hostile checkpoint could do with any function."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.parametrize("content", ["code", "garbage"])
def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path, capsys, content, train_until_killed):
    cfg = _cfg(tmp_path / "runs")
    train_until_killed(cfg, 2)
    capsys.readouterr()
    path = run_dir(cfg)
    marker = tmp_path / "the-payload-ran"
    if content == "code":
        torch.save({"step": 128, "model": _MakesADirectory(marker)}, path / CHECKPOINT)
    else:
        (path / CHECKPOINT).write_bytes(b"not a checkpoint")
    expected = "refused: it holds Python objects (posix.mkdir)" if content == "code" else "not a readable checkpoint"
    resume = ["train", *(f"{key}={value}" for key, value in SMALL.items()), f"out={tmp_path / 'runs'}"]
    for argv in (resume, ["eval", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("symrl: error: ") and expected in err, err
    assert not marker.exists()
    if content == "code":  # the payload is live: only loading with weights_only kept it from running
        torch.load(path / CHECKPOINT, weights_only=False)
        assert marker.is_dir()


@pytest.mark.parametrize("env,kind,extra", [
    ("CartPole-v1", "python", {}),
    ("HalfCheetah-v4", "mujoco", dict(n_envs=1, batch_size=64, n_epochs=1, eval_every=0)),
    ("ALE/Breakout-v5", "ale", dict(n_steps=32, batch_size=32, n_epochs=1, eval_every=0, eval_episodes=1,
                                    norm_obs=False, norm_reward=False, checkpoint_every=64)),
])
def test_a_training_checkpoint_holds_tensors_and_plain_values_only(tmp_path, env, kind, extra, train_until_killed):
    cfg = build_config("atari-ppo" if kind == "ale" else None,
                       {**SMALL, "env": env, "out": str(tmp_path), **extra})
    train_until_killed(cfg, 2)
    state = torch.load(run_dir(cfg) / CHECKPOINT, weights_only=True)
    assert [s["kind"] for s in state["env_state"]["envs"]] == [kind] * cfg.n_envs
    odd = {type(leaf).__name__ for leaf in _leaves(state)} - {"Tensor", "str", "int", "float", "bool", "NoneType"}
    assert not odd


def test_a_run_resumed_from_a_weights_only_checkpoint_equals_the_uninterrupted_one(tmp_path, train_until_killed):
    """Normalizer statistics, random generators and the envs mid-episode all come back from tensors."""
    whole = _cfg(tmp_path, experiment="whole")
    parts = _cfg(tmp_path, experiment="parts")
    train(whole)
    train_until_killed(parts, 3)  # "killed" with episodes in flight
    assert load_checkpoint(run_dir(parts))["step"] == 384
    train(parts)
    a, b = (torch.load(run_dir(cfg) / CHECKPOINT, weights_only=True)["model"] for cfg in (whole, parts))
    assert all(torch.equal(a[key], b[key]) for key in a)
    for name in ("metrics.jsonl", "eval.jsonl"):
        rows = [[{k: v for k, v in r.items() if k != "sps"} for r in read_jsonl(run_dir(cfg) / name)]
                for cfg in (whole, parts)]
        assert rows[0] == rows[1]


class _Ledger(gym.Wrapper):
    """A wrapper whose state is of every kind a layer may hold: a bounded deque, a tuple with a numpy
    scalar, a list with None, and its own random generator, which perturbs the observations."""

    def __init__(self, env):
        super().__init__(env)
        self.recent = collections.deque(maxlen=3)
        self.total = (0, np.float32(0.0))
        self.flags = [True, None]
        self.rng = np.random.Generator(np.random.MT19937(7))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.recent.append(obs.copy())
        self.total = (self.total[0] + 1, self.total[1] + np.float32(reward))
        return obs + self.rng.normal(size=obs.shape).astype(obs.dtype), reward, terminated, truncated, info


def test_an_env_state_survives_a_weights_only_checkpoint(tmp_path):
    def make():
        return SaveableState(_Ledger(gym.make("CartPole-v1")))

    saved, restored = make(), make()
    saved.reset(seed=3)
    restored.reset(seed=11)
    actions = [0, 1, 1, 0, 1, 0, 0, 1] * 3
    for action in actions[:5]:
        saved.step(action)
    save_checkpoint(tmp_path, {"step": 5, "env_state": arrays_to_tensors(saved.env_state)})
    restored.env_state = tensors_to_arrays(load_checkpoint(tmp_path)["env_state"])
    ledger = restored.env
    assert ledger.recent.maxlen == 3 and type(ledger.total[1]) is np.float32
    assert type(ledger.rng.bit_generator) is np.random.MT19937
    for action in actions[5:]:
        a, b = saved.step(action), restored.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
        if a[2]:
            break
    assert ledger.total == saved.env.total and ledger.flags == [True, None]
