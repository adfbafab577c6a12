"""MLPEncoder's default learning rate against the hidden width (issue 27, item 3).

``MLPEncoder(hidden_layer_sizes=(H,))`` at the library's defaults (``learning_rate=None``,
``max_iter=None``: 500 full-batch steps on known codes, 1,500 on reconstruction), on
three of the paper's N=16, M=8, K=3 tasks with 1,024 training and 1,024 test samples:

- ``known-codes`` (Fig. 2's data, seed 20240625 + seed): ``target="codes"``;
- ``unknown`` (Fig. 4's data, seed 20240926 + seed): dictionary and codes learned by
  reconstruction;
- ``known-dictionary`` (Fig. 3's scenario: the true dictionary given, the encoder trained
  by reconstruction), run on seeds 3-5 (data 20240628-30), which nothing else here uses.

The width rule of ``learning_rate=None`` was chosen on the first two; the third checks
it. Each row is one fit: the learning rate it ran at (``learning_rate_``, given or
resolved; ``default_rate`` says whether this checkout's ``learning_rate=None`` gives it),
test latent MCC (Hungarian; on known codes also the authors' index-matched correlation,
on ``unknown`` the dictionary MCC), the optimiser steps and the fit's wall time (a shared
machine: seconds only compare within a run). ``--learning-rates`` takes ``none`` (the
default rule) and explicit rates, e.g. ``0.006``, the width-blind default before the
rule. ``--all`` runs every fit of the record (about 50 fits; an H=1,024 fit takes 1-2 min
on known codes and 2-6 min on reconstruction on 2 shared cores, the whole record about
1.5 h); it is the list ``RECORD`` below, one command per entry, e.g.::

    python benchmarks/paper/mlp_width.py --task known-codes --widths 1024 \\
        --seeds 0 1 2 --learning-rates none 0.003 0.006
    python benchmarks/paper/mlp_width.py --task known-dictionary --widths 64 256 \\
        --seeds 3 4 5

Rows are merged, by (task, H, seed, rate), into ``docs/results/mlp_width.json``
(``--output``), so the commands build one record.
"""

import argparse
import json
import sys
from pathlib import Path

import threadpoolctl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.datasets import SEED_KNOWN, SEED_UNKNOWN, split_task
from _bench.methods import build
from _bench.objective import fit_and_measure
from _bench.paths import ROOT, recorded_path, recorded_threadpools
from _bench.runner import environment
from sklearn_sparsegap import MLPEncoder

TASKS = {"known-codes": SEED_KNOWN, "unknown": SEED_UNKNOWN, "known-dictionary": SEED_KNOWN}
OUTPUT = ROOT / "docs" / "results" / "mlp_width.json"
# The fits of the record: (task, widths, seeds, learning rates; None is the default rule).
_SWEEP = [0.012, 0.003, 0.0015, 0.00075]
RECORD = [
    ("known-codes", [64, 256], [0, 1, 2], [None, *_SWEEP]),
    ("known-codes", [512], [0, 1, 2], [None, 0.006, 0.00424]),
    ("known-codes", [1024], [0, 1, 2], [None, 0.003, 0.006]),
    ("known-codes", [2048], [0], [None, 0.003]),
    ("unknown", [64, 256], [0, 1, 2], [None]),
    ("unknown", [1024], [0, 1, 2], [None, 0.003, 0.006]),
    ("known-dictionary", [64, 256], [3, 4, 5], [None]),
    ("known-dictionary", [1024], [3, 4, 5], [None, 0.003, 0.006]),
]


def _rate(text):
    return None if text.lower() == "none" else float(text)


