"""What every benchmark records about the code it measured, and how it prints a ratio."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_state() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether symrl/ has uncommitted changes); (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "symrl"],
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, dirty


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def ratio_line(label: str, r: dict, width: int, wall: str = "wall_sps", cpu: str = "cpu_sps", extra: str = "") -> str:
    """One printed ratio: the paired medians of the wall and CPU rates, ``extra`` columns, every
    repeat's wall ratio, and the verdict on a target (a floor ``target_min`` or a ceiling ``target_max``)."""
    verdict = ""
    for key, sign in (("target_min", ">="), ("target_max", "<=")):
        if key in r:
            verdict = f"   target {sign} {r[key]}: {'OK' if r['meets_target'] else 'MISSED'}"
    return (f"{label:<{width}} wall {r[wall]['median_of_paired']:.3f}  cpu {r[cpu]['median_of_paired']:.3f}{extra}"
            f"  (per repeat: {', '.join(f'{x:.3f}' for x in r[wall]['per_repeat'])}){verdict}")
