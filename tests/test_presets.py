"""Every shipped preset resolves, and the paper's settings are what the presets say."""

from __future__ import annotations

import dataclasses

import re

import pytest

from symrl.config import build_config, load_preset, preset_names
from symrl.losses import effective_pg_multiplier
from tests.helpers import settings_view


def _differing(a: str, b: str) -> set[str]:
    """The settings in which two resolved presets differ."""
    x, y = settings_view(build_config(a)), settings_view(build_config(b))
    return {k for k in x if x[k] != y[k]}


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_and_names_its_upstream_source(name):
    """A paper preset names the released file and line it follows; symrl's own say they have none."""
    preset = load_preset(name)
    assert preset.get("description")
    source = preset.get("source") or ""
    assert re.search(r"Symmetric_RL .*\.(yml|sh):\d+", source) or "no upstream counterpart" in source, source
    build_config(name)


def test_families_share_everything_but_what_they_are_about():
    """The control differs from SPPO only in the algorithm, and has SPPO's multiplier."""
    for family in ("atari", "mujoco", "box2d", "classic", "mujoco-humanoid"):
        sppo, scaled = build_config(f"{family}-sppo"), build_config(f"{family}-scaled_ppo")
        assert (sppo.loss.algo, scaled.loss.algo) == ("sppo", "scaled_ppo")
        assert dataclasses.replace(scaled, loss=dataclasses.replace(scaled.loss, algo="sppo")) == sppo
        m_sppo = effective_pg_multiplier("sppo", sppo.loss.alpha, sppo.loss.beta, sppo.loss.Z).value
        assert m_sppo == effective_pg_multiplier("scaled_ppo", scaled.loss.alpha, scaled.loss.beta, scaled.loss.Z).value


def test_paper_protocols():
    atari = build_config("atari-sppo")
    assert (atari.n_envs, atari.n_steps, atari.loss.n_epochs, atari.batch_size) == (8, 128, 4, 256)
    assert (atari.loss.alpha, atari.loss.beta, atari.loss.clip_range, atari.lr) == (0.5, 1.0, 0.1, 2.5e-4)
    assert atari.anneal_lr and atari.anneal_clip and not atari.eval_deterministic
    assert (atari.eval_every, atari.eval_episodes, atari.total_steps) == (10_000, 10, 5_000_000)
    a2c = build_config("atari-a2c")
    assert (a2c.n_envs, a2c.n_steps, a2c.lr, a2c.loss.vf_coef, a2c.loss.gae_lambda) == (16, 5, 7e-4, 0.25, 1.0)
    dsppo = build_config("mujoco-dsppo")
    assert (dsppo.discretize, dsppo.loss.alpha, dsppo.loss.beta, dsppo.n_steps, dsppo.batch_size) == (11, 0.5, 20.0, 2048, 64)
    assert dsppo.norm_obs and dsppo.norm_reward and dsppo.eval_deterministic
    assert (dsppo.eval_every, dsppo.total_steps) == (5_000, 2_000_000)
    assert build_config("mujoco-dppo").loss.beta == 0 and build_config("mujoco-dppo").discretize == 11
    # the noise defaults the paper used, when a sweep turns noise on
    assert build_config("atari-ppo", {"noise": "reward_flip"}).noise_scale == 0.1
    assert build_config("mujoco-ppo", {"noise": "gaussian"}).noise_scale == 0.05


def test_atari_ppo_is_the_released_baseline_and_ppo_norm_isolates_the_loss():
    """Released: PPO and A2C/SA2C without advantage normalization, SPPO with it (Symmetric_RL
    run_discrete_basic.sh:23-27, run_discrete_srl.sh:25-29); atari-ppo-norm differs from atari-ppo
    only in normalization and from atari-sppo only in the loss."""
    norm = {name: build_config(name).loss.norm_adv for name in
            ("atari-ppo", "atari-ppo-norm", "atari-sppo", "atari-scaled_ppo", "atari-a2c", "atari-sa2c")}
    assert norm == {"atari-ppo": False, "atari-ppo-norm": True, "atari-sppo": True, "atari-scaled_ppo": True,
                    "atari-a2c": False, "atari-sa2c": False}
    assert _differing("atari-ppo", "atari-ppo-norm") == {"norm_adv"}
    assert _differing("atari-ppo-norm", "atari-sppo") == {"algo", "alpha", "beta"}


def test_a2c_optimizers_follow_upstream():
    """Atari A2C/SA2C: RMSpropTFLike (hyperparams/a2c.yml:13, ra2c.yml:13); MuJoCo/Box2D A2C: torch's
    RMSprop (a2c.py:125-127); the PPO family: Adam."""
    optimizer = {name: build_config(name).optimizer for name in preset_names()}
    assert {name for name, opt in optimizer.items() if opt == "rmsprop_tf"} == {"atari-a2c", "atari-sa2c"}
    assert {name for name, opt in optimizer.items() if opt == "rmsprop"} == {
        "mujoco-a2c", "mujoco-sa2c", "box2d-a2c", "box2d-sa2c"}
    assert all(opt == "adam" for name, opt in optimizer.items() if build_config(name).loss.family == "ppo")
    # and the family defaults, where no preset says
    assert build_config(None, {"algo": "a2c"}).optimizer == "rmsprop"
    assert build_config(None, {"algo": "sppo"}).optimizer == "adam"


