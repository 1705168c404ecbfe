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
    "reverse_kind": ("rce", "mae"),
    "noise": ("none", "reward_flip", "gaussian", "uniform", "adv_flip"),
    "vec_env": ("sync", "async"),
    "device": ("cpu", "cuda", "auto"),
    "net.activation": ("tanh", "relu"),
    "optimizer": ("adam", "rmsprop", "rmsprop_tf"),
    "env_backend": ("gymnasium", "envpool"),
}
# Noise parameters the paper used (Atari reward_flip 0.1; MuJoCo/Box2D gaussian 0.05).
DEFAULT_NOISE_SCALE = {"none": 0.0, "reward_flip": 0.1, "gaussian": 0.05, "uniform": 0.05, "adv_flip": 0.1}


def setting(default: Any = dataclasses.MISSING, doc: str = "", factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its one-line doc (``symrl train --help-keys`` prints it)."""
    return field(default=default, default_factory=factory, metadata={"doc": doc})


@dataclass
class LossConfig:
    """The symmetric policy-gradient loss and the update around it: the settings ``symrl train`` and
    ``symrl rlhf`` share (nested under ``loss``; each key may also be written without ``loss.``).
    ``None``: the algorithm's default, filled by the trainer's resolve."""

    algo: str = setting("ppo", "the loss: a2c, sa2c, ppo, sppo, or scaled_ppo (PPO with SPPO's policy-gradient "
                               "weight and no reverse term: the control for SPPO)")
    alpha: float | None = setting(None, "α, the weight of the A2C/PPO policy loss (default 1; 0.5 for the "
                                        "symmetric algorithms)")
    beta: float | None = setting(None, "β, the weight of the reverse term (0 for a2c/ppo; the paper's value "
                                       "for the symmetric algorithms)")
    Z: float = setting(-1.0, "the number that stands for log 0 in the reverse cross entropy (< 0)")
    reverse_kind: str = setting("rce", "the reverse term: rce (reverse cross entropy) or mae (mean absolute error)")
    clip_range: float = setting(0.2, "PPO's ratio clip ε")
    clip_range_high: float | None = setting(None, "upper ratio clip 1 + ε_high (DAPO's clip-higher; null: "
                                                  "clip_range)")
    clip_range_vf: float | None = setting(None, "clip of the value change around the old value (null: off)")
    vf_coef: float = setting(0.5, "weight of the value loss")
    value_loss_scale: float = setting(1.0, "the value loss is value_loss_scale·MSE: 1 = SB3's plain MSE, "
                                           "0.5 = TRIL's")
    ent_coef: float = setting(0.0, "weight of the entropy bonus")
    max_grad_norm: float = setting(0.5, "the global gradient norm is clipped to this")
    norm_adv: bool | None = setting(None, "normalize the advantages of each minibatch (default: true for PPO, "
                                          "false for A2C)")
    n_epochs: int | None = setting(None, "passes over each rollout (A2C: 1)")
    gamma: float = setting(0.99, "discount factor")
    gae_lambda: float | None = setting(None, "GAE's λ (default: 0.95 for PPO, 1 for A2C)")
    target_kl: float | None = setting(None, "stop the update before the first minibatch whose approx KL "
                                            "exceeds 1.5·target_kl, as SB3 (null: off)")

    @property
    def family(self) -> str:
        """'ppo' or 'a2c': which policy loss and update the algorithm uses."""
        return "a2c" if self.algo in ("a2c", "sa2c") else "ppo"


@dataclass
class NetConfig:
    hidden: list[int] = setting(factory=lambda: [64, 64], doc="hidden layer widths of actor and critic")
    activation: str = setting("tanh", "hidden activation")
    log_std_init: float = setting(0.0, "initial log std of a Gaussian policy")
    ortho_init: bool = setting(True, "orthogonal weights, zero biases (SB3, CleanRL); false: torch's own init")


@dataclass
class AtariConfig:
    """The paper's Atari preprocessing (PAPER.md §4); used for ALE/<Game>-v5 and <Game>NoFrameskip-v4."""

    noop_max: int = setting(30, "up to this many no-op actions after a reset")
    frame_skip: int = setting(4, "frames per agent step (max-pooled over the last two)")
    frame_stack: int = setting(4, "observations stacked")
    screen_size: int = setting(84, "observation side in pixels (grayscale)")
    max_episode_frames: int = setting(108_000, "30 minutes of play; agent steps = frames / frame_skip")
    episodic_life: bool = setting(True, "training only: a lost life ends the episode for GAE")
    clip_reward: bool = setting(True, "training only: the sign of the reward; reported scores stay raw")
    # SB3's AtariWrapper + VecFrameStack rules, in training and evaluation (the paper presets turn
    # them on; off by default because envpool cannot restart its frame stack at a lost life)
    fire_reset: bool = setting(False, "FIRE, then action 2, after every reset and every life restart")
    life_reset: bool = setting(False, "a lost life: one no-op step, then the frame stack restarts (zero-filled)")


@dataclass
class TrainConfig:
    """One training run. ``None`` means "the default of the chosen algorithm" (see ``resolve``)."""

    env: str = setting("CartPole-v1", "a Gymnasium id (module:Id imports the module first)")
    seed: int = setting(0, "seeds the network, actions, noise, minibatches and env resets")
    total_steps: int = setting(100_000, "environment steps (all envs together)")
    n_envs: int | None = setting(None, "parallel training envs (default: 1 for PPO, 4 for A2C)")
    n_steps: int | None = setting(None, "steps per env per rollout (default: 2048 for PPO, 8 for A2C)")
    vec_env: str = setting("sync", "vector env: sync (one process) or async (a process per env)")
    env_backend: str = setting("gymnasium", "gymnasium, or envpool (Atari only; falls back to Gymnasium, "
                                            "saying so, where it is not installed)")
    atari: AtariConfig = setting(factory=AtariConfig, doc="Atari preprocessing")
    loss: LossConfig = setting(factory=LossConfig, doc="the loss and the update")
    noise: str = setting("none", "training-data noise: reward_flip, gaussian or uniform (rewards), adv_flip "
                                 "(advantage signs, per minibatch)")
    noise_scale: float | None = setting(None, "the noise's probability or scale (default: the paper's for the kind)")
    discretize: int = setting(0, "bins per action dimension for a Box action space (0: a Gaussian policy; "
                                 "the reverse term needs bins, the paper uses 11)")
    lr: float | None = setting(None, "learning rate (default: 3e-4 for PPO, 7e-4 for A2C)")
    optimizer: str | None = setting(None, "adam, rmsprop (torch's) or rmsprop_tf (TensorFlow's, as SB3's "
                                          "RMSpropTFLike) (default: adam for PPO, rmsprop for A2C)")
    anneal_lr: bool = setting(False, "lr decays linearly to 0")
    batch_size: int | None = setting(None, "PPO's minibatch size (default: 64)")
    anneal_clip: bool = setting(False, "clip_range decays linearly to 0")
    anneal_after_rollout: bool = setting(False, "the schedules' clock: false = CleanRL's (1 − update/updates); "
                                                "true = SB3's (1 − steps/total_steps after the rollout)")
    norm_obs: bool = setting(False, "running mean/std normalization of observations")
    norm_reward: bool = setting(False, "scale training rewards by the std of the discounted return")
    net: NetConfig = setting(factory=NetConfig, doc="the actor-critic network")
    eval_every: int = setting(10_000, "steps between evaluations on clean envs (0: only at the end)")
    eval_episodes: int = setting(10, "episodes per evaluation (raw returns)")
    eval_deterministic: bool = setting(True, "evaluate the policy's mode (false: sample)")
    out: str = setting("runs", "root folder of run directories")
    experiment: str = setting("default", "run directories are out/experiment/env/algo/seed<k>")
    checkpoint_every: int = setting(50_000, "steps between checkpoints")
    device: str = setting("cpu", "cpu, cuda or auto")

    @property
    def subject(self) -> str:
        """What the run learns on: its run directory is named after it."""
        return self.env

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Algorithm-family defaults: SB3's (which the paper used for MuJoCo) for PPO, SB3's A2C with the
# paper's 8-step rollouts over 4 envs for A2C.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"n_envs": 1, "n_steps": 2048, "lr": 3e-4, "optimizer": "adam", "batch_size": 64,
            "loss.gae_lambda": 0.95, "loss.n_epochs": 10, "loss.norm_adv": True},
    "a2c": {"n_envs": 4, "n_steps": 8, "lr": 7e-4, "optimizer": "rmsprop", "batch_size": None,
            "loss.gae_lambda": 1.0, "loss.n_epochs": 1, "loss.norm_adv": False},
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


