"""Curves over training steps, averaged over a method's finished runs, ready to draw."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from symrl.report.methods import Method, finished
from symrl.report.runs import Run
from symrl.report.stats import pointwise_mean_ci


@dataclass(frozen=True)
class Curve:
    """Mean over runs against env steps, with an optional confidence band [lo, hi]."""

    label: str
    steps: np.ndarray
    mean: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


def learning_curves(by_method: dict[Method, list[Run]], reps: int, confidence: float, seed: int) -> list[Curve]:
    """Mean evaluation return over seeds at each evaluation step, with a bootstrap CI band."""
    curves = []
    for method, runs in by_method.items():
        done = finished(runs)
        if done:
            steps, matrix = _aligned([[(row["step"], row["mean_return"]) for row in r.evals] for r in done])
            mean, lo, hi = pointwise_mean_ci(matrix, reps, confidence, seed)
            curves.append(Curve(f"{method.label} ({len(done)} seeds)", steps, mean, lo, hi))
    return curves


def metric_curves(by_method: dict[Method, list[Run]], key: str, source: str = "metrics") -> list[Curve]:
    """Mean over seeds of one column of metrics.jsonl (``source="metrics"``) or eval.jsonl
    (``"evals"``) at each logged step (no band: updates are many)."""
    curves = []
    for method, runs in by_method.items():
        points = [[(row["step"], row[key]) for row in getattr(r, source) if row.get(key) is not None]
                  for r in finished(runs)]
        points = [p for p in points if p]
        if points:
            steps, matrix = _aligned(points)
            curves.append(Curve(f"{method.label} ({len(points)} seeds)", steps, np.nanmean(matrix, axis=0)))
    return curves


def _aligned(runs: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Every step any run logged, and a (runs, steps) matrix with NaN where a run has no value."""
    steps = np.array(sorted({step for points in runs for step, _ in points}))
    column = {step: j for j, step in enumerate(steps)}
    matrix = np.full((len(runs), len(steps)), np.nan)
    for i, points in enumerate(runs):
        for step, value in points:
            matrix[i, column[step]] = value
    return steps, matrix
