"""Every paper experiment in one run, with one profile; writes each experiment's results
folder under ``--out`` and ``run_all.json`` with the per-experiment and total wall times.

    python benchmarks/paper/run_all.py --profile quick --out docs/results
    python benchmarks/paper/run_all.py --profile quick --only zipf --out docs/results

Each experiment is a script (``benchmarks/paper/<name>.py``, also runnable alone) or a dataset
variant: experiments rerun on another code distribution of the generator (``zipf``:
Figs. 2-4 on the paper's App. D Zipf codes, one seed per part in the quick profile).
"""

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench import runner

# Dataset variants: name -> (parts: record key -> experiment script, distribution, title).
VARIANTS = {
    "zipf": (
        {
            "known_codes": "fig2_known_codes",
            "known_dictionary": "fig3_known_dictionary",
            "unknown_dictionary": "fig4_unknown_dictionary",
        },
        "zipf",
        "Zipf codes",
    ),
}
# In the order of the paper.
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


def experiment(name):
    """The experiment ``name``: its script's module, or a :class:`runner.DatasetVariant`."""
    if name in VARIANTS:
        parts, distribution, title = VARIANTS[name]
        return runner.DatasetVariant(
            name, parts, distribution=distribution, title=title, quick_seeds=1
        )
    return importlib.import_module(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=runner.PROFILES, default="quick")
    parser.add_argument("--out", type=Path, default=runner.DEFAULT_RESULTS)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=EXPERIMENTS)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures.")
    args = parser.parse_args(argv)
    seconds = {}
    start = time.perf_counter()
    for name in args.only:
        print(f"\n=== {name} ===", flush=True)
        began = time.perf_counter()
        options = ["--profile", args.profile, "--out", str(args.out / name),
                   "--n-jobs", str(args.n_jobs), "--quiet"]  # fmt: skip
        runner.main(name, experiment(name), options + (["--no-plots"] if args.no_plots else []))
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
