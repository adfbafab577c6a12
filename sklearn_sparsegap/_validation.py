"""Array checks whose error messages name the offending argument."""

import os

import numpy as np
from sklearn.utils import check_array

from ._batches import iter_row_blocks

# Files already checked finite, keyed by (path, offset, shape, dtype, size, mtime): a
# transform after a fit on the same file does not read it again.
_CHECKED_FILES = {}
_MAX_CHECKED_FILES = 64


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


def _file_key(X):
    filename = getattr(X, "filename", None)
    if filename is None or getattr(X, "mode", None) != "r":
        return None
    try:
        status = os.stat(filename)
    except OSError:
        return None
    offset = X.__array_interface__["data"][0]
    # The address identifies the view within its mapping; the file's identity and
    # modification time say whether it changed.
    return (filename, status.st_ino, status.st_size, status.st_mtime_ns, offset, X.shape,
            X.strides, X.dtype.str)


def check_finite_rows(X, name="X"):
    """Raise a ``ValueError`` naming the first row of ``X`` holding NaN or infinity.

    ``X`` (a 2-D array, typically an on-disk memmap) is read in blocks of a few tens of
    megabytes (see :func:`~sklearn_sparsegap._batches.iter_row_blocks`), never whole;
    a read-only memmap of a file already checked, unchanged since, is not read again.
    """
    key = _file_key(X)
    if key is not None and key in _CHECKED_FILES:
        return
    for start, rows in iter_row_blocks(X):
        if rows.dtype.kind in "fc" and not np.isfinite(rows).all():
            bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))[0]
            kind = "NaN" if np.isnan(rows[bad]).any() else "infinity"
            raise ValueError(
                f"{name} contains {kind} at row {start + bad}: every row must be finite "
                "(drop or repair the bad rows before fitting)."
            )
    if key is not None:
        if len(_CHECKED_FILES) >= _MAX_CHECKED_FILES:
            _CHECKED_FILES.pop(next(iter(_CHECKED_FILES)))
        _CHECKED_FILES[key] = True
