"""Drawing curves to PNG with matplotlib's object API: no pyplot, so no global backend is touched."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from symrl.report.curves import Curve


def curve_figure(curves: list[Curve], title: str, ylabel: str, path: Path, xlabel: str = "environment steps") -> Path:
    """One line per curve (its band shaded), steps on x; written to ``path``."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for curve in curves:
        (line,) = ax.plot(curve.steps, curve.mean, label=curve.label, marker="." if len(curve.steps) < 30 else None)
        if curve.lo is not None:
            ax.fill_between(curve.steps, curve.lo, curve.hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
