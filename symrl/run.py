"""Run directories: config, metrics (JSONL + TensorBoard), atomic checkpoints, summary.

Layout: ``<out>/<experiment>/<env>/<algo>/seed<k>/`` with config.yaml, metrics.jsonl, eval.jsonl,
summary.json, tb/ and checkpoints/latest.pt (with latest.json, its step, for readers without torch).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from symrl.config import ConfigError, TrainConfig

CHECKPOINT = "checkpoints/latest.pt"
CHECKPOINT_STEP = "checkpoints/latest.json"  # {"step"} of latest.pt: a run's progress without loading it
FAILED = "failed.json"  # {"error", "log"}: a run that stopped on an error (symrl sweep lists it as failed)
LOG = "train.log"  # a sweep run's output


class TrainingDiverged(RuntimeError):
    """A loss term or the parameters stopped being finite: the run stops, its last good checkpoint kept."""


# The logged terms (of either trainer) whose non-finite value stops a run. The reverse term is not
# among them: its logged value overflows to inf for actions of probability below e^-88 while its
# gradient stays finite (docs/fidelity.md). A non-finite gradient shows in the parameters (symrl
# train checks them) or in the gradient norm of a step that was taken (symrl rlhf; under DeepSpeed
# the engine's norm of the previous step).
DIVERGENCE_TERMS = ("policy_loss", "value_loss", "entropy", "target_nll", "grad_norm")


def record_failure(directory: Path, error: str) -> None:
    """``failed.json``: the one-line error, and the run's log where it has one (sweep runs)."""
    log = directory / LOG
    atomic_write_text(directory / FAILED, json.dumps({"error": error, "log": str(log) if log.exists() else None}) + "\n")


def non_finite(values: dict[str, float]) -> list[str]:
    """The ``DIVERGENCE_TERMS`` of a metrics row that are present and not finite (NaN or ±inf)."""
    return [key for key in DIVERGENCE_TERMS if key in values and not math.isfinite(values[key])]


def run_dir(cfg: TrainConfig) -> Path:
    """``<out>/<experiment>/<env or task>/<algo>/seed<k>``; any config with those fields (RLHF too)."""
    env_name = cfg.subject.replace("/", "-").replace(":", "-")
    return Path(cfg.out) / cfg.experiment / env_name / cfg.loss.algo / f"seed{cfg.seed}"


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a kill never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


# torch is imported where checkpoints are read or written, so that reading logs (symrl report)
# does not pay for importing it.
def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    import torch

    atomic_write_bytes(directory / CHECKPOINT, lambda f: torch.save(state, f))
    atomic_write_text(directory / CHECKPOINT_STEP, json.dumps({"step": state.get("step")}) + "\n")


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The run's latest checkpoint, or None. Read with ``weights_only=True``: a checkpoint holds only
    tensors and plain values (dicts, lists, strings, numbers), so opening someone else's run dir
    cannot run code from it; one holding any other Python object is refused in one line."""
    import pickle

    import torch

    path = directory / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, KeyError, RuntimeError, ValueError) as err:
        raise ConfigError(_why_unloadable(path, err)) from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a symrl checkpoint (holds a {type(state).__name__}, not a dict); "
                          "start the run over with --force")
    return state


def _why_unloadable(path: Path, err: BaseException) -> str:
    """The Python objects a checkpoint names (listed by scanning it, never imported), or that it is no
    checkpoint (torn, truncated, or not written by ``torch.save``)."""
    import pickle

    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (EOFError, KeyError, RuntimeError, ValueError):
        names = []
    if names:
        return (f"{path}: refused: it holds Python objects ({', '.join(names)}) that loading would have to run "
                "as code; allowed: tensors and plain values, as symrl writes them (a checkpoint of an older "
                "symrl: start the run over with --force)")
    lines = str(err).strip().splitlines()
    if isinstance(err, pickle.UnpicklingError) or not lines:  # torch's text would suggest weights_only=False
        detail = type(err).__name__
    else:
        detail = f"{type(err).__name__}: {lines[0]}"
    return f"{path}: not a readable checkpoint ({detail}); start the run over with --force"


def read_config_and_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The saved config and latest checkpoint of a finished or interrupted run, for re-evaluation."""
    config_file = path / "config.yaml"
    if not config_file.exists():
        raise ConfigError(f"run_dir: {path} holds no config.yaml; allowed: a directory made by `symrl train` "
                          "or `symrl rlhf`")
    state = load_checkpoint(path)
    if state is None:
        raise ConfigError(f"run_dir: {path} has no checkpoint yet; train first")
    return yaml.safe_load(config_file.read_text()), state


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill mid-write
            break
    return rows


