"""Sweeps: many runs from one small YAML spec, on a local process pool or on Ray.

A spec (see ``sweeps/``)::

    description: PPO vs SPPO vs scaled PPO on CartPole, with and without reward noise
    command: train                 # optional: train (default) or rlhf (RLHFConfig keys and rlhf presets)
    preset: classic-ppo            # optional base preset of every run; a "preset" axis overrides it
    base:                          # applied to every run: any config key, nested ones dotted
      total_steps: 81920
      out: runs
      experiment: "lite-{noise}"   # a template: {key} is the run's resolved setting, or {preset}
    grid:                          # a cartesian product; each axis is a config key or "preset"
      preset: [classic-ppo, classic-sppo, classic-scaled_ppo]
      seed: [0, 1, 2]
    grids:                         # optional: each entry joins `grid` (adding or replacing axes)
      - {noise: none}              # and the runs are the union of these products
      - {noise: gaussian, noise_scale: 3.0}
    exclude: [{preset: classic-sppo, seed: 2}]   # optional: drop grid runs matching every key given
    include: [{env: Acrobot-v1, seed: 0}]        # optional: extra runs (base + the mapping), as is

Precedence: defaults ← preset ← base ← the run's own values. An axis value that is not a list is a
single value, so a list-valued setting needs its own brackets (``net.hidden: [[64, 64]]``).
Relative ``out`` paths are relative to where ``symrl sweep`` runs, as for ``symrl train``.

Every run needs its own run dir (``out/experiment/env/algo/seed<k>``): when the spec varies a
key the path does not show (noise, discretize, lr, ...) the experiment must name it, for example
``experiment: "lite-{noise}"``; otherwise the expansion fails naming the colliding runs. A run
listed twice runs once. The whole spec is validated before anything runs.

Running: finished runs (summary.json) are skipped, others train and resume from their checkpoint
(``train`` does that). A run's output goes to ``<run_dir>/train.log``; a crash is recorded in
``<run_dir>/failed.json`` ({"error", "log"}) while the other runs go on, and a later successful
rerun removes it. The local backend keeps ``workers`` spawned processes; a run that kills its process (out of
memory, a crash in native environment code) is that run's recorded failure and the process is
replaced, where a ``ProcessPoolExecutor`` would break as a whole and fail every pending run.
The Ray backend (``pip install 'symrl[ray]'``) submits the same runs as tasks of one CPU each to
the cluster at ``RAY_ADDRESS``, or to a local Ray; there ``out`` must be a folder every node sees.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import yaml

from symrl.config import ConfigError, TrainConfig, build_config, known_keys, load_yaml, resolve
from symrl.llm.config import RLHFConfig, build_rlhf_config, resolve_rlhf
from symrl.report.render import number
from symrl.run import FAILED, LOG, load_checkpoint, read_summary, record_failure, run_dir

SPEC_KEYS: dict[str, type] = {"description": str, "command": str, "preset": str, "base": dict, "grid": dict, "grids": list,
                              "include": list, "exclude": list}
# how a spec's ``command`` builds the config of each run
COMMANDS: dict[str, Callable[..., TrainConfig | RLHFConfig]] = {"train": build_config, "rlhf": build_rlhf_config}


# ---------------------------------------------------------------- the spec → runs

@dataclass(frozen=True)
class Run:
    """One run of a sweep: its resolved config, and the spec values that chose it (for messages)."""

    cfg: TrainConfig | RLHFConfig
    preset: str | None
    label: str

    @property
    def path(self) -> Path:
        return run_dir(self.cfg)


def load_sweep(path: Path) -> list[Run]:
    """The runs of the spec in ``path``, every one validated; a ConfigError names what is wrong."""
    return expand(load_spec(path), str(path))


def load_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"spec: {path} does not exist")
    try:
        spec = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(err)})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: got {type(spec).__name__}, allowed: a mapping with keys {', '.join(SPEC_KEYS)}")
    for key, value in spec.items():
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(str(key), SPEC_KEYS, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{path}: unknown key '{key}'; {hint}allowed: {', '.join(SPEC_KEYS)}")
        if value is not None and not isinstance(value, SPEC_KEYS[key]):
            kind = {str: "a string", dict: "a mapping", list: "a list of mappings"}[SPEC_KEYS[key]]
            raise ConfigError(f"{path}: {key}: got {value!r}, allowed: {kind}")
    if spec.get("command", "train") not in COMMANDS:
        raise ConfigError(f"{path}: command: got {spec['command']!r}, allowed: {', '.join(COMMANDS)}")
    for key in ("grids", "include", "exclude"):
        for i, entry in enumerate(spec.get(key) or []):
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: {key}[{i}]: got {entry!r}, allowed: a mapping of key: value")
    return spec


def expand(spec: dict[str, Any], origin: str) -> list[Run]:
    """Grid points (minus exclusions) then inclusions, each resolved by ``build_config``."""
    runs = [_make_run(spec, point, _label(point), origin) for point in _grid_points(spec, origin)]
    runs = _exclude(runs, spec.get("exclude") or [], origin)
    runs += [_make_run(spec, entry, f"include[{i}] {_label(entry)}", origin)
             for i, entry in enumerate(spec.get("include") or [])]
    if not runs:
        raise ConfigError(f"{origin}: the spec has no runs; give grid, grids or include")
    return _unique(runs, origin)


def _grid_points(spec: dict[str, Any], origin: str) -> list[dict[str, Any]]:
    grid = spec.get("grid") or {}
    groups = spec.get("grids") or ([{}] if grid else [])
    points = []
    for group in groups:
        axes = {**grid, **group}
        values = [_axis_values(str(key), value, origin) for key, value in axes.items()]
        points += [dict(zip(map(str, axes), combo)) for combo in itertools.product(*values)]
    return points


def _axis_values(key: str, value: Any, origin: str) -> list[Any]:
    if not isinstance(value, list):
        return [value]
    if not value:
        raise ConfigError(f"{origin}: grid axis '{key}': got [], allowed: a value or a non-empty list of values")
    return value


def _label(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items())


def _make_run(spec: dict[str, Any], values: dict[str, Any], label: str, origin: str) -> Run:
    preset = values.get("preset", spec.get("preset"))
    overrides = {**(spec.get("base") or {}), **{str(k): v for k, v in values.items() if k != "preset"}}
    build = COMMANDS[spec.get("command", "train")]
    try:
        cfg = _format_experiment(build(preset, overrides), preset)
    except ConfigError as err:
        raise ConfigError(f"{origin}: run {label}: {err}") from None
    return Run(cfg, preset, label)


def _format_experiment(cfg: TrainConfig | RLHFConfig, preset: str | None) -> TrainConfig | RLHFConfig:
    """``experiment: "lite-{noise}"`` → "lite-gaussian": runs that differ off the run-dir path
    still get their own dirs, with names that say why."""
    template = cfg.experiment
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    try:
        name = template.format(preset=preset, **settings)
    except KeyError as err:
        raise ConfigError(f"experiment: the template {template!r} names {err}, which is not a setting; "
                          "allowed: {preset} or any key of the run's config, e.g. {noise}") from None
    except (ValueError, IndexError, AttributeError) as err:
        raise ConfigError(f"experiment: bad template {template!r} ({err})") from None
    resolver = resolve_rlhf if isinstance(cfg, RLHFConfig) else resolve
    return cfg if name == template else resolver(dataclasses.replace(cfg, experiment=name))


def _setting(run: Run, key: str) -> Any:
    if key == "preset":
        return run.preset
    value: Any = run.cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _matches(run: Run, pattern: dict[str, Any]) -> bool:
    return all(_setting(run, key) == value for key, value in pattern.items())


def _exclude(runs: list[Run], patterns: list[dict[str, Any]], origin: str) -> list[Run]:
    """Drop runs whose resolved settings match every key of a pattern; a pattern that matches
    nothing is an error, because it is almost always a typo (Walker2d-v5 for Walker2d-v4)."""
    keys = known_keys(type(runs[0].cfg)) if runs else []
    for i, pattern in enumerate(patterns):
        for key in pattern:
            if key != "preset" and key not in keys:
                raise ConfigError(f"{origin}: exclude[{i}]: unknown key '{key}'; allowed: preset or a key of the config")
        kept = [run for run in runs if not _matches(run, pattern)]
        if len(kept) == len(runs):
            raise ConfigError(f"{origin}: exclude[{i}] ({_label(pattern)}) matches no run of the grid")
        runs = kept
    return runs


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    """Nested config dicts with dotted keys, so differences name the exact field."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in _flat(value).items()})
        else:
            flat[key] = value
    return flat


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    a, b = _flat(a), _flat(b)
    return sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))


