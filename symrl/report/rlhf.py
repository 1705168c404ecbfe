"""The RLHF part of a report: training reward and KL curves, evaluation metrics, sample generations.

The shared sections (final-score tables, IQM, probability of improvement) already cover RLHF runs:
their score is the mean task reward on held-out prompts (``mean_return`` in eval.jsonl).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from symrl.report.curves import metric_curves
from symrl.report.figures import curve_figure
from symrl.report.methods import Method, finished
from symrl.report.render import markdown_table, number
from symrl.report.runs import Run

EVAL_METRICS = ("judge_vader", "kl", "ppl_reference", "distinct_2", "rouge1", "rouge2", "rougeL", "win_rate")
FIGURES = (("metrics", "reward_mean", "training reward (mean score of the iteration's samples)"),
           ("metrics", "kl", "KL(π ‖ π_ref) per sequence, training samples"),
           ("evals", "judge_vader", "VADER judge of held-out generations"))
SAMPLES = 3


def rlhf_sections(title: str, by_method: dict[Method, list[Run]], out: Path, folder: Path) -> list[str]:
    sections = []
    for source, key, label in FIGURES:
        curves = metric_curves(by_method, key, source)
        if curves:
            path = curve_figure(curves, f"{title}: {key}", label, out / folder / f"{key}.png", xlabel="iterations")
            sections.append(f"![{key}, {title}]({(folder / path.name).as_posix()})")
    rows = [[method.label, len(runs), *(_mean_std([r.evals[-1].get(k) for r in runs]) for k in EVAL_METRICS)]
            for method, runs in ((m, finished(rs)) for m, rs in by_method.items()) if runs]
    used = [i for i, key in enumerate(EVAL_METRICS) if any(row[2 + i] != "-" for row in rows)]
    sections += ["Final evaluation on held-out prompts (mean ± std over seeds): VADER is an independent judge of "
                 "reward hacking, KL is to the reference policy (per sequence), perplexity is of the generations "
                 "under the reference, distinct-2 is the share of unique bigrams.",
                 markdown_table(["method", "seeds", *(EVAL_METRICS[i] for i in used)],
                                [[row[0], row[1], *(row[2 + i] for i in used)] for row in rows]),
                 "Sample generations (the first seed's last evaluation):",
                 *(_samples(method, finished(runs)) for method, runs in by_method.items() if finished(runs))]
    return sections


def _mean_std(values: list[float | None]) -> str:
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return "-"
    std = present.std(ddof=1) if present.size > 1 else 0.0
    return f"{number(present.mean())} ± {number(std)}"


def _samples(method: Method, runs: list[Run]) -> str:
    run = min(runs, key=lambda r: r.seed if r.seed is not None else 0)
    lines = [f"**{method.label}** (seed {run.seed}, step {run.evals[-1]['step']}):"]
    for sample in run.evals[-1].get("samples", [])[:SAMPLES]:
        prompt = " ".join(sample["prompt"].split())[-80:]
        completion = " ".join(sample["completion"].split())
        lines.append(f"- [{sample['reward']:+.2f}] …{prompt} **→** {completion}")
    return "\n".join(lines)
