"""Tests of the array checks behind every public entry point (``_validation.py``)."""

import numpy as np
import pytest

from sklearn_sparsegap._validation import check_dictionary, check_matrix, check_same_rows


@pytest.mark.parametrize(
    "bad, problem",
    [
        (None, "required"),
        (np.ones(3), "2-D"),
        (np.ones((2, 2, 2)), "2-D"),
        (np.ones((0, 3)), "sample"),
        ([[1.0, np.nan]], "NaN"),
        ([[1.0, np.inf]], "infinity"),
        ([[1.0, -np.inf]], "infinity"),
        ([["a", "b"]], ""),
    ],
    ids=["none", "1d", "3d", "empty", "nan", "inf", "-inf", "strings"],
)
def test_check_matrix_errors_name_the_argument(bad, problem):
    with pytest.raises(ValueError, match="codes_true") as info:
        check_matrix(bad, "codes_true")
    assert problem.lower() in str(info.value).lower()


def test_check_matrix_min_rows():
    with pytest.raises(ValueError, match="init"):
        check_matrix(np.ones((1, 3)), "init", min_rows=2)
    assert check_matrix(np.ones((2, 3)), "init", min_rows=2).shape == (2, 3)


@pytest.mark.parametrize(
    "value, dtype, expected",
    [
        ([[1, 2]], [np.float64, np.float32], np.float64),
        (np.ones((2, 2), dtype=np.int32), [np.float64, np.float32], np.float64),
        (np.ones((2, 2), dtype=np.float16), [np.float64, np.float32], np.float64),
        (np.ones((2, 2), dtype=np.float32), [np.float64, np.float32], np.float32),
        (np.ones((2, 2), dtype=np.int32), "numeric", np.int32),
    ],
)
def test_check_matrix_dtype(value, dtype, expected):
    assert check_matrix(value, "X", dtype=dtype).dtype == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_not_modified_and_read_only_accepted(dtype):
    array = np.arange(12, dtype=dtype).reshape(4, 3) + 1.0
    before = array.copy()
    array.setflags(write=False)
    checked = check_matrix(array, "X")
    np.testing.assert_array_equal(checked, before)
    copied = check_matrix(array, "X", copy=True)
    assert not np.shares_memory(copied, array)
    dictionary = check_dictionary(array, n_features=3)
    np.testing.assert_array_equal(dictionary, before)
    np.testing.assert_array_equal(array, before)


def test_check_same_rows():
    check_same_rows(np.ones((3, 2)), np.ones((3, 5)), "X", "y")
    with pytest.raises(ValueError, match=r"X and y .* got 3 and 4"):
        check_same_rows(np.ones((3, 2)), np.ones((4, 2)), "X", "y")


def test_check_dictionary_feature_count_and_zero_atoms():
    with pytest.raises(ValueError, match=r"dictionary has 4 columns .* X has 3 features"):
        check_dictionary(np.ones((2, 4)), n_features=3)
    atoms = np.ones((4, 3))
    atoms[[1, 3]] = 0.0
    with pytest.raises(ValueError, match=r"init_dictionary has rows .* zero norm at indices \[1, 3\]"):
        check_dictionary(atoms, name="init_dictionary")
    with pytest.raises(ValueError, match="init_dictionary"):
        check_dictionary([[np.nan, 1.0]], name="init_dictionary")