def _unique(runs: list[Run], origin: str) -> list[Run]:
    """One run per run dir: identical duplicates collapse, different configs are an error."""
    by_path: dict[Path, Run] = {}
    for run in runs:
        first = by_path.setdefault(run.path, run)
        if first is run or first.cfg == run.cfg:
            continue
        differing = _differing(first.cfg.to_dict(), run.cfg.to_dict())
        raise ConfigError(
            f"{origin}: runs ({first.label}) and ({run.label}) would share the run dir {run.path} but differ in "
            f"{', '.join(differing)}; give each its own experiment, e.g. experiment: "
            f"\"{first.cfg.experiment}-{{{differing[0]}}}\"")
    return list(by_path.values())


def _check_run_dirs_free(runs: list[Run]) -> None:
    """Fail before anything runs where a run dir holds another configuration: ``train`` would
    refuse each such run after the queue had already spent hours on the others."""
    conflicts = []
    for run in runs:
        saved = run.path / "config.yaml"
        if saved.exists():
            differing = _differing(yaml.safe_load(saved.read_text()) or {}, run.cfg.to_dict())
            if differing:
                conflicts.append(f"{run.path} (differs in: {', '.join(differing)})")
    if conflicts:
        more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
        raise ConfigError(f"{conflicts[0]}{more} holds a run with a different configuration; change the experiment "
                          "name in the spec, or delete those run dirs")


