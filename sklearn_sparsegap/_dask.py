"""dask arrays in, dask arrays out: row-chunked, lazy versions of the encoding methods.

Every function here builds a graph and computes nothing. The rows of ``X`` are mapped
chunk by chunk (``map_blocks``) through the in-memory method, so a chunk's result is
exactly what the in-memory call returns for those rows; columns are one chunk (rechunked
if needed). The fitted model (or the dictionary) enters the graph as a single key, so a
distributed scheduler sends it to each worker once, not once per chunk. dask is imported
only when the input already is a dask array: the library does not depend on it.

This module is a leaf: it imports nothing of the package. The solvers' lazy encoding
lives with the solvers (``_solvers._sparse_encode.dask_sparse_encode``) and the lazy
activation set with the store (``activations._store.activations_as_dask``).
"""

import sys
import uuid

import numpy as np

def is_dask_array(X):
    """Whether ``X`` is a ``dask.array.Array`` (without importing dask)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(X, module.Array)


def model_key(obj):
    """``obj`` as one delayed key of a graph (shipped once, whatever the chunk count)."""
    import dask

    name = f"sparsegap-{type(obj).__name__.lower()}-{uuid.uuid4().hex}"
    return dask.delayed(obj, pure=True, traverse=False, name=name)


def rows_chunked(X, name="X"):
    """Check a 2-D dask array with known columns and make its columns a single chunk."""
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array, got a dask array with {X.ndim} dimension(s) "
            f"(shape {X.shape})."
        )
    if np.isnan(X.shape[1]):
        raise ValueError(f"{name} is a dask array with an unknown number of columns.")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold numbers, got a dask array of dtype {X.dtype}.")
    if X.dtype not in (np.float32, np.float64):
        # scikit-learn's rule, as for in-memory input: other dtypes become float64.
        X = X.astype(np.float64)
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _check_n_columns(X, expected, what, method):
    if X.shape[1] != expected:
        raise ValueError(
            f"X has {X.shape[1]} columns but this estimator {what} {expected}; "
            f"{method} expects that many."
        )


def _transform_block(block, estimator):
    return np.asarray(estimator.transform(block))


def _inverse_transform_block(block, estimator):
    return np.asarray(estimator.inverse_transform(block))


def map_rows(function, X, estimator, n_columns):
    """``function(block, estimator)`` over the row chunks of ``X``, lazily.

    Parameters
    ----------
    function : callable
        ``(ndarray block, estimator) -> ndarray`` of shape ``(len(block), n_columns)``
        and the dtype of ``block``.
    X : dask.array.Array of shape (n_samples, n_input_columns)
        Checked and single-chunk in columns (see ``rows_chunked``).
    estimator : object
        Enters the graph once.
    n_columns : int
        Columns of the result.

    Returns
    -------
    result : dask.array.Array of shape (n_samples, n_columns)
    """
    return X.map_blocks(
        function,
        model_key(estimator),
        chunks=(X.chunks[0], (n_columns,)),
        dtype=X.dtype,
        meta=np.empty((0, n_columns), dtype=X.dtype),
    )


def dask_transform(estimator, X):
    """The estimator's ``transform`` of a dask array, as a dask array (lazy)."""
    X = rows_chunked(X)
    _check_n_columns(X, estimator.n_features_in_, "was fitted on", "transform")
    return map_rows(_transform_block, X, estimator, estimator.components_.shape[0])


def dask_inverse_transform(estimator, X):
    """The estimator's ``inverse_transform`` of dask codes, as a dask array (lazy)."""
    X = rows_chunked(X)
    n_components, n_features = estimator.components_.shape
    _check_n_columns(X, n_components, "has n_components =", "inverse_transform")
    return map_rows(_inverse_transform_block, X, estimator, n_features)
