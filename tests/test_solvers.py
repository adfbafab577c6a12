"""Tests of sparse_encode and its batched solvers (sklearn_sparsegap._solvers)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.decomposition import sparse_encode as sklearn_sparse_encode
from torch.utils.flop_counter import FlopCounterMode

import sklearn_sparsegap._solvers._adam as adam_module
import sklearn_sparsegap._solvers._greedy as greedy_module
import sklearn_sparsegap._solvers._proximal as proximal_module
import sklearn_sparsegap._solvers._sparse_encode as front_end
import sklearn_sparsegap.flops as flops_module
from sklearn_sparsegap import make_sparse_dictionary_data, paper_l1_to_alpha, sparse_encode
from sklearn_sparsegap._solvers import (
    adam_codes,
    fista,
    gradient_pursuit,
    ista,
    lipschitz_constant,
    matching_pursuit,
    omp,
    topk_encode,
)
from sklearn_sparsegap._training import objective
from sklearn_sparsegap._torch_utils import DEVICE_MEMORY_FRACTION
from sklearn_sparsegap.flops import ito_adam_flops, sparse_encode_flops

ALGORITHMS = ["ista", "fista", "omp", "mp", "gradient_pursuit", "topk", "adam"]


def _data(n_samples=60, n_components=16, n_features=8, k=3, seed=0, distribution="halfnormal"):
    return make_sparse_dictionary_data(
        n_samples,
        n_components=n_components,
        n_features=n_features,
        n_nonzero_coefs=k,
        code_distribution=distribution,
        random_state=seed,
    )


def _tensors(*arrays, dtype=torch.float64):
    return [torch.tensor(np.asarray(a), dtype=dtype) for a in arrays]


def _objective(X, codes, D, alpha):
    X, codes, D = _tensors(X, codes, D)
    return float(objective(X, codes, D, alpha=alpha))


def _residual_norms(X, codes, D):
    return np.linalg.norm(np.asarray(X) - np.asarray(codes) @ np.asarray(D), axis=1)


# ------------------------------------------------------------------ ISTA / FISTA
@pytest.mark.parametrize("solver", [fista, ista])
@pytest.mark.parametrize("positive", [False, True])
def test_proximal_gradient_matches_sklearn_lasso(solver, positive):
    # Undercomplete dictionary: the lasso is strongly convex, its solution unique.
    X, D, _ = _data(40, n_components=12, n_features=20, k=3, distribution="normal", seed=1)
    alpha = 0.05
    expected = sklearn_sparse_encode(
        X, D, algorithm="lasso_cd", alpha=alpha, positive=positive, max_iter=10_000
    )
    codes, n_iter = solver(*_tensors(X, D), alpha, positive=positive, max_iter=20_000, tol=1e-12)
    codes = codes.numpy()
    assert n_iter < 20_000
    np.testing.assert_allclose(codes, expected, atol=1e-7)
    assert _objective(X, codes, D, alpha) <= _objective(X, expected, D, alpha) + 1e-12
    if positive:
        assert (codes >= 0).all()


@pytest.mark.parametrize("positive", [False, True])
def test_fista_objective_at_most_sklearn_overcomplete(positive):
    # The paper's N=16, M=8 problem is ill-conditioned: compare objectives, not codes.
    X, D, _ = _data(50, seed=2)
    alpha = 0.01
    expected = sklearn_sparse_encode(
        X, D, algorithm="lasso_cd", alpha=alpha, positive=positive, max_iter=20_000
    )
    codes = sparse_encode(
        X, D, alpha=alpha, positive=positive, max_iter=5000, tol=1e-10, device="cpu"
    )
    assert _objective(X, codes, D, alpha) <= _objective(X, expected, D, alpha) + 1e-9


def test_gram_and_residual_forms_agree(monkeypatch):
    X, D, _ = _data(30, n_components=12, n_features=16, seed=3)
    gram_codes, _ = fista(*_tensors(X, D), 0.02, positive=True, max_iter=3000, tol=1e-12)
    monkeypatch.setattr(proximal_module, "gram_form", lambda n_features, n_components: False)
    monkeypatch.setattr(adam_module, "gram_form", lambda n_features, n_components: False)
    residual_codes, _ = fista(*_tensors(X, D), 0.02, positive=True, max_iter=3000, tol=1e-12)
    adam_residual, _ = adam_codes(*_tensors(X, D), 0.02, max_iter=50)
    monkeypatch.undo()
    adam_gram, _ = adam_codes(*_tensors(X, D), 0.02, max_iter=50)
    torch.testing.assert_close(gram_codes, residual_codes, atol=1e-8, rtol=0)
    torch.testing.assert_close(adam_gram, adam_residual, atol=1e-10, rtol=1e-8)


def test_fista_without_restart_converges():
    X, D, _ = _data(30, n_components=10, n_features=16, seed=4)
    restarted, _ = fista(*_tensors(X, D), 0.05, max_iter=5000, tol=1e-12)
    plain, _ = fista(*_tensors(X, D), 0.05, max_iter=5000, tol=1e-12, restart=False)
    torch.testing.assert_close(restarted, plain, atol=1e-8, rtol=0)


@pytest.mark.parametrize("solver", [fista, ista])
def test_warm_start_at_solution_stops_at_once(solver):
    X, D, _ = _data(40, seed=5)
    Xt, Dt = _tensors(X, D)
    solution, _ = fista(Xt, Dt, 0.01, positive=True, max_iter=20_000, tol=1e-13)
    init = solution.clone()
    codes, n_iter = solver(Xt, Dt, 0.01, positive=True, tol=1e-6, init=init)
    assert n_iter <= 2
    torch.testing.assert_close(codes, solution, atol=1e-9, rtol=0)
    torch.testing.assert_close(init, solution)  # init is not modified


def test_samples_stop_one_by_one():
    # Half the samples start at the solution: they stop at once, the others run on, and
    # every sample ends at the solution.
    X, D, _ = _data(40, seed=31)
    Xt, Dt = _tensors(X, D)
    solution, _ = fista(Xt, Dt, 0.01, positive=True, max_iter=20_000, tol=1e-13)
    init = solution.clone()
    init[::2] = 0.0
    codes, n_iter = fista(Xt, Dt, 0.01, positive=True, max_iter=20_000, tol=1e-13, init=init)
    assert n_iter > 10
    torch.testing.assert_close(codes, solution, atol=1e-9, rtol=0)


def test_tol_stops_early_and_n_iter_is_reported():
    X, D, _ = _data(40, seed=6)
    _, loose = sparse_encode(X, D, tol=1e-2, max_iter=500, device="cpu", return_n_iter=True)
    _, tight = sparse_encode(X, D, tol=1e-8, max_iter=500, device="cpu", return_n_iter=True)
    _, fixed = sparse_encode(X, D, tol=0.0, max_iter=37, device="cpu", return_n_iter=True)
    assert 1 <= loose < tight
    assert fixed == 37


def test_small_blocks_run_serially_and_restore_the_thread_count(monkeypatch):
    X, D, _ = _data(20, seed=32)
    threads = torch.get_num_threads()
    seen = []
    original = proximal_module._forward_backward_operator

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(proximal_module, "_forward_backward_operator", spy)
    fista(*_tensors(X, D), 0.01)
    assert seen == [1]
    assert torch.get_num_threads() == threads
    with pytest.raises(TypeError):
        fista(*_tensors(X, D), 0.01, no_such_argument=True)
    assert torch.get_num_threads() == threads


def test_lipschitz_constant_is_squared_spectral_norm():
    _, D, _ = _data(5, n_components=7, n_features=5, seed=7)
    expected = np.linalg.norm(D, 2) ** 2
    assert lipschitz_constant(torch.tensor(D)) == pytest.approx(expected, rel=1e-12)
    assert lipschitz_constant(torch.tensor(D.T.copy())) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------- greedy
@pytest.mark.parametrize("gram", [True, False])
def test_omp_matches_sklearn(gram):
    X, D, _ = _data(80, n_components=32, n_features=24, k=3, distribution="normal", seed=8)
    expected = sklearn_sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=3)
    codes, n_iter = omp(*_tensors(X, D), 3, gram=gram)
    assert n_iter == 3
    np.testing.assert_allclose(codes.numpy(), expected, atol=1e-10)
    # K up to n_features, where late atoms are nearly dependent on the selected ones.
    expected = sklearn_sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=20)
    codes, _ = omp(*_tensors(X, D), 20, gram=gram)
    np.testing.assert_allclose(codes.numpy(), expected, atol=1e-8)


def test_batch_omp_matches_sklearn_on_the_large_task_shape():
    # The benchmark's shape scaled down (N=5M, K=M/10): many chunks of rows.
    X, D, _ = make_sparse_dictionary_data(
        300, n_components=250, n_features=50, n_nonzero_coefs=5, random_state=0
    )
    expected = sklearn_sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=5)
    assert greedy_module.greedy_gram_form(300, 50, 250, 5)
    codes = sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=5, device="cpu")
    np.testing.assert_allclose(codes, expected, atol=1e-10)


@pytest.mark.parametrize("solver", [omp, gradient_pursuit])
@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_and_residual_greedy_forms_agree(monkeypatch, solver, positive, dtype):
    X, D, _ = _data(90, n_components=40, n_features=20, k=4, distribution="normal", seed=30)
    D = D * np.linspace(0.5, 2.0, D.shape[0])[:, None]  # unnormalised atoms
    Xt = torch.tensor(X, dtype=dtype)
    Dt = torch.tensor(D, dtype=dtype)
    residual_codes, residual_iter = solver(Xt, Dt, 6, positive=positive, gram=False)
    gram_codes, gram_iter = solver(Xt, Dt, 6, positive=positive, gram=True)
    # Rows processed in chunks of 7, and Gram tables split in blocks of 7 columns (the
    # last one narrower), give the same codes.
    monkeypatch.setattr(greedy_module, "gram_chunk_rows", lambda *args: 7)
    monkeypatch.setattr(greedy_module, "GRAM_BLOCK_ELEMENTS", 7 * D.shape[0])
    chunked_codes, _ = solver(Xt, Dt, 6, positive=positive, gram=True)
    assert len(greedy_module._GramTables(Dt @ Dt.T, Xt @ Dt.T).blocks) == 6
    atol = 1e-10 if dtype == torch.float64 else 1e-4
    assert gram_iter == residual_iter == 6
    torch.testing.assert_close(gram_codes, residual_codes, atol=atol, rtol=0)
    torch.testing.assert_close(chunked_codes, gram_codes, atol=atol, rtol=0)


def test_greedy_chunks_are_cache_sized_on_the_cpu_and_memory_sized_on_cuda():
    # Issue 31, finding 6: the CPU figure (an L2-cache-sized chunk, one per thread at
    # least) stays; on CUDA a chunk takes a quarter of the free memory (no GPU needed:
    # the free memory is given), never fewer rows than on the CPU.
    from sklearn_sparsegap._solvers._common import gram_chunk_rows

    chunk_rows = greedy_module.chunk_rows
    n_components = 1000
    assert chunk_rows(n_components, 10**6, "cpu", threads=2) == gram_chunk_rows(1000) == 1048
    assert chunk_rows(n_components, 100, torch.device("cpu"), threads=2) == 50
    free = 8 * 2**30
    per_row = greedy_module.CUDA_CHUNK_ARRAYS * n_components * 4
    expected = int(DEVICE_MEMORY_FRACTION * free) // per_row
    assert expected > 50_000
    assert chunk_rows(n_components, 10**6, "cuda", free_bytes=free) == expected
    assert chunk_rows(n_components, 10**6, "cuda", itemsize=8, free_bytes=free) == expected // 2
    assert chunk_rows(n_components, 5000, "cuda:1", free_bytes=free) == 5000  # one chunk
    assert chunk_rows(n_components, 10**6, "cuda", free_bytes=2**20) == 1048


def test_positive_omp_refit_agrees_between_forms(monkeypatch):
    # Signed codes: some rows' least-squares fits have negative coefficients, so the
    # non-negative refit (from G and D x in the Gram form, from the atoms otherwise)
    # runs on those rows only.
    X, D, _ = _data(200, n_components=40, n_features=20, k=8, distribution="normal", seed=31)
    Xt, Dt = _tensors(X, D)
    refits = []
    original = greedy_module._support_least_squares
    monkeypatch.setattr(
        greedy_module,
        "_support_least_squares",
        lambda *args: refits.append(len(args[1])) or original(*args),
    )
    gram_codes, _ = omp(Xt, Dt, 8, positive=True, gram=True)
    residual_codes, _ = omp(Xt, Dt, 8, positive=True, gram=False)
    assert len(refits) == 2 and 3 <= refits[0] == refits[1] < 200
    assert (gram_codes >= 0).all() and ((gram_codes != 0).sum(dim=1) <= 8).all()
    torch.testing.assert_close(gram_codes, residual_codes, atol=1e-10, rtol=0)


@pytest.mark.parametrize("solver", [omp, gradient_pursuit])
@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("block_columns", [None, 7])
def test_float32_screening_keeps_float64_selection_on_near_ties(
    monkeypatch, solver, positive, block_columns
):
    # Each atom has a twin 1e-9 away: float32 cannot tell the twins apart, so every
    # selection is a near-tie that the Gram form must settle in float64, as the
    # residual form (float64 throughout) does.
    X, D, _ = _data(60, n_components=20, n_features=30, k=4, distribution="normal", seed=32)
    rng = np.random.default_rng(0)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    twins = D + 1e-9 * rng.standard_normal(D.shape)
    D = np.vstack([D, twins])[rng.permutation(2 * len(D))]
    Xt, Dt = _tensors(X, D)
    if block_columns is not None:  # Gram tables in blocks of columns
        monkeypatch.setattr(greedy_module, "GRAM_BLOCK_ELEMENTS", block_columns * len(D))
    residual_codes, _ = solver(Xt, Dt, 4, positive=positive, gram=False)
    gram_codes, _ = solver(Xt, Dt, 4, positive=positive, gram=True)
    # Picking the other twin would move a code entry, not change a rounding digit.
    assert torch.equal(gram_codes != 0, residual_codes != 0)
    torch.testing.assert_close(gram_codes, residual_codes, atol=1e-8, rtol=0)


def test_greedy_gram_form_rule():
    # N=1000, M=200, K=20: the Gram matrix pays for itself from 56 samples.
    assert not greedy_module.greedy_gram_form(55, 200, 1000, 20)
    assert greedy_module.greedy_gram_form(56, 200, 1000, 20)
    assert not greedy_module.greedy_gram_form(10**6, 200, 5000, 20)  # N > 4096


@pytest.mark.parametrize(
    ("n_components", "n_features", "positive"), [(24, 32, False), (32, 24, True)]
)
def test_omp_recovers_true_codes(n_components, n_features, positive):
    X, D, S = _data(64, n_components=n_components, n_features=n_features, k=3, seed=9)
    codes = sparse_encode(
        X, D, algorithm="omp", n_nonzero_coefs=3, positive=positive, device="cpu"
    )
    np.testing.assert_allclose(codes, S, atol=1e-9)


def test_omp_positive_codes_are_non_negative():
    X, D, _ = _data(100, distribution="normal", seed=10)
    codes, _ = omp(*_tensors(X, D), 3, positive=True)
    assert (codes >= 0).all()
    assert ((codes != 0).sum(dim=1) <= 3).all()
    # Never worse than no code at all.
    assert (_residual_norms(X, codes, D) <= np.linalg.norm(X, axis=1) + 1e-12).all()


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("positive", [False, True])
def test_omp_stops_when_residuals_vanish(gram, positive):
    X, D, S = _data(20, n_components=24, n_features=32, k=2, seed=11)
    codes, n_iter = omp(*_tensors(X, D), 6, gram=gram, positive=positive)
    assert n_iter == 2
    np.testing.assert_allclose(codes.numpy(), S, atol=1e-9)
    assert ((codes != 0).sum(dim=1) <= 2).all()


def test_topk_keeps_exactly_k():
    X, D, _ = _data(50, n_components=20, n_features=10, distribution="normal", seed=12)
    for k in (1, 4, 20):
        codes, n_iter = topk_encode(*_tensors(X, D), k)
        assert n_iter == 1
        assert ((codes != 0).sum(dim=1) == k).all()
    correlations = X @ D.T
    codes, _ = topk_encode(*_tensors(X, D), 20)
    np.testing.assert_allclose(codes.numpy(), correlations, atol=1e-12)
    positive, _ = topk_encode(*_tensors(X, D), 4, positive=True)
    assert (positive >= 0).all() and ((positive != 0).sum(dim=1) <= 4).all()


@pytest.mark.parametrize("solver", [matching_pursuit, gradient_pursuit])
@pytest.mark.parametrize("positive", [False, True])
def test_pursuits_decrease_residual_monotonically(solver, positive):
    X, D, _ = _data(60, n_components=20, n_features=10, distribution="normal", seed=13)
    Xt, Dt = _tensors(X, D)
    previous = np.linalg.norm(X, axis=1)
    for k in range(1, 7):
        codes, n_iter = solver(Xt, Dt, k, positive=positive)
        assert n_iter == k
        assert ((codes != 0).sum(dim=1) <= k).all()
        if positive:
            assert (codes >= 0).all()
        residual = _residual_norms(X, codes, D)
        assert (residual <= previous + 1e-12).all()
        previous = residual
    assert previous.mean() < 0.5 * np.linalg.norm(X, axis=1).mean()


def test_matching_pursuit_gram_and_residual_paths_agree(monkeypatch):
    X, D, _ = _data(40, n_components=20, n_features=10, distribution="normal", seed=14)
    gram_codes, _ = matching_pursuit(*_tensors(X, D), 5)
    monkeypatch.setattr(greedy_module, "MAX_GRAM_COMPONENTS", 0)
    residual_codes, _ = matching_pursuit(*_tensors(X, D), 5)
    torch.testing.assert_close(gram_codes, residual_codes, atol=1e-12, rtol=0)


def test_gradient_pursuit_recovers_easy_codes():
    X, D, S = _data(40, n_components=24, n_features=32, k=2, seed=15)
    codes, _ = gradient_pursuit(*_tensors(X, D), 2)
    support = (codes.numpy() != 0) == (S != 0)
    assert support.mean() > 0.95


def test_greedy_solvers_accept_unnormalised_atoms():
    X, D, S = _data(30, n_components=24, n_features=32, k=2, seed=16)
    scales = np.linspace(0.5, 3.0, D.shape[0])[:, None]
    for algorithm in ("omp", "mp", "gradient_pursuit", "topk"):
        plain = sparse_encode(X, D, algorithm=algorithm, n_nonzero_coefs=2, device="cpu")
        scaled = sparse_encode(X, D * scales, algorithm=algorithm, n_nonzero_coefs=2, device="cpu")
        np.testing.assert_allclose(scaled * scales[:, 0], plain, atol=1e-9)


@given(
    seed=st.integers(0, 2**16),
    n_components=st.integers(4, 24),
    n_features=st.integers(3, 16),
    data=st.data(),
)
def test_greedy_sparsity_property(seed, n_components, n_features, data):
    k = data.draw(st.integers(1, min(n_components, n_features)))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((7, n_features))
    D = rng.standard_normal((n_components, n_features))
    norms = np.linalg.norm(X, axis=1)
    for algorithm in ("omp", "mp", "gradient_pursuit", "topk"):
        codes = sparse_encode(X, D, algorithm=algorithm, n_nonzero_coefs=k, device="cpu")
        counts = (codes != 0).sum(axis=1)
        assert (counts <= k).all()
        if algorithm == "topk":
            assert (counts == k).all()
        else:
            assert (_residual_norms(X, codes, D) <= norms * (1 + 1e-9)).all()


# ------------------------------------------------------------------------ adam
def test_adam_codes_positive_and_lower_objective():
    X, D, _ = _data(50, seed=17)
    Xt, Dt = _tensors(X, D)
    alpha = 0.0025
    start = torch.full((50, 16), np.exp(-10.0), dtype=torch.float64)
    short, n_short = adam_codes(Xt, Dt, alpha, max_iter=100)
    long, n_long = adam_codes(Xt, Dt, alpha, max_iter=600)
    assert (n_short, n_long) == (100, 600)
    assert (long > 0).all()
    values = [float(objective(Xt, c, Dt, alpha=alpha)) for c in (start, short, long)]
    assert values[0] > values[1] > values[2]


def test_adam_codes_reproduce_the_papers_procedure():
    # The authors' optimize_codes: Adam (lr 3e-3) on log_S = -10, loss
    # mean((x - S D)^2) + l1 * mean(S), here with l1 = 0.01 on 40 samples.
    X, D, _ = _data(40, seed=30)
    Xt, Dt = _tensors(X, D)
    n, M, N = 40, 8, 16
    log_codes = torch.full((n, N), -10.0, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([log_codes], lr=3e-3)
    for _ in range(25):
        optimizer.zero_grad()
        codes = log_codes.exp()
        loss = (Xt - codes @ Dt).square().mean() + 0.01 * codes.abs().mean()
        loss.backward()
        optimizer.step()
    ours, _ = adam_codes(
        Xt, Dt, paper_l1_to_alpha(0.01, M, N), max_iter=25, eps=1e-8 * n * M / 2
    )
    torch.testing.assert_close(ours, log_codes.detach().exp(), rtol=1e-9, atol=0)


def test_adam_codes_honours_init():
    X, D, _ = _data(50, seed=18)
    Xt, Dt = _tensors(X, D)
    alpha = 0.0025
    solution, _ = fista(Xt, Dt, alpha, positive=True, max_iter=5000, tol=1e-12)
    warm, _ = adam_codes(Xt, Dt, alpha, max_iter=20, init=solution)
    cold, _ = adam_codes(Xt, Dt, alpha, max_iter=20)
    warm_value = float(objective(Xt, warm, Dt, alpha=alpha))
    assert warm_value < 0.5 * float(objective(Xt, cold, Dt, alpha=alpha))
    assert warm_value < float(objective(Xt, solution, Dt, alpha=alpha)) + 1e-3
    # Through sparse_encode too, where positive is implied.
    codes = sparse_encode(X, D, algorithm="adam", alpha=alpha, max_iter=20, init=solution.numpy(),
                          device="cpu")  # fmt: skip
    np.testing.assert_allclose(codes, warm.numpy(), rtol=1e-10)


def test_adam_tol_and_default_iterations():
    X, D, _ = _data(10, seed=19)
    _, n_iter = sparse_encode(X, D, algorithm="adam", tol=0.0, max_iter=30, device="cpu",
                              return_n_iter=True)  # fmt: skip
    assert n_iter == 30
    _, n_iter = adam_codes(*_tensors(X, D), 0.01, max_iter=10_000, tol=0.5)
    assert n_iter < 10_000


def test_adam_starting_codes_follow_the_papers_rule():
    X = torch.zeros((3, 4), dtype=torch.float64)
    cold = adam_module._initial_log2_codes(X, 5, None)
    assert cold.shape == (3, 5)
    torch.testing.assert_close(cold.exp2(), torch.full((3, 5), math.exp(-10.0), dtype=torch.float64))
    init = torch.tensor([[2.0, -1.0, 0.0]], dtype=torch.float64)
    warm = adam_module._initial_log2_codes(X, 3, init)
    # log(max(init, 0) + 1e-10): negative entries are treated as 0.
    torch.testing.assert_close(warm.exp2(), torch.tensor([[2.0 + 1e-10, 1e-10, 1e-10]],
                                                        dtype=torch.float64))
    assert torch.equal(init, torch.tensor([[2.0, -1.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("n_components", [6, 40])  # Gram form and residual form
def test_adam_objective_gradient_is_the_lasso_gradient(n_components):
    X, D, _ = make_sparse_dictionary_data(7, n_components=n_components, n_features=8,
                                          n_nonzero_coefs=2, random_state=0)
    Xt, Dt = _tensors(X, D)
    codes = torch.rand((7, n_components), dtype=torch.float64,
                       generator=torch.Generator().manual_seed(0))
    variable = codes.clone().requires_grad_(True)
    loss = 0.5 * ((Xt - variable @ Dt) ** 2).sum() + 0.01 * variable.sum()
    loss.backward()
    gradient = adam_module._objective_gradient(Xt, Dt, 0.01)
    torch.testing.assert_close(gradient(codes), variable.grad, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------- sparse_encode API
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_input_not_modified(algorithm, dtype):
    X, D, _ = _data(20, seed=20)
    X, D = X.astype(dtype), D.astype(dtype)
    init = np.abs(X @ D.T).astype(dtype)
    copies = X.copy(), D.copy(), init.copy()
    for array in (X, D, init):
        array.setflags(write=False)
    codes = sparse_encode(X, D, algorithm=algorithm, n_nonzero_coefs=2, init=init,
                          max_iter=20, device="cpu")  # fmt: skip
    assert codes.dtype == dtype and codes.shape == (20, 16)
    assert np.isfinite(codes).all()
    for array, copy in zip((X, D, init), copies):
        np.testing.assert_array_equal(array, copy)


def test_integer_input_is_computed_in_float64():
    X, D, _ = _data(10, seed=21)
    codes = sparse_encode(np.round(X * 10).astype(np.int64), D, device="cpu")
    assert codes.dtype == np.float64


def test_float32_and_float64_agree():
    X, D, _ = _data(40, seed=22)
    for algorithm in ("fista", "omp", "topk"):
        c64 = sparse_encode(X, D, algorithm=algorithm, n_nonzero_coefs=3, alpha=0.01,
                            positive=True, max_iter=2000, tol=1e-8, device="cpu")  # fmt: skip
        c32 = sparse_encode(X.astype(np.float32), D.astype(np.float32), algorithm=algorithm,
                            n_nonzero_coefs=3, alpha=0.01, positive=True, max_iter=2000,
                            tol=1e-8, device="cpu")  # fmt: skip
        np.testing.assert_allclose(c32, c64, atol=2e-3)


@pytest.mark.parametrize("algorithm", ["fista", "omp", "gradient_pursuit", "mp"])
def test_blocks_give_the_same_codes(monkeypatch, algorithm):
    X, D, _ = _data(50, seed=23)
    single, _ = sparse_encode(X, D, algorithm=algorithm, n_nonzero_coefs=3, tol=1e-10,
                              device="cpu", return_n_iter=True)  # fmt: skip
    monkeypatch.setattr(front_end, "_MAX_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(front_end, "_MIN_BLOCK_ROWS", 7)
    blocked, _ = sparse_encode(X, D, algorithm=algorithm, n_nonzero_coefs=3, tol=1e-10,
                               device="cpu", return_n_iter=True)  # fmt: skip
    np.testing.assert_allclose(blocked, single, atol=1e-8)


def test_default_n_nonzero_coefs_follows_sklearn():
    X, D, _ = _data(20, n_components=40, n_features=30, seed=24)
    codes = sparse_encode(X, D, algorithm="topk", device="cpu")
    assert ((codes != 0).sum(axis=1) == 3).all()
    codes = sparse_encode(X[:, :8], D[:, :8], algorithm="topk", device="cpu")
    assert ((codes != 0).sum(axis=1) == 1).all()


def _assert_raises_naming(name, function, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        function(*args, **kwargs)
    assert name in str(info.value), str(info.value)


def test_bad_inputs_raise_errors_naming_the_argument():
    X, D, _ = _data(10, seed=25)
    nan_X = X.copy()
    nan_X[0, 0] = np.nan
    inf_D = D.copy()
    inf_D[1, 2] = np.inf
    zero_D = D.copy()
    zero_D[3] = 0.0
    cases = [
        ("X", dict(X=nan_X, dictionary=D)),
        ("X", dict(X=X[0], dictionary=D)),
        ("X", dict(X=X[:, :, None], dictionary=D)),
        ("dictionary", dict(X=X, dictionary=inf_D)),
        ("dictionary", dict(X=X, dictionary=zero_D)),
        ("dictionary", dict(X=X, dictionary=D[:, :5])),
        ("dictionary", dict(X=X, dictionary=D[0])),
        ("init", dict(X=X, dictionary=D, init=np.zeros((10, 15)))),
        ("init", dict(X=X, dictionary=D, init=np.full((10, 16), np.nan))),
        ("algorithm", dict(X=X, dictionary=D, algorithm="lasso_lars")),
        ("alpha", dict(X=X, dictionary=D, alpha=-1.0)),
        ("max_iter", dict(X=X, dictionary=D, max_iter=0)),
        ("tol", dict(X=X, dictionary=D, tol=-1e-3)),
        ("n_nonzero_coefs", dict(X=X, dictionary=D, algorithm="omp", n_nonzero_coefs=0)),
        ("n_nonzero_coefs", dict(X=X, dictionary=D, algorithm="omp", n_nonzero_coefs=9)),
        ("n_nonzero_coefs",
         dict(X=X, dictionary=D, algorithm="gradient_pursuit", n_nonzero_coefs=9)),
        ("n_nonzero_coefs", dict(X=X, dictionary=D, algorithm="topk", n_nonzero_coefs=17)),
        ("n_nonzero_coefs", dict(X=X, dictionary=D, algorithm="mp", n_nonzero_coefs=17)),
        ("device", dict(X=X, dictionary=D, device="tpu")),
        ("positive", dict(X=X, dictionary=D, positive="yes")),
    ]  # fmt: skip
    for name, kwargs in cases:
        _assert_raises_naming(name, sparse_encode, **kwargs)


def test_mp_and_topk_allow_more_atoms_than_features():
    X, D, _ = _data(10, seed=26)
    for algorithm in ("mp", "topk"):
        codes = sparse_encode(X, D, algorithm=algorithm, n_nonzero_coefs=12, device="cpu")
        assert ((codes != 0).sum(axis=1) <= 12).all()


# ------------------------------------------------------------------------ FLOPs
def test_sparse_encode_flops_by_hand():
    # N=16 <= 2M=16: Gram form.
    gram_setup = 2 * 16 * 16 * 8 + 4 * 16**3 // 3 + 2 * 10 * 16 * 8
    assert sparse_encode_flops("ista", 8, 16, 10, n_iter=5) == gram_setup + 10 * 5 * (
        2 * 16 * 16 + 3 * 16
    )
    assert sparse_encode_flops("fista", 8, 16, 10, n_iter=5) == gram_setup + 10 * 5 * (
        2 * 16 * 16 + 9 * 16
    )
    # N=20 > 2M=8: residual form, Lipschitz constant from the 4x4 D^T D.
    assert sparse_encode_flops("ista", 4, 20, 3, n_iter=2) == (
        2 * 4 * 4 * 20 + 4 * 4**3 // 3 + 3 * 2 * (4 * 20 * 4 + 4 + 3 * 20)
    )
    # OMP, M=8, N=16, K=T=2, one sample: loop + back substitution + set-up.
    loop = 2 * (2 * 16 * 8 + 2 * 16 + 6 * 8) + 2 * 8 * 2 * 1
    refit = 2 * 2
    assert sparse_encode_flops("omp", 8, 16, 1, n_nonzero_coefs=2) == 3 * 16 * 8 + loop + refit
    assert sparse_encode_flops("mp", 8, 16, 2, n_nonzero_coefs=3) == (
        3 * 128 + 2 * 256 * 8 + 2 * 2 * 128 + 2 * 3 * 4 * 16
    )
    assert sparse_encode_flops("gradient_pursuit", 8, 16, 1, n_nonzero_coefs=2) == (
        3 * 128 + 2 * (2 * 128 + 2 * 16 + 4 * 8) + (2 * 8 + 5) * 3
    )
    assert sparse_encode_flops("topk", 8, 16, 2, n_nonzero_coefs=3) == 3 * 128 + 2 * (
        2 * 128 + 2 * 16 + 3
    )
    assert sparse_encode_flops("adam", 8, 16, 7, n_iter=9) == ito_adam_flops(8, 16, 7, 9)
    # Early stopping: the greedy count uses the iterations actually run.
    assert sparse_encode_flops("omp", 8, 16, 1, n_iter=1, n_nonzero_coefs=2) < (
        sparse_encode_flops("omp", 8, 16, 1, n_nonzero_coefs=2)
    )
    with pytest.raises(ValueError, match="n_nonzero_coefs"):
        sparse_encode_flops("omp", 8, 16, 1)
    with pytest.raises(ValueError, match="algorithm"):
        sparse_encode_flops("lars", 8, 16, 1)


def _counted_matmul_flops(function):
    counter = FlopCounterMode(display=False)
    with counter:
        result = function()
    return counter.get_total_flops(), result


@pytest.mark.parametrize(("n_components", "n_features"), [(16, 8), (30, 6)])
def test_fista_matmul_flops_match_flop_counter(n_components, n_features):
    X, D, _ = _data(12, n_components=n_components, n_features=n_features, seed=27)
    counted, (_, n_iter) = _counted_matmul_flops(
        lambda: fista(*_tensors(X, D), 0.01, max_iter=15, tol=0.0)
    )
    n, M, N = 12, n_features, n_components
    if N <= 2 * M:
        expected = 2 * N * N * M + 2 * n * N * M + n_iter * 2 * n * N * N
    else:
        expected = 2 * M * M * N + n_iter * 4 * n * N * M
    assert counted == expected


@pytest.mark.parametrize("solver", ["omp", "gradient_pursuit"])
@pytest.mark.parametrize("n_samples", [3, 12])
@pytest.mark.parametrize("K", [4, 6])
def test_greedy_matmul_flops_match_flop_counter(solver, n_samples, K):
    # 3 samples: residual form; 12: Gram form (the rule that picks it is shared).
    rng = np.random.default_rng(28)
    X, D = rng.standard_normal((n_samples, 10)), rng.standard_normal((20, 10))
    function = {"omp": omp, "gradient_pursuit": gradient_pursuit}[solver]
    counted, (_, T) = _counted_matmul_flops(lambda: function(*_tensors(X, D), K))
    assert greedy_module.greedy_gram_form(n_samples, 10, 20, K) == (n_samples == 12)
    matmul, _ = flops_module._sparse_encode_flop_terms(
        solver, 10, 20, n_samples, n_iter=T, n_nonzero_coefs=K
    )
    assert T == K and counted == matmul


@pytest.mark.parametrize("algorithm", ["fista", "ista", "mp", "topk"])
def test_other_matmul_flops_match_flop_counter(algorithm):
    X, D, _ = _data(12, n_components=20, n_features=10, distribution="normal", seed=31)
    counted, (_, n_iter) = _counted_matmul_flops(
        lambda: sparse_encode(X, D, algorithm=algorithm, n_nonzero_coefs=3, max_iter=7,
                              tol=0.0, device="cpu", return_n_iter=True)
    )  # fmt: skip
    matmul, _ = flops_module._sparse_encode_flop_terms(
        algorithm, 10, 20, 12, n_iter=n_iter, n_nonzero_coefs=3
    )
    assert counted == matmul


@pytest.mark.parametrize("positive", [True, False])
def test_fista_with_intercept_solves_the_joint_problem(positive):
    # Optimality of the joint minimisation: the intercept is the mean residual of its
    # codes, and those codes are the lasso solution for the data minus that intercept
    # (a FISTA solve started there does not move).
    X, D, _ = _data(n_samples=200)
    X = X + np.linspace(-0.5, 0.5, X.shape[1])
    X_t, D_t = _tensors(X, D)
    codes, intercept, n_iter = proximal_module.fista_with_intercept(
        X_t, D_t, 0.01, positive=positive, max_iter=5000, tol=1e-10
    )
    assert n_iter < 5000
    torch.testing.assert_close(intercept, (X_t - codes @ D_t).mean(dim=0))
    again, _ = fista(X_t - intercept, D_t, 0.01, positive=positive, init=codes, tol=1e-12)
    torch.testing.assert_close(again, codes, atol=1e-6, rtol=0)
    # Jointly optimal: no lower than with the intercept held at zero.
    zero_codes, _ = fista(X_t, D_t, 0.01, positive=positive, max_iter=5000, tol=1e-10)
    joint = objective(X_t, codes, D_t, intercept, 0.01)
    assert joint < objective(X_t, zero_codes, D_t, None, 0.01)
