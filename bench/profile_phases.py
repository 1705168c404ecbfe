"""Where a trainer's iteration spends its time, by the ``torch.profiler.record_function`` labels
symrl puts around its phases (``symrl.collect``, ``symrl.update``, ``symrl.rlhf.sample``, ...).

    python bench/profile_phases.py cartpole                  # symrl PPO on CartPole-v1, 3 iterations
    python bench/profile_phases.py halfcheetah --plain       # the plain-symrl contestant of throughput.py
    python bench/profile_phases.py atari --algo sppo         # Pong, Gymnasium sync env, 1 thread
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/profile_phases.py rlhf-small --iterations 2   # IMDB models

The trainer is built as its benchmark builds it: one warm-up iteration, then ``--iterations`` under
torch.profiler. Per label: calls, total time (nested labels included) and self time (outside every
operator and nested label: the Python in between), in seconds and shares of the profiled wall time;
then the operators with the most self time. The profiler adds microseconds per operator, so
small-MLP shares are indicative.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import closing
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def build(trainer: str, algo: str, plain: bool, iterations: int):
    if trainer == "atari":
        from bench.atari_throughput import AtariSymrl, symrl_config

        return AtariSymrl(symrl_config(algo, "sync"))
    if trainer.startswith("rlhf"):
        from bench.rlhf_throughput import DEFAULT_DATA, SymrlRLHF, model_folder, symrl_config

        return SymrlRLHF(partial(symrl_config, model_folder(trainer[5:], DEFAULT_DATA), DEFAULT_DATA, algo=algo,
                                 value_head="shared", iterations=iterations))
    from bench.throughput import BENCHES, SymrlPPO, symrl_config

    b = BENCHES[trainer]
    return SymrlPPO(symrl_config(b, algo, b.sppo_bins if algo == "sppo" else 0), plain)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trainer", choices=["cartpole", "halfcheetah", "atari", "rlhf-tiny", "rlhf-small"])
    p.add_argument("--algo", default="ppo", choices=["ppo", "sppo"], help="halfcheetah sppo runs on 11 bins")
    p.add_argument("--plain", action="store_true", help="cartpole/halfcheetah: throughput.py's plain symrl")
    p.add_argument("--iterations", type=int, default=3, help="profiled iterations (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    if args.plain and args.trainer not in ("cartpole", "halfcheetah"):
        p.error(f"--plain: got it with {args.trainer}; allowed: with cartpole or halfcheetah")
    if min(args.iterations, args.threads) < 1:
        p.error(f"--iterations, --threads: got {args.iterations}, {args.threads}; allowed: integers >= 1")
    torch.set_num_threads(args.threads)
    with closing(build(args.trainer, args.algo, args.plain, 1 + args.iterations)) as runner:
        runner.iterate(1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            units = runner.iterate(args.iterations)
            wall = (time.perf_counter() - start) * 1e6
    unit = "tokens" if args.trainer.startswith("rlhf") else "steps"
    print(f"\n{args.trainer} {args.algo}{' plain' if args.plain else ''}, {args.threads} thread(s): {args.iterations} "
          f"iteration(s) in {wall / 1e6:.2f}s ({units / wall * 1e6:.0f} {unit}/s under the profiler)\n")
    events = prof.key_averages()
    labels = [e for e in events if e.key.startswith("symrl.")]
    ops = sorted((e for e in events if e not in labels), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    for title, rows in (("label", labels), ("operator (the 12 with the most self time)", ops)):
        print(f"{title:<44}{'calls':>7}{'total s':>9}{'total %':>8}{'self s':>8}{'self %':>7}")
        for e in rows:
            total, own = e.cpu_time_total, e.self_cpu_time_total
            print(f"{e.key[:43]:<44}{e.count:>7}{total / 1e6:>9.3f}{100 * total / wall:>8.1f}{own / 1e6:>8.3f}"
                  f"{100 * own / wall:>7.1f}")
        print()


if __name__ == "__main__":
    main()
