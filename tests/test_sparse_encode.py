"""The tensor-level sparse_encode front end: encode_tensor and check_n_nonzero_coefs."""

import numpy as np
import pytest
import torch

import sklearn_sparsegap._solvers._sparse_encode as front_end
from sklearn_sparsegap import make_sparse_dictionary_data, sparse_encode
from sklearn_sparsegap._solvers import ALGORITHMS
from sklearn_sparsegap._solvers._sparse_encode import check_n_nonzero_coefs, encode_tensor


@pytest.fixture(scope="module")
def data():
    X, D, _ = make_sparse_dictionary_data(300, random_state=0)
    return X, D


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sparse_encode_is_encode_tensor_behind_one_conversion(data, algorithm):
    X, D = data
    kwargs = {"algorithm": algorithm, "alpha": 0.01, "positive": True, "max_iter": 50}
    if algorithm in front_end.GREEDY_ALGORITHMS:
        kwargs["n_nonzero_coefs"] = 3
    expected, expected_iter = sparse_encode(X, D, device="cpu", return_n_iter=True, **kwargs)
    codes, n_iter = encode_tensor(torch.tensor(X), torch.tensor(D), **kwargs)
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.float64
    np.testing.assert_array_equal(codes.numpy(), expected)
    assert n_iter == expected_iter


@pytest.mark.parametrize("algorithm", ["fista", "omp", "topk"])
def test_blocks_of_rows_give_the_codes_of_one_block(data, algorithm, monkeypatch):
    X, D = data
    X_t, D_t = torch.tensor(X), torch.tensor(D)
    whole, _ = encode_tensor(X_t, D_t, algorithm=algorithm, n_nonzero_coefs=3, positive=True,
                             tol=0.0, max_iter=200)  # fmt: skip
    # Force blocks of 64 rows (the last one shorter).
    monkeypatch.setattr(front_end, "_MIN_BLOCK_ROWS", 64)
    monkeypatch.setattr(front_end, "_MAX_BLOCK_ELEMENTS", 64 * 16)
    assert front_end._block_rows(16) == 64
    init = torch.zeros_like(whole)
    blocks, _ = encode_tensor(X_t, D_t, algorithm=algorithm, n_nonzero_coefs=3, positive=True,
                              tol=0.0, max_iter=200, init=init)  # fmt: skip
    # tol=0 runs the same iterations for every sample; the shared Lipschitz constant may
    # differ from a block's own in the last bits.
    np.testing.assert_allclose(blocks.numpy(), whole.numpy(), rtol=1e-9, atol=1e-12)
    assert torch.equal(init, torch.zeros_like(whole))  # the warm start is not written


def test_blocks_on_cuda_are_sized_from_free_memory_not_the_cpu_cap():
    # The CPU block is capped at 2**24 elements; on a GPU with 8 GiB free a 2,304-wide
    # block takes a quarter of the memory: many more rows, never below the CPU minimum.
    from sklearn_sparsegap._torch_utils import DEVICE_MEMORY_FRACTION

    cpu_rows = front_end._block_rows(2304)
    assert cpu_rows == 2**24 // 2304
    free = 8 * 2**30
    cuda_rows = front_end._block_rows(2304, "cuda", 4, free_bytes=free)
    assert cuda_rows == int(DEVICE_MEMORY_FRACTION * free) // (front_end._CUDA_BLOCK_ARRAYS * 2304 * 4)
    assert cuda_rows > 5 * cpu_rows
    assert front_end._block_rows(2304, "cuda", 8, free_bytes=free) < cuda_rows
    assert front_end._block_rows(2304, "cuda", 4, free_bytes=2**20) == front_end._MIN_BLOCK_ROWS


def test_check_n_nonzero_coefs_names_the_parameter():
    assert check_n_nonzero_coefs(None, 200, 1000, "omp") == 20
    assert check_n_nonzero_coefs(5, 8, 16, "topk") == 5
    with pytest.raises(ValueError, match="transform_n_nonzero_coefs=17 exceeds n_components"):
        check_n_nonzero_coefs(17, 8, 16, "topk", name="transform_n_nonzero_coefs")
    with pytest.raises(ValueError, match="n_nonzero_coefs=9 exceeds n_features=8"):
        check_n_nonzero_coefs(9, 8, 16, "gradient_pursuit")
    # Matching pursuit re-fits nothing: more atoms than features are allowed.
    assert check_n_nonzero_coefs(9, 8, 16, "mp") == 9


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_codes_under_inference_mode_equal_the_codes_without(data, algorithm):
    # Users encode inside torch.inference_mode() (e.g. in a forward hook); the greedy
    # solvers' worker threads must write their codes in that mode too.
    X, D = data
    kwargs = {"algorithm": algorithm, "alpha": 0.01, "n_nonzero_coefs": 3, "max_iter": 50}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two row chunks on two worker threads
    try:
        expected, _ = encode_tensor(torch.tensor(X), torch.tensor(D), **kwargs)
        with torch.inference_mode():
            codes, _ = encode_tensor(torch.tensor(X), torch.tensor(D), **kwargs)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(codes.numpy(), expected.numpy())


