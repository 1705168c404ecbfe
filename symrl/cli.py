"""Command line: ``symrl train | explain | eval | presets | sweep | report | rlhf | lm prepare``.

Bad input exits with status 2 and one line naming the field and what is allowed; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from symrl.config import (CHOICES, ConfigError, TrainConfig, build_config, describe_keys, known_keys, load_preset,
                          parse_overrides, preset_names)
from symrl.run import TrainingDiverged

PREPARE_OUT = {"imdb": "models/imdb-offline", "arithmetic": "models/arithmetic"}  # `symrl lm prepare`'s --out

EPILOG = """\
keys (key=value, nested keys dotted): {keys}

examples:
  symrl train algo=sppo env=CartPole-v1 total_steps=100000 seed=0
  symrl train --preset classic-sppo noise=reward_flip noise_scale=0.2
  symrl explain algo=sppo alpha=0.5 beta=20
  symrl eval runs/default/CartPole-v1/sppo/seed0
  symrl lm prepare --data ../shared/data/imdb_reviews_offline.jsonl.gz --out models/imdb-offline
  symrl lm prepare --task arithmetic
  symrl rlhf --preset imdb-offline-sppo seed=1
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symrl", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Robust policy-gradient RL with the symmetric RL loss (SA2C, SPPO).",
        epilog=EPILOG.format(keys=", ".join(known_keys())))
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume) one run",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=f"presets: {', '.join(preset_names())}\nkeys: {', '.join(known_keys())}")
    train.add_argument("--preset", help="start from a shipped preset (see `symrl presets`)")
    train.add_argument("--force", action="store_true", help="start over even if the run exists or finished")
    train.add_argument("--help-keys", action="store_true", help="print every key with its default, allowed values "
                       "and what it does (loss keys may be written without 'loss.')")
    train.add_argument("overrides", nargs="*", metavar="key=value")

    explain = sub.add_parser("explain", help="print the effective policy-gradient multiplier of a config")
    explain.add_argument("--preset")
    explain.add_argument("overrides", nargs="*", metavar="key=value")

    ev = sub.add_parser("eval", help="re-evaluate the latest checkpoint of a run (symrl train or symrl rlhf)")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=int, default=None,
                    help="episodes, or for an RLHF run the first N of its held-out prompts (default: the run's "
                         "eval_episodes / all its eval_prompts; RLHF evaluation always samples)")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    ev.add_argument("--seed", type=int, default=12345)

    sub.add_parser("presets", help="list the shipped presets (train and rlhf) and their sources")

    from symrl.llm.config import RLHFConfig

    rlhf = sub.add_parser("rlhf", help="RLHF on a causal language model with PPO, SPPO or scaled PPO",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=f"presets: {', '.join(preset_names('rlhf'))}\n"
                                 f"keys: {', '.join(known_keys(RLHFConfig))}")
    rlhf.add_argument("--preset", help="start from a shipped RLHF preset (see `symrl presets`)")
    rlhf.add_argument("--force", action="store_true", help="start over even if the run exists or finished")
    rlhf.add_argument("--help-keys", action="store_true", help="print every key with its default, allowed values "
                      "and what it does (loss keys may be written without 'loss.')")
    rlhf.add_argument("overrides", nargs="*", metavar="key=value")

    lm = sub.add_parser("lm", help="language-model utilities")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True)
    prepare = lm_sub.add_parser("prepare", help="offline: train a BPE tokenizer, a small GPT-2 and a sentiment "
                                "classifier on a review corpus, for the imdb-offline-* presets; or (--task "
                                "arithmetic) a small GPT-2 on worked arithmetic problems")
    prepare.add_argument("--task", choices=PREPARE_OUT, default="imdb",
                         help="imdb: the review models, from --data (default); arithmetic: the arithmetic policy "
                              "and its held-out accuracy, no data")
    prepare.add_argument("--data", help="imdb: a JSONL(.gz) of {text, label} reviews (required)")
    prepare.add_argument("--out", help="folder for the models (default: models/imdb-offline, or "
                                       "models/arithmetic for --task arithmetic)")
    prepare.add_argument("--size", default="small", help="model size: tiny (seconds), small (default; minutes on "
                         "2 CPU cores) or, for imdb, medium (a GPU)")
    prepare.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the size's)")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--force", action="store_true", help="rebuild even if OUT holds a finished preparation")

    sweep = sub.add_parser("sweep", help="run a grid of runs (envs × algos × seeds × any key) from a YAML spec")
    sweep.add_argument("spec", help="a sweep spec, e.g. sweeps/lite.yaml")
    sweep.add_argument("--workers", type=int, default=1, help="local worker processes (default: 1)")
    sweep.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local process pool, or Ray (pip install 'symrl[ray]') for clusters")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    sweep.add_argument("overrides", nargs="*", metavar="key=value",
                       help="applied to every run, after the spec's own values (as `symrl train`)")

    report = sub.add_parser("report", help="tables, statistics and figures from the runs under a folder")
    report.add_argument("runs_dir", help="a folder holding run directories, e.g. runs/lite")
    report.add_argument("--out", default=None, help="where report.md and figures go (default: RUNS_DIR/report)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes key=value only before the first option that follows a positional; the rest of
    # them (`symrl sweep SPEC --workers 2 seed=1`) come back here, in order
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"symrl: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"symrl: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("symrl: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130


def _train(args) -> int:
    from symrl.algos.onpolicy import train

    if args.help_keys:
        print(describe_keys(TrainConfig, CHOICES))
        return 0
    return _run(build_config(args.preset, parse_overrides(args.overrides)), train, args.force)


def _run(cfg, train, force: bool) -> int:
    """One run of `symrl train` or `symrl rlhf`: train or resume it, print its summary and folder."""
    from symrl.run import run_dir

    summary = train(cfg, force=force)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"run: {run_dir(cfg)}")
    return 0


def _explain(args) -> int:
    from symrl.losses import effective_pg_multiplier

    overrides = parse_overrides(args.overrides)
    if args.preset in preset_names("rlhf"):  # a language-model preset: the same loss block
        from symrl.llm.config import build_rlhf_config

        cfg = build_rlhf_config(args.preset, overrides)
    else:
        cfg = build_config(args.preset, overrides)
    loss = cfg.loss
    m = effective_pg_multiplier(loss.algo, loss.alpha, loss.beta, loss.Z, loss.reverse_kind)
    print(f"algo={loss.algo} alpha={loss.alpha:g} beta={loss.beta:g} Z={loss.Z:g} reverse_kind={loss.reverse_kind}")
    print(f"effective policy-gradient multiplier: {m.formula}")
    print(m.explanation)
    return 0


def _eval(args) -> int:
    import yaml

    path = Path(args.run_dir)
    config = path / "config.yaml"
    if config.exists() and "task" in (yaml.safe_load(config.read_text()) or {}):  # RLHF: prompts, not episodes
        from symrl.llm.evaluate import evaluate_rlhf_run

        row = evaluate_rlhf_run(path, args.episodes)
    else:
        from symrl.algos.onpolicy import evaluate_run

        row = evaluate_run(path, args.episodes, not args.stochastic, args.seed)
    print(json.dumps(row, indent=2))
    return 0


def _presets(args) -> int:
    for kind, title in (("train", "symrl train --preset NAME"), ("rlhf", "symrl rlhf --preset NAME")):
        print(f"# {title}")
        names = preset_names(kind)
        width = max(map(len, names))
        for name in names:
            preset = load_preset(name, kind)
            print(f"{name:{width}s} {preset.get('description', '')}")
            print(f"{'':{width}s} source: {preset.get('source', '-')}")
    return 0


def _rlhf(args) -> int:
    from symrl.llm import config as rlhf_config
    from symrl.llm.trainer import train_rlhf

    if args.help_keys:
        print(describe_keys(rlhf_config.RLHFConfig, rlhf_config.CHOICES))
        return 0
    return _run(rlhf_config.build_rlhf_config(args.preset, parse_overrides(args.overrides)), train_rlhf, args.force)


def _lm(args) -> int:
    from symrl.llm.prepare import prepare_arithmetic, prepare_from_file

    out = Path(args.out or PREPARE_OUT[args.task])
    options = {"size": args.size, "seed": args.seed, "steps": args.steps, "force": args.force}
    if args.task == "arithmetic":
        if args.data is not None:
            raise ConfigError(f"--data: got {args.data!r} with --task arithmetic, which generates its problems; "
                              "allowed: no --data")
        info = prepare_arithmetic(out, **options)
    elif args.data is None:
        raise ConfigError("--data: required for --task imdb; allowed: a JSONL(.gz) of {text, label} reviews, "
                          "e.g. ../shared/data/imdb_reviews_offline.jsonl.gz")
    else:
        info = prepare_from_file(args.data, out, **options)
    print(json.dumps(info, indent=2, default=str))
    return 0


def _sweep(args) -> int:
    from symrl.sweep import run_sweep

    return run_sweep(Path(args.spec), workers=args.workers, backend=args.backend, dry_run=args.dry_run,
                     overrides=parse_overrides(args.overrides))


def _report(args) -> int:
    from symrl.report import build_report

    runs_dir = Path(args.runs_dir)
    out = build_report(runs_dir, Path(args.out) if args.out else runs_dir / "report", echo=print)
    print(f"\nreport: {out}")
    return 0


COMMANDS = {"train": _train, "explain": _explain, "eval": _eval, "presets": _presets,
            "sweep": _sweep, "report": _report, "rlhf": _rlhf, "lm": _lm}

if __name__ == "__main__":
    sys.exit(main())
