"""``symrl report RUNS_DIR``: runs on disk → report.md with tables, statistics, figures and every
data problem found, plus the same tables as CSV."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from symrl.config import ConfigError
from symrl.report import problems
from symrl.report.curves import learning_curves, metric_curves
from symrl.report.figures import curve_figure
from symrl.report.methods import Groups, Method, group_runs
from symrl.report.render import interval, markdown_table, number, write_csv
from symrl.report.rlhf import rlhf_sections
from symrl.report.runs import Run, find_runs
from symrl.report.tables import (ATARI, CONFIDENCE, MIN_MAX, REPS, SEED, aggregate_table, env_table,
                                 improvement_table, normalized_scores, sign_change_table)

COLUMNS = {
    "per_env": ["experiment", "env", "method", "seeds", "final_mean", "final_std", "iqm", "iqm_lo", "iqm_hi",
                "best_mean", "final_step"],
    "aggregates": ["experiment", "normalization", "method", "envs", "runs", "iqm", "iqm_lo", "iqm_hi", "mean",
                   "mean_lo", "mean_hi", "median", "median_lo", "median_hi", "optimality_gap",
                   "optimality_gap_lo", "optimality_gap_hi"],
    "improvement": ["experiment", "x", "y", "envs", "env_names", "p", "p_lo", "p_hi"],
    "sign_change": ["experiment", "env", "method", "seeds", "sign_change", "sign_change_early", "sign_change_late"],
    "runs": ["path", "experiment", "env", "algo", "method", "seed", "status", "final_step", "final_score",
             "best_score"],
}
NORMALIZATION_NOTE = {
    ATARI: "(score − random) / (human − random) with the Atari-57 reference scores in `symrl/report/atari.py`: "
           "0 = random play, 1 = human; optimality gap with γ = 1 (human level).",
    MIN_MAX: "**these envs are min-max normalized**: each env's final scores are rescaled to [0, 1] by the lowest "
             "and the highest final score among all finished runs of that env in this report, so the numbers "
             "depend on which runs the report holds and compare methods only within it; optimality gap with "
             "γ = 1 (the best run of the env).",
}


def build_report(runs_dir: Path, out: Path, echo: Callable[[str], object] | None = None) -> Path:
    """Read every run under ``runs_dir``, write report.md, CSV tables and PNG figures to ``out``;
    returns the path of report.md. ``echo`` (``symrl report`` passes print) gets the short version:
    the run counts and each env's final-eval table."""
    runs_dir, out = Path(runs_dir), Path(out)
    if not runs_dir.is_dir():
        raise ConfigError(f"runs_dir: '{runs_dir}' is not a folder; allowed: a folder holding run directories")
    runs = find_runs(runs_dir)
    groups = group_runs(runs)
    tables: dict[str, list[dict]] = {name: [] for name in COLUMNS}
    aggregate_notes: list[str] = []
    body = [section for experiment, by_env in groups.items()
            for section in _experiment(experiment, by_env, out, tables, aggregate_notes)]
    tables["runs"] = _run_rows(runs, groups, runs_dir)
    files = [write_csv(out / f"{name}.csv", rows, COLUMNS[name]) for name, rows in tables.items()]

    text = "\n\n".join([
        f"# symrl report: `{runs_dir}`",
        f"Produced by `symrl report {runs_dir} --out {out}`.",
        _counts(runs),
        "How to read it: a run's score is the mean return of its last evaluation (`eval.jsonl`); ± is the "
        f"sample standard deviation over seeds; [lo, hi] is a {CONFIDENCE:.0%} percentile stratified-bootstrap "
        f"confidence interval ({REPS} resamples of runs within each env, seed {SEED}; Agarwal et al. 2021, "
        "\"Deep RL at the Edge of the Statistical Precipice\"); IQM is the interquartile mean. A learning curve "
        "averages, at each evaluation step, the runs that evaluated there. Sign change is "
        "`sign_change` of metrics.jsonl, the share of minibatch advantages whose sign per-minibatch normalization "
        "flipped, averaged over updates and then seeds, also over each half of training.",
        "## Data problems",
        _problems(runs, groups, runs_dir, aggregate_notes),
        *body,
        "## Files",
        "\n".join(f"- [{f.name}]({f.name})" for f in files),
    ]) + "\n"
    report = out / "report.md"
    report.write_text(text)
    if echo is not None:
        echo(_short(runs, tables["per_env"]))
    return report


def _short(runs: list[Run], per_env: list[dict]) -> str:
    sections = [_counts(runs)]
    for experiment, env in dict.fromkeys((r["experiment"], r["env"]) for r in per_env):
        rows = [r for r in per_env if (r["experiment"], r["env"]) == (experiment, env)]
        sections.append(f"{experiment} / {env}\n" + markdown_table(
            ["method", "seeds", "final eval mean ± std", f"IQM [{CONFIDENCE:.0%} CI]"],
            [[r["method"], r["seeds"], f"{number(r['final_mean'])} ± {number(r['final_std'])}", interval(r, "iqm")]
             for r in rows]))
    return "\n\n".join(sections)


def _counts(runs: list[Run]) -> str:
    n = {s: sum(r.status == s for r in runs) for s in ("finished", "unfinished", "failed")}
    return (f"Runs read: {len(runs)} ({n['finished']} finished, {n['unfinished']} not finished, {n['failed']} failed). "
            f"Tables, statistics and figures use the {n['finished']} finished runs; every other run is listed "
            "under Data problems.")


