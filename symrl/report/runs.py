"""Reading run directories from disk, whatever state they are in: finished, unfinished or failed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from symrl.run import RunState, read_jsonl, run_state


@dataclass(frozen=True)
class Run:
    """One run directory as found: its config, logs and state (summary, failure marker, checkpoint step;
    any may be empty)."""

    path: Path
    config: dict
    evals: list[dict]
    metrics: list[dict]
    state: RunState

    @property
    def failure(self) -> dict | None:
        return self.state.failure

    @property
    def experiment(self) -> str:
        return self.config.get("experiment") or self._from_path(-4)

    @property
    def env(self) -> str:
        """The Gymnasium env id, or the task of an RLHF run."""
        return self.config.get("env") or self.config.get("task") or self._from_path(-3)

    @property
    def is_rlhf(self) -> bool:
        return "task" in self.config

    @property
    def algo(self) -> str:
        return self.config.get("algo") or self._from_path(-2)

    @property
    def seed(self) -> int | None:
        seed = self.config.get("seed")
        if seed is None and self.path.name.startswith("seed") and self.path.name[4:].isdigit():
            seed = int(self.path.name[4:])
        return seed

    @property
    def status(self) -> str:
        """'finished', 'failed' or 'unfinished' (new or partial): ``symrl sweep``'s reading of the run dir
        (``symrl.run.run_state``), new and partial runs alike left out of the statistics."""
        status = self.state.status
        return "unfinished" if status in ("new", "partial") else status

    @property
    def final_step(self) -> int | None:
        return self.evals[-1]["step"] if self.evals else None

    @property
    def final_score(self) -> float | None:
        """Mean return of the last evaluation: the run's score in every table and statistic."""
        return self.evals[-1]["mean_return"] if self.evals else None

    @property
    def best_score(self) -> float | None:
        return max(row["mean_return"] for row in self.evals) if self.evals else None

    def _from_path(self, index: int) -> str:
        # a run that failed before writing its config: fall back on <experiment>/<env>/<algo>/seed<k>
        parts = self.path.parts
        return parts[index] if len(parts) >= -index else "?"


def read_run(path: Path) -> Run:
    config = path / "config.yaml"
    return Run(
        path=path,
        config=(yaml.safe_load(config.read_text()) or {}) if config.exists() else {},
        evals=read_jsonl(path / "eval.jsonl"),
        metrics=read_jsonl(path / "metrics.jsonl"),
        state=run_state(path),
    )


def find_runs(runs_dir: Path) -> list[Run]:
    """Every folder under ``runs_dir`` holding a config.yaml or a failed.json, sorted by path."""
    found = {p.parent for name in ("config.yaml", "failed.json") for p in runs_dir.rglob(name)}
    return [read_run(path) for path in sorted(found)]
