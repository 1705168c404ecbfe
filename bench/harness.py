"""The one harness every throughput benchmark runs on.

Shared machines are noisy, so every number that matters is a ratio against a baseline of the same run:
contestants run back to back, their order rotating between repeats, and a ratio is the median of its
per-repeat ratios. Two nearly equal contestants (SPPO, PPO) are ``interleaved``: built and warmed up,
then timed one iteration each in turn (ABBA…), so a slow minute slows both alike. Every measurement
builds a fresh runner with the same seed, warms it up untimed, then times whole iterations: wall time
and our process tree's CPU time (``own_cores`` below the threads in use: another process took a core).
A contestant's first build has its settings read back from the built objects and compared key by key
with those of the contestant it claims to equal; a difference aborts the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, closing, suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import psutil  # accelerate's dependency
import torch
from gymnasium.spaces import Discrete

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PACKAGES = ["torch", "numpy", "gymnasium", "stable-baselines3", "mujoco", "ale-py", "envpool",
            "transformers", "accelerate", "peft", "tokenizers", "datasets", "trl"]


@dataclass(frozen=True)
class Contestant:
    """``build`` returns a runner: ``run(warmup, timed)`` → a row (``span``), ``close()``, and except
    for raw environments ``settings()`` read back from the built objects (``details()``: more JSON)."""

    name: str
    description: str
    build: Callable[[], Any]
    threads: int = 1  # torch threads, set before building and before running
    equals: str | None = None  # a contestant listed earlier whose read-back settings must equal this one's
    except_keys: tuple[str, ...] = ()  # settings allowed to differ from ``equals``'
    floor: str | None = None  # the raw-environment contestant of the same vector env ("env %" column)


@dataclass(frozen=True)
class Group:
    """Contestants timed on the same work (one environment, one model size)."""

    name: str
    contestants: list[Contestant]
    warmup: int
    timed: int
    unit: str = "steps"  # what ``run`` counts: env steps, generated tokens
    interleave: bool = False  # time the contestants iteration by iteration in turn (``Loop`` runners only)


@dataclass(frozen=True)
class Ratio:
    """numerator / denominator of the rate, or with ``time`` of the time per unit; the target is a
    floor on a rate ratio and a ceiling on a time ratio."""

    label: str
    numerator: str
    denominator: str
    target: float | None = None
    time: bool = False


def _tree_cpu() -> float:
    """CPU seconds of this process's living descendants (async env workers), then of itself (exact)."""
    children = 0.0
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            children += sum(child.cpu_times()[:2])  # user, system
    return children + time.process_time()


class Stamp(NamedTuple):
    """The clocks at one instant, the wall clock read nearest the timed code (arguments run in order)."""

    wall: float
    cpu: float

    @classmethod
    def start(cls) -> Stamp:
        return cls(cpu=_tree_cpu(), wall=time.perf_counter())

    @classmethod
    def end(cls) -> Stamp:
        return cls(wall=time.perf_counter(), cpu=_tree_cpu())


def span(start: Stamp, end: Stamp, units: float) -> dict[str, float]:
    """The measurement row between two stamps over ``units`` of work."""
    wall, cpu = end.wall - start.wall, end.cpu - start.cpu
    return {"units": units, "wall_s": wall, "cpu_s": cpu, "wall_rate": units / wall, "cpu_rate": units / max(cpu, 1e-9),
            "own_cores": cpu / wall}


class Loop:
    """Base of the runners whose ``iterate(n)`` runs any n iterations, returning the units of work."""

    def run(self, warmup: int, timed: int) -> dict[str, float]:
        self.iterate(warmup)
        gc.collect()
        start = Stamp.start()
        units = self.iterate(timed)
        return span(start, Stamp.end(), units)


class RandomActions(Loop):
    """Random actions, drawn beforehand from one env's ``space``, through a bare, reset vector env: the
    floor no training loop on that env can beat."""

    def __init__(self, venv, space, steps: int, seed: int = 0):
        rng, shape = np.random.default_rng(seed), (steps, venv.num_envs, *space.shape)
        self.venv = venv
        self.actions = (rng.integers(0, space.n, shape) if isinstance(space, Discrete)
                        else rng.uniform(space.low, space.high, shape).astype(space.dtype))

    def iterate(self, n: int) -> int:
        for _ in range(n):
            for action in self.actions:
                self.venv.step(action)
        return n * self.actions.shape[0] * self.actions.shape[1]

    def close(self) -> None:
        self.venv.close()