def _problems(runs: list[Run], groups: Groups, root: Path, aggregate_notes: list[str]) -> str:
    found = {
        "Failed runs": problems.failed_runs(runs, root),
        "Not finished (left out)": problems.unfinished_runs(runs, root),
        "Missing seeds": problems.missing_seeds(groups),
        "Unequal run lengths": problems.unequal_lengths(groups),
        "Left out of or partial in the aggregates": aggregate_notes,
    }
    if not any(found.values()):
        return "None found: every run finished, every method has the same seeds and every run the same length."
    return "\n\n".join(f"**{kind}** ({len(lines)}):\n" + "\n".join(f"- {line}" for line in lines)
                       for kind, lines in found.items() if lines)


def _experiment(experiment: str, by_env: dict[str, dict[Method, list[Run]]], out: Path,
                tables: dict[str, list[dict]], notes: list[str]) -> list[str]:
    sections = [f"## Experiment `{experiment}`"]
    for env, by_method in by_env.items():
        sections += _env(experiment, env, by_method, out, tables)

    families, normalization_notes = normalized_scores(by_env)
    notes += [f"{experiment} / {note}" for note in normalization_notes]
    sections.append("### Aggregates across envs")
    if not families:
        sections.append("No env could be normalized (see Data problems).")
    for family, normalized in families.items():
        rows, method_notes = aggregate_table(normalized)
        notes += [f"{experiment} / {family}: {note}" for note in method_notes]
        tables["aggregates"] += [{"experiment": experiment, "normalization": family, **row} for row in rows]
        sections += [f"**{family}** over {len(normalized)} env(s) ({', '.join(normalized)}): "
                     + NORMALIZATION_NOTE[family],
                     markdown_table(["method", "envs", "runs", "IQM", "mean", "median", "optimality gap"],
                                    [[r["method"], r["envs"], r["runs"], *(interval(r, name) for name in
                                      ("iqm", "mean", "median", "optimality_gap"))] for r in rows])]

    rows = improvement_table(by_env)
    tables["improvement"] += [{"experiment": experiment, **row} for row in rows]
    sections += ["### Probability of improvement",
                 "P(X > Y): the probability that a run of X scores higher than a run of Y on an env drawn at "
                 "random from those both ran (ties count ½; 0.5 = no difference), from raw final scores, with "
                 "its CI (X and Y resampled independently within each env). scaled_ppo is PPO with SPPO's "
                 "policy-gradient weight: SPPO vs scaled_ppo is what the reverse term adds beyond re-weighting."]
    sections.append(markdown_table(["X", "Y", "envs", "P(X > Y)"],
                                   [[r["x"], r["y"], r["envs"], interval(r, "p")] for r in rows])
                    if rows else "No pair (SPPO vs PPO, SPPO vs scaled PPO, SA2C vs A2C) with finished runs on a "
                                 "common env and equal other settings.")
    return sections


def _env(experiment: str, env: str, by_method: dict[Method, list[Run]], out: Path,
         tables: dict[str, list[dict]]) -> list[str]:
    rows = env_table(by_method)
    tables["per_env"] += [{"experiment": experiment, "env": env, **row} for row in rows]
    signs = sign_change_table(by_method)
    tables["sign_change"] += [{"experiment": experiment, "env": env, **row} for row in signs]
    folder = Path("figures") / experiment / env.replace("/", "-").replace(":", "-")
    rlhf = any(r.is_rlhf for runs in by_method.values() for r in runs)
    xlabel = "iterations" if rlhf else "environment steps"
    score = "held-out reward" if rlhf else "eval return"
    curve_figure(learning_curves(by_method, REPS, CONFIDENCE, SEED), f"{experiment} / {env}",
                 f"{score}, mean over seeds ({CONFIDENCE:.0%} CI band)", out / folder / "learning_curves.png", xlabel)
    curve_figure(metric_curves(by_method, "sign_change"), f"{experiment} / {env}: advantage sign changes",
                 "share of advantages flipped by normalization", out / folder / "sign_change.png", xlabel)
    return [
        f"### {env}",
        markdown_table(["method", "seeds", "final eval mean ± std", f"IQM [{CONFIDENCE:.0%} CI]", "best eval mean",
                        "last eval step"],
                       [[r["method"], r["seeds"], f"{number(r['final_mean'])} ± {number(r['final_std'])}",
                         interval(r, "iqm"), number(r["best_mean"]), r["final_step"]] for r in rows]),
        f"![learning curves, {env}]({folder.as_posix()}/learning_curves.png)",
        "Advantage sign changes:",
        markdown_table(["method", "seeds", "mean sign change", "early half", "late half"],
                       [[r["method"], r["seeds"], number(r["sign_change"]), number(r["sign_change_early"]),
                         number(r["sign_change_late"])] for r in signs]),
        f"![advantage sign changes, {env}]({folder.as_posix()}/sign_change.png)",
        *(rlhf_sections(f"{experiment} / {env}", by_method, out, folder) if rlhf else []),
    ]


def _run_rows(runs: list[Run], groups: Groups, root: Path) -> list[dict]:
    """One CSV row per run found, any status: the raw material of every table."""
    method = {r.path: m.label for by_env in groups.values() for by_method in by_env.values()
              for m, rs in by_method.items() for r in rs}
    return [{"path": problems.relative(r.path, root), "experiment": r.experiment, "env": r.env, "algo": r.algo,
             "method": method.get(r.path, ""), "seed": r.seed, "status": r.status, "final_step": r.final_step,
             "final_score": r.final_score, "best_score": r.best_score} for r in runs]
