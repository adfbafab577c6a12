"""Choosing an ITO algorithm, measured: run with ``python docs/ito_algorithms.py``.

The paper's known-dictionary task (N=16 atoms, M=8 features, K=3 half-normal codes,
1024 training and 1024 test samples): one SAE with the true dictionary, its codes refined
by each ``transform_algorithm``; latent MCC on the test set and the inference FLOPs counted by
``SAEPlusITO.inference_flops`` (the full ``transform_max_iter`` budget, an upper bound, for the
iterative solvers; K iterations for the greedy ones).
"""

import time

from sklearn.frozen import FrozenEstimator

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, make_sparse_dictionary_data, mean_corr_coef
from sklearn_sparsegap.experiments._methods import synthetic_ito_params

X, D, codes = make_sparse_dictionary_data(2048, n_components=16, n_features=8,
                                          n_nonzero_coefs=3, random_state=0)
X_train, X_test, codes_test = X[:1024], X[1024:], codes[1024:]
sae = SAEEncoder(dictionary=D, alpha=0.2, scale_input=False, max_iter=2000, learning_rate=1e-2,
                 random_state=0, device="cpu")

# The synthetic settings (FISTA at 0.025 x the SAE's alpha, refitted bias, objective guard;
# experiments._methods.synthetic_ito_params) under each algorithm, then SAEPlusITO's own defaults
# (OMP at each sample's SAE L0, "l0" guard).
settings = [
    ("fista", dict()),  # transform_alpha = 0.025 * 0.2, refitted decoder bias
    ("fista", dict(transform_alpha=0.2, refit_intercept=False)),  # the SAE's own objective
    ("ista", dict()),
    ("omp", dict(transform_n_nonzero_coefs=3)),
    ("mp", dict(transform_n_nonzero_coefs=3)),
    ("gradient_pursuit", dict(transform_n_nonzero_coefs=3)),
    ("topk", dict(transform_n_nonzero_coefs=3)),
    ("adam", dict()),
    ("adam", dict(transform_max_iter=10_000)),
]
sae = FrozenEstimator(sae.fit(X_train))
print(f"{'SAE alone':<44} MCC {mean_corr_coef(codes_test, sae.transform(X_test)):.3f}"
      f"   FLOPs {sae.inference_flops(1024):9.3g}")
for algorithm, params in settings:
    # The SAE is fitted once; fit() refits only the decoder bias of the refinement.
    params = synthetic_ito_params(0.2, transform_algorithm=algorithm, **params)
    fitted = SAEPlusITO(sae, device="cpu", **params).fit(X_train)
    start = time.perf_counter()
    refined = fitted.transform(X_test)
    seconds = time.perf_counter() - start
    # Greedy solvers run K iterations whatever transform_max_iter says.
    n_iter = 3 if algorithm in ("omp", "mp", "gradient_pursuit", "topk") else None
    label = f"{algorithm} {params}"
    print(f"{label:<44} MCC {mean_corr_coef(codes_test, refined):.3f}"
          f"   FLOPs {fitted.inference_flops(1024, n_iter=n_iter):9.3g}   {seconds:5.2f} s")
# SAEPlusITO's defaults: OMP with each test sample's SAE L0 as its budget, "l0" guard.
fitted = SAEPlusITO(sae, device="cpu").fit(X_train)
refined = fitted.transform(X_test)
print(f"{'defaults (omp at the SAE L0, l0 guard)':<44} MCC {mean_corr_coef(codes_test, refined):.3f}"
      f"   L0 {(refined != 0).sum(axis=1).mean():.2f} (SAE {fitted.encoder_l0_:.2f})"
      f"   FLOPs {fitted.inference_flops(1024):9.3g}")
