"""Array checks whose error messages name the offending argument."""

import numpy as np
from sklearn.utils import check_array


def check_matrix(array, name, *, dtype="numeric", min_rows=1, copy=False):
    """Validate a finite 2-D array, re-raising scikit-learn's errors with ``name``.

    Parameters
    ----------
    array : array-like
        The value to check.
    name : str
        The argument's name, used in every error message.
    dtype : str, type or list of types, default="numeric"
        Passed to :func:`sklearn.utils.check_array`.
    min_rows : int, default=1
        Minimum number of rows.
    copy : bool, default=False
        Whether to force a copy.

    Returns
    -------
    ndarray of shape (n_rows, n_columns)
    """
    if array is None:
        raise ValueError(f"{name} is required, got None.")
    ndim = np.ndim(array)
    if ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array, got an array with {ndim} dimension(s) "
            f"(shape {np.shape(array)})."
        )
    try:
        return check_array(
            array,
            dtype=dtype,
            copy=copy,
            ensure_min_samples=min_rows,
            input_name=name,
        )
    except ValueError as exc:
        message = str(exc)
        if name not in message:
            message = f"{name}: {message}"
        raise ValueError(message) from exc


def check_same_rows(first, second, first_name, second_name):
    """Raise if two arrays do not have the same number of rows."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{first_name} and {second_name} must have the same number of rows, got "
            f"{first.shape[0]} and {second.shape[0]}."
        )


def check_dictionary(dictionary, *, n_features=None, name="dictionary"):
    """Validate a dictionary: 2-D, finite, no zero rows, optional feature count."""
    dictionary = check_matrix(dictionary, name, dtype=[np.float64, np.float32])
    if n_features is not None and dictionary.shape[1] != n_features:
        raise ValueError(
            f"{name} has {dictionary.shape[1]} columns (features) but X has "
            f"{n_features} features; {name} must have shape "
            f"(n_components, {n_features})."
        )
    norms = np.linalg.norm(dictionary, axis=1)
    if np.any(norms == 0):
        rows = np.flatnonzero(norms == 0)[:5].tolist()
        raise ValueError(
            f"{name} has rows (atoms) of zero norm at indices {rows}; every atom "
            "needs a non-zero norm."
        )
    return dictionary