def differences(a: dict[str, Any], b: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, list]:
    def same(x: Any, y: Any) -> bool:  # floats up to rounding
        if isinstance(x, float) or isinstance(y, float):
            return x is not None and y is not None and math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)
        return x == y

    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if k not in skip and not same(a.get(k), b.get(k))}


def optimizer_settings(optimizer) -> dict[str, Any]:
    """Adam's or AdamW's settings, read back from its first parameter group."""
    group = optimizer.param_groups[0]
    return {"optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__,  # inside accelerate's wrapper
            "lr": group["lr"], "adam_eps": group["eps"], "adam_betas": list(group["betas"]),
            "weight_decay": group["weight_decay"]}


def measure_all(groups: list[Group], repeats: int) -> tuple[dict, dict]:
    """Every contestant once per repeat, the order rotated by one each repeat (the listed order first:
    settings are read back before they are compared with). Returns results and settings [group][contestant]."""
    results = {g.name: {c.name: [] for c in g.contestants} for g in groups}
    settings: dict[str, dict[str, Any]] = {g.name: {} for g in groups}
    for rep in range(repeats):
        for g in groups:
            k = rep % len(g.contestants)
            order = g.contestants[k:] + g.contestants[:k]
            rows = (_interleaved(g, order, settings[g.name]) if g.interleave else
                    [_one(g, c, settings[g.name]) for c in order])
            for position, (c, row) in enumerate(zip(order, rows)):
                row.update(repeat=rep, position=position, threads=c.threads)
                results[g.name][c.name].append(row)
                print(f"  repeat {rep + 1}/{repeats} {g.name:<15} {c.name:<22} {row['wall_rate']:>8.0f} {g.unit}/s "
                      f"(cpu {row['cpu_rate']:.0f}, {row['wall_s']:.1f}s, {row['own_cores']:.2f} cores)", flush=True)
    return results, settings


def _build(c: Contestant, settings: dict[str, Any]):
    """``c``'s runner; on its first build its settings are read back and compared with ``c.equals``'."""
    torch.set_num_threads(c.threads)
    runner = c.build()
    if hasattr(runner, "settings") and c.name not in settings:
        read, details = runner.settings(), getattr(runner, "details", dict)()
        diff = differences(settings[c.equals]["settings"], read, c.except_keys) if c.equals else {}
        if diff:
            raise SystemExit(f"{c.name}: settings differ from {c.equals} ([{c.equals}, {c.name}]): {diff}")
        settings[c.name] = {"settings": read, "equals": c.equals, "except": c.except_keys, "details": details}
    torch.set_num_threads(c.threads)  # in case building changed it
    return runner


def _one(g: Group, c: Contestant, settings: dict[str, Any]) -> dict[str, float]:
    with closing(_build(c, settings)) as runner:
        return runner.run(g.warmup, g.timed)


def _interleaved(g: Group, order: list[Contestant], settings: dict[str, Any]) -> list[dict[str, float]]:
    """All built and warmed up, then rounds of one iteration each, every other one in reverse order."""
    with ExitStack() as runners_open:
        runners = []
        for c in order:
            runners.append(runners_open.enter_context(closing(_build(c, settings))))
            runners[-1].iterate(g.warmup)
        gc.collect()
        spent = [[0.0, 0.0, 0.0] for _ in order]  # wall, cpu, units
        for round_ in range(g.timed):
            for i in (range(len(order)) if round_ % 2 == 0 else reversed(range(len(order)))):
                torch.set_num_threads(order[i].threads)
                start = Stamp.start()
                units = runners[i].iterate(1)
                end = Stamp.end()
                spent[i] = [spent[i][0] + end.wall - start.wall, spent[i][1] + end.cpu - start.cpu, spent[i][2] + units]
        return [span(Stamp(0.0, 0.0), Stamp(wall, cpu), units) for wall, cpu, units in spent]


def ratios(results: dict[str, dict[str, list[dict]]], specs: list[Ratio]) -> dict[str, dict[str, Any]]:
    """Every spec in every group that has both contestants: paired per repeat, then the median."""
    out = {}
    for group, per in results.items():
        for r in (r for r in specs if per.get(r.numerator) and per.get(r.denominator)):
            entry: dict[str, Any] = {"numerator": r.numerator, "denominator": r.denominator,
                                     "of": "time per unit" if r.time else "units per second"}
            for clock in ("wall", "cpu"):
                paired = [n[f"{clock}_rate"] / d[f"{clock}_rate"] for n, d in zip(per[r.numerator], per[r.denominator])]
                paired = [1 / x for x in paired] if r.time else paired
                entry[clock] = {"per_repeat": paired, "median": statistics.median(paired)}
            if r.target is not None:
                entry["target"] = f"{'<=' if r.time else '>='} {r.target}"
                median = entry["wall"]["median"]
                entry["meets_target"] = median <= r.target if r.time else median >= r.target
            out[f"{group}: {r.label}"] = entry
    return out


