"""What a "method" is in a report: the algorithm plus the settings that tell its runs apart.

Within an experiment, a setting becomes part of the method when it takes different values among
runs of the same env and algorithm (a noise sweep, a β sweep); settings that differ only between
envs (steps, discretization per env) or only between algorithms (α, β of the presets) do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from symrl.config import ALGOS
from symrl.report.runs import Run

# Bookkeeping that never changes what is learned, and the budget: runs of different lengths are a
# data problem the report lists ("unequal run lengths"), not different methods.
NOT_SETTINGS = {"seed", "out", "experiment", "env", "device", "vec_env", "checkpoint_every", "total_steps",
                # RLHF runs: the task is the "env", and these change bookkeeping, not the method
                "task", "iterations", "eval_every", "eval_samples", "eval_lms", "mixed_precision"}
# The loss weights: they define SPPO/SA2C against their plain baselines, so comparisons with a
# baseline ignore them, while comparisons with scaled PPO (the same weights) require them equal.
LOSS_KEYS = {"alpha", "beta", "Z", "reverse"}
# (X, Y, Y is the plain baseline): the comparisons a report makes whenever both methods exist.
COMPARISONS = (("sppo", "ppo", True), ("sppo", "scaled_ppo", False), ("sa2c", "a2c", True))


@dataclass(frozen=True)
class Method:
    """An algorithm and the settings (key, value) that tell its runs apart from the others'."""

    algo: str
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """Readable and unique within an experiment: ``sppo``, ``sppo noise=reward_flip:0.1``."""
        return " ".join([self.algo, *(f"{key}={value}" for key, value in self.settings)])

    @property
    def sort_key(self) -> tuple:
        return (ALGOS.index(self.algo) if self.algo in ALGOS else len(ALGOS), self.algo, self.settings)


Groups = dict[str, dict[str, dict[Method, list[Run]]]]  # experiment → env → method → runs


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """Nested config → dotted keys (``net.hidden``), as the command line writes them."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def varying_settings(runs: Iterable[Run]) -> list[str]:
    """Keys that differ among runs of one (experiment, env, algo), in config order."""
    seen: dict[tuple[str, str, str], dict[str, set[str]]] = {}
    order: dict[str, None] = {}
    for run in runs:
        values = seen.setdefault((run.experiment, run.env, run.algo), {})
        for key, value in flatten(run.config).items():
            if key not in NOT_SETTINGS:
                order.setdefault(key)
                values.setdefault(key, set()).add(repr(value))
    return [k for k in order if any(len(values.get(k, ())) > 1 for values in seen.values())]


def method_of(run: Run, keys: list[str]) -> Method:
    """The run's method; noise and its scale read as one setting, ``noise=reward_flip:0.1``."""
    config = flatten(run.config)
    settings = []
    for key in keys:
        if key in ("noise", "noise_scale"):
            if any(k == "noise" for k, _ in settings):
                continue
            noise = config.get("noise", "none")
            key, value = "noise", noise if noise == "none" else f"{noise}:{config.get('noise_scale'):g}"
        else:
            value = _text(config.get(key))
        settings.append((key, value))
    return Method(run.algo, tuple(settings))


def _text(value: object) -> str:
    """As one would type it after ``key=``: ``0.1``, ``true``, ``[128, 128]``."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def group_runs(runs: Iterable[Run]) -> Groups:
    """experiment → env → method → its runs (any status, by seed); only runs with a config, sorted.
    A method appears under an env only if it has at least one run there."""
    runs = [r for r in runs if r.config]
    groups: Groups = {}
    for experiment in sorted({r.experiment for r in runs}):
        in_experiment = [r for r in runs if r.experiment == experiment]
        keys = varying_settings(in_experiment)
        by_env: dict[str, dict[Method, list[Run]]] = {}
        for run in sorted(in_experiment, key=lambda r: (r.env, r.seed)):
            by_env.setdefault(run.env, {}).setdefault(method_of(run, keys), []).append(run)
        groups[experiment] = {env: dict(sorted(by_method.items(), key=lambda item: item[0].sort_key))
                              for env, by_method in sorted(by_env.items())}
    return groups


def finished(runs: Iterable[Run]) -> list[Run]:
    return [r for r in runs if r.status == "finished"]


def comparisons(methods: Iterable[Method]) -> list[tuple[Method, Method]]:
    """The pairs (X, Y) to test P(X > Y): SPPO vs PPO, SPPO vs scaled PPO, SA2C vs A2C, each only
    between methods whose other settings agree (same noise, same discretization, ...)."""
    methods = sorted(set(methods), key=lambda m: m.sort_key)
    pairs = []
    for x_algo, y_algo, y_is_baseline in COMPARISONS:
        for x in (m for m in methods if m.algo == x_algo):
            for y in (m for m in methods if m.algo == y_algo):
                ignored = LOSS_KEYS if y_is_baseline else set()
                if _without(x, ignored) == _without(y, ignored):
                    pairs.append((x, y))
    return pairs


def _without(method: Method, keys: set[str]) -> tuple[tuple[str, str], ...]:
    return tuple(item for item in method.settings if item[0] not in keys)

