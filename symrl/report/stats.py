"""Aggregate statistics over runs, with rliable's definitions (Agarwal et al., 2021, "Deep
Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS).

Scores are matrices shaped (runs, tasks); a 1-D array is the runs of one task. Tasks may have
different numbers of runs: a missing run is NaN (each task needs at least one). Every aggregate
also accepts a batch (..., runs, tasks) and then returns one value per matrix, which is how the
bootstrap evaluates thousands of resamples at once. On full matrices each aggregate equals
rliable's; with unequal run counts IQM pools all runs while mean, median and optimality gap
weight tasks equally.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

Aggregate = Callable[[np.ndarray], "float | np.ndarray"]


class Interval(NamedTuple):
    """A point estimate with its bootstrap confidence interval [lo, hi]."""

    point: float
    lo: float
    hi: float


def as_matrix(scores: np.ndarray) -> np.ndarray:
    """(runs,) → (runs, 1); (..., runs, tasks) unchanged."""
    x = np.asarray(scores, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def ragged_matrix(columns: list[np.ndarray]) -> np.ndarray:
    """Per-task score lists of any lengths → a (runs, tasks) matrix, NaN where a task has fewer runs."""
    matrix = np.full((max(len(c) for c in columns), len(columns)), np.nan)
    for j, column in enumerate(columns):
        matrix[:len(column), j] = column
    return matrix


def iqm(scores: np.ndarray) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50% of all scores, ⌊n/4⌋ trimmed from each end,
    as ``scipy.stats.trim_mean(scores, 0.25, axis=None)`` which rliable uses. Robust to outlier
    runs yet, unlike the median, uses half of the data."""
    x = as_matrix(scores)
    flat = np.sort(x.reshape(*x.shape[:-2], -1), axis=-1)  # NaNs (missing runs) sort last
    n = (~np.isnan(flat)).sum(axis=-1)[..., None]
    cut = n // 4
    index = np.arange(flat.shape[-1])
    keep = (index >= cut) & (index < n - cut)
    return np.where(keep, flat, 0.0).sum(axis=-1) / keep.sum(axis=-1)


def mean(scores: np.ndarray) -> float | np.ndarray:
    """rliable's mean: the mean over tasks of each task's mean over runs."""
    return np.nanmean(as_matrix(scores), axis=-2).mean(axis=-1)


def median(scores: np.ndarray) -> float | np.ndarray:
    """rliable's median: the median over tasks of each task's mean over runs."""
    return np.median(np.nanmean(as_matrix(scores), axis=-2), axis=-1)


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float | np.ndarray:
    """rliable's optimality gap: γ − mean(min(score, γ)), how far runs fall short of the target γ
    (1 = human level for human-normalized scores); scores above γ earn nothing extra."""
    return gamma - np.nanmean(np.minimum(as_matrix(scores), gamma), axis=-2).mean(axis=-1)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float | np.ndarray:
    """P(X > Y) as rliable: per task, the Mann–Whitney U statistic over n_x·n_y — the share of
    pairs (run of X, run of Y) where X scores higher, a tie counting ½ — then the mean over tasks.
    Invariant to any increasing per-task transform, so raw scores need no normalization."""
    x, y = as_matrix(x), as_matrix(y)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y need the same tasks: got {x.shape[-1]} and {y.shape[-1]} columns")
    xs, ys = x[..., :, None, :], y[..., None, :, :]
    valid = ~(np.isnan(xs) | np.isnan(ys))
    wins = (xs > ys) + 0.5 * (xs == ys)  # comparisons with NaN are False: missing runs count nothing
    return (wins.sum(axis=(-3, -2)) / valid.sum(axis=(-3, -2))).mean(axis=-1)


def stratified_resample(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` resamples (reps, runs, tasks): each task's runs drawn with replacement from that
    task's own runs, independently per task (rliable's StratifiedBootstrap), so every resample
    keeps every task and its number of runs."""
    x = np.sort(as_matrix(scores), axis=0)  # each task's missing runs (NaN) to the bottom
    n = (~np.isnan(x)).sum(axis=0)
    if x.ndim != 2 or not n.all():
        raise ValueError(f"scores must be (runs, tasks) with at least one run per task; got shape {x.shape}")
    # ⌊u·n⌋ draws a run index per task; u·n can round up to n, hence the clip
    rows = np.minimum((rng.random((reps, *x.shape)) * n).astype(np.intp), n - 1)
    sample = x[rows, np.arange(x.shape[1])]
    sample[:, np.arange(x.shape[0])[:, None] >= n] = np.nan
    return sample


def percentile_interval(distribution: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile bootstrap interval: the (1−c)/2 and (1+c)/2 quantiles of the distribution
    (linear interpolation, as ``np.percentile`` and rliable's default ``method='percentile'``)."""
    lo, hi = np.percentile(distribution, [50 * (1 - confidence), 50 * (1 + confidence)], axis=0)
    return lo, hi


def bootstrap_distribution(scores: np.ndarray, aggregate: Aggregate, reps: int = 2000,
                           seed: int | np.random.Generator = 0) -> np.ndarray:
    """The aggregate over ``reps`` stratified resamples: the bootstrap distribution."""
    return aggregate(stratified_resample(scores, reps, np.random.default_rng(seed)))


def bootstrap_ci(scores: np.ndarray, aggregate: Aggregate = iqm, reps: int = 2000,
                 confidence: float = 0.95, seed: int | np.random.Generator = 0) -> Interval:
    """The aggregate with its stratified-bootstrap percentile confidence interval."""
    lo, hi = percentile_interval(bootstrap_distribution(scores, aggregate, reps, seed), confidence)
    return Interval(float(aggregate(scores)), float(lo), float(hi))


def probability_of_improvement_ci(x: np.ndarray, y: np.ndarray, reps: int = 2000, confidence: float = 0.95,
                                  seed: int | np.random.Generator = 0) -> Interval:
    """P(X > Y) with a percentile interval; X and Y are resampled independently, each stratified
    by task (rliable's StratifiedIndependentBootstrap)."""
    rng = np.random.default_rng(seed)
    distribution = probability_of_improvement(stratified_resample(x, reps, rng), stratified_resample(y, reps, rng))
    lo, hi = percentile_interval(distribution, confidence)
    return Interval(float(probability_of_improvement(x, y)), float(lo), float(hi))


def pointwise_mean_ci(curves: np.ndarray, reps: int = 2000, confidence: float = 0.95,
                      seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs at each column (a learning curve's steps; NaN where a run has no value) and a
    bootstrap interval of that mean, each column resampled on its own, to draw as a band."""
    x, rng = as_matrix(curves), np.random.default_rng(seed)
    bounds = []
    for start in range(0, x.shape[1], 64):  # blocks of columns keep memory at reps × runs × 64 floats
        distribution = np.nanmean(stratified_resample(x[:, start:start + 64], reps, rng), axis=-2)
        bounds.append(percentile_interval(distribution, confidence))
    return (np.nanmean(x, axis=0), np.concatenate([lo for lo, _ in bounds]),
            np.concatenate([hi for _, hi in bounds]))