def print_table(groups: list[Group], results: dict, ratio_table: dict) -> None:
    print(f"\n{'group':<16}{'contestant':<23}{'thr':>4}{'median/s':>10}{'min':>9}{'max':>9}{'CPU/s':>9}"
          f"{'env %':>7}{'cores min':>10}")
    for g in groups:
        med = {name: statistics.median(r["wall_rate"] for r in rows) for name, rows in results[g.name].items()}
        for c in g.contestants:
            rows = results[g.name][c.name]
            col = {k: [r[k] for r in rows] for k in rows[0]}
            env = f"{100 * med[c.name] / med[c.floor]:.0f}" if c.floor in med else ""
            print(f"{g.name:<16}{c.name:<23}{c.threads:>4}{med[c.name]:>10.0f}{min(col['wall_rate']):>9.0f}"
                  f"{max(col['wall_rate']):>9.0f}{statistics.median(col['cpu_rate']):>9.0f}{env:>7}"
                  f"{min(col['own_cores']):>10.2f}")
    print("\n(per second: units (env steps, tokens) of whole iterations; env %: training rate / raw rate of the same"
          "\n vector env; cores min: the lowest CPU / wall time of our process tree over the repeats)\n")
    width = max((len(k) for k in ratio_table), default=0)
    for label, r in ratio_table.items():
        verdict = f"   target {r['target']}: {'OK' if r['meets_target'] else 'MISSED'}" if "target" in r else ""
        print(f"{label:<{width}}  wall {r['wall']['median']:.3f}  cpu {r['cpu']['median']:.3f}  (per repeat: "
              f"{', '.join(f'{x:.3f}' for x in r['wall']['per_repeat'])}){verdict}")


def parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, short measurements")
    p.add_argument("--repeats", type=int, default=repeats, help="measurements per contestant (the order rotates)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: bench/results/<script>[_quick].json)")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None, *positive: str) -> argparse.Namespace:
    """--quick means one repeat; ``--repeats`` and the options named in ``positive`` must be >= 1."""
    args = p.parse_args(argv)
    bad = {k: getattr(args, k) for k in ("repeats", *positive) if getattr(args, k) is not None and getattr(args, k) < 1}
    if bad:
        p.error(f"{', '.join(f'--{k}: got {v}' for k, v in bad.items())}; allowed: an integer >= 1")
    args.repeats = 1 if args.quick else args.repeats
    return args


def machine() -> dict[str, Any]:
    """The machine and the code measured: CPU, versions, symrl's commit and whether symrl/ differs from it."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        except OSError:  # no git
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "symrl")
    cpu = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("model name")]
    return {"cpu_model": cpu[0] if cpu else platform.processor(), "cpus_usable": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {name: d.version for d in metadata.distributions()
                         if (name := d.metadata["Name"].lower().replace("_", "-")) in PACKAGES},
            "symrl_git_commit": git("rev-parse", "HEAD"),
            "symrl_worktree_dirty": None if status is None else bool(status), "loadavg_at_start": os.getloadavg(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE")}}


def benchmark(script: str, doc: str, args: argparse.Namespace, groups: list[Group], specs: list[Ratio],
              extra: dict[str, Any]) -> None:
    """Measure, print the table, write the JSON (machine, method, work, settings, rows, ratios, ``extra``)."""
    report: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv], "quick": args.quick, "repeats": args.repeats,
        "machine": machine(), "method": doc.split("\n\n", 1)[1].strip() + "\n\n" + __doc__.split("\n\n", 1)[1],
        "groups": {g.name: {"warmup_iterations": g.warmup, "timed_iterations": g.timed, "unit": g.unit,
                            "contestants": {c.name: {k: v for k, v in asdict(c).items() if k != "build"}
                                            for c in g.contestants}} for g in groups}, **extra}
    results, settings = measure_all(groups, args.repeats)
    table = ratios(results, specs)
    print_table(groups, results, table)
    report.update(settings=settings, results=results, ratios=table)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    out = args.out or RESULTS / f"{script}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
