"""Aggregate statistics over runs, with rliable's definitions (Agarwal et al., 2021)."""

from __future__ import annotations

import numpy as np


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of scores (25% trimmed from each end, as
    ``scipy.stats.trim_mean(x, 0.25)`` which rliable uses)."""
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())
