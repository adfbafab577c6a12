"""dask arrays in, dask arrays out: row-chunked, lazy versions of the encoding methods.

Every function here builds a graph and computes nothing. The rows of ``X`` are mapped
chunk by chunk (``map_blocks``) through the in-memory method, so a chunk's result is
exactly what the in-memory call returns for those rows; columns are one chunk (rechunked
if needed). The fitted model (or the dictionary) enters the graph as a single key, so a
distributed scheduler sends it to each worker once, not once per chunk. dask is imported
only when the input already is a dask array: the library does not depend on it.
"""

import sys
import uuid
from pathlib import Path

import numpy as np

# Rows per chunk of an activation set opened as a dask array when none is given: ~64 MB
# of float32 at 256 features, enough work per task to hide the scheduler's overhead.
DEFAULT_CHUNK_ROWS = 65536


def is_dask_array(X):
    """Whether ``X`` is a ``dask.array.Array`` (without importing dask)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(X, module.Array)


def _model_key(obj):
    """``obj`` as one delayed key of a graph (shipped once, whatever the chunk count)."""
    import dask

    name = f"sparsegap-{type(obj).__name__.lower()}-{uuid.uuid4().hex}"
    return dask.delayed(obj, pure=True, traverse=False, name=name)


def _rows_chunked(X, name="X"):
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
        Checked and single-chunk in columns (see ``_rows_chunked``).
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
        _model_key(estimator),
        chunks=(X.chunks[0], (n_columns,)),
        dtype=X.dtype,
        meta=np.empty((0, n_columns), dtype=X.dtype),
    )


def dask_transform(estimator, X):
    """The estimator's ``transform`` of a dask array, as a dask array (lazy)."""
    X = _rows_chunked(X)
    _check_n_columns(X, estimator.n_features_in_, "was fitted on", "transform")
    return map_rows(_transform_block, X, estimator, estimator.components_.shape[0])


def dask_inverse_transform(estimator, X):
    """The estimator's ``inverse_transform`` of dask codes, as a dask array (lazy)."""
    X = _rows_chunked(X)
    n_components, n_features = estimator.components_.shape
    _check_n_columns(X, n_components, "has n_components =", "inverse_transform")
    return map_rows(_inverse_transform_block, X, estimator, n_features)


class _Encoder:
    """``sparse_encode`` with everything but the rows bound: the one object in the graph."""

    def __init__(self, dictionary, parameters):
        self.dictionary = dictionary
        self.parameters = parameters

    def __call__(self, block, init=None):
        from ._solvers import sparse_encode

        return sparse_encode(block, self.dictionary, init=init, **self.parameters)


def _encode_block(block, encoder):
    return encoder(block)


def _encode_block_from(block, init, encoder):
    return encoder(block, init)


def dask_sparse_encode(X, dictionary, *, init, return_n_iter, **parameters):
    """:func:`sparse_encode` of a dask ``X``, as a dask array (lazy).

    ``dictionary`` is an in-memory array (validated by the caller's rules here, once);
    ``init`` may be in memory or a dask array and is cut into the row chunks of ``X``.
    """
    from ._solvers._sparse_encode import GREEDY_ALGORITHMS, check_n_nonzero_coefs
    from ._validation import check_dictionary

    if return_n_iter:
        raise ValueError(
            "return_n_iter=True needs the iterations of every chunk, which a lazy dask "
            "result does not have; call sparse_encode on the chunks you need, or on an "
            "in-memory X."
        )
    if is_dask_array(dictionary):
        dictionary = dictionary.compute()
    X = _rows_chunked(X)
    dictionary = check_dictionary(dictionary, n_features=X.shape[1])
    algorithm = parameters["algorithm"]
    if algorithm in GREEDY_ALGORITHMS:
        # Checked here, not at compute time in every chunk.
        check_n_nonzero_coefs(parameters["n_nonzero_coefs"], X.shape[1], dictionary.shape[0],
                              algorithm)
    # One dtype for the whole result: that of X, as in the in-memory call.
    dictionary = dictionary.astype(X.dtype, copy=False)
    n_components = dictionary.shape[0]
    encoder = _model_key(_Encoder(dictionary, parameters))
    out = {
        "chunks": (X.chunks[0], (n_components,)),
        "dtype": X.dtype,
        "meta": np.empty((0, n_components), dtype=X.dtype),
    }
    if init is None:
        return X.map_blocks(_encode_block, encoder, **out)
    import dask.array as da

    if not is_dask_array(init):
        from ._validation import check_matrix

        init = da.from_array(check_matrix(init, "init"), chunks=-1)
    if init.ndim != 2 or init.shape[1] != n_components or init.shape[0] != X.shape[0]:
        raise ValueError(
            f"init must have shape (n_samples, n_components) = "
            f"({X.shape[0]}, {n_components}), got {init.shape}."
        )
    init = init.rechunk((X.chunks[0], -1))
    return da.map_blocks(_encode_block_from, X, init, encoder, **out)


class ActivationRows:
    """Rows of an on-disk activation set, read on demand: what ``da.from_array`` slices.

    It pickles as its path and shape, never its data, so every worker of a cluster opens
    the file itself (the path must be readable there) and reads only its chunks.
    """

    ndim = 2

    def __init__(self, path, shape, stored, dtype):
        self.path = str(path)
        self.shape = tuple(shape)
        self.stored = stored
        self.dtype = np.dtype(dtype)

    def __reduce__(self):
        return type(self), (self.path, self.shape, self.stored, self.dtype)

    def __getitem__(self, key):
        from .activations._store import STORAGE_DTYPES, _bfloat16_to_float32

        memmap = np.memmap(
            self.path, dtype=STORAGE_DTYPES[self.stored], mode="r", shape=self.shape
        )
        rows = memmap[key]
        if self.stored == "bfloat16":
            rows = _bfloat16_to_float32(rows)
        # A copy: the chunk must not keep the file mapped once it leaves the worker.
        return np.array(rows, dtype=self.dtype)


def activations_as_dask(path, manifest, *, dtype=None, chunk_rows=None):
    """An activation set's committed rows as a lazy dask array of row chunks."""
    import dask.array as da

    stored = manifest["settings"]["dtype"]
    shape = (manifest["n_rows"], manifest["n_features"])
    if dtype is None:
        # bfloat16 has no numpy dtype: its chunks are converted to float32.
        dtype = np.float32 if stored == "bfloat16" else np.dtype(stored)
    elif np.dtype(dtype).kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dtype!r}.")
    if chunk_rows is None:
        chunk_rows = DEFAULT_CHUNK_ROWS
    elif int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows!r}.")
    rows = ActivationRows(
        Path(path) / manifest["files"]["activations"], shape, stored, dtype
    )
    return da.from_array(
        rows, chunks=(int(chunk_rows), -1), asarray=False, fancy=False, inline_array=False,
        name=f"activations-{uuid.uuid4().hex}",
    )
