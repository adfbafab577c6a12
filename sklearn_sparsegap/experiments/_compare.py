"""The comparison behind ``sparsegap compare``: every method on the same data, one table."""

import time

import numpy as np
from tqdm.auto import tqdm

from .._datasets import make_sparse_dictionary_data
from .._metrics import dead_fraction, dictionary_mcc, mean_corr_coef, mean_l0, normalized_mse
from ._methods import COMPARE_METHODS, SCENARIOS, build_method, supports

METHODS = COMPARE_METHODS
CODE_DISTRIBUTIONS = ("halfnormal", "normal", "zipf")
METRICS = (
    "latent_mcc",
    "dictionary_mcc",
    "normalized_mse",
    "mean_l0",
    "dead_fraction",
    "training_flops",
    "inference_flops",
    "fit_seconds",
    "transform_seconds",
)
# Seeds go to numpy's legacy RandomState, which takes 32-bit unsigned integers.
_MAX_SEED = 2**32 - 1


def _argument(name):
    return name


def check_settings(
    *,
    n_components,
    n_features,
    n_nonzero_coefs,
    n_samples,
    code_distribution,
    scenario,
    seeds,
    methods,
    device,
    name=_argument,
):
    """Validate the settings of :func:`run_comparison` before any work starts.

    Raises ``ValueError`` naming the setting, through ``name(setting)`` (the command line
    passes its option names). Returns the methods that run ``scenario``, in order.
    """
    for setting, value in (
        ("n_components", n_components),
        ("n_features", n_features),
        ("n_nonzero_coefs", n_nonzero_coefs),
        ("n_samples", n_samples),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name(setting)} must be a positive integer, got {value!r}")
    if n_nonzero_coefs > n_components:
        raise ValueError(
            f"{name('n_nonzero_coefs')} ({n_nonzero_coefs}) must be at most "
            f"{name('n_components')} ({n_components})"
        )
    if code_distribution not in CODE_DISTRIBUTIONS:
        raise ValueError(
            f"{name('code_distribution')} must be one of {', '.join(CODE_DISTRIBUTIONS)}, "
            f"got {code_distribution!r}"
        )
    if scenario not in SCENARIOS:
        raise ValueError(
            f"{name('scenario')} must be one of {', '.join(SCENARIOS)}, got {scenario!r}"
        )
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"{name('seeds')} needs at least one seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
            raise ValueError(
                f"{name('seeds')} must be integers from 0 to {_MAX_SEED}, got {seed!r}"
            )
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(
            f"{name('seeds')} repeats {', '.join(map(str, repeated))}: the same seed gives "
            "the same run"
        )
    methods = list(methods)
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        raise ValueError(
            f"{name('methods')}: unknown method(s) {', '.join(unknown) or repr(methods)}; "
            f"choose from {','.join(METHODS)}"
        )
    runnable = [method for method in methods if supports(method, scenario)]
    if not runnable:
        raise ValueError(
            f"none of {name('methods')} {','.join(methods)} supports "
            f"{name('scenario')} {scenario}"
        )
    from .._torch_utils import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise ValueError(f"{name('device')}: {exc}") from None
    return runnable


def measure(estimator, X_test, codes_test, dictionary, *, return_codes=False):
    """Every column of the comparison table but ``fit_seconds``, for a fitted estimator
    (and the test codes, with ``return_codes``)."""
    start = time.perf_counter()
    codes = estimator.transform(X_test)
    transform_seconds = time.perf_counter() - start
    record = {
        "latent_mcc": mean_corr_coef(codes_test, codes),
        "dictionary_mcc": dictionary_mcc(dictionary, estimator.components_),
        "normalized_mse": normalized_mse(X_test, estimator.inverse_transform(codes)),
        "mean_l0": mean_l0(codes),
        "dead_fraction": dead_fraction(codes),
        "training_flops": int(estimator.training_flops_),
        "inference_flops": int(estimator.inference_flops(X_test.shape[0])),
        "transform_seconds": transform_seconds,
    }
    return (record, codes) if return_codes else record


def evaluate(estimator, X_train, X_test, codes_train, codes_test, dictionary, *, fit_y):
    """Fit ``estimator`` and measure every column of the comparison table on the test set."""
    start = time.perf_counter()
    estimator.fit(X_train, codes_train if fit_y else None)
    fit_seconds = time.perf_counter() - start
    return {
        **measure(estimator, X_test, codes_test, dictionary),
        "fit_seconds": fit_seconds,
    }


def run_comparison(
    *,
    n_components=16,
    n_features=8,
    n_nonzero_coefs=3,
    n_samples=1024,
    code_distribution="halfnormal",
    scenario="unknown",
    seeds=(0,),
    methods=METHODS,
    device="auto",
    progress=True,
):
    """Fit each method on ``n_samples`` training samples, score on as many test samples.

    The signals are float32; codes and dictionary stay float64 for the metrics.

    Returns one dict per (seed, method): the settings and every metric of ``METRICS``.
    Methods that do not support ``scenario`` are skipped. Every setting is checked (by
    :func:`check_settings`) before any work starts.
    """
    methods = check_settings(
        n_components=n_components,
        n_features=n_features,
        n_nonzero_coefs=n_nonzero_coefs,
        n_samples=n_samples,
        code_distribution=code_distribution,
        scenario=scenario,
        seeds=seeds,
        methods=methods,
        device=device,
    )
    rows = []
    with tqdm(total=len(seeds) * len(methods), disable=not progress, desc="compare") as bar:
        for seed in seeds:
            X, dictionary, codes = make_sparse_dictionary_data(
                2 * n_samples,
                n_components=n_components,
                n_features=n_features,
                n_nonzero_coefs=n_nonzero_coefs,
                code_distribution=code_distribution,
                random_state=seed,
            )
            # float32, like model activations and the authors' torch code (why: the
            # benchmarks' defaults page, docs/_defaults_benchmarks.rst).
            X = X.astype(np.float32)
            split = (X[:n_samples], X[n_samples:], codes[:n_samples], codes[n_samples:])
            for name in methods:
                bar.set_postfix(method=name, seed=seed)
                estimator = build_method(
                    name,
                    n_components=n_components,
                    n_features=n_features,
                    n_nonzero_coefs=n_nonzero_coefs,
                    dictionary=dictionary,
                    scenario=scenario,
                    random_state=seed,
                    device=device,
                )
                metrics = evaluate(
                    estimator, *split, dictionary, fit_y=scenario == "known-codes"
                )
                rows.append({"method": name, "seed": seed, "scenario": scenario, **metrics})
                bar.update(1)
    return rows


def summarise(rows):
    """Mean and standard deviation of every metric per method, in first-seen order."""
    summary = {}
    for row in rows:
        summary.setdefault(row["method"], []).append(row)
    return {
        method: {
            metric: (
                float(np.mean([r[metric] for r in group])),
                float(np.std([r[metric] for r in group])),
            )
            for metric in METRICS
        }
        for method, group in summary.items()
    }
