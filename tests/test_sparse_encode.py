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