def read_summary(directory: Path) -> dict | None:
    path = directory / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class RunState:
    """What a run dir says of its run, from three small files: summary.json, failed.json and the
    checkpoint's step (``{}`` for a checkpoint written before its step was, None without one)."""

    summary: dict[str, Any] | None
    failure: dict[str, Any] | None
    checkpoint: dict[str, Any] | None

    @property
    def status(self) -> str:
        """finished, failed, partial (a checkpoint to resume from) or new. A finished summary wins over
        a failure marker: the marker is then from an earlier attempt that a later one made good."""
        if self.summary and self.summary.get("finished"):
            return "finished"
        if self.failure is not None:
            return "failed"
        return "partial" if self.checkpoint is not None else "new"

    @property
    def checkpoint_step(self) -> int | None:
        return self.checkpoint.get("step") if self.checkpoint else None


def run_state(directory: Path) -> RunState:
    """The state of the run in ``directory`` (which need not exist), read without torch."""
    failed, step = directory / FAILED, directory / CHECKPOINT_STEP
    if step.exists():
        checkpoint = json.loads(step.read_text())
    else:
        checkpoint = {} if (directory / CHECKPOINT).exists() else None
    return RunState(summary=read_summary(directory),
                    failure=json.loads(failed.read_text()) if failed.exists() else None,
                    checkpoint=checkpoint)


class RunDirectory:
    """Owns the files of one run; ``prepare`` decides between a fresh start, a resume and a refusal."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.path = run_dir(cfg)
        self._tb = None

    def prepare(self, force: bool) -> None:
        """Start over with ``force``; otherwise refuse a run dir that holds a different config."""
        if force and self.path.exists():
            shutil.rmtree(self.path)
        config_file = self.path / "config.yaml"
        if config_file.exists():
            saved = yaml.safe_load(config_file.read_text())
            current = self.cfg.to_dict()
            differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            if differing:
                raise ConfigError(
                    f"{self.path}: holds a run with a different configuration (differs in: "
                    f"{', '.join(differing)}); pass --force to start it over, or set experiment=NAME")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_file, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))

    def truncate_logs(self, step: int) -> None:
        """On resume: drop log lines written after the checkpoint (they will be written again)."""
        for name in ("metrics.jsonl", "eval.jsonl"):
            path = self.path / name
            rows = [r for r in read_jsonl(path) if r["step"] <= step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))

    def tensorboard(self, purge_step: int | None):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"), purge_step=purge_step)
        return self._tb

    def log(self, name: str, row: dict[str, Any], tb_prefix: str) -> None:
        """Append one JSON line to ``name`` and mirror its numbers to TensorBoard."""
        with open(self.path / name, "a") as f:
            f.write(json.dumps(row) + "\n")
        tb = self._tb
        if tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    tb.add_scalar(f"{tb_prefix}/{key}", value, row["step"])

    def stop_diverged(self, where: str, terms: list[str], checkpoint_step: int | None, record: bool = True) -> None:
        """Record the failure (``failed.json``; ``record``: the process that writes the run's files)
        and stop with one line; the checkpoint on disk, written before the update that diverged, is
        the last good one and stays as it is."""
        kept = (f"the last good checkpoint (step {checkpoint_step}) is kept" if checkpoint_step is not None
                else "no checkpoint had been written yet")
        message = (f"{self.path}: training diverged at {where}: {', '.join(terms)} not finite; stopped, {kept} "
                   "(lower lr, or check the rewards and max_grad_norm)")
        if record:
            record_failure(self.path, message)
        raise TrainingDiverged(message)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