# ---------------------------------------------------------------- the state of a run on disk

@dataclass(frozen=True)
class RunState:
    """What a run dir says: finished (summary.json), failed (failed.json), partial (a checkpoint) or new."""

    summary: dict[str, Any] | None
    failure: dict[str, Any] | None
    checkpoint_step: int | None

    @property
    def finished(self) -> bool:
        return bool(self.summary and self.summary.get("finished"))

    @property
    def kind(self) -> str:
        if self.finished:
            return "finished"
        if self.failure:
            return "failed"
        return "partial" if self.checkpoint_step is not None else "new"

    def detail(self) -> str:
        if self.finished:
            return f"final eval {number(self.summary['final_eval_mean'])}"
        if self.failure:
            log = self.failure.get("log")
            return f"{self.failure['error']}" + (f" (log: {log})" if log else "")
        return f"checkpoint at step {self.checkpoint_step}" if self.checkpoint_step is not None else ""


def read_state(path: Path) -> RunState:
    summary = read_summary(path)
    failed = path / FAILED
    failure = json.loads(failed.read_text()) if failed.exists() else None
    checkpoint = None if summary and summary.get("finished") else load_checkpoint(path)
    return RunState(summary, failure, checkpoint["step"] if checkpoint else None)


# ---------------------------------------------------------------- one run, in a worker

@dataclass(frozen=True)
class Outcome:
    """What a worker reports about one run; small and picklable, it crosses process boundaries."""

    ok: bool
    final_eval: float | None = None
    error: str | None = None


def execute(cfg: TrainConfig | RLHFConfig) -> Outcome:
    """Train (or resume) one run in this process, its output appended to ``<run_dir>/train.log``;
    an exception becomes a failed Outcome with the traceback in the log, so the sweep goes on."""
    import torch

    if isinstance(cfg, RLHFConfig):
        from symrl.llm.trainer import train_rlhf as train
    else:
        from symrl.algos.onpolicy import train

    torch.set_num_threads(1)
    with _output_to(run_dir(cfg) / LOG):
        print(f"--- symrl sweep, {datetime.now():%Y-%m-%d %H:%M:%S}, pid {os.getpid()} ---", flush=True)
        try:
            summary = train(cfg, progress=False)
        except Exception as err:
            traceback.print_exc()
            return Outcome(False, error=_one_line(err))
    return Outcome(True, final_eval=summary["final_eval_mean"])


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``log``: output from C code and subprocesses lands there too."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


# ---------------------------------------------------------------- backends

OnDone = Callable[[Run, Outcome], None]


def _serve(conn: Connection) -> None:
    """A worker process: a config in, an Outcome out, until the parent sends None."""
    try:
        while (cfg := conn.recv()) is not None:
            conn.send(execute(cfg))
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches every worker; the parent says how to resume


class _Worker:
    """One spawned worker process and the run it is busy with."""

    def __init__(self, ctx: Any):
        self.conn, child = ctx.Pipe()
        # not a daemon: vec_env=async runs start subprocesses of their own
        self.proc = ctx.Process(target=_serve, args=(child,), name="symrl-sweep-worker")
        self.proc.start()
        child.close()  # so that the worker's death reads as end-of-file here
        self.run: Run | None = None

    def start(self, run: Run) -> None:
        self.run = run
        self.conn.send(run.cfg)

    def outcome(self) -> Outcome:
        """The run's result, or, if the process died, a failure that says how."""
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join()
            code = self.proc.exitcode
            how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
            return Outcome(False, error=f"the worker process died ({how}); SIGKILL is often the out-of-memory killer")

    def stop(self) -> None:
        if self.run is None and self.proc.is_alive():
            self.conn.send(None)
        self.proc.join(timeout=5)  # after Ctrl-C a busy worker is exiting too; let it clean up
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


