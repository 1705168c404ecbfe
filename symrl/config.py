"""Typed training configuration: defaults, presets, ``key=value`` overrides and validation.

Every error is a :class:`ConfigError` whose message names the field, the bad value and what is
allowed; the CLI prints it as one line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration value; the message is meant for the user as is."""


ALGOS = ("a2c", "sa2c", "ppo", "sppo", "scaled_ppo")
CHOICES: dict[str, tuple[str, ...]] = {
    "algo": ALGOS,
    "reverse": ("rce", "mae"),
    "noise": ("none", "reward_flip", "gaussian", "uniform", "adv_flip"),
    "vec_env": ("sync", "async"),
    "device": ("cpu", "cuda", "auto"),
    "net.activation": ("tanh", "relu"),
    "optimizer": ("adam", "rmsprop", "rmsprop_tf"),
    "env_backend": ("gymnasium", "envpool"),
}
# Noise parameters the paper used (Atari reward_flip 0.1; MuJoCo/Box2D gaussian 0.05).
DEFAULT_NOISE_SCALE = {"none": 0.0, "reward_flip": 0.1, "gaussian": 0.05, "uniform": 0.05, "adv_flip": 0.1}


@dataclass
class NetConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    log_std_init: float = 0.0
    ortho_init: bool = True  # orthogonal weights, zero biases (SB3, CleanRL); false: torch's own init, as SB3's


@dataclass
class AtariConfig:
    """The paper's Atari preprocessing (PAPER.md §4); used for ALE/<Game>-v5 and <Game>NoFrameskip-v4."""

    noop_max: int = 30
    frame_skip: int = 4
    frame_stack: int = 4
    screen_size: int = 84
    max_episode_frames: int = 108_000  # 30 minutes of play; agent steps = frames / frame_skip
    episodic_life: bool = True  # training only: a lost life ends the episode for GAE
    clip_reward: bool = True  # training only: sign of the reward; reported scores stay raw
    # SB3's AtariWrapper + VecFrameStack rules, in training and evaluation (the paper presets turn
    # them on; off by default because envpool cannot restart its frame stack at a lost life)
    fire_reset: bool = False  # FIRE, then action 2, after every reset and every life restart
    life_reset: bool = False  # a lost life: one no-op step, then the frame stack restarts (zero-filled)


@dataclass
class TrainConfig:
    """One training run. ``None`` means "the default of the chosen algorithm" (see ``resolve``)."""

    algo: str = "ppo"
    env: str = "CartPole-v1"
    seed: int = 0
    total_steps: int = 100_000
    n_envs: int | None = None
    n_steps: int | None = None
    vec_env: str = "sync"
    env_backend: str = "gymnasium"
    atari: AtariConfig = field(default_factory=AtariConfig)
    # the symmetric loss: α·L_pg + β·L_rev (Z stands for log 0)
    alpha: float | None = None
    beta: float | None = None
    Z: float = -1.0
    reverse: str = "rce"
    # training-data noise
    noise: str = "none"
    noise_scale: float | None = None
    discretize: int = 0
    # optimization
    lr: float | None = None
    optimizer: str | None = None  # adam, rmsprop (torch's) or rmsprop_tf (TF semantics, as SB3's RMSpropTFLike)
    anneal_lr: bool = False
    gamma: float = 0.99
    gae_lambda: float | None = None
    n_epochs: int | None = None
    batch_size: int | None = None
    clip_range: float = 0.2
    anneal_clip: bool = False
    # the schedules' clock: false = CleanRL's (1 − update/updates); true = SB3's (1 − steps/total_steps
    # after the rollout, one rollout lower), which the authors' Atari PPO ran with
    anneal_after_rollout: bool = False
    clip_range_vf: float | None = None
    vf_coef: float = 0.5
    value_loss_scale: float = 1.0  # the value loss is value_loss_scale·MSE: 1 = SB3's plain MSE (TRIL: 0.5)
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    norm_adv: bool | None = None
    norm_obs: bool = False
    norm_reward: bool = False
    net: NetConfig = field(default_factory=NetConfig)
    # evaluation (clean environments, raw returns)
    eval_every: int = 10_000
    eval_episodes: int = 10
    eval_deterministic: bool = True
    # run directory and bookkeeping
    out: str = "runs"
    experiment: str = "default"
    checkpoint_every: int = 50_000
    device: str = "cpu"

    @property
    def subject(self) -> str:
        """What the run learns on: its run directory is named after it."""
        return self.env

    @property
    def family(self) -> str:
        """'ppo' or 'a2c': which update rule the algorithm uses."""
        return "a2c" if self.algo in ("a2c", "sa2c") else "ppo"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Algorithm-family defaults: SB3's (which the paper used for MuJoCo) for PPO, SB3's A2C with the