def _short_form(root: type, key: str) -> str | None:
    """``beta`` → ``loss.beta``: the loss keys may be written without their block's name."""
    fields = _fields(root)
    head = key.partition(".")[0]
    if head not in fields and fields.get("loss") is LossConfig and head in _fields(LossConfig):
        return f"loss.{key}"
    return None


def get_key(cfg: Any, key: str) -> Any:
    """The value of a dotted (or short-form loss) ``key`` of a config."""
    value = cfg
    for part in (_short_form(type(cfg), key) or key).split("."):
        value = getattr(value, part)
    return value


def describe_keys(cls: type, choices: dict[str, tuple[str, ...]]) -> str:
    """Every key of ``cls`` with its default, allowed values and doc: ``--help-keys``."""
    lines = []
    defaults = cls()

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            key, value = f"{prefix}{f.name}", getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{key}.")
                continue
            allowed = choices.get(key) or choices.get(key.removeprefix("loss."))
            text = f"{key} = {value!r}" + (f"   [{', '.join(allowed)}]" if allowed else "")
            lines.append(f"{text}\n    {f.metadata.get('doc', '')}")

    walk(defaults, "")
    return "\n".join(lines)


def _unknown_key(key: str, root: type) -> ConfigError:
    keys = known_keys(root)
    close = difflib.get_close_matches(key, keys + [k.removeprefix("loss.") for k in keys], n=1, cutoff=0.5)
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
        if not prefix and _short_form(type(cfg), key):  # messages keep the name the user wrote
            _set(cfg.loss, key, raw, root, prefix)
            return
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
    cfg = dataclasses.replace(cfg, net=dataclasses.replace(cfg.net), atari=dataclasses.replace(cfg.atari),
                              loss=dataclasses.replace(cfg.loss))
    for key in ("noise", "vec_env", "device", "env_backend"):
        check_choice(key, getattr(cfg, key))
    check_choice("net.activation", cfg.net.activation)
    check_choice("algo", cfg.loss.algo)
    if cfg.loss.family == "a2c":
        _refuse_ppo_only_settings(cfg)
    fill_defaults(cfg, FAMILY_DEFAULTS[cfg.loss.family])
    check_choice("optimizer", cfg.optimizer)
    resolve_loss(cfg.loss, SYMMETRIC_DEFAULTS, CHOICES)
    if cfg.noise_scale is None:
        cfg.noise_scale = DEFAULT_NOISE_SCALE[cfg.noise]
    _validate(cfg)
    return cfg


