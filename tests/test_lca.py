"""Tests of the locally competitive algorithm and the paper's §5 "LCA" procedure."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import sparse_encode as sklearn_sparse_encode

from sklearn_sparsegap import make_sparse_dictionary_data
from sklearn_sparsegap._solvers import adaptive_projected_gradient, fista, lca
from sklearn_sparsegap._training import objective


def _tensors(n_samples=80, n_components=16, n_features=8, seed=0):
    X, D, _ = make_sparse_dictionary_data(
        n_samples, n_components=n_components, n_features=n_features, random_state=seed
    )
    return torch.tensor(X), torch.tensor(D)


def _objective(X, codes, D, alpha):
    return float(objective(X, codes, D, None, alpha))


@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize("shape", [(16, 8), (40, 12)])  # Gram form, residual form
def test_lca_reaches_the_lasso_solution(positive, shape):
    X, D = _tensors(n_components=shape[0], n_features=shape[1], seed=1)
    alpha = 0.05
    reference, _ = fista(X, D, alpha, positive=positive, max_iter=50_000, tol=1e-14)
    codes, _ = lca(X, D, alpha, positive=positive, max_iter=50_000, tol=1e-13)
    assert _objective(X, codes, D, alpha) == pytest.approx(
        _objective(X, reference, D, alpha), rel=1e-9
    )
    if positive:
        assert bool((codes >= 0).all())


def test_lca_matches_scikit_learn_lasso():
    X, D = _tensors(40, n_components=12, n_features=16, seed=2)
    expected = sklearn_sparse_encode(
        X.numpy(), D.numpy(), algorithm="lasso_cd", alpha=0.02, max_iter=20_000
    )
    codes, _ = lca(X, D, 0.02, max_iter=20_000, tol=1e-12)
    np.testing.assert_allclose(codes.numpy(), expected, atol=1e-5)


def test_lca_warm_started_at_the_solution_stops_at_once():
    X, D = _tensors(seed=3)
    solution, _ = fista(X, D, 0.05, positive=True, max_iter=50_000, tol=1e-14)
    codes, n_iter = lca(X, D, 0.05, positive=True, init=solution, tol=1e-8)
    assert n_iter == 1
    torch.testing.assert_close(codes, solution, atol=1e-10, rtol=0)


def test_lca_does_not_stop_while_potentials_still_rise():
    # From u = 0 the codes stay at zero for several steps while u climbs towards the
    # threshold; a stop on the codes alone would return all zeros here.
    D = torch.eye(2, dtype=torch.float64) * 0.3  # small step: slow climb
    X = torch.tensor([[3.0, 0.0]], dtype=torch.float64)
    codes, _ = lca(X, D, 0.5, tol=1e-10, max_iter=100_000)
    # Lasso on a scaled identity: a = soft(0.3 * 3, 0.5) / 0.09.
    torch.testing.assert_close(codes, torch.tensor([[0.4 / 0.09, 0.0]], dtype=torch.float64))


def test_lca_does_not_modify_its_inputs():
    X, D = _tensors(seed=4)
    init = torch.rand(X.shape[0], D.shape[0], dtype=X.dtype)
    before = [X.clone(), D.clone(), init.clone()]
    lca(X, D, 0.05, init=init, max_iter=20)
    for tensor, copy in zip((X, D, init), before):
        assert torch.equal(tensor, copy)


def _reference_paper_lca(x, D, lambd, max_iter=300, tol=1e-6):
    """The paper's §5 inference written as a plain per-sample loop (atoms as rows)."""
    n_components = D.shape[0]
    u = np.zeros((len(x), n_components))
    lr = np.full(len(x), 1.0 / n_components)

    def loss_of(a, signals):
        return np.mean((signals - a @ D) ** 2, axis=1) + lambd * np.mean(np.abs(a), axis=1)

    best = np.full(len(x), np.inf)
    for _ in range(max_iter):
        a = np.maximum(u, 0.0)
        loss = loss_of(a, x)
        if np.max(best - loss) < tol:
            break
        best = loss
        du = (a @ D - x) @ D.T + lambd
        for i in range(len(x)):
            candidates = [u[i] - du[i] * lr[i] * fac for fac in (0.5, 2.0)]
            losses = [loss_of(np.maximum(c, 0.0)[None], x[i : i + 1])[0] for c in candidates]
            choice = int(np.argmin(losses))
            u[i] = candidates[choice]
            lr[i] *= (0.5, 2.0)[choice]
    return np.maximum(u, 0.0)


