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

Precedence: defaults ← preset ← base ← the run's own values ← ``key=value`` overrides given to
``symrl sweep SPEC key=value ...`` (applied to every run, as ``symrl train PRESET key=value`` does).
An axis value that is not a list is a single value, so a list-valued setting needs its own brackets
(``net.hidden: [[64, 64]]``). Relative ``out`` paths are relative to where ``symrl sweep`` runs, as
for ``symrl train``.

Every run needs its own run dir (``out/experiment/env/algo/seed<k>``): when the spec varies a
key the path does not show (noise, discretize, lr, ...) the experiment must name it, for example
``experiment: "lite-{noise}"``; otherwise the expansion fails naming the colliding runs. A run
listed twice runs once. The whole spec is validated before anything runs.

Running: finished runs (summary.json) are skipped, others train and resume from their checkpoint
(``train`` does that); what a run dir holds is read by ``symrl.run.run_state``, as ``symrl report``
reads it. A run's output is appended to ``<run_dir>/train.log``; a crash is recorded in
``<run_dir>/failed.json`` ({"error", "log"}) while the other runs go on, and a later successful
rerun removes it. The local backend runs each run in a process of its own (``python -m
symrl.sweep``), at most ``workers`` at a time, its output sent to the log by the process launch
itself: a run that kills its process (out of memory, a crash in native environment code) is that
run's recorded failure and nothing else, and Ctrl-C reaches every run, each resumable from its
checkpoint. The Ray backend (``pip install 'symrl[ray]'``) submits the same runs as tasks of one
CPU each to the cluster at ``RAY_ADDRESS``, or to a local Ray, and trains them inside the tasks;
there ``out`` must be a folder every node sees.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from symrl.config import ConfigError, TrainConfig, build_config, load_yaml, resolve, set_key
from symrl.llm.config import RLHFConfig, build_rlhf_config, resolve_rlhf
from symrl.report.render import number
from symrl.run import FAILED, LOG, RunState, atomic_write_text, record_failure, run_dir, run_state

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


def load_sweep(path: Path, overrides: dict[str, Any] | None = None) -> list[Run]:
    """The runs of the spec in ``path``, ``overrides`` (``parse_overrides``) applied to each, every one
    validated; a ConfigError names what is wrong."""
    return expand(load_spec(path), str(path), overrides)


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


