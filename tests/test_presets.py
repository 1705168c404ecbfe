"""Every shipped preset resolves, and the paper's settings are what the presets say."""

from __future__ import annotations

import pytest

from symrl.config import build_config, load_preset, preset_names
from symrl.losses import effective_pg_multiplier


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_and_names_its_source(name):
    preset = load_preset(name)
    assert preset.get("description") and preset.get("source")
    build_config(name)


def test_families_share_everything_but_what_they_are_about():
    """The control differs from SPPO only in the algorithm, and has SPPO's multiplier."""
    for family in ("atari", "mujoco", "box2d", "classic"):
        sppo = build_config(f"{family}-sppo").to_dict()
        scaled = build_config(f"{family}-scaled_ppo").to_dict()
        assert {k for k in sppo if sppo[k] != scaled[k]} == {"algo"}
        m_sppo = effective_pg_multiplier("sppo", sppo["alpha"], sppo["beta"], sppo["Z"]).value
        assert m_sppo == effective_pg_multiplier("scaled_ppo", scaled["alpha"], scaled["beta"], scaled["Z"]).value


def test_paper_protocols():
    atari = build_config("atari-sppo")
    assert (atari.n_envs, atari.n_steps, atari.n_epochs, atari.batch_size) == (8, 128, 4, 256)
    assert (atari.alpha, atari.beta, atari.clip_range, atari.lr) == (0.5, 1.0, 0.1, 2.5e-4)
    assert atari.anneal_lr and atari.anneal_clip and not atari.eval_deterministic
    assert (atari.eval_every, atari.eval_episodes, atari.total_steps) == (10_000, 10, 5_000_000)
    a2c = build_config("atari-a2c")
    assert (a2c.n_envs, a2c.n_steps, a2c.lr, a2c.vf_coef, a2c.gae_lambda) == (16, 5, 7e-4, 0.25, 1.0)
    dsppo = build_config("mujoco-dsppo")
    assert (dsppo.discretize, dsppo.alpha, dsppo.beta, dsppo.n_steps, dsppo.batch_size) == (11, 0.5, 20.0, 2048, 64)
    assert dsppo.norm_obs and dsppo.norm_reward and dsppo.eval_deterministic
    assert (dsppo.eval_every, dsppo.total_steps) == (5_000, 2_000_000)
    assert build_config("mujoco-dppo").beta == 0 and build_config("mujoco-dppo").discretize == 11
    # the noise defaults the paper used, when a sweep turns noise on
    assert build_config("atari-ppo", {"noise": "reward_flip"}).noise_scale == 0.1
    assert build_config("mujoco-ppo", {"noise": "gaussian"}).noise_scale == 0.05
