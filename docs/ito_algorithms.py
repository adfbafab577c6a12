"""Choosing an ITO algorithm, measured: run with ``python docs/ito_algorithms.py``.

The paper's known-dictionary task (N=16 atoms, M=8 features, K=3 half-normal codes,
1024 training and 1024 test samples): one SAE with the true dictionary, its codes refined
by each ``ito_algorithm``; latent MCC on the test set and the inference FLOPs counted by
``SAEPlusITO.inference_flops`` (the full ``ito_max_iter`` budget, an upper bound, for the
iterative solvers; K iterations for the greedy ones).
"""

import time

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, make_sparse_dictionary_data, mean_corr_coef

X, D, codes = make_sparse_dictionary_data(2048, n_components=16, n_features=8,
                                          n_nonzero_coefs=3, random_state=0)
X_train, X_test, codes_test = X[:1024], X[1024:], codes[1024:]
sae = SAEEncoder(dictionary=D, alpha=0.2, max_iter=2000, learning_rate=1e-2,
                 random_state=0, device="cpu")

settings = [
    ("fista", dict(ito_alpha=0.01)),
    ("fista", dict()),  # ito_alpha=None: the SAE's alpha (0.2)
    ("ista", dict(ito_alpha=0.01)),
    ("omp", dict(n_nonzero_coefs=3)),
    ("mp", dict(n_nonzero_coefs=3)),
    ("gradient_pursuit", dict(n_nonzero_coefs=3)),
    ("topk", dict(n_nonzero_coefs=3)),
    ("adam", dict(ito_alpha=0.01)),
    ("adam", dict(ito_alpha=0.01, ito_max_iter=10_000)),
]
fitted = SAEPlusITO(sae, device="cpu").fit(X_train)
print(f"{'SAE alone':<44} MCC {mean_corr_coef(codes_test, fitted.encoder_.transform(X_test)):.3f}"
      f"   FLOPs {fitted.encoder_.inference_flops(1024):9.3g}")
for algorithm, params in settings:
    # Reuse the fitted SAE: only the refinement parameters change.
    defaults = dict(ito_alpha=None, ito_max_iter=500, n_nonzero_coefs=None)
    fitted.set_params(ito_algorithm=algorithm, **{**defaults, **params})
    start = time.perf_counter()
    refined = fitted.transform(X_test)
    seconds = time.perf_counter() - start
    # Greedy solvers run K iterations whatever ito_max_iter says.
    n_iter = 3 if algorithm in ("omp", "mp", "gradient_pursuit", "topk") else None
    label = f"{algorithm} {params}"
    print(f"{label:<44} MCC {mean_corr_coef(codes_test, refined):.3f}"
          f"   FLOPs {fitted.inference_flops(1024, n_iter=n_iter):9.3g}   {seconds:5.2f} s")