def run_local(runs: list[Run], workers: int, on_done: OnDone) -> None:
    """``workers`` spawned processes, each training one run at a time and reused for the next; a
    worker that dies is that run's failure and is replaced, so the others go on."""
    ctx = get_context("spawn")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by torch at import in the workers
    queue = deque(runs)
    pool = [_Worker(ctx) for _ in range(min(workers, len(runs)))]
    try:
        while queue or any(w.run is not None for w in pool):
            for worker in pool:
                if worker.run is None and queue:
                    worker.start(queue.popleft())
            for conn in wait([w.conn for w in pool if w.run is not None]):
                worker = next(w for w in pool if w.conn is conn)
                outcome = worker.outcome()
                if not worker.proc.is_alive():
                    pool.remove(worker)
                    if queue:
                        pool.append(_Worker(ctx))
                on_done(worker.run, outcome)
                worker.run = None
    finally:
        for worker in pool:
            worker.stop()


def _execute_in(cwd: str, cfg: TrainConfig | RLHFConfig) -> Outcome:
    """Ray workers do not start in the driver's folder; a relative ``out`` must mean the same there."""
    os.chdir(cwd)
    return execute(cfg)


def ray_backend() -> Callable[[list[Run], int, OnDone], None]:
    """Checked before anything runs: without Ray, one line saying what to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'symrl[ray]'") from None

    def run_ray(runs: list[Run], workers: int, on_done: OnDone) -> None:
        """Ray places the tasks by CPU; ``workers`` is the local backend's."""
        ray.init(address="auto" if os.environ.get("RAY_ADDRESS") else None)
        task = ray.remote(num_cpus=1)(_execute_in)
        pending = {task.remote(os.getcwd(), run.cfg): run for run in runs}
        try:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker or its node died
                    outcome = Outcome(False, error=_one_line(err))
                on_done(run, outcome)
        finally:
            ray.shutdown()

    return run_ray


# ---------------------------------------------------------------- the command

class Progress:
    """Records each outcome on disk, prints a line per run, and counts for the summary."""

    def __init__(self, todo: list[tuple[Run, RunState]]):
        self.total = len(todo)
        self.resuming = {run.path for run, state in todo if state.checkpoint_step is not None}
        self.ran = self.resumed = 0
        self.failed: list[tuple[Run, str]] = []

    def __call__(self, run: Run, outcome: Outcome) -> None:
        failed_file = run.path / FAILED
        if outcome.ok:
            failed_file.unlink(missing_ok=True)
            if run.path in self.resuming:
                self.resumed += 1
            else:
                self.ran += 1
            result = f"final eval {number(outcome.final_eval)}"
        else:
            record_failure(run.path, outcome.error)
            self.failed.append((run, outcome.error))
            result = f"FAILED {outcome.error}"
        done = self.ran + self.resumed + len(self.failed)
        width = len(str(self.total))
        print(f"[{done:>{width}}/{self.total}] {run.path}  {result}", flush=True)


def run_sweep(spec: Path, workers: int = 1, backend: str = "local", dry_run: bool = False) -> int:
    """``symrl sweep``: 0 when every run finished, 1 when any failed; bad input raises ConfigError."""
    if workers < 1:
        raise ConfigError(f"--workers: got {workers}, allowed: an integer >= 1")
    runs = load_sweep(spec)
    _check_run_dirs_free(runs)
    states = [read_state(run.path) for run in runs]
    if dry_run:
        print_plan(spec, runs, states)
        return 0
    execute_all = ray_backend() if backend == "ray" else run_local
    todo = [(run, state) for run, state in zip(runs, states) if not state.finished]
    skipped = len(runs) - len(todo)
    progress = Progress(todo)
    print(f"sweep {spec}: {len(runs)} runs, {len(todo)} to run ({len(progress.resuming)} from a checkpoint), "
          f"{skipped} finished; backend {backend}" + (f", {workers} workers" if backend == "local" else ""),
          flush=True)
    started = time.perf_counter()
    execute_all([run for run, _ in todo], workers, progress)
    print(f"sweep: {len(runs)} runs in {time.perf_counter() - started:.0f} s: {progress.ran} ran, "
          f"{progress.resumed} resumed, {skipped} skipped (finished), {len(progress.failed)} failed")
    for run, error in progress.failed:
        print(f"  FAILED {run.path}: {error}\n         log: {run.path / LOG}")
    return 1 if progress.failed else 0


def print_plan(spec: Path, runs: list[Run], states: list[RunState]) -> None:
    """--dry-run: every run with its state on disk, and the counts."""
    print(f"sweep {spec}: {len(runs)} runs")
    for run, state in zip(runs, states):
        detail = state.detail()
        print(f"  {state.kind:<8} {run.path}" + (f"  {detail}" if detail else ""))
    counts = {kind: sum(s.kind == kind for s in states) for kind in ("new", "partial", "finished", "failed")}
    print(", ".join(f"{n} {kind}" for kind, n in counts.items()) + "; nothing run (--dry-run)")