def fill_defaults(cfg: Any, defaults: dict[str, Any]) -> None:
    """Set each dotted key of ``defaults`` that is still None in ``cfg``."""
    for key, value in defaults.items():
        parent, _, name = key.rpartition(".")
        owner = get_key(cfg, parent) if parent else cfg
        if getattr(owner, name) is None:
            setattr(owner, name, value)


def resolve_loss(loss: LossConfig, symmetric_defaults: dict[str, tuple[float, float]],
                 choices: dict[str, tuple[str, ...]]) -> None:
    """α, β from the algorithm's defaults where not given, then the checks both trainers share."""
    check_choice("algo", loss.algo, choices)
    check_choice("reverse_kind", loss.reverse_kind, choices)
    alpha, beta = symmetric_defaults[loss.algo]
    loss.alpha = alpha if loss.alpha is None else loss.alpha
    loss.beta = beta if loss.beta is None else loss.beta
    require(loss.Z < 0, f"Z: got {loss.Z:g}, allowed: a negative number (Z stands for log 0; the paper uses -1)")
    require(loss.beta >= 0, f"beta: got {loss.beta:g}, allowed: a number >= 0 (0 turns the reverse term off)")
    require(loss.alpha >= 0, f"alpha: got {loss.alpha:g}, allowed: a number >= 0")
    if loss.algo in ("a2c", "ppo"):
        require(loss.beta == 0, f"beta: got {loss.beta:g} with algo={loss.algo}, the plain baseline; "
                f"allowed: 0 (use algo=s{loss.algo} for the symmetric loss)")
    require(0 < loss.gamma <= 1, f"gamma: got {loss.gamma:g}, allowed: 0 < gamma <= 1")
    require(0 <= loss.gae_lambda <= 1, f"gae_lambda: got {loss.gae_lambda:g}, allowed: 0..1")
    require(loss.n_epochs >= 1, f"n_epochs: got {loss.n_epochs}, allowed: an integer >= 1")
    require(loss.clip_range > 0, f"clip_range: got {loss.clip_range:g}, allowed: a number > 0")
    require(loss.clip_range_high is None or loss.clip_range_high > 0,
            f"clip_range_high: got {loss.clip_range_high}, allowed: null (= clip_range) or a number > 0")
    require(loss.clip_range_vf is None or loss.clip_range_vf > 0,
            f"clip_range_vf: got {loss.clip_range_vf}, allowed: null (off) or a number > 0")
    require(loss.max_grad_norm > 0, f"max_grad_norm: got {loss.max_grad_norm:g}, allowed: a number > 0")
    for key in ("vf_coef", "ent_coef"):
        require(getattr(loss, key) >= 0, f"{key}: got {getattr(loss, key):g}, allowed: a number >= 0")
    require(loss.value_loss_scale > 0,
            f"value_loss_scale: got {loss.value_loss_scale:g}, allowed: a number > 0 (1: SB3's MSE, 0.5: TRIL's)")
    require(loss.target_kl is None or loss.target_kl > 0,
            f"target_kl: got {loss.target_kl}, allowed: null (off) or a number > 0")