# paper's 8-step rollouts over 4 envs for A2C.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": dict(n_envs=1, n_steps=2048, lr=3e-4, optimizer="adam", gae_lambda=0.95, n_epochs=10, batch_size=64,
                norm_adv=True),
    "a2c": dict(n_envs=4, n_steps=8, lr=7e-4, optimizer="rmsprop", gae_lambda=1.0, n_epochs=1, batch_size=None,
                norm_adv=False),
}
# α, β when not given: the plain baselines are α=1, β=0; the symmetric ones default to the paper's
# Atari setting α=0.5, β=1.0 (MuJoCo used β=20: see the presets).
SYMMETRIC_DEFAULTS = {"a2c": (1.0, 0.0), "ppo": (1.0, 0.0), "sa2c": (0.5, 1.0), "sppo": (0.5, 1.0),
                      "scaled_ppo": (0.5, 1.0)}


@functools.cache
def _fields(cls: type) -> dict[str, Any]:
    """Field name → type; cached because get_type_hints dominates building many configs (sweeps)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def known_keys(cls: type | None = None) -> list[str]:
    """Every settable key of a config class (default: TrainConfig), nested ones dotted (``net.hidden``)."""
    keys = []
    for name, tp in _fields(cls or TrainConfig).items():
        if dataclasses.is_dataclass(tp):
            keys += [f"{name}.{sub}" for sub in _fields(tp)]
        else:
            keys.append(name)
    return keys


def _unknown_key(key: str, root: type) -> ConfigError:
    keys = known_keys(root)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(keys)}"
    return ConfigError(f"unknown key '{key}'{hint}")


def _coerce(key: str, raw: Any, tp: Any) -> Any:
    """Convert a parsed YAML value to the field's type, or raise a ConfigError naming the field."""
    args = typing.get_args(tp)
    if type(None) in args:
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            return None
        tp = next(a for a in args if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        items = raw if isinstance(raw, list) else [raw]
        return [_coerce(key, item, inner) for item in items]
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return raw.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: got {raw!r}, allowed: true or false")
    if tp is int:
        number = raw
        if isinstance(raw, str):
            try:
                number = float(raw.replace("_", ""))
            except ValueError:
                raise ConfigError(f"{key}: got {raw!r}, allowed: an integer") from None
        if (isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number)
                or float(number) != int(number)):
            raise ConfigError(f"{key}: got {raw!r}, allowed: an integer")
        return int(number)
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: got {raw!r}, allowed: a number")
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: got {raw!r}, allowed: a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: got {raw!r}, allowed: a finite number")
        return number
    if tp is str:
        if isinstance(raw, (dict, list)):
            raise ConfigError(f"{key}: got {raw!r}, allowed: a string")
        return str(raw)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - a programming error


def set_key(cfg: Any, key: str, raw: Any) -> None:
    """Set a dotted ``key`` of any config dataclass from a parsed YAML value, checked and converted."""
    _set(cfg, key, raw, type(cfg), "")


def _set(cfg: Any, key: str, raw: Any, root: type, prefix: str) -> None:
    head, _, rest = key.partition(".")
    fields = _fields(type(cfg))
    if head not in fields:
        raise _unknown_key(prefix + key, root)
    tp = fields[head]
    if dataclasses.is_dataclass(tp):
        if rest:
            _set(getattr(cfg, head), rest, raw, root, f"{prefix}{head}.")
            return
        if not isinstance(raw, dict):
            raise ConfigError(f"{prefix}{key}: got {raw!r}, allowed: a mapping of {', '.join(_fields(tp))}")
        for sub, value in raw.items():
            _set(getattr(cfg, head), str(sub), value, root, f"{prefix}{head}.")
        return
    if rest:
        raise _unknown_key(prefix + key, root)
    setattr(cfg, head, _coerce(prefix + key, raw, tp))


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans (only true/false), so ``mixed_precision: no`` stays the string 'no' (YAML 1.1
    reads it as false); boolean fields still take yes/no/on/off (``_coerce``)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def load_yaml(text: str) -> Any:
    """Settings YAML (key=value overrides, presets, sweep specs), read with YAML 1.2 booleans."""
    return yaml.load(text, Loader=_Yaml12Loader)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["beta=1.0", "net.hidden=[64,64]"]`` → {"beta": 1.0, "net.hidden": [64, 64]}."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"'{item}': expected key=value (for example beta=1.0)")
        try:
            parsed[key.strip()] = load_yaml(value) if value.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"{key}: malformed value {value!r}") from None
    return parsed


# ---------------------------------------------------------------- presets

# Presets of `symrl train` live in presets/, those of `symrl rlhf` in presets/rlhf/.
PRESET_FOLDERS = {"train": "presets", "rlhf": "presets/rlhf"}


