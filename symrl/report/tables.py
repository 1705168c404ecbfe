"""The numbers of a report, as rows ready for CSV: per-env scores, normalized aggregates across envs,
probability of improvement and advantage sign changes. Only finished runs count; a run's score is
the mean return of its last evaluation."""

from __future__ import annotations

import numpy as np

from symrl.report.atari import SCORES, atari_game, human_normalized
from symrl.report.methods import Method, comparisons, finished
from symrl.report.runs import Run
from symrl.report.stats import (bootstrap_ci, iqm, mean, median, optimality_gap, probability_of_improvement_ci,
                                ragged_matrix)

REPS, CONFIDENCE, SEED = 2000, 0.95, 0
AGGREGATES = {"iqm": iqm, "mean": mean, "median": median, "optimality_gap": optimality_gap}
ATARI, MIN_MAX = "Atari, human-normalized", "min-max normalized per env"
ByMethod = dict[Method, list[Run]]


def env_table(by_method: ByMethod) -> list[dict]:
    """Per method: finished seeds, final score mean ± sample std, IQM with its bootstrap CI over
    seeds, mean of each run's best evaluation, and the step(s) of the last evaluation."""
    rows = []
    for method, runs in by_method.items():
        done = finished(runs)
        finals = np.array([r.final_score for r in done])
        row = {"method": method.label, "seeds": len(done), "final_mean": np.nan, "final_std": np.nan,
               "iqm": np.nan, "iqm_lo": np.nan, "iqm_hi": np.nan, "best_mean": np.nan, "final_step": ""}
        if done:
            ci = bootstrap_ci(finals, iqm, REPS, CONFIDENCE, SEED)
            steps = sorted({r.final_step for r in done})
            row.update(final_mean=finals.mean(), final_std=finals.std(ddof=1) if len(done) > 1 else np.nan,
                       iqm=ci.point, iqm_lo=ci.lo, iqm_hi=ci.hi,
                       best_mean=float(np.mean([r.best_score for r in done])),
                       final_step=str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}")
        rows.append(row)
    return rows


def normalized_scores(by_env: dict[str, ByMethod]) -> tuple[dict[str, dict[str, dict[Method, np.ndarray]]], list[str]]:
    """family → env → method → normalized final scores. Atari games are human-normalized; other envs
    are min-max normalized over all finished runs of the env (worst → 0, best → 1). Also returns
    notes on envs that cannot be normalized and are left out."""
    families: dict[str, dict[str, dict[Method, np.ndarray]]] = {}
    notes = []
    for env, by_method in by_env.items():
        scores = {m: np.array([r.final_score for r in finished(runs)]) for m, runs in by_method.items()}
        scores = {m: s for m, s in scores.items() if s.size}
        if not scores:
            continue
        game = atari_game(env)
        every = np.concatenate(list(scores.values()))
        if game is not None:
            if game not in SCORES:
                notes.append(f"{env}: no random/human reference scores for {game}; left out of the Atari aggregates")
                continue
            families.setdefault(ATARI, {})[env] = {m: human_normalized(game, s) for m, s in scores.items()}
        elif every.max() == every.min():
            notes.append(f"{env}: every finished run scored {every.max():g}, so min-max normalization is "
                         "undefined; left out of the aggregates")
        else:
            low, high = every.min(), every.max()
            families.setdefault(MIN_MAX, {})[env] = {m: (s - low) / (high - low) for m, s in scores.items()}
    return families, notes


def aggregate_table(normalized: dict[str, dict[Method, np.ndarray]]) -> tuple[list[dict], list[str]]:
    """Per method, over the envs where it has finished runs: IQM, mean, median and optimality gap
    (γ = 1) of normalized scores, each with a stratified-bootstrap CI; plus notes on methods that
    miss some envs (their aggregates cover fewer tasks than the others')."""
    envs = list(normalized)
    methods = sorted({m for scores in normalized.values() for m in scores}, key=lambda m: m.sort_key)
    rows, notes = [], []
    for method in methods:
        have = [e for e in envs if method in normalized[e]]
        if len(have) < len(envs):
            notes.append(f"`{method.label}` has no finished runs on {', '.join(e for e in envs if e not in have)}: "
                         f"its aggregates cover {len(have)} of {len(envs)} envs")
        matrix = ragged_matrix([normalized[e][method] for e in have])
        row = {"method": method.label, "envs": len(have), "runs": int((~np.isnan(matrix)).sum())}
        for name, aggregate in AGGREGATES.items():
            ci = bootstrap_ci(matrix, aggregate, REPS, CONFIDENCE, SEED)
            row.update({name: ci.point, f"{name}_lo": ci.lo, f"{name}_hi": ci.hi})
        rows.append(row)
    return rows, notes


def improvement_table(by_env: dict[str, ByMethod]) -> list[dict]:
    """P(X > Y) with its CI over the envs where both X and Y have finished runs, for SPPO vs PPO,
    SPPO vs scaled PPO and SA2C vs A2C (with equal other settings, e.g. the same noise)."""
    finals = {env: {m: [r.final_score for r in finished(runs)] for m, runs in by_method.items()}
              for env, by_method in by_env.items()}
    present = {m for scores in finals.values() for m, s in scores.items() if s}
    rows = []
    for x, y in comparisons(present):
        envs = [e for e, scores in finals.items() if scores.get(x) and scores.get(y)]
        if not envs:
            continue
        ci = probability_of_improvement_ci(ragged_matrix([finals[e][x] for e in envs]),
                                           ragged_matrix([finals[e][y] for e in envs]), REPS, CONFIDENCE, SEED)
        rows.append({"x": x.label, "y": y.label, "envs": len(envs), "env_names": " ".join(envs),
                     "p": ci.point, "p_lo": ci.lo, "p_hi": ci.hi})
    return rows


def sign_change_table(by_method: ByMethod) -> list[dict]:
    """Per method: the share of minibatch advantages whose sign normalization flipped, averaged
    over each run's updates and then over seeds; also over the early and late halves of training."""
    rows = []
    for method, runs in by_method.items():
        per_run = [_sign_change_halves(r) for r in finished(runs)]
        per_run = [values for values in per_run if values is not None]
        row = {"method": method.label, "seeds": len(per_run)}
        for i, name in enumerate(("sign_change", "sign_change_early", "sign_change_late")):
            column = [values[i] for values in per_run if not np.isnan(values[i])]
            row[name] = float(np.mean(column)) if column else np.nan
        rows.append(row)
    return rows


def _sign_change_halves(run: Run) -> tuple[float, float, float] | None:
    """(all updates, updates up to half the run's last step, the updates after), or None if unlogged."""
    points = [(row["step"], row["sign_change"]) for row in run.metrics if row.get("sign_change") is not None]
    if not points:
        return None
    steps, values = np.array(points).T
    half = steps[-1] / 2
    early, late = values[steps <= half], values[steps > half]
    return (float(values.mean()), float(early.mean()) if early.size else np.nan,
            float(late.mean()) if late.size else np.nan)