def _refuse_ppo_only_settings(cfg: TrainConfig) -> None:
    """A2C and SA2C take one step on the whole rollout: a PPO-only setting would be silently ignored."""
    loss = cfg.loss
    ignored = {"n_epochs": (loss.n_epochs, loss.n_epochs not in (None, 1)),
               "batch_size": (cfg.batch_size, cfg.batch_size is not None),
               "target_kl": (loss.target_kl, loss.target_kl is not None),
               "anneal_clip": (cfg.anneal_clip, cfg.anneal_clip)}
    for key, (value, set_by_user) in ignored.items():
        require(not set_by_user, f"{key}: got {value} with algo={loss.algo}, which takes one step on the "
                                 f"whole rollout and ignores it; allowed: leave it unset (or use algo=ppo/sppo)")


def check_choice(key: str, value: str, choices: dict[str, tuple[str, ...]] = CHOICES) -> None:
    allowed = choices[key]
    if value not in allowed:
        raise ConfigError(f"{key}: got {value!r}, allowed: {', '.join(allowed)}")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate(cfg: TrainConfig) -> None:
    require(cfg.lr > 0, f"lr: got {cfg.lr:g}, allowed: a number > 0")
    require(cfg.discretize == 0 or cfg.discretize >= 2,
             f"discretize: got {cfg.discretize}, allowed: 0 (off) or an integer >= 2 (bins per action dimension)")
    for key in ("total_steps", "n_envs", "n_steps", "eval_episodes", "checkpoint_every"):
        require(getattr(cfg, key) >= 1, f"{key}: got {getattr(cfg, key)}, allowed: an integer >= 1")
    require(cfg.eval_every >= 0, f"eval_every: got {cfg.eval_every}, allowed: 0 (only at the end) or steps >= 1")
    rollout = cfg.n_envs * cfg.n_steps
    if cfg.batch_size is not None:
        require(1 <= cfg.batch_size <= rollout,
                 f"batch_size: got {cfg.batch_size}, allowed: 1..{rollout} (n_envs × n_steps)")
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