# ------------------------------------------------------- the named steps of sparse_encode
def test_resolve_max_iter_gives_each_algorithm_its_documented_default():
    assert front_end._resolve_max_iter("fista", None) == 1000
    assert front_end._resolve_max_iter("adam", None) == 10_000  # the paper's test-time count
    assert front_end._resolve_max_iter("paper_lca", None) == 300
    assert front_end._resolve_max_iter("omp", None) == 1  # greedy: no iteration budget
    assert front_end._resolve_max_iter("fista", 7) == 7


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_block_solver_runs_the_named_algorithm(data, algorithm):
    X, D = data
    X_t, D_t = torch.tensor(X[:40]), torch.tensor(D)
    solve = front_end._block_solver(algorithm, D_t, alpha=0.01, n_nonzero_coefs=3,
                                    positive=True, max_iter=30, tol=0.0, lipschitz=None)
    codes, n_iter = solve(X_t, None)
    direct = {
        "fista": lambda: front_end.fista(X_t, D_t, 0.01, positive=True, max_iter=30, tol=0.0),
        "ista": lambda: front_end.ista(X_t, D_t, 0.01, positive=True, max_iter=30, tol=0.0),
        "lca": lambda: front_end.lca(X_t, D_t, 0.01, positive=True, max_iter=30, tol=0.0),
        "adam": lambda: front_end.adam_codes(X_t, D_t, 0.01, max_iter=30, tol=0.0),
        "paper_lca": lambda: front_end.adaptive_projected_gradient(
            X_t, D_t, 0.01, max_iter=30, tol=0.0),
    }.get(algorithm, lambda: front_end._GREEDY_SOLVERS[algorithm](X_t, D_t, 3, positive=True))
    expected, expected_iter = direct()
    assert torch.equal(codes, expected) and n_iter == expected_iter
    if algorithm in front_end.GREEDY_ALGORITHMS:
        assert int((codes != 0).sum(dim=1).max()) <= 3


def test_encode_in_blocks_reports_the_slowest_block():
    X = torch.arange(10.0)[:, None]
    calls = []

    def solve(block, init):
        calls.append((len(block), init is None))
        return block * 2, len(block)  # "iterations" = block length

    codes, n_iter = front_end._encode_in_blocks(solve, X, None, 4, 1)
    assert calls == [(4, True), (4, True), (2, True)]
    assert torch.equal(codes, X * 2) and n_iter == 4
    codes, n_iter = front_end._encode_in_blocks(solve, X, torch.zeros(10, 1), 16, 1)
    assert calls[-1] == (10, False) and n_iter == 10  # one block: init is passed on


def test_check_encode_inputs_names_the_wrong_argument():
    X, D = np.ones((5, 3)), np.random.default_rng(0).normal(size=(4, 3))
    checked_X, checked_D, init = front_end._check_encode_inputs(X, D, np.zeros((5, 4)))
    assert checked_X.shape == (5, 3) and checked_D.shape == (4, 3) and init.shape == (5, 4)
    with pytest.raises(ValueError, match=r"init must have shape .* = \(5, 4\), got \(5, 3\)"):
        front_end._check_encode_inputs(X, D, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="dictionary"):
        front_end._check_encode_inputs(X, D[:, :2], None)


def test_check_greedy_k_checks_only_greedy_algorithms():
    assert front_end._check_greedy_k("fista", 50, 8, 16) is None  # ignored, as documented
    assert front_end._check_greedy_k("omp", None, 200, 1000) == 20
    with pytest.raises(ValueError, match="n_nonzero_coefs=17 exceeds n_components=16"):
        front_end._check_greedy_k("topk", 17, 8, 16)


def test_encode_arrays_converts_once_and_keeps_the_dtype(data):
    X, D = data
    for dtype in (np.float32, np.float64):
        codes, n_iter = front_end._encode_arrays(
            X.astype(dtype), D.astype(dtype), None, device="cpu", algorithm="topk",
            n_nonzero_coefs=2)
        assert isinstance(codes, np.ndarray) and codes.dtype == dtype and n_iter == 1
        assert ((codes != 0).sum(axis=1) == 2).all()