def expand(spec: dict[str, Any], origin: str, overrides: dict[str, Any] | None = None) -> list[Run]:
    """Grid points (minus exclusions) then inclusions, each resolved by ``build_config`` with the
    ``overrides`` last; exclusions match the resolved settings, overrides included."""
    overrides = overrides or {}
    runs = [_make_run(spec, point, _label(point), origin, overrides) for point in _grid_points(spec, origin)]
    runs = _exclude(runs, spec.get("exclude") or [], origin)
    runs += [_make_run(spec, entry, f"include[{i}] {_label(entry)}", origin, overrides)
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


def _make_run(spec: dict[str, Any], values: dict[str, Any], label: str, origin: str,
              overrides: dict[str, Any]) -> Run:
    preset = values.get("preset", spec.get("preset"))
    settings = {**(spec.get("base") or {}), **{str(k): v for k, v in values.items() if k != "preset"}, **overrides}
    build = COMMANDS[spec.get("command", "train")]
    try:
        cfg = _format_experiment(build(preset, settings), preset)
    except ConfigError as err:
        raise ConfigError(f"{origin}: run {label}: {err}") from None
    return Run(cfg, preset, label)


def _format_experiment(cfg: TrainConfig | RLHFConfig, preset: str | None) -> TrainConfig | RLHFConfig:
    """``experiment: "lite-{noise}"`` → "lite-gaussian": runs that differ off the run-dir path
    still get their own dirs, with names that say why."""
    template = cfg.experiment
    try:
        name = template.format(preset=preset, **_template_names(cfg))
    except KeyError as err:
        raise ConfigError(f"experiment: the template {template!r} names {err}, which is not a setting; "
                          "allowed: {preset} or any key of the run's config, e.g. {noise} or {net.hidden}") from None
    except (ValueError, IndexError, AttributeError) as err:
        raise ConfigError(f"experiment: bad template {template!r} ({err})") from None
    resolver = resolve_rlhf if isinstance(cfg, RLHFConfig) else resolve
    return cfg if name == template else resolver(dataclasses.replace(cfg, experiment=name))


def _template_names(cfg: TrainConfig | RLHFConfig) -> dict[str, Any]:
    """The names a template may use: every top-level setting ({net.hidden} reaches into a block), and
    the settings of nested blocks by their own names too where that is unambiguous ({beta})."""
    top = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    nested: dict[str, list[Any]] = {}
    for block in (value for value in top.values() if dataclasses.is_dataclass(value)):
        for f in dataclasses.fields(block):
            nested.setdefault(f.name, []).append(getattr(block, f.name))
    return {**{name: values[0] for name, values in nested.items() if len(values) == 1}, **top}


def _matches(run: Run, pattern: dict[str, Any]) -> bool:
    """Whether the run has every setting of ``pattern``: setting a key (any form ``set_key`` takes, its
    value converted as on the command line) to the pattern's value leaves the run's config as it is."""
    for key, value in pattern.items():
        if key == "preset":
            if run.preset != value:
                return False
            continue
        probe = copy.deepcopy(run.cfg)
        set_key(probe, key, value)
        if probe != run.cfg:
            return False
    return True


def _exclude(runs: list[Run], patterns: list[dict[str, Any]], origin: str) -> list[Run]:
    """Drop runs whose resolved settings match every key of a pattern; a pattern that matches
    nothing is an error, because it is almost always a typo (Walker2d-v5 for Walker2d-v4)."""
    for i, pattern in enumerate(patterns):
        try:
            kept = [run for run in runs if not _matches(run, pattern)]
        except ConfigError as err:
            raise ConfigError(f"{origin}: exclude[{i}]: {err}") from None
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

def describe(state: RunState) -> str:
    """The line ``--dry-run`` shows after a run's state: its final eval, error or checkpoint."""
    status = state.status
    if status == "finished":
        return f"final eval {number(state.summary['final_eval_mean'])}"
    if status == "failed":
        log = state.failure.get("log")
        return f"{state.failure['error']}" + (f" (log: {log})" if log else "")
    if status == "partial":
        step = state.checkpoint_step
        return f"checkpoint at step {step}" if step is not None else "a checkpoint"
    return ""


# ---------------------------------------------------------------- one run

@dataclass(frozen=True)
class Outcome:
    """What became of one run; small, it crosses process boundaries (as JSON, or pickled by Ray)."""

    ok: bool
    final_eval: float | None = None
    error: str | None = None


def execute(cfg: TrainConfig | RLHFConfig) -> Outcome:
    """Train (or resume) one run in this process, printing to this process's output; an exception
    becomes a failed Outcome with the traceback printed, so the sweep goes on."""
    import torch

    if isinstance(cfg, RLHFConfig):
        from symrl.llm.trainer import train_rlhf as train
    else:
        from symrl.algos.onpolicy import train

    torch.set_num_threads(1)
    print(f"--- symrl sweep, {datetime.now():%Y-%m-%d %H:%M:%S}, pid {os.getpid()} ---", flush=True)
    try:
        summary = train(cfg, progress=False)
    except Exception as err:
        traceback.print_exc()
        return Outcome(False, error=_one_line(err))
    return Outcome(True, final_eval=summary["final_eval_mean"])


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _command(cfg: TrainConfig | RLHFConfig) -> str:
    return "rlhf" if isinstance(cfg, RLHFConfig) else "train"


def _run_main(argv: list[str]) -> int:
    """The process of one local run, ``python -m symrl.sweep JOB OUTCOME``: JOB holds the run's command
    and resolved config (JSON), the Outcome goes to OUTCOME. Output is already the run's log."""
    job_file, outcome_file = map(Path, argv)
    job = json.loads(job_file.read_text())
    try:
        outcome = execute(COMMANDS[job["command"]](None, job["config"]))
    except KeyboardInterrupt:
        return 130  # Ctrl-C: the sweep stops, the run resumes from its checkpoint next time
    atomic_write_text(outcome_file, json.dumps(dataclasses.asdict(outcome)))
    return 0 if outcome.ok else 1


# ---------------------------------------------------------------- backends

OnDone = Callable[[Run, Outcome], None]
POLL_S = 0.2  # how often the local backend looks for a run that ended; runs last seconds to days
STOP_GRACE_S = 10  # after Ctrl-C, how long a run may take to exit (closing envs) before it is killed


class _RunProcess:
    """One run training in a process of its own, its output appended to ``<run_dir>/train.log``."""

    def __init__(self, run: Run, scratch: Path):
        self.run = run
        job = scratch / "job.json"
        self.outcome_file = scratch / "outcome.json"
        scratch.mkdir()
        job.write_text(json.dumps({"command": _command(run.cfg), "config": run.cfg.to_dict()}))
        run.path.mkdir(parents=True, exist_ok=True)
        with open(run.path / LOG, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "symrl.sweep", str(job), str(self.outcome_file)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=_run_environment())

    def outcome(self) -> Outcome:
        """Once the process has exited: the run's result, or, if the process died, a failure that says how."""
        if self.outcome_file.exists():
            return Outcome(**json.loads(self.outcome_file.read_text()))
        code = self.proc.returncode
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return Outcome(False, error=f"the run's process died ({how}) before reporting a result; SIGKILL is often "
                                    "the out-of-memory killer")

    def stop(self) -> None:
        """Ctrl-C in a terminal reaches the run's process too; let it exit, or end it."""
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _run_environment() -> dict[str, str]:
    """This process's environment and module path (a spec's ``env: my_module:MyEnv-v0`` imports in the
    run's process as it did when the spec was checked here), one torch thread per run unless set."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    return env


def _next_exited(running: list[_RunProcess]) -> _RunProcess:
    while True:
        for process in running:
            if process.proc.poll() is not None:
                return process
        time.sleep(POLL_S)


def run_local(runs: list[Run], workers: int, on_done: OnDone) -> None:
    """Each run in its own process, at most ``workers`` at a time; a process that dies is that run's
    failure, and the next run starts in its place."""
    queue = deque(runs)
    running: list[_RunProcess] = []
    with tempfile.TemporaryDirectory(prefix="symrl-sweep-") as scratch:
        try:
            started = 0
            while queue or running:
                while queue and len(running) < workers:
                    running.append(_RunProcess(queue.popleft(), Path(scratch) / str(started)))
                    started += 1
                done = _next_exited(running)
                running.remove(done)
                on_done(done.run, done.outcome())
        finally:
            for process in running:
                process.stop()


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``log`` for a run trained inside a Ray task: output from C code
    and subprocesses lands there too."""
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
            for fd, kept in zip((1, 2), saved):
                os.dup2(kept, fd)
                os.close(kept)


def _execute_in(cwd: str, cfg: TrainConfig | RLHFConfig) -> Outcome:
    """A Ray task. It trains in the task's own process, so that Ray's cancellation and shutdown end the
    training, and Ray workers do not start in the driver's folder: a relative ``out`` must mean the
    same there."""
    os.chdir(cwd)
    with _output_to(run_dir(cfg) / LOG):
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
        self.resuming = {run.path for run, state in todo if state.checkpoint is not None}
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


def run_sweep(spec: Path, workers: int = 1, backend: str = "local", dry_run: bool = False,
              overrides: dict[str, Any] | None = None) -> int:
    """``symrl sweep``: 0 when every run finished, 1 when any failed; bad input raises ConfigError.
    ``overrides`` (``parse_overrides``) apply to every run, after the spec's own values."""
    if workers < 1:
        raise ConfigError(f"--workers: got {workers}, allowed: an integer >= 1")
    runs = load_sweep(spec, overrides)
    _check_run_dirs_free(runs)
    states = [run_state(run.path) for run in runs]
    if dry_run:
        print_plan(spec, runs, states)
        return 0
    execute_all = ray_backend() if backend == "ray" else run_local
    todo = [(run, state) for run, state in zip(runs, states) if state.status != "finished"]
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
        detail = describe(state)
        print(f"  {state.status:<8} {run.path}" + (f"  {detail}" if detail else ""))
    counts = {status: sum(s.status == status for s in states) for status in ("new", "partial", "finished", "failed")}
    print(", ".join(f"{n} {status}" for status, n in counts.items()) + "; nothing run (--dry-run)")


if __name__ == "__main__":
    sys.exit(_run_main(sys.argv[1:]))
