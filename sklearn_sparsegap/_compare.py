"""The comparison behind ``sparsegap compare``: every method on the same data, one table."""

import time

import numpy as np
from tqdm.auto import tqdm

from ._datasets import make_sparse_dictionary_data
from ._metrics import dead_fraction, dictionary_mcc, mean_corr_coef, mean_l0, normalized_mse

SCENARIOS = ("unknown", "known-dictionary", "known-codes")
METHODS = ("sae", "mlp", "sparse-coding", "sae+ito", "lars")
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
# Methods that cannot run a scenario (sparse coding and LARS learn no encoder to train on
# known codes; the LARS adapter has no fixed-dictionary mode).
_UNSUPPORTED = {
    "known-codes": {"sparse-coding", "lars"},
    "known-dictionary": {"lars"},
}


def make_method(name, *, scenario, n_components, dictionary, random_state, device):
    """A library estimator for ``name`` configured for ``scenario`` (defaults otherwise)."""
    from . import (
        GradientSparseCoder,
        LarsDictionaryLearning,
        MLPEncoder,
        SAEEncoder,
        SAEPlusITO,
    )

    common = {"random_state": random_state, "device": device}
    encoder_params = dict(common, n_components=n_components)
    if scenario == "known-dictionary":
        encoder_params = dict(common, dictionary=dictionary)
    elif scenario == "known-codes":
        encoder_params["target"] = "codes"
    if name == "sae":
        return SAEEncoder(**encoder_params)
    if name == "mlp":
        return MLPEncoder(**encoder_params)
    if name == "sae+ito":
        return SAEPlusITO(SAEEncoder(**encoder_params), device=device)
    if name == "sparse-coding":
        if scenario == "known-dictionary":
            return GradientSparseCoder(dictionary=dictionary, device=device)
        return GradientSparseCoder(n_components=n_components, **common)
    if name == "lars":
        return LarsDictionaryLearning(n_components=n_components, random_state=random_state)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}.")


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
    Methods that do not support ``scenario`` are skipped.
    """
    methods = [m for m in methods if m not in _UNSUPPORTED.get(scenario, set())]
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
            # float32, like model activations and the authors' torch code (float64 input
            # would be computed in float64, several times slower for the MLP).
            X = X.astype(np.float32)
            split = (X[:n_samples], X[n_samples:], codes[:n_samples], codes[n_samples:])
            for name in methods:
                bar.set_postfix(method=name, seed=seed)
                estimator = make_method(
                    name,
                    scenario=scenario,
                    n_components=n_components,
                    dictionary=dictionary,
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
