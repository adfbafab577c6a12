"""Shared transformer behaviour: validation, transform, inverse_transform, score, tags."""

import threading
import weakref
import zlib

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._compat import validate_data
from ._batches import is_streamed, iter_row_blocks, read_rows
from ._dask import dask_inverse_transform, dask_transform, is_dask_array
from ._torch_utils import device_rows, is_half, resolve_device, to_numpy, to_tensor, torch_dtype
from ._training import objective
from ._validation import check_finite_rows, check_matrix

# scikit-learn's rule (order matters): float32 and float64 are kept, anything else (lists, ints, bools) becomes float64.
FLOAT_DTYPES = [np.float64, np.float32]
# 16-bit floats (float16, bfloat16) are computed and returned in float32 (is_half).
_HALF_DTYPES = [np.float32, np.float64]


def float_dtypes(X):
    """What ``validate_data(..., dtype=)`` converts ``X`` to: ``FLOAT_DTYPES``, except
    for 16-bit float input, computed in float32."""
    dtype = getattr(X, "dtype", None)
    try:
        half = dtype is not None and is_half(dtype)
    except TypeError:  # a dtype numpy does not know (a DataFrame's extension dtype)
        half = False
    return _HALF_DTYPES if half else FLOAT_DTYPES


def per_sample_objective(X, codes, components, intercept, alpha):
    """The library objective of every sample, for numpy arrays (see ``_training.objective``)."""
    device = "cpu"
    values = objective(
        to_tensor(X, device=device),
        to_tensor(codes, device=device, dtype=X.dtype),
        to_tensor(components, device=device, dtype=X.dtype),
        None if intercept is None else to_tensor(intercept, device=device, dtype=X.dtype),
        alpha,
        per_sample=True,
    )
    return to_numpy(values)


# A block of encoding holds its input rows and about this many codes-wide arrays per row
# (pre-activations, codes, the top-k's values and indices) on the device.
_ENCODE_ARRAYS = 4


def device_blocks(X, device, width):
    """``(start, rows)`` blocks of ``X`` for results ``width`` wide computed on ``device``.

    An on-disk ``X`` is read in blocks (never mapped whole). An in-memory ``X`` is one
    block on the CPU and, on CUDA, blocks whose rows and results fit in the share of the
    device's free memory that ``device_rows`` allows, so that a large array never
    lands on the device whole.
    """
    if is_streamed(X):
        yield from iter_row_blocks(X)
        return
    itemsize = max(4, np.dtype(X.dtype).itemsize)
    rows = device_rows(device, (X.shape[1] + _ENCODE_ARRAYS * width) * itemsize)
    if rows is None or rows >= X.shape[0]:
        yield 0, X
        return
    for start in range(0, X.shape[0], rows):
        yield start, X[start : start + rows]


def blockwise(function, X, device, width):
    """``function`` (a tensor of rows -> a tensor with one result per row, computed
    without gradients) over the ``device_blocks`` of ``X``, as one numpy array."""
    output = None
    for start, rows in device_blocks(X, device, width):
        with torch.no_grad():
            tensor = to_tensor(rows, device=device, dtype=torch_dtype(rows.dtype))
            block = to_numpy(function(tensor))
        if start == 0 and len(block) == X.shape[0]:
            return block
        if output is None:
            output = np.empty((X.shape[0], *block.shape[1:]), dtype=block.dtype)
        output[start : start + len(block)] = block
    return output


# Parameters that do not change what a fit computes, left out of checkpoint configs.
_RUN_ONLY_PARAMS = {"verbose", "checkpoint_path", "checkpoint_every", "device", "warm_start"}


def _fingerprint(X, n_rows=16):
    """CRC-32 of the first and last ``n_rows`` rows (read, never the whole array)."""
    n = X.shape[0]
    head = read_rows(X, 0, min(n, n_rows))
    tail = read_rows(X, max(0, n - n_rows), n)
    return zlib.crc32(np.ascontiguousarray(tail).tobytes(),
                      zlib.crc32(np.ascontiguousarray(head).tobytes()))


def _describe(X):
    return f"{tuple(X.shape)} {np.dtype(X.dtype).name} crc32={_fingerprint(X)}"


