"""Every paper experiment in one run, with one profile; writes each experiment's results
folder under ``--out`` and ``run_all.json`` with the per-experiment and total wall times.

    python benchmarks/run_all.py --profile quick --out docs/results
"""

import argparse
import importlib
import json
import time
from pathlib import Path

from _bench import runner

# In the order of the paper (issue 6's list).
EXPERIMENTS = (
    "fig2_known_codes",
    "fig3_known_dictionary",
    "fig4_unknown_dictionary",
    "fig5_regimes",
    "fig6_pareto",
    "topk",
    "zipf",
    "large_scale",
    "decoder_analysis",
    "ablations",
    "lars_grid",
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=runner.PROFILES, default="quick")
    parser.add_argument("--out", type=Path, default=runner.DEFAULT_RESULTS)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=EXPERIMENTS)
    args = parser.parse_args(argv)
    seconds = {}
    start = time.perf_counter()
    for name in args.only:
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(name)
        began = time.perf_counter()
        runner.main(
            name, module,
            ["--profile", args.profile, "--out", str(args.out / name),
             "--n-jobs", str(args.n_jobs), "--quiet"],
        )  # fmt: skip
        seconds[name] = time.perf_counter() - began
    total = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"profile": args.profile, "seconds": seconds, "total_seconds": total,
               "environment": runner.environment()}  # fmt: skip
    (args.out / "run_all.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n" + runner.format_table(
        [{"experiment": k, "seconds": v} for k, v in seconds.items()],
        ["experiment", "seconds"], title=f"{args.profile} profile: {total:.0f} s in all",
    ))  # fmt: skip


if __name__ == "__main__":
    main()