def test_adaptive_projected_gradient_is_the_papers_procedure():
    X, D = _tensors(30, n_components=24, n_features=8, seed=5)
    expected = _reference_paper_lca(X.numpy(), D.numpy(), 0.1)
    codes, _ = adaptive_projected_gradient(X, D, 0.1)
    np.testing.assert_allclose(codes.numpy(), expected, atol=1e-10)


def test_adaptive_projected_gradient_lowers_the_objective_to_near_the_lasso():
    X, D = _tensors(seed=6)
    alpha = 0.05
    reference, _ = fista(X, D, alpha, positive=True, max_iter=50_000, tol=1e-14)
    codes, _ = adaptive_projected_gradient(X, D, alpha, max_iter=2000, tol=0.0)
    value = _objective(X, codes, D, alpha)
    assert bool((codes >= 0).all())
    assert value < _objective(X, torch.zeros_like(codes), D, alpha)
    # A heuristic step rule whose step choice weighs the penalty differently from its
    # gradient: near, not at, the lasso optimum.
    assert value <= _objective(X, reference, D, alpha) * 1.05


@pytest.mark.parametrize("shape", [(16, 8), (40, 12)])
@pytest.mark.parametrize("algorithm", ["lca", "paper_lca"])
def test_flop_counts_match_the_products_run(algorithm, shape):
    from torch.utils.flop_counter import FlopCounterMode

    from sklearn_sparsegap._solvers._sparse_encode import encode_tensor
    from sklearn_sparsegap.flops import _sparse_encode_flop_terms

    X, D = _tensors(30, n_components=shape[0], n_features=shape[1], seed=7)
    with FlopCounterMode(display=False) as counter:
        _, n_iter = encode_tensor(X, D, algorithm=algorithm, alpha=0.05, max_iter=25, tol=0.0)
    matmul, _ = _sparse_encode_flop_terms(algorithm, shape[1], shape[0], 30, n_iter=n_iter)
    assert counter.get_total_flops() == matmul


def test_sparse_encode_lca_matches_fista():
    from sklearn_sparsegap import sparse_encode

    X, D, S = make_sparse_dictionary_data(200, random_state=8)
    lasso = sparse_encode(X, D, alpha=0.01, positive=True, max_iter=20_000, tol=1e-12,
                          device="cpu")  # fmt: skip
    codes = sparse_encode(X, D, algorithm="lca", alpha=0.01, positive=True, max_iter=20_000,
                          tol=1e-12, device="cpu")  # fmt: skip
    np.testing.assert_allclose(codes, lasso, atol=1e-5)


def test_lca_serves_as_the_estimators_algorithm():
    from sklearn_sparsegap import (GradientSparseCoder, SAEEncoder, SAEPlusITO,
                                   dictionary_mcc, mean_corr_coef)

    X, D, S = make_sparse_dictionary_data(1024, random_state=9)
    coder = GradientSparseCoder(n_components=16, transform_algorithm="lca", random_state=0)
    codes = coder.fit(X).transform(X)
    assert dictionary_mcc(D, coder.components_) > 0.99
    from sklearn_sparsegap import sparse_encode

    expected = sparse_encode(X, coder.components_, algorithm="lca", positive=True,
                             alpha=coder.transform_alpha_, max_iter=1000, device="cpu")  # fmt: skip
    np.testing.assert_allclose(codes, expected, atol=1e-10)
    assert mean_corr_coef(S, codes) > 0.95
    # As the dictionary's own inference: slower per iteration than FISTA, but it learns.
    lca_coder = GradientSparseCoder(n_components=16, fit_algorithm="lca", random_state=0)
    assert dictionary_mcc(D, lca_coder.fit(X).components_) > 0.9
    ito = SAEPlusITO(SAEEncoder(dictionary=D, max_iter=200, random_state=0),
                     transform_algorithm="lca").fit(X)  # fmt: skip
    assert mean_corr_coef(S, ito.transform(X)) > mean_corr_coef(S, ito.encoder_.transform(X))
    paper = SAEPlusITO(SAEEncoder(dictionary=D, max_iter=200, random_state=0),
                       transform_algorithm="paper_lca").fit(X)  # fmt: skip
    assert paper.amortisation_gap(X) > 0
