"""Theorem 3.1, demonstrated: the SAE keeps an error the inference problem does not have."""

import numpy as np
import pytest

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, sparse_encode
from sklearn_sparsegap._exact import all_sparse_sources, exhaustive_sparse_encode


def _recovered(codes_true, codes, atol=1e-3):
    return np.all(np.abs(codes - codes_true) <= atol, axis=1)


@pytest.fixture(scope="module")
def worst_case():
    rng = np.random.default_rng(0)
    dictionary = rng.standard_normal((16, 8))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    codes = all_sparse_sources(16, max_nonzero=2)
    return codes @ dictionary, dictionary, codes


def test_the_construction_has_136_sources(worst_case):
    X, _, codes = worst_case
    assert codes.shape == (136, 16) and X.shape == (136, 8)
    assert set((codes != 0).sum(axis=1)) == {1, 2}


def test_exhaustive_search_recovers_every_code(worst_case):
    X, dictionary, codes = worst_case
    assert _recovered(codes, exhaustive_sparse_encode(X, dictionary, 2)).all()


def test_trained_sae_with_the_true_dictionary_keeps_an_error(worst_case):
    X, dictionary, codes = worst_case
    sae = SAEEncoder(dictionary=dictionary, fit_intercept=False, alpha=0.01,
                     max_iter=3000, tol=0, random_state=0, device="cpu").fit(X)
    predicted = sae.transform(X)
    error = np.mean(np.sum((predicted - codes) ** 2, axis=1))
    assert error > 0.05
    assert _recovered(codes, predicted, atol=0.1).mean() < 0.9


def test_iterative_solvers_recover_most_but_not_all_equal_magnitude_pairs(worst_case):
    X, dictionary, codes = worst_case
    omp = sparse_encode(X, dictionary, algorithm="omp", n_nonzero_coefs=2, positive=True)
    fista = sparse_encode(X, dictionary, alpha=1e-4, positive=True, max_iter=5000, tol=1e-9)
    ito = SAEPlusITO(SAEEncoder(dictionary=dictionary, fit_intercept=False, alpha=0.01,
                                max_iter=500, random_state=0, device="cpu"),
                     transform_algorithm="fista", transform_alpha=1e-4, transform_max_iter=5000,
                     tol=1e-9, guard="objective", device="cpu").fit(X)
    for codes_pred in (omp, fista, ito.transform(X)):
        rate = _recovered(codes, codes_pred, atol=0.05).mean()
        # Every 1-sparse source is easy; some equal-magnitude pairs defeat greedy and
        # convex relaxations on this coherent dictionary.
        assert 0.5 < rate <= 1.0