def _preset_dir(kind: str) -> Path:
    return Path(str(resources.files("symrl") / PRESET_FOLDERS[kind]))


def preset_names(kind: str = "train") -> list[str]:
    return sorted(p.stem for p in _preset_dir(kind).glob("*.yaml"))


def load_preset(name: str, kind: str = "train") -> dict[str, Any]:
    """A preset file: {'description', 'source', 'config': {key: value}}; ``extends: OTHER`` starts
    from another preset's config, so variants of one setting state only what differs."""
    return copy.deepcopy(_load_preset(name, kind))


@functools.cache
def _load_preset(name: str, kind: str) -> dict[str, Any]:
    path = _preset_dir(kind) / f"{name}.yaml"
    if not path.exists():
        names = preset_names(kind)
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"preset: '{name}' does not exist; {hint}allowed: {', '.join(names)}")
    try:
        preset = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"preset: '{name}' ({path}) is not valid YAML: {str(err).splitlines()[0]}") from None
    if preset.get("extends"):
        base = load_preset(preset["extends"], kind)
        preset["config"] = _merged(base.get("config") or {}, preset.get("config") or {})
        preset.setdefault("source", base.get("source"))
    return preset


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested blocks merged key by key (a variant that sets
    ``generation: {top_k: 10}`` keeps the rest of its base's ``generation``)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply(cfg: Any, kind: str, preset: str | None, overrides: dict[str, Any] | None) -> Any:
    """Defaults (``cfg``) ← preset of ``kind`` ← overrides, set in place; returns ``cfg``."""
    if preset:
        for key, value in (load_preset(preset, kind).get("config") or {}).items():
            set_key(cfg, key, value)
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    return cfg


def build_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← preset ← overrides, then resolved and validated."""
    return resolve(apply(TrainConfig(), "train", preset, overrides))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A resolved configuration as saved in a run's config.yaml."""
    return resolve(apply(TrainConfig(), "train", None, data))


# ---------------------------------------------------------------- resolution and validation

def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill algorithm-dependent defaults and validate; returns a new, fully explicit config."""
    cfg = dataclasses.replace(cfg, net=dataclasses.replace(cfg.net), atari=dataclasses.replace(cfg.atari))
    for key in ("algo", "reverse", "noise", "vec_env", "device", "env_backend"):
        check_choice(key, getattr(cfg, key))
    check_choice("net.activation", cfg.net.activation)
    if cfg.family == "a2c":
        _refuse_ppo_only_settings(cfg)
    for key, value in FAMILY_DEFAULTS[cfg.family].items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    check_choice("optimizer", cfg.optimizer)
    alpha, beta = SYMMETRIC_DEFAULTS[cfg.algo]
    cfg.alpha = alpha if cfg.alpha is None else cfg.alpha
    cfg.beta = beta if cfg.beta is None else cfg.beta
    if cfg.noise_scale is None:
        cfg.noise_scale = DEFAULT_NOISE_SCALE[cfg.noise]
    _validate(cfg)
    return cfg


def _refuse_ppo_only_settings(cfg: TrainConfig) -> None:
    """A2C and SA2C take one step on the whole rollout: a PPO-only setting would be silently ignored."""
    ignored = {"n_epochs": cfg.n_epochs not in (None, 1), "batch_size": cfg.batch_size is not None,
               "target_kl": cfg.target_kl is not None, "anneal_clip": cfg.anneal_clip}
    for key, set_by_user in ignored.items():
        require(not set_by_user, f"{key}: got {getattr(cfg, key)} with algo={cfg.algo}, which takes one step on the "
                                 f"whole rollout and ignores it; allowed: leave it unset (or use algo=ppo/sppo)")


def check_choice(key: str, value: str, choices: dict[str, tuple[str, ...]] = CHOICES) -> None:
    allowed = choices[key]
    if value not in allowed:
        raise ConfigError(f"{key}: got {value!r}, allowed: {', '.join(allowed)}")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_loss_settings(cfg: Any) -> None:
    """The settings `symrl train` and `symrl rlhf` share: loss weights, Z, discounting, clipping."""
    require(cfg.Z < 0, f"Z: got {cfg.Z:g}, allowed: a negative number (Z stands for log 0; the paper uses -1)")
    require(cfg.beta >= 0, f"beta: got {cfg.beta:g}, allowed: a number >= 0 (0 turns the reverse term off)")
    require(cfg.alpha >= 0, f"alpha: got {cfg.alpha:g}, allowed: a number >= 0")
    if cfg.algo in ("a2c", "ppo"):
        require(cfg.beta == 0, f"beta: got {cfg.beta:g} with algo={cfg.algo}, the plain baseline; "
                 f"allowed: 0 (use algo=s{cfg.algo} for the symmetric loss)")
    require(0 < cfg.gamma <= 1, f"gamma: got {cfg.gamma:g}, allowed: 0 < gamma <= 1")
    require(0 <= cfg.gae_lambda <= 1, f"gae_lambda: got {cfg.gae_lambda:g}, allowed: 0..1")
    require(cfg.lr > 0, f"lr: got {cfg.lr:g}, allowed: a number > 0")
    require(cfg.clip_range > 0, f"clip_range: got {cfg.clip_range:g}, allowed: a number > 0")
    require(cfg.clip_range_vf is None or cfg.clip_range_vf > 0,
            f"clip_range_vf: got {cfg.clip_range_vf}, allowed: null (off) or a number > 0")
    require(cfg.max_grad_norm > 0, f"max_grad_norm: got {cfg.max_grad_norm:g}, allowed: a number > 0")
    for key in ("vf_coef", "ent_coef"):
        require(getattr(cfg, key) >= 0, f"{key}: got {getattr(cfg, key):g}, allowed: a number >= 0")
    require(cfg.value_loss_scale > 0,
            f"value_loss_scale: got {cfg.value_loss_scale:g}, allowed: a number > 0 (1: SB3's MSE, 0.5: TRIL's)")


def _validate(cfg: TrainConfig) -> None:
    check_loss_settings(cfg)
    require(cfg.discretize == 0 or cfg.discretize >= 2,
             f"discretize: got {cfg.discretize}, allowed: 0 (off) or an integer >= 2 (bins per action dimension)")
    for key in ("total_steps", "n_envs", "n_steps", "n_epochs", "eval_episodes", "checkpoint_every"):
        require(getattr(cfg, key) >= 1, f"{key}: got {getattr(cfg, key)}, allowed: an integer >= 1")
    require(cfg.eval_every >= 0, f"eval_every: got {cfg.eval_every}, allowed: 0 (only at the end) or steps >= 1")
    rollout = cfg.n_envs * cfg.n_steps
    if cfg.batch_size is not None:
        require(1 <= cfg.batch_size <= rollout,
                 f"batch_size: got {cfg.batch_size}, allowed: 1..{rollout} (n_envs × n_steps)")
    require(cfg.target_kl is None or cfg.target_kl > 0,
             f"target_kl: got {cfg.target_kl}, allowed: null (off) or a number > 0")
    if cfg.noise in ("reward_flip", "adv_flip"):
        require(0 <= cfg.noise_scale <= 1,
                 f"noise_scale: got {cfg.noise_scale:g} for noise={cfg.noise}, allowed: a probability 0..1")
    else:
        require(cfg.noise_scale >= 0, f"noise_scale: got {cfg.noise_scale:g}, allowed: a number >= 0")
    require(len(cfg.net.hidden) >= 1 and all(w >= 1 for w in cfg.net.hidden),
             f"net.hidden: got {cfg.net.hidden}, allowed: a list of layer widths >= 1, e.g. [64, 64]")
    require(bool(cfg.experiment) and "/" not in cfg.experiment,
             f"experiment: got {cfg.experiment!r}, allowed: a non-empty name without '/'")
    _check_env_id(cfg.env)
    _check_backend(cfg)
    for key in ("noop_max", "frame_skip", "frame_stack", "screen_size", "max_episode_frames"):
        value = getattr(cfg.atari, key)
        require(value >= (0 if key == "noop_max" else 1),
                 f"atari.{key}: got {value}, allowed: an integer >= {0 if key == 'noop_max' else 1}")


def _check_backend(cfg: TrainConfig) -> None:
    """envpool serves Atari ids only. (Where it is not installed, the envs fall back to Gymnasium
    when they are built, which says so: ``symrl.envs.make.make_vec_env``.)"""
    from symrl.envs.registry import is_atari

    if cfg.env_backend != "envpool":
        return
    for key in ("fire_reset", "life_reset"):
        require(not getattr(cfg.atari, key),
                f"atari.{key}: true is implemented on the Gymnasium backend only; allowed with "
                "env_backend=envpool: false (or env_backend=gymnasium)")
    require(is_atari(cfg.env.rpartition(":")[2]),
             f"env_backend: envpool is supported for Atari ids (ALE/<Game>-v5, <Game>NoFrameskip-v4), "
             f"not {cfg.env}; allowed here: gymnasium")


def _check_env_id(env_id: str) -> None:
    import gymnasium as gym

    from symrl.envs.registry import ensure_registered

    try:
        name = ensure_registered(env_id)
    except ImportError as err:
        raise ConfigError(f"env: '{env_id}' could not be loaded: {err}") from None
    if name in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see `python -c 'import gymnasium; gymnasium.pprint_registry()'`"
    raise ConfigError(f"env: '{env_id}' is not a registered Gymnasium id; {hint}")