def checkpoint_config(estimator, X, y=None, X_val=None):
    """What a checkpoint of ``estimator.fit(X, y, X_val=X_val)`` must match to be
    resumed: the parameters that change the result and a description of the data
    (shape, dtype, checksums of its first and last rows), held-out rows included (they
    make the history)."""
    config = {}
    for key, value in estimator.get_params(deep=False).items():
        if key in _RUN_ONLY_PARAMS:
            continue
        if value is None or isinstance(value, (bool, int, float, str, tuple)):
            config[key] = value
        elif isinstance(value, np.random.RandomState):
            config[key] = "RandomState instance"
        else:  # an array parameter (a given dictionary)
            array = np.asarray(value)
            config[key] = f"array {array.shape} crc32={zlib.crc32(np.ascontiguousarray(array).tobytes())}"
    config["X"] = _describe(X)
    if y is not None:
        config["y"] = f"{tuple(np.shape(y))} crc32={_fingerprint(np.asarray(y))}"
    if X_val is not None:
        config["X_val"] = _describe(X_val)
    return config


# Device copies of fitted estimators' weights (see BaseSparseEstimator._device_copy): a
# side table, so that transform leaves the estimator's __dict__ unchanged (scikit-learn's
# check_dict_unchanged) and a copy is never pickled; an entry dies with its estimator.
_DEVICE_COPIES = weakref.WeakKeyDictionary()
_DEVICE_COPIES_LOCK = threading.Lock()


def clear_device_copies(estimator):
    """Drop ``estimator``'s cached device copies (a new fit, new parameters)."""
    with _DEVICE_COPIES_LOCK:
        _DEVICE_COPIES.pop(estimator, None)


class BaseSparseEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class of every estimator of the library.

    Subclasses set ``components_`` (and optionally ``intercept_``) in ``fit`` and implement
    ``_encode(X_tensor) -> codes_tensor`` (under ``torch.no_grad``) and
    ``inference_flops(n_samples)``.
    """

    def _device_copy(self, name, sources, device, dtype, build):
        """``build()`` (weights on ``device`` in ``dtype``), made once and kept.

        A fitted estimator keeps one copy per ``name`` (the last ``device``/``dtype``
        asked for), so that successive ``transform`` calls (blocks of a streamed array,
        dask chunks, batches of feature statistics) upload the weights once instead of
        once per call. The copy is rebuilt when any of ``sources`` (the fitted arrays it
        was made from) is no longer the same object, and dropped by ``set_params``, by
        every ``fit`` (``_validate_X(reset=True)``) and when the estimator is pickled or
        collected (it lives in a side table, not in ``__dict__``).
        """
        key = (str(device), dtype)
        sources = tuple(sources)
        with _DEVICE_COPIES_LOCK:
            copies = _DEVICE_COPIES.get(self)
            entry = None if copies is None else copies.get(name)
        if (entry is not None and entry[0] == key and len(entry[1]) == len(sources)
                and all(a is b for a, b in zip(entry[1], sources))):
            return entry[2]
        value = build()
        with _DEVICE_COPIES_LOCK:
            # One copy per name: a new device or dtype replaces the old copy.
            _DEVICE_COPIES.setdefault(self, {})[name] = (key, sources, value)
        return value

    def set_params(self, **params):
        """Set the parameters of this estimator.

        As scikit-learn's ``set_params``; it also drops the cached device copy of the
        fitted weights, so that the next ``transform`` uploads them afresh (call it after
        changing a fitted array in place).

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : estimator instance
            Estimator instance.
        """
        clear_device_copies(self)
        return super().set_params(**params)

    def _validate_X(self, X, *, reset):
        if reset:
            clear_device_copies(self)
        if is_streamed(X):
            # An on-disk array stays on disk: scikit-learn's checks run on its first row
            # (features, names, dtype), the finiteness check in blocks.
            if X.shape[0] < 1:
                raise ValueError("X has 0 samples; at least 1 is required.")
            validate_data(self, X[:1], reset=reset, dtype=float_dtypes(X),
                          ensure_all_finite=False)  # fmt: skip
            check_finite_rows(X, "X")
            return X
        return validate_data(self, X, reset=reset, dtype=float_dtypes(X))

    def _resolved_device(self):
        # An estimator without a device parameter (LARS: scikit-learn's) is on the CPU.
        return resolve_device(getattr(self, "device", "cpu"))

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def transform(self, X):
        """Encode ``X`` into sparse codes.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            Data to encode. A dask array is encoded lazily, chunk of rows by chunk of
            rows, into a dask array (see :ref:`scaling`).

        Returns
        -------
        codes : ndarray or dask.array.Array of shape (n_samples, n_components)
            The codes, in the dtype of ``X`` (float32 stays float32, float16 and
            bfloat16 become float32, anything else float64).
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return dask_transform(self, X)
        X = self._validate_X(X, reset=False)
        return blockwise(self._encode, X, self._resolved_device(), self._n_features_out)

    def _decoder_tensors(self, device, dtype):
        """``(components, intercept or None)`` on ``device`` in ``dtype``: uploaded once
        and kept for the following calls (see ``_device_copy``)."""
        intercept = getattr(self, "intercept_", None)
        return self._device_copy(
            "decoder", (self.components_, intercept), device, dtype,
            lambda: (to_tensor(self.components_, device=device, dtype=dtype),
                     None if intercept is None else to_tensor(intercept, device=device, dtype=dtype)),
        )  # fmt: skip

    def _decode(self, codes):
        """``codes @ components_ + intercept_`` on the codes' device (a tensor)."""
        components, intercept = self._decoder_tensors(codes.device, codes.dtype)
        return codes @ components if intercept is None else torch.addmm(intercept, codes, components)

    def _encode_decode(self, X):
        """``(codes, reconstruction)`` of the tensor ``X``, both on its device."""
        codes = self._encode(X)
        return codes, self._decode(codes)

    def inverse_transform(self, X):
        """Reconstruct data from codes: ``codes @ components_ + intercept_``.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_components)
            Codes, e.g. the output of :meth:`transform`; a dask array is decoded lazily
            into a dask array.

        Returns
        -------
        X_reconstructed : ndarray or dask.array.Array of shape (n_samples, n_features)
            The reconstruction.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return dask_inverse_transform(self, X)
        codes = check_matrix(X, "X", dtype=float_dtypes(X))
        if codes.shape[1] != self.components_.shape[0]:
            raise ValueError(
                f"X has {codes.shape[1]} columns but this estimator has "
                f"{self.components_.shape[0]} components; inverse_transform expects codes."
            )
        device = self._resolved_device()
        if device_rows(device, 1) is not None:
            # On a GPU: decoded there in blocks, only the reconstruction comes back.
            return blockwise(self._decode, codes, device, self.components_.shape[1])
        reconstruction = codes @ self.components_.astype(codes.dtype, copy=False)
        intercept = getattr(self, "intercept_", None)
        if intercept is not None:
            reconstruction += intercept.astype(codes.dtype, copy=False)
        return reconstruction

    def score(self, X, y=None):
        """Negative mean objective ``-(0.5 ||x - x_hat||^2 + alpha ||s||_1)`` on ``X``.

        Higher is better. It compares fits at a fixed ``alpha``; to choose ``alpha``
        against ground truth, use ``scoring=mcc_scorer``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            The negative mean objective.
        """
        if not hasattr(self, "_encode"):  # an estimator that encodes outside torch
            codes = self.transform(X)
            X = self._validate_X(X, reset=False)
            intercept = getattr(self, "intercept_", None)
            return -float(np.mean(per_sample_objective(
                X, codes, self.components_, intercept, self._score_alpha())))
        X = self._validate_X(X, reset=False)
        alpha = self._score_alpha()

        def sample_objectives(rows):
            # On the estimator's device, block by block: only one value per row returns.
            components, intercept = self._decoder_tensors(rows.device, rows.dtype)
            return objective(rows, self._encode(rows), components, intercept, alpha,
                             per_sample=True)  # fmt: skip

        values = blockwise(sample_objectives, X, self._resolved_device(), self._n_features_out)
        return -float(np.mean(values))

    def _score_alpha(self):
        return self.alpha

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.non_deterministic = str(getattr(self, "device", "cpu")).startswith("cuda") or (
            getattr(self, "device", "cpu") == "auto" and torch.cuda.is_available()
        )
        return tags
