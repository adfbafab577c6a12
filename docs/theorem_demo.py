"""Theorem 3.1's worst case, measured: run with ``python docs/theorem_demo.py``."""

import numpy as np

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, sparse_encode
from sklearn_sparsegap._exact import all_sparse_sources, exhaustive_sparse_encode

# All 16 one-sparse and 120 two-sparse codes with coefficient 1, on a random unit-norm
# Gaussian dictionary of 16 atoms in 8 dimensions.
rng = np.random.default_rng(0)
D = rng.standard_normal((16, 8))
D /= np.linalg.norm(D, axis=1, keepdims=True)
codes = all_sparse_sources(16, 2)  # (136, 16)
X = codes @ D  # (136, 8)


def report(name, predicted, atol=0.05):
    error = np.mean(np.sum((predicted - codes) ** 2, axis=1))
    recovered = np.all(np.abs(predicted - codes) <= atol, axis=1)
    pairs = recovered[(codes != 0).sum(axis=1) == 2]
    print(f"{name:<28} mean sq. error {error:8.4f}   recovered {recovered.sum():3d}/136 "
          f"({recovered.mean():6.1%}); pairs {pairs.sum():3d}/120")


# A linear-ReLU encoder trained on exactly these 136 samples, with the TRUE dictionary
# held fixed as its decoder: only the encoder has to be learned.
sae = SAEEncoder(dictionary=D, fit_intercept=False, scale_input=False, alpha=0.01, max_iter=3000, tol=0,
                 random_state=0, device="cpu").fit(X)
report("SAE (true dictionary)", sae.transform(X))

# Exhaustive search over the 136 supports of size <= 2: exact sparse inference.
report("exhaustive search", exhaustive_sparse_encode(X, D, 2))

# Iterative inference on the same dictionary.
report("OMP, K=2", sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=2, positive=True,
                                 device="cpu"))
report("FISTA, alpha=1e-4", sparse_encode(X, D, alpha=1e-4, positive=True, max_iter=5000,
                                          tol=1e-9, device="cpu"))
ito = SAEPlusITO(
    SAEEncoder(dictionary=D, fit_intercept=False, scale_input=False, alpha=0.01, max_iter=500, random_state=0,
               device="cpu"),
    transform_algorithm="fista", transform_alpha=1e-4, transform_max_iter=5000, tol=1e-9,
    guard="objective", device="cpu",
).fit(X)
report("SAE + ITO (FISTA)", ito.transform(X))
