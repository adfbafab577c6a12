"""Iterative inference against scikit-learn, side by side in one run.

1. Known dictionary (N=16, M=8, K=3, 1024 test samples): SAEPlusITO against scikit-learn's
   SparseCoder (lasso_cd positive, lasso_lars, omp) and the SAE alone.
2. Unknown dictionary, same data: GradientSparseCoder (defaults, n_components=16) against
   scikit-learn DictionaryLearning(fit_algorithm="cd", transform_algorithm="lasso_cd",
   positive_code=True, alpha=0.05, transform_alpha=0.05): latent and dictionary MCC and
   fit + transform seconds, and the speed-up ratio (scikit-learn's mean time over ours,
   both measured in this process after one untimed warm-up fit of each).
3. SAEPlusITO on an unknown dictionary against its own SAE.

The large-scale known-dictionary comparison is benchmarks/speed/bench_sparse_encode.py.

    python benchmarks/speed/bench_inference.py [--seeds 0 1 2 3 4] [--sections known unknown ito]
"""

import argparse
import time
import warnings

import numpy as np
import threadpoolctl
import torch
from sklearn.decomposition import DictionaryLearning, SparseCoder
from sklearn.exceptions import ConvergenceWarning

from sklearn_sparsegap import (
    GradientSparseCoder,
    SAEEncoder,
    SAEPlusITO,
    dictionary_mcc,
    make_sparse_dictionary_data,
    mean_corr_coef,
)
from sklearn_sparsegap.experiments._methods import synthetic_ito_params


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def report(title, rows):
    print(f"\n{title}")
    print(f"{'method':58s} {'latent MCC':>13s} {'dict MCC':>13s} {'seconds':>8s}")
    for name, values in rows.items():
        latent = np.array(values["latent"])
        text = f"{latent.mean():.3f}±{latent.std():.3f}"
        dict_text = "-"
        if values["dict"]:
            d = np.array(values["dict"])
            dict_text = f"{d.mean():.3f}±{d.std():.3f}"
        print(f"{name:58s} {text:>13s} {dict_text:>13s} {np.mean(values['seconds']):8.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--sections", nargs="+", default=["known", "unknown", "ito"],
        choices=["known", "unknown", "ito"], help="which of the three comparisons to run",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for pool in threadpoolctl.threadpool_info():
        print(f"threadpool: {pool['internal_api']} {pool.get('version')} "
              f"({pool['user_api']}), {pool['num_threads']} threads, {pool['filepath']}")

    def dictionary_learners(seed):
        ours = GradientSparseCoder(n_components=16, random_state=seed)
        sklearn_dl = DictionaryLearning(
            n_components=16, fit_algorithm="cd", transform_algorithm="lasso_cd",
            positive_code=True, alpha=0.05, transform_alpha=0.05, random_state=seed,
        )  # fmt: skip
        return ours, sklearn_dl

    # Untimed warm-up of both (lazy initialisation, first-call dispatch, caches).
    X_warm, _, _ = make_sparse_dictionary_data(256, random_state=12345)
    for learner in dictionary_learners(0):
        learner.set_params(max_iter=5).fit(X_warm).transform(X_warm)

    known, unknown, ito_rows = {}, {}, {}

    def add(table, name, latent, seconds, dict_mcc=None):
        entry = table.setdefault(name, {"latent": [], "dict": [], "seconds": []})
        entry["latent"].append(latent)
        entry["seconds"].append(seconds)
        if dict_mcc is not None:
            entry["dict"].append(dict_mcc)

    for seed in args.seeds:
        X, D, S = make_sparse_dictionary_data(2048, random_state=seed)
        X_train, X_test, S_test = X[:1024], X[1024:], S[1024:]

        if "known" in args.sections:
            # 1. Known dictionary: only inference on the test set is timed.
            for label, params in {
                "defaults": {},
                "encoder's alpha 0.25, encoder's bias": {
                    "transform_alpha": 0.25, "refit_intercept": False
                },
            }.items():
                encoder = SAEEncoder(dictionary=D, random_state=seed)
                # The synthetic settings (SAEPlusITO's defaults before issue 15).
                model = SAEPlusITO(encoder, **synthetic_ito_params(encoder.alpha, **params))
                model.fit(X_train)
                codes, seconds = timed(lambda: model.transform(X_test))
                add(known, f"SAEPlusITO, {label}", mean_corr_coef(S_test, codes), seconds)
            codes, seconds = timed(lambda: model.encoder_.transform(X_test))
            add(known, "SAEEncoder(dictionary=D) alone", mean_corr_coef(S_test, codes), seconds)
            for name, coder in {
                "sklearn SparseCoder lasso_cd positive alpha=0.01": SparseCoder(
                    D, transform_algorithm="lasso_cd", transform_alpha=0.01, positive_code=True
                ),
                "sklearn SparseCoder lasso_lars alpha=0.01": SparseCoder(
                    D, transform_algorithm="lasso_lars", transform_alpha=0.01
                ),
                "sklearn SparseCoder omp K=3": SparseCoder(
                    D, transform_algorithm="omp", transform_n_nonzero_coefs=3
                ),
            }.items():
                codes, seconds = timed(lambda: coder.transform(X_test))
                add(known, name, mean_corr_coef(S_test, codes), seconds)

        if "unknown" in args.sections:
            # 2. Unknown dictionary: fit + transform.
            ours, sklearn_dl = dictionary_learners(seed)
            codes, seconds = timed(lambda: ours.fit(X_train).transform(X_test))
            add(unknown, "GradientSparseCoder (defaults)", mean_corr_coef(S_test, codes), seconds,
                dictionary_mcc(D, ours.components_))
            codes, seconds = timed(lambda: sklearn_dl.fit(X_train).transform(X_test))
            add(unknown, "sklearn DictionaryLearning cd/lasso_cd positive 0.05",
                mean_corr_coef(S_test, codes), seconds, dictionary_mcc(D, sklearn_dl.components_))

        if "ito" in args.sections:
            # 3. ITO on the SAE's own learned dictionary.
            encoder = SAEEncoder(n_components=16, random_state=seed)
            model = SAEPlusITO(encoder, **synthetic_ito_params(encoder.alpha)).fit(X_train)
            add(ito_rows, "SAEEncoder (unknown dictionary)",
                mean_corr_coef(S_test, model.encoder_.transform(X_test)), 0.0,
                dictionary_mcc(D, model.components_))
            codes, seconds = timed(lambda: model.transform(X_test))
            add(ito_rows, "SAEPlusITO on the same SAE", mean_corr_coef(S_test, codes), seconds,
                dictionary_mcc(D, model.components_))
        print(f"seed {seed} done", flush=True)

    if known:
        report("1. Known dictionary, N=16 M=8 K=3, 1024 test samples (transform seconds)", known)
    if unknown:
        report("2. Unknown dictionary (fit + transform seconds)", unknown)
        ours_seconds = np.array(unknown["GradientSparseCoder (defaults)"]["seconds"])
        sklearn_seconds = np.array(
            unknown["sklearn DictionaryLearning cd/lasso_cd positive 0.05"]["seconds"]
        )
        per_seed = ", ".join(f"{r:.1f}" for r in sklearn_seconds / ours_seconds)
        print(f"   speed-up of GradientSparseCoder over scikit-learn in this run: "
              f"{sklearn_seconds.mean() / ours_seconds.mean():.1f}x (per seed: {per_seed})")
    if ito_rows:
        report("3. SAE + ITO on an unknown dictionary (transform seconds)", ito_rows)

if __name__ == "__main__":
    main()
