"""The ``sparsegap`` command line."""

import argparse
import csv
import json
import os
import platform
import sys
import time

from ._compare import (
    CODE_DISTRIBUTIONS,
    METHODS,
    METRICS,
    SCENARIOS,
    check_settings,
    run_comparison,
    summarise,
)

_HEADERS = {
    "latent_mcc": "latent MCC",
    "dictionary_mcc": "dict MCC",
    "normalized_mse": "NMSE",
    "mean_l0": "mean L0",
    "dead_fraction": "dead",
    "training_flops": "train FLOPs",
    "inference_flops": "infer FLOPs",
    "fit_seconds": "fit s",
    "transform_seconds": "transform s",
}


class _Parser(argparse.ArgumentParser):
    """Bad options: one line on stderr and exit code 2, never a usage dump or traceback."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _method_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or text!r}; choose from {','.join(METHODS)}"
        )
    return names


def _version():
    from . import __version__

    return __version__


def _option(setting):
    """The command-line option of a :func:`run_comparison` setting."""
    return "--" + setting.replace("_", "-")


def build_parser():
    parser = _Parser(
        prog="sparsegap",
        description=(
            "Sparse autoencoders, iterative sparse coding and the amortisation gap "
            "(scikit-learn estimators on PyTorch)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sparsegap {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    compare = commands.add_parser(
        "compare",
        help="fit every method on synthetic sparse data and print one comparison table",
        description=(
            "Fit the SAE, the MLP encoder, sparse coding, SAE+ITO and the LARS baseline on "
            "the same synthetic data (N atoms, M features, K-sparse codes; n train and n "
            "test samples) and print latent and dictionary MCC, reconstruction, sparsity, "
            "FLOPs and wall time."
        ),
    )
    compare.add_argument("--n-components", type=_positive_int, default=16, help="N (16)")
    compare.add_argument("--n-features", type=_positive_int, default=8, help="M (8)")
    compare.add_argument("--n-nonzero-coefs", type=_positive_int, default=3, help="K (3)")
    compare.add_argument(
        "--n-samples", type=_positive_int, default=1024,
        help="training samples; as many test samples (1024)",
    )  # fmt: skip
    compare.add_argument(
        "--code-distribution", choices=CODE_DISTRIBUTIONS, default="halfnormal"
    )
    compare.add_argument("--scenario", choices=SCENARIOS, default="unknown")
    compare.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="data and init seeds (0)"
    )
    compare.add_argument(
        "--methods", type=_method_list, default=list(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)}",
    )  # fmt: skip
    compare.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    compare.add_argument(
        "--output",
        help="write every run to FILE.json (with the settings, versions and wall time) or FILE.csv",
    )
    compare.add_argument(
        "--plot", help="save latent MCC against total FLOPs (log scale) to FILE.png"
    )
    compare.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check_writable(path, option, suffixes):
    if not path.lower().endswith(suffixes):
        raise ValueError(f"{option} must end with {' or '.join(suffixes)}, got {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(f"{option}: cannot write {path!r} (no writable directory {directory!r})")
    if os.path.isdir(path) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{option}: cannot write {path!r}")


def _settings(args):
    return {
        "n_components": args.n_components,
        "n_features": args.n_features,
        "n_nonzero_coefs": args.n_nonzero_coefs,
        "n_samples": args.n_samples,
        "code_distribution": args.code_distribution,
        "scenario": args.scenario,
        "seeds": list(args.seeds),
        "methods": list(args.methods),
        "device": args.device,
    }


def _check_arguments(args):
    """Every check that can fail, before any work starts (errors name the option)."""
    check_settings(**_settings(args), name=_option)
    if args.output:
        _check_writable(args.output, "--output", (".json", ".csv"))
    if args.plot:
        _check_writable(args.plot, "--plot", (".png",))
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError(
                "--plot needs matplotlib: pip install 'sklearn-sparsegap[plot]'"
            ) from None


def _format(metric, mean, std, n_seeds):
    if metric.endswith("flops"):
        text = f"{mean:.3g}"
    elif metric.endswith("seconds"):
        text = f"{mean:.2f}"
    else:
        text = f"{mean:.3f}"
    if n_seeds > 1 and not metric.endswith("flops"):
        text += f"±{std:.2f}" if metric.endswith("seconds") else f"±{std:.3f}"
    return text


def format_table(rows):
    """The comparison table as text, one line per method (mean ± std over seeds)."""
    summary = summarise(rows)
    n_seeds = len({row["seed"] for row in rows})
    header = ["method"] + [_HEADERS[m] for m in METRICS]
    lines = [
        [method] + [_format(m, *stats[m], n_seeds) for m in METRICS]
        for method, stats in summary.items()
    ]
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    render = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(l) for l in lines])


def _environment():
    import torch

    return {
        "sklearn_sparsegap": _version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _write_output(path, rows, settings, seconds):
    if path.lower().endswith(".json"):
        record = {
            "settings": settings,
            "seconds": seconds,
            "environment": _environment(),
            "runs": rows,
        }
        with open(path, "w") as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
    else:
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def load_runs(path):
    """The settings and runs of a ``sparsegap compare --output FILE.json`` record."""
    with open(path) as handle:
        return json.load(handle)


def describe(settings):
    """The first line ``sparsegap compare`` prints: the task of ``settings``."""
    return (
        f"{settings['scenario']} scenario: N={settings['n_components']} atoms, "
        f"M={settings['n_features']} features, K={settings['n_nonzero_coefs']}, "
        f"{settings['code_distribution']} codes, {settings['n_samples']} train / "
        f"{settings['n_samples']} test samples, seeds {settings['seeds']}"
    )


def plot_compute_tradeoff(rows, path):
    """Latent MCC against total (training + inference) FLOPs, one marker per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(
        [dict(r, total_flops=r["training_flops"] + r["inference_flops"]) for r in rows]
    )
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    markers = "osD^vP*X"
    for index, (method, stats) in enumerate(summary.items()):
        flops = [r["training_flops"] + r["inference_flops"] for r in rows if r["method"] == method]
        ax.errorbar(
            max(sum(flops) / len(flops), 1), stats["latent_mcc"][0], yerr=stats["latent_mcc"][1],
            marker=markers[index % len(markers)], markersize=9, linestyle="none", capsize=3,
            label=method,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("total FLOPs (training + inference on the test set)")
    ax.set_ylabel("latent MCC (test)")
    ax.set_ylim(top=1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"Compute vs recovery ({rows[0]['scenario']} scenario)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    """Run the ``sparsegap`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        _check_arguments(args)
    except ValueError as exc:
        print(f"sparsegap: error: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args)
    start = time.perf_counter()
    try:
        rows = run_comparison(**settings, progress=not args.quiet)
    except ValueError as exc:
        print(f"sparsegap: error: {exc}", file=sys.stderr)
        return 2
    print(describe(settings))
    print(format_table(rows))
    if args.output:
        _write_output(args.output, rows, settings, time.perf_counter() - start)
        print(f"wrote {args.output}")
    if args.plot:
        plot_compute_tradeoff(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
