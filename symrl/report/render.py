"""Rows to Markdown tables and CSV files, numbers to text."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def number(x: float) -> str:
    """Decimals by magnitude — none from 1000 up, one from 10 up, three below (normalized scores,
    probabilities) — so a column reads alike; – for a missing value."""
    if x is None or math.isnan(x):
        return "–"
    return f"{x:.{0 if abs(x) >= 1000 else 1 if abs(x) >= 10 else 3}f}"


def interval(row: dict, name: str) -> str:
    """``point [lo, hi]`` from the keys name, name_lo, name_hi of a row."""
    if math.isnan(row[name]):
        return "–"
    return f"{number(row[name])} [{number(row[f'{name}_lo'])}, {number(row[f'{name}_hi'])}]"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """``rows`` as CSV with exactly ``columns`` (a header even when there are no rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