def test_humanoid_presets_are_the_tuned_upstream_settings():
    """Symmetric_RL hyperparams/ppo.yml:23-40 = sppo.yml:20-37, SB3's PPO defaults for the rest."""
    ppo = build_config("mujoco-humanoid-ppo")
    assert (ppo.env, ppo.total_steps, ppo.n_envs, ppo.n_steps, ppo.batch_size, ppo.loss.n_epochs) == (
        "Humanoid-v4", 10_000_000, 1, 512, 256, 5)
    assert (ppo.loss.gamma, ppo.lr, ppo.loss.ent_coef, ppo.loss.clip_range) == (0.95, 3.5e-5, 0.002, 0.3)
    assert (ppo.loss.gae_lambda, ppo.loss.vf_coef, ppo.loss.max_grad_norm, ppo.optimizer) == (0.95, 0.5, 0.5, "adam")
    assert (ppo.net.hidden, ppo.net.activation, ppo.net.log_std_init, ppo.net.ortho_init) == (
        [256, 256], "relu", -2.0, False)
    assert ppo.norm_obs and ppo.norm_reward and ppo.loss.norm_adv and ppo.discretize == 0 and not ppo.anneal_lr
    assert _differing("mujoco-humanoid-ppo", "mujoco-humanoid-sppo") == {"algo", "alpha", "beta", "discretize"}
    sppo = build_config("mujoco-humanoid-sppo")
    assert (sppo.discretize, sppo.loss.alpha, sppo.loss.beta, sppo.loss.Z) == (11, 0.5, 20.0, -1.0)
    # the other MuJoCo presets keep SB3's orthogonal initialization
    assert build_config("mujoco-dsppo").net.ortho_init


def test_yaml_values_no_and_off_stay_strings_where_a_string_is_expected(tmp_path):
    from symrl.config import build_config, parse_overrides
    from symrl.llm.config import build_rlhf_config

    parsed = parse_overrides(["mixed_precision=no", "norm_obs=yes", "anneal_lr=off", "net.hidden=[8, 8]"])
    assert parsed == {"mixed_precision": "no", "norm_obs": "yes", "anneal_lr": "off", "net.hidden": [8, 8]}
    assert build_rlhf_config(None, {"mixed_precision": parsed["mixed_precision"]}).mixed_precision == "no"
    cfg = build_config(None, {k: parsed[k] for k in ("norm_obs", "anneal_lr")})
    assert cfg.norm_obs is True and cfg.anneal_lr is False
    assert parse_overrides(["norm_obs=false"]) == {"norm_obs": False}
    # sweep specs (and presets) read YAML the same way
    from symrl.sweep import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("command: rlhf\nbase: {mixed_precision: no, data: null, task: imdb}\ngrid: {seed: [0]}\n")
    assert load_spec(spec)["base"]["mixed_precision"] == "no"


@pytest.mark.parametrize("key,value", [("total_steps", "1e400"), ("total_steps", ".inf"), ("total_steps", ".nan"),
                                       ("lr", ".inf"), ("lr", ".nan"), ("gamma", "-.inf")])
def test_non_finite_numbers_get_the_one_line_error(key, value):
    from symrl.config import ConfigError, build_config, parse_overrides

    with pytest.raises(ConfigError, match=f"^{key}: got .*allowed: a(n integer| finite number)"):
        build_config(None, parse_overrides([f"{key}={value}"]))


@pytest.mark.parametrize("key,value", [("n_epochs", 4), ("batch_size", 8), ("target_kl", 0.01), ("anneal_clip", True)])
def test_settings_a2c_would_ignore_are_refused(key, value):
    from symrl.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=f"^{key}: got .* with algo=a2c, which takes one step on the whole rollout"):
        build_config(None, {"algo": "a2c", key: value})
    build_config(None, {"algo": "ppo", key: value})  # PPO uses it


def test_extends_merges_nested_blocks(tmp_path, monkeypatch):
    from symrl import config

    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "base.yaml").write_text("config:\n  atari: {noop_max: 7, frame_skip: 3}\n  lr: 0.1\n")
    (folder / "child.yaml").write_text("extends: base\nconfig:\n  atari: {frame_skip: 2}\n")
    monkeypatch.setattr(config, "_preset_dir", lambda kind: folder)
    config._load_preset.cache_clear()
    try:
        assert config.load_preset("child")["config"] == {"atari": {"noop_max": 7, "frame_skip": 2}, "lr": 0.1}
    finally:
        config._load_preset.cache_clear()


def test_resolving_a_config_prints_nothing_and_keeps_the_backend_asked_for(capsys, monkeypatch):
    from symrl.config import build_config
    from symrl.envs import atari

    monkeypatch.setattr(atari, "envpool_available", lambda: False)
    cfg = build_config("atari-ppo", {"env_backend": "envpool", "atari.fire_reset": False, "atari.life_reset": False})
    assert cfg.env_backend == "envpool" and capsys.readouterr() == ("", "")
