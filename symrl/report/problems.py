"""What is wrong with the data, found so that the report lists it instead of silently dropping it."""

from __future__ import annotations

from pathlib import Path

from symrl.report.methods import Groups, finished
from symrl.report.runs import Run


def failed_runs(runs: list[Run], root: Path) -> list[str]:
    """Runs with a failure marker, with their error and log."""
    lines = []
    for run in runs:
        if run.status == "failed":
            error = " ".join(str(run.failure.get("error", "no error recorded")).split())
            error = error if len(error) <= 300 else error[:299] + "…"
            lines.append(f"`{relative(run.path, root)}`: {error} (log: `{run.failure.get('log', '-')}`)")
    return lines


def unfinished_runs(runs: list[Run], root: Path) -> list[str]:
    """Runs without a finished summary: still training, killed, or not started."""
    lines = []
    for run in runs:
        if run.status == "unfinished":
            where = (f"last evaluation at step {run.final_step}" if run.evals else "no evaluation yet")
            length = run.config.get("total_steps", run.config.get("iterations", "?"))  # RLHF: iterations
            lines.append(f"`{relative(run.path, root)}`: {where} of {length} steps")
    return lines


def missing_seeds(groups: Groups) -> list[str]:
    """Methods with fewer finished seeds on an env than the env's other methods have."""
    lines = []
    for experiment, by_env in groups.items():
        for env, by_method in by_env.items():
            seeds = {m: {r.seed for r in finished(runs)} for m, runs in by_method.items()}
            every = set().union(*seeds.values())
            for method, have in seeds.items():
                if have != every:
                    listed = f" {_seeds(have)}" if have else ""
                    lines.append(f"{experiment} / {env}: `{method.label}` has {len(have)} finished seed(s){listed}; "
                                 f"missing {_seeds(every - have)}, which other methods have")
    return lines


def unequal_lengths(groups: Groups) -> list[str]:
    """Envs whose finished runs had their last evaluation at different steps."""
    lines = []
    for experiment, by_env in groups.items():
        for env, by_method in by_env.items():
            at: dict[int, list[str]] = {}
            for method, runs in by_method.items():
                for step in sorted({r.final_step for r in finished(runs)}):
                    seeds = {r.seed for r in finished(runs) if r.final_step == step}
                    at.setdefault(step, []).append(f"{method.label} seeds {_seeds(seeds)}")
            if len(at) > 1:
                parts = "; ".join(f"{step} ({', '.join(who)})" for step, who in sorted(at.items()))
                lines.append(f"{experiment} / {env}: last evaluation at different steps: {parts}")
    return lines


def _seeds(seeds: set[int]) -> str:
    return "(" + ", ".join(str(s) for s in sorted(seeds)) + ")"


def relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
