"""scikit-learn's estimator checks on every estimator of the library."""

import pytest
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
