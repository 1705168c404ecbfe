"""Atari on both backends: the paper's preprocessing, raw scores reported, clipped rewards trained."""

from __future__ import annotations

import numpy as np
import pytest

from symrl.algos.onpolicy import OnPolicyTrainer
from symrl.config import ConfigError, build_config
from symrl.envs.atari import AtariSettings, EnvpoolAtari, envpool_available, game_name, make_atari_env, training_signal
from symrl.envs.make import make_vec_env

BACKENDS = ["gymnasium", pytest.param("envpool", marks=pytest.mark.skipif(
    not envpool_available(), reason="envpool is not installed (pip install 'symrl[envpool]')"))]
CAP_FRAMES = 400  # a short episode cap so a test sees the boundary: 100 agent steps
SETTINGS = AtariSettings(max_frames=CAP_FRAMES)


def _scripted_actions(n_steps: int, n_envs: int, n_actions: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, n_actions, size=(n_steps, n_envs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_give_the_same_preprocessing_and_boundaries(backend):
    envs = make_vec_env("ALE/Pong-v5", 2, "sync", backend, SETTINGS)
    assert envs.single_observation_space.shape == (4, 84, 84)
    assert envs.single_action_space.n == 6  # the minimal action set, not the full 18
    obs, info = envs.reset(seed=[1, 2])
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8 and "lives" in info
    ends: dict[int, list[int]] = {0: [], 1: []}
    for t, action in enumerate(_scripted_actions(120, 2, 6)):
        obs, reward, terminated, truncated, info = envs.step(action)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        assert not terminated.any()  # no Pong game ends in 120 steps: only the cap
        for i in np.flatnonzero(truncated):
            ends[i].append(t + 1)
            assert info["final_obs"][i].shape == (4, 84, 84)
            # same-step autoreset: the returned observation already starts the next episode
            assert not np.array_equal(info["final_obs"][i], obs[i])
    # the cap is 100 agent steps; Gymnasium's ALE also counts the up-to-30 no-op frames of the reset
    for env_ends in ends.values():
        assert len(env_ends) == 1 and 100 - SETTINGS.noop_max // SETTINGS.frame_skip <= env_ends[0] <= 100
    envs.close()


def test_v5_ids_get_v4_semantics():
    env = make_atari_env("ALE/Breakout-v5", AtariSettings())
    ale_env = env.unwrapped
    assert ale_env._frameskip == 1 and ale_env.ale.getFloat("repeat_action_probability") == 0.0
    assert env.observation_space.shape == (4, 84, 84)
    assert game_name("ALE/Breakout-v5") == game_name("BreakoutNoFrameskip-v4") == "Breakout"
    env.close()


def test_training_signal_clips_rewards_and_ends_episodes_on_life_loss():
    raw = np.array([0.0, 30.0, -5.0, 4.0])
    lives = np.array([3, 2, 3, 5])
    before = np.array([3, 3, 3, 1])
    game_over = np.array([False, False, False, True])  # env 3 starts a new game: lives went up
    reward, life_lost = training_signal(raw, lives, before, game_over, clip_reward=True, episodic_life=True)
    np.testing.assert_array_equal(reward, [0.0, 1.0, -1.0, 1.0])
    np.testing.assert_array_equal(life_lost, [False, True, False, False])
    reward, life_lost = training_signal(raw, lives, before, game_over, clip_reward=False, episodic_life=False)
    np.testing.assert_array_equal(reward, raw)
    assert not life_lost.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_trainer_trains_on_clipped_rewards_and_reports_raw_scores(tmp_path, backend):
    # Space Invaders pays 5 to 30 points per alien: clipping is visible, unlike Pong's ±1.
    cfg = build_config("atari-ppo", {
        "env": "ALE/SpaceInvaders-v5", "env_backend": backend, "vec_env": "sync", "n_envs": 2, "n_steps": 128,
        "total_steps": 256, "eval_episodes": 1, "atari.max_episode_frames": 400, "out": str(tmp_path),
        **({"atari.fire_reset": False, "atari.life_reset": False} if backend == "envpool" else {})})
    trainer = OnPolicyTrainer(cfg)
    trainer.reset_envs()
    trainer.collect()
    trained = trainer.buffer.rewards
    assert set(np.unique(trained)) <= {0.0, 1.0} and trained.max() == 1.0
    # 100-step episodes (400 frames) ended inside the rollout: what is reported is the raw game
    # score (multiples of 5 here), while the update saw rewards of at most 1
    assert len(trainer.finished_returns) >= 2 and max(trainer.finished_returns) >= 5
    assert all(r % 5 == 0 for r in trainer.finished_returns)
    evaluation = trainer.evaluate()
    assert evaluation["mean_return"] % 5 == 0 and evaluation["mean_return"] >= 0
    stats = trainer.learn()
    assert np.isfinite(float(stats["policy_loss"]))
    trainer.close()


@pytest.mark.skipif(not envpool_available(), reason="envpool is not installed")
def test_envpool_reseeding_at_sync_points_is_reproducible():
    def first_frames(seed: int) -> np.ndarray:
        envs = EnvpoolAtari("ALE/Pong-v5", 2, SETTINGS)
        envs.reset(seed=[seed, seed + 1])
        obs = [envs.step(a)[0].copy() for a in _scripted_actions(20, 2, 6)]
        envs.close()
        return np.stack(obs)

    np.testing.assert_array_equal(first_frames(7), first_frames(7))


def _frame_number(env) -> int:
    return env.unwrapped.ale.getEpisodeFrameNumber()


@pytest.mark.parametrize("fire", [False, True])
def test_fire_reset_presses_fire_then_action_2_after_a_reset(fire):
    settings = AtariSettings(noop_max=0, fire_reset=fire)
    env = make_atari_env("ALE/Breakout-v5", settings)
    obs, _ = env.reset(seed=0)
    # two extra agent steps of frame_skip frames each, and a zero-filled stack around the new frame
    assert _frame_number(env) == (2 * settings.frame_skip if fire else 0)
    assert not obs[:-1].any() and obs[-1].any()
    env.close()


def test_fire_reset_leaves_games_without_fire_alone():
    env = make_atari_env("ALE/Pong-v5", AtariSettings(noop_max=0, fire_reset=True))
    assert env.unwrapped.get_action_meanings()[1] == "FIRE"  # Pong has FIRE: pressed
    env.reset(seed=0)
    assert _frame_number(env) == 8
    env.close()
    env = make_atari_env("ALE/Freeway-v5", AtariSettings(noop_max=0, fire_reset=True))
    assert "FIRE" not in env.unwrapped.get_action_meanings()  # Freeway has none: nothing pressed
    env.reset(seed=0)
    assert _frame_number(env) == 0
    env.close()


@pytest.mark.parametrize("life_reset", [False, True])
def test_a_lost_life_restarts_the_frame_stack_after_noop_and_fire(life_reset):
    """SB3's EpisodicLifeEnv + FireResetEnv + VecFrameStack: after a lost life, one no-op step,
    FIRE, action 2, and a zero-filled stack; the game (and the reported score) goes on."""
    settings = AtariSettings(noop_max=0, fire_reset=True, life_reset=life_reset)
    env = make_atari_env("ALE/Breakout-v5", settings)
    env.reset(seed=0)
    lives = env.unwrapped.ale.lives()
    for _ in range(2000):  # NOOP: the paddle stays put and the launched ball is missed
        before = _frame_number(env)
        obs, _, terminated, truncated, info = env.step(0)
        if info["lives"] < lives:
            break
    else:
        pytest.fail("no life was lost")
    assert not (terminated or truncated)
    extra_steps = 3 if life_reset else 0
    assert _frame_number(env) - before == (1 + extra_steps) * settings.frame_skip
    assert (not obs[:-1].any()) == life_reset  # restarted stack: only the newest frame is filled
    env.close()


def test_envpool_refuses_the_sb3_reset_rules_in_one_line():
    with pytest.raises(ConfigError, match="atari.fire_reset: .*allowed with env_backend=envpool: false"):
        build_config("atari-ppo", {"env_backend": "envpool"})


def test_a_missing_envpool_falls_back_to_gymnasium_when_the_envs_are_built(monkeypatch, capsys):
    from symrl.envs import make

    monkeypatch.setattr(make, "envpool_available", lambda: False)
    envs = make_vec_env("ALE/Pong-v5", 1, "sync", "envpool", SETTINGS)
    assert not isinstance(envs, EnvpoolAtari)
    assert "envpool is not installed" in capsys.readouterr().err
    envs.close()