def run_one(task_name, width, seed, learning_rate):
    """One fit of the library MLP at width ``width``: its row of the table."""
    task = split_task({"n_train": 1024}, TASKS[task_name], seed)
    known_codes = task_name == "known-codes"
    estimator = build(
        "mlp", task, scenario=task_name, flavour="library", seed=seed,
        hidden_layer_sizes=(width,), learning_rate=learning_rate, device="cpu",
    )  # fmt: skip
    record = fit_and_measure(estimator, task, known_codes=known_codes)
    row = {
        "task": task_name, "H": width, "seed": seed, "data_seed": task.seed,
        "learning_rate_": estimator.learning_rate_,
        "steps": int(estimator.n_iter_) * -(-1024 // estimator.batch_size_),
        "latent_mcc": record["latent_mcc"], "fit_seconds": record["fit_seconds"],
    }  # fmt: skip
    if known_codes:
        row["matched_corr"] = record["matched_corr"]
    elif task_name == "unknown":
        row["dictionary_mcc"] = record["dictionary_mcc"]
    return row


def default_rate(width):
    """The full-batch rate ``learning_rate=None`` resolves to at hidden width ``width``."""
    return MLPEncoder(hidden_layer_sizes=(width,))._default_full_batch_learning_rate()


def _key(row):
    # A fit is its task, width, seed and the rate it ran at, given or resolved.
    return (row["task"], row["H"], row["seed"], f"{row['learning_rate_']:.6g}")


def _write(output, rows, pools):
    for row in rows.values():
        # Whether this checkout's learning_rate=None gives the row's rate (old rows too).
        row["default_rate"] = row["learning_rate_"] == default_rate(row["H"])
    record = {
        "experiment": "mlp_width",
        "description": __doc__.split("\n\n")[0],
        "rows": sorted(rows.values(), key=lambda r: (r["task"], r["H"], -r["learning_rate_"],
                                                     r["seed"])),
        "environment": {**environment(), "threadpools": pools},
        "note": "fit_seconds on a 2-core machine shared with other jobs: compare within a "
                "run only",
    }  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {recorded_path(output)}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="known-codes")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--learning-rates", type=_rate, nargs="+", default=[None],
                        help="'none' (the default rule) and/or explicit rates")
    parser.add_argument("--all", action="store_true",
                        help="every fit of the record (RECORD), instead of the options above")
    parser.add_argument("--output", default=str(OUTPUT), help="JSON record (rows are merged)")
    args = parser.parse_args(argv)
    pools = recorded_threadpools(threadpoolctl.threadpool_info())
    for pool in pools:
        print(f"threadpool: {pool.get('internal_api')} {pool.get('version')} "
              f"threads={pool.get('num_threads')}", flush=True)  # fmt: skip

    output = Path(args.output)
    record = json.loads(output.read_text()) if output.exists() else {"rows": []}
    rows = {_key(row): row for row in record["rows"]}
    runs = RECORD if args.all else [(args.task, args.widths, args.seeds, args.learning_rates)]
    print(f"{'task':16} {'H':>5} {'seed':>4} {'rate':>8} {'default':>7} {'MCC':>6} "
          f"{'steps':>5} {'s':>6}", flush=True)  # fmt: skip
    groups = {}
    for task, widths, seeds, learning_rates in runs:
        for width in widths:
            for learning_rate in learning_rates:
                for seed in seeds:
                    row = run_one(task, width, seed, learning_rate)
                    rows[_key(row)] = row
                    groups.setdefault((task, width, row["learning_rate_"]), []).append(row)
                    default = "yes" if row["learning_rate_"] == default_rate(width) else ""
                    print(f"{task:16} {width:5d} {seed:4d} {row['learning_rate_']:8.2e} "
                          f"{default:>7} {row['latent_mcc']:6.3f} {row['steps']:5d} "
                          f"{row['fit_seconds']:6.1f}", flush=True)  # fmt: skip
        _write(output, rows, pools)

    print("mean over seeds (this run):")
    for (task, width, rate), group in groups.items():
        mccs = [row["latent_mcc"] for row in group]
        default = " (default)" if rate == default_rate(width) else ""
        print(f"  {task:16} H={width:<5d} rate {rate:.2e}{default:10}  MCC "
              f"{sum(mccs) / len(mccs):.3f} (min {min(mccs):.3f}, {len(mccs)} seeds)",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
