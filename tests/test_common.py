"""scikit-learn's estimator checks on every estimator of the library."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.decomposition import sparse_encode as sklearn_sparse_encode
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_get_feature_names_out_error,
    check_global_output_transform_pandas,
    check_inplace_ensure_writeable,
    check_param_validation,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    parametrize_with_checks,
)

from sklearn_sparsegap import (
    GradientSparseCoder,
    LarsDictionaryLearning,
    MLPEncoder,
    SAEEncoder,
    SAEPlusITO,
    SAETranscoder,
    make_sparse_dictionary_data,
    sparse_encode,
)

# Small budgets: these checks test the API, not the quality.
ESTIMATORS = [
    SAEEncoder(max_iter=20, random_state=0, device="cpu"),
    MLPEncoder(hidden_layer_sizes=(8,), max_iter=20, random_state=0, device="cpu"),
    GradientSparseCoder(max_iter=5, transform_max_iter=50, random_state=0, device="cpu"),
    SAEPlusITO(
        SAEEncoder(max_iter=20, random_state=0, device="cpu"), transform_max_iter=20, device="cpu"
    ),
    LarsDictionaryLearning(max_iter=5),
    SAEEncoder(activation="batchtopk", n_nonzero_coefs=1, alpha=0.0, max_iter=20,
               random_state=0, device="cpu"),
    SAEEncoder(activation="batchtopk", n_nonzero_coefs=1, alpha=0.0, matryoshka_prefixes=(1,),
               max_iter=20, random_state=0, device="cpu"),
    SAETranscoder(max_iter=20, random_state=0, device="cpu"),
    SAEEncoder(activation="gated", max_iter=20, random_state=0, device="cpu"),
]

EXPECTED_FAILED_CHECKS = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


EXTRA_CHECKS = [
    check_param_validation,
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_global_output_transform_pandas,
    check_dataframe_column_names_consistency,
    check_get_feature_names_out_error,
    check_inplace_ensure_writeable,
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda est: type(est).__name__)
@pytest.mark.parametrize("check", EXTRA_CHECKS, ids=lambda check: check.__name__)
def test_checks_the_generic_runner_skips(estimator, check):
    check(type(estimator).__name__, estimator)


def test_plain_pytest_enables_the_array_api_check():
    # tests/conftest.py sets SCIPY_ARRAY_API=1 before scipy is imported; without it scipy's
    # array API support is off and check_array_api_input skips itself (SkipTest).
    from unittest import SkipTest

    from scipy._lib._array_api import SCIPY_ARRAY_API
    from sklearn.utils.estimator_checks import check_array_api_input

    assert SCIPY_ARRAY_API
    estimator = SAEEncoder(max_iter=5, random_state=0, device="cpu")
    try:
        check_array_api_input("SAEEncoder", estimator, array_namespace="numpy")
    except SkipTest as exc:
        pytest.fail(f"check_array_api_input was skipped: {exc}")


# ------------------------------------------------------------------ dtype rule


def _dtype_inputs(X):
    """The same data as a list, ints, bools, float16, float32 and float64."""
    return {
        "list": X.tolist(),
        "int64": np.round(4 * X).astype(np.int64),
        "bool": X > 0,
        "float16": X.astype(np.float16),
        "float32": X.astype(np.float32),
        "float64": X.astype(np.float64),
    }


_DTYPE_X = make_sparse_dictionary_data(40, n_components=8, n_features=6, random_state=0)[0]


@pytest.mark.parametrize("kind", list(_dtype_inputs(_DTYPE_X)))
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda est: type(est).__name__)
def test_output_dtype_follows_scikit_learn(estimator, kind):
    # scikit-learn's rule, read off PCA and sparse_encode (check_array with
    # dtype=[float64, float32]): float32 stays float32, anything else becomes float64.
    # (DictionaryLearning does not validate the dtype and returns float32 for float16 or
    # bool input, so it is not the reference here.)
    X = _dtype_inputs(_DTYPE_X)[kind]
    reference = PCA(n_components=3).fit(X)
    expected = reference.transform(X).dtype
    assert expected == (np.float32 if kind == "float32" else np.float64)
    assert reference.fit_transform(X).dtype == expected
    reference_codes = _dtype_inputs(reference.transform(X).astype(np.float64))[kind]
    assert reference.inverse_transform(reference_codes).dtype == expected

    # Except 16-bit floats, computed and returned in float32 (issue 31: activation sets
    # stored in float16 would otherwise train at four times their bytes).
    if kind == "float16":
        expected = np.float32
    fitted = clone(estimator)
    y = X if isinstance(estimator, SAETranscoder) else None  # a transcoder needs Y
    assert fitted.fit_transform(X, y).dtype == expected
    codes = fitted.transform(X)
    assert codes.dtype == expected
    codes_in = _dtype_inputs(codes.astype(np.float64))[kind]
    assert fitted.inverse_transform(codes_in).dtype == expected


@pytest.mark.parametrize("kind", list(_dtype_inputs(_DTYPE_X)))
@pytest.mark.parametrize("algorithm", ["omp", "fista", "topk"])
def test_sparse_encode_dtype_follows_scikit_learn(algorithm, kind):
    X = _dtype_inputs(_DTYPE_X)[kind]
    dictionary = np.eye(3, _DTYPE_X.shape[1])
    expected = sklearn_sparse_encode(X, dictionary, algorithm="omp", n_nonzero_coefs=2).dtype
    assert expected == (np.float32 if kind == "float32" else np.float64)
    if kind == "float16":  # 16-bit floats are computed in float32 (issue 31)
        expected = np.float32
    n_nonzero = None if algorithm == "fista" else 2
    assert sparse_encode(X, dictionary, algorithm=algorithm, n_nonzero_coefs=n_nonzero).dtype == expected
