"""The :func:`sparse_encode` front end: validation, blocks of rows, dispatch to a solver."""

from numbers import Integral, Real

import numpy as np
import torch

from .._compat import Interval, StrOptions, validate_params
from .._dask import is_dask_array, model_key, rows_chunked
from .._torch_utils import device_rows, resolve_device, to_numpy, to_tensor, torch_dtype
from .._validation import check_dictionary, check_matrix
from ._adam import adam_codes
from ._common import lipschitz_constant
from ._lca import adaptive_projected_gradient, lca
from ._greedy import gradient_pursuit, matching_pursuit, omp, topk_encode
from ._proximal import fista, ista

ALGORITHMS = (
    "ista", "fista", "lca", "omp", "mp", "gradient_pursuit", "topk", "adam", "paper_lca",
)  # fmt: skip
GREEDY_ALGORITHMS = ("omp", "mp", "gradient_pursuit", "topk")
# Greedy pursuits that fit a support by least squares or gradient steps: a support larger
# than n_features is linearly dependent there.
_SUPPORT_FITTING = ("omp", "gradient_pursuit")

# Defaults of sparse_encode when max_iter is None: enough for FISTA to converge on the
# paper's problems; the paper's test-time Adam runs 10,000 iterations.
DEFAULT_MAX_ITER = {"ista": 1000, "fista": 1000, "lca": 1000, "adam": 10_000, "paper_lca": 300}

# Rows per block: on the CPU one (rows, width) working array holds at most this many
# elements (a cache-and-memory figure). On CUDA a block holds about _CUDA_BLOCK_ARRAYS
# (rows, width) arrays and is sized from the device's free memory (``device_rows``):
# fewer, larger blocks mean fewer launches and host syncs.
_MAX_BLOCK_ELEMENTS = 2**24
_MIN_BLOCK_ROWS = 1024
_MAX_BLOCK_ROWS = 65536
_CUDA_BLOCK_ARRAYS = 6


def default_n_nonzero_coefs(n_features, n_components):
    """Return scikit-learn's default K, ``min(max(n_features // 10, 1), n_components)``.

    Parameters
    ----------
    n_features : int
        M.
    n_components : int
        N.

    Returns
    -------
    n_nonzero_coefs : int
        The default K of the greedy algorithms.

    Examples
    --------
    >>> from sklearn_sparsegap._solvers import default_n_nonzero_coefs
    >>> default_n_nonzero_coefs(200, 1000)
    20
    """
    return min(max(n_features // 10, 1), n_components)


def check_n_nonzero_coefs(
    n_nonzero_coefs, n_features, n_components, algorithm, name="n_nonzero_coefs"
):
    """Resolve and check K of a greedy algorithm; ``name`` is the parameter in errors.

    Parameters
    ----------
    n_nonzero_coefs : int or None
        K; None means :func:`default_n_nonzero_coefs`.
    n_features, n_components : int
        Shape of the dictionary.
    algorithm : str
        The greedy algorithm (``"omp"`` and ``"gradient_pursuit"`` also need
        ``K <= n_features``).
    name : str, default="n_nonzero_coefs"
        Parameter name used in the error message.

    Returns
    -------
    n_nonzero_coefs : int
        The checked K.

    Raises
    ------
    ValueError
        If K exceeds ``n_components``, or ``n_features`` for a support-fitting pursuit.
    """
    if n_nonzero_coefs is None:
        return default_n_nonzero_coefs(n_features, n_components)
    if n_nonzero_coefs > n_components:
        raise ValueError(
            f"{name}={n_nonzero_coefs} exceeds n_components={n_components} "
            f"(the number of dictionary atoms); algorithm={algorithm!r} needs "
            f"{name} <= {n_components}."
        )
    if algorithm in _SUPPORT_FITTING and n_nonzero_coefs > n_features:
        raise ValueError(
            f"{name}={n_nonzero_coefs} exceeds n_features={n_features}: "
            f"algorithm={algorithm!r} fits the codes on the selected atoms, and more than "
            f"n_features atoms are linearly dependent; use {name} <= {n_features}."
        )
    return int(n_nonzero_coefs)


def _block_rows(width, device="cpu", itemsize=4, free_bytes=None):
    """Rows per block of ``encode_tensor`` for working arrays ``width`` wide."""
    memory_rows = device_rows(device, _CUDA_BLOCK_ARRAYS * max(width, 1) * itemsize,
                              free_bytes=free_bytes)  # fmt: skip
    if memory_rows is not None:
        return max(_MIN_BLOCK_ROWS, memory_rows)
    return int(np.clip(_MAX_BLOCK_ELEMENTS // max(width, 1), _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS))


_GREEDY_SOLVERS = {
    "omp": omp,
    "mp": matching_pursuit,
    "gradient_pursuit": gradient_pursuit,
    "topk": topk_encode,
}


@torch.no_grad()
def encode_tensor(
    X,
    D,
    *,
    algorithm="fista",
    alpha=0.01,
    n_nonzero_coefs=None,
    positive=False,
    max_iter=None,
    tol=1e-4,
    init=None,
    residual_tol=None,
):
    """:func:`sparse_encode` on tensors: blocks of rows and dispatch, no validation.

    The estimators call this below their one numpy -> torch conversion; the arguments
    mean what they mean in :func:`sparse_encode` and are assumed valid (a greedy K is
    not checked against the dictionary's shape: see :func:`check_n_nonzero_coefs`).

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals. Not modified.
    D : Tensor of shape (n_components, n_features)
        Dictionary (rows are atoms), same device and dtype as ``X``.
    algorithm : str, default="fista"
        One of ``ALGORITHMS``.
    alpha : float, default=0.01
        L1 penalty of ``"fista"``, ``"ista"`` and ``"adam"``.
    n_nonzero_coefs : int or None, default=None
        K of the greedy algorithms; None means :func:`default_n_nonzero_coefs`.
    positive : bool, default=False
        Non-negative codes.
    max_iter : int or None, default=None
        Iteration budget; None means ``DEFAULT_MAX_ITER`` of the algorithm.
    tol : float, default=1e-4
        Stopping tolerance of the iterative algorithms.
    init : Tensor of shape (n_samples, n_components) or None, default=None
        Warm start of the iterative algorithms (ignored by the greedy ones).
    residual_tol : float or None, default=None
        ``"mp"`` only: SAELens's matching-pursuit rule (:func:`matching_pursuit` with
        ``tol=residual_tol``, ``stop_on_repeat=True``, ``normalize=False``): each sample
        stops once its residual norm is below ``residual_tol`` or its support repeats,
        after at most ``n_nonzero_coefs`` iterations. None: K plain MP steps.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        A new tensor on the device and in the dtype of ``X``.
    n_iter : int
        Iterations run (the maximum over blocks).

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers._sparse_encode import encode_tensor
    >>> D = torch.eye(2, dtype=torch.float64)
    >>> codes, n_iter = encode_tensor(torch.tensor([[3.0, -0.5]], dtype=torch.float64), D,
    ...                               algorithm="omp", n_nonzero_coefs=1)
    >>> codes
    tensor([[3., 0.]], dtype=torch.float64)
    """
    n_components, n_features = D.shape
    max_iter = _resolve_max_iter(algorithm, max_iter)
    if algorithm in GREEDY_ALGORITHMS:
        if n_nonzero_coefs is None:
            n_nonzero_coefs = default_n_nonzero_coefs(n_features, n_components)
        init = None
    width = n_components
    if algorithm in _SUPPORT_FITTING:
        width = max(n_components, n_nonzero_coefs * n_features)
    rows = _block_rows(width, X.device, X.element_size())
    lipschitz = None
    if algorithm in ("ista", "fista", "lca") and X.shape[0] > rows:
        # Shared by the blocks instead of one eigenvalue problem each.
        lipschitz = lipschitz_constant(D)
    solve = _block_solver(
        algorithm, D, alpha=alpha, n_nonzero_coefs=n_nonzero_coefs, positive=positive,
        max_iter=max_iter, tol=tol, lipschitz=lipschitz, residual_tol=residual_tol,
    )  # fmt: skip
    return _encode_in_blocks(solve, X, init, rows, n_components)


def _resolve_max_iter(algorithm, max_iter):
    """``max_iter``, or the algorithm's ``DEFAULT_MAX_ITER`` (1 for the greedy ones)."""
    return DEFAULT_MAX_ITER.get(algorithm, 1) if max_iter is None else max_iter


def _block_solver(
    algorithm, D, *, alpha, n_nonzero_coefs, positive, max_iter, tol, lipschitz,
    residual_tol=None,
):  # fmt: skip
    """``solve(X_block, init_block) -> (codes, n_iter)``: ``algorithm`` on dictionary ``D``."""

    def solve(X_block, init_block):
        if algorithm in ("ista", "fista"):
            function = fista if algorithm == "fista" else ista
            return function(
                X_block, D, alpha, positive=positive, max_iter=max_iter, tol=tol,
                init=init_block, lipschitz=lipschitz,
            )  # fmt: skip
        if algorithm == "lca":
            return lca(
                X_block, D, alpha, positive=positive, max_iter=max_iter, tol=tol,
                init=init_block, lipschitz=lipschitz,
            )  # fmt: skip
        if algorithm == "adam":
            return adam_codes(X_block, D, alpha, max_iter=max_iter, tol=tol, init=init_block)
        if algorithm == "paper_lca":
            return adaptive_projected_gradient(
                X_block, D, alpha, max_iter=max_iter, tol=tol, init=init_block
            )
        if algorithm == "mp" and residual_tol is not None:
            return matching_pursuit(
                X_block, D, n_nonzero_coefs, positive=positive, tol=residual_tol,
                stop_on_repeat=True, normalize=False,
            )  # fmt: skip
        return _GREEDY_SOLVERS[algorithm](X_block, D, n_nonzero_coefs, positive=positive)

    return solve


def _encode_in_blocks(solve, X, init, rows, n_components):
    """``solve`` on blocks of ``rows`` rows of ``X`` (and ``init``): codes, max ``n_iter``."""
    n_samples = X.shape[0]
    if n_samples <= rows:
        return solve(X, init)
    codes = X.new_empty((n_samples, n_components))
    n_iter = 0
    for start in range(0, n_samples, rows):
        block = slice(start, min(start + rows, n_samples))
        block_codes, block_iter = solve(X[block], None if init is None else init[block])
        codes[block] = block_codes
        n_iter = max(n_iter, block_iter)
    return codes, n_iter


@validate_params(
    {
        "X": ["array-like"],
        "dictionary": ["array-like"],
        "algorithm": [StrOptions(set(ALGORITHMS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "n_nonzero_coefs": [Interval(Integral, 1, None, closed="left"), None],
        "positive": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "init": ["array-like", None],
        "device": [str, torch.device],
        "return_n_iter": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def sparse_encode(
    X,
    dictionary,
    *,
    algorithm="fista",
    alpha=0.01,
    n_nonzero_coefs=None,
    positive=False,
    max_iter=None,
    tol=1e-4,
    init=None,
    device="auto",
    return_n_iter=False,
):
    """Sparse codes of ``X`` on a fixed dictionary, with batched torch solvers.

    Solves, per sample, ``min_s 0.5 * ||x - s @ dictionary||^2 + alpha * ||s||_1``
    (scikit-learn's convention: ``alpha`` means what it means in
    :func:`sklearn.decomposition.sparse_encode`), or a greedy K-sparse approximation of
    it. All samples are encoded at once, in blocks of rows that bound the memory.

    Parameters
    ----------
    X : array-like or dask.array.Array of shape (n_samples, n_features)
        Signals. Not modified. A dask array is encoded lazily, chunk of rows by chunk
        of rows, into a dask array of codes (``return_n_iter`` must then be False).
    dictionary : array-like of shape (n_components, n_features)
        Atoms as rows; any non-zero norms (the greedy algorithms rank atoms by
        correlation divided by the atom norm).
    algorithm : {"fista", "ista", "lca", "omp", "mp", "gradient_pursuit", "topk", \
            "adam", "paper_lca"}, default="fista"
        - ``"fista"``: accelerated proximal gradient with adaptive restart (the lasso);
        - ``"ista"``: proximal gradient (the lasso);
        - ``"lca"``: the locally competitive algorithm of Rozell et al. (2008), Euler
          steps on the potentials (the lasso at its fixed points);
        - ``"omp"``: orthogonal matching pursuit, K atoms with a least-squares fit;
        - ``"mp"``: matching pursuit, K greedy steps without re-fit;
        - ``"gradient_pursuit"``: greedy selection with exact gradient steps on the
          support (Blumensath & Davies 2008);
        - ``"topk"``: one correlation step keeping the K largest;
        - ``"adam"``: the paper's exp-parametrised Adam (always non-negative codes; see
          ``max_iter``);
        - ``"paper_lca"``: what the paper's §5 code calls LCA, projected gradient on
          ``ReLU(u)`` with a per-sample step adapted by 0.5 / 2 (non-negative codes;
          not Rozell's LCA; its ``tol`` is an absolute decrease of the per-entry loss).
    alpha : float, default=0.01
        L1 penalty of ``"fista"``, ``"ista"``, ``"lca"``, ``"adam"`` and ``"paper_lca"``
        (the paper's ``lambda`` is
        ``paper_l1_to_alpha(lambda, n_features, n_components)``). The default is
        chosen on the paper's task; see :ref:`defaults`.
    n_nonzero_coefs : int or None, default=None
        K of the greedy algorithms; None means ``min(max(n_features // 10, 1),
        n_components)`` as in scikit-learn. It must not exceed ``n_components`` and, for
        ``"omp"`` and ``"gradient_pursuit"``, ``n_features``.
    positive : bool, default=False
        Non-negative codes (``"adam"`` codes always are).
    max_iter : int or None, default=None
        Maximum iterations of ``"fista"``, ``"ista"``, ``"lca"`` (None: 1000),
        ``"paper_lca"`` (None: 300, the paper's) and ``"adam"`` (None:
        10000, the paper's test-time count; Adam's step of at most ``3e-3`` in
        log-space needs thousands of iterations to grow codes from ``exp(-10)``).
    tol : float, default=1e-4
        ``"fista"`` and ``"ista"`` stop a sample once its codes change by
        ``||s_new - s|| <= tol * max(||s||, eps)`` in one iteration, ``"lca"`` once its
        potentials do; ``"adam"`` stops when every sample's codes do (0 runs
        ``max_iter`` iterations); ``"paper_lca"`` stops when no sample's per-entry loss
        fell by ``tol`` (the paper's code used 1e-6).
    init : array-like of shape (n_samples, n_components), default=None
        Warm start of the iterative algorithms (e.g. an SAE's codes); ignored by the
        greedy algorithms.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    return_n_iter : bool, default=False
        Also return the number of iterations run (the maximum over blocks), e.g. for
        :func:`sklearn_sparsegap.flops.sparse_encode_flops`.

    Returns
    -------
    codes : ndarray or dask.array.Array of shape (n_samples, n_components)
        The codes; float64 if ``X`` is float64, else float32.
    n_iter : int
        Iterations run; returned when ``return_n_iter`` is True.

    See Also
    --------
    sklearn.decomposition.sparse_encode : The scikit-learn equivalent (same objective).
    sklearn_sparsegap.flops.sparse_encode_flops : FLOPs of a call.

    Examples
    --------
    >>> from sklearn_sparsegap import make_sparse_dictionary_data, mean_corr_coef
    >>> from sklearn_sparsegap import sparse_encode
    >>> X, D, S = make_sparse_dictionary_data(256, n_components=32, n_features=24,
    ...                                       n_nonzero_coefs=3, random_state=0)
    >>> codes = sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=3, device="cpu")
    >>> round(mean_corr_coef(S, codes), 3)
    1.0
    >>> codes, n_iter = sparse_encode(X, D, alpha=0.001, positive=True, device="cpu",
    ...                               return_n_iter=True)
    >>> codes.dtype, mean_corr_coef(S, codes) > 0.99
    (dtype('float64'), True)
    """
    if is_dask_array(X):
        return dask_sparse_encode(
            X, dictionary, init=init, return_n_iter=return_n_iter, algorithm=algorithm,
            alpha=alpha, n_nonzero_coefs=n_nonzero_coefs, positive=positive,
            max_iter=max_iter, tol=tol, device=device,
        )  # fmt: skip
    X, dictionary, init = _check_encode_inputs(X, dictionary, init)
    n_nonzero = _check_greedy_k(algorithm, n_nonzero_coefs, X.shape[1], dictionary.shape[0])
    codes, n_iter = _encode_arrays(
        X, dictionary, init, device=device, algorithm=algorithm, alpha=alpha,
        n_nonzero_coefs=n_nonzero, positive=positive,
        max_iter=_resolve_max_iter(algorithm, max_iter), tol=tol,
    )  # fmt: skip
    return (codes, n_iter) if return_n_iter else codes


def _check_encode_inputs(X, dictionary, init):
    """``X``, ``dictionary`` and ``init`` checked against each other, as arrays."""
    X = check_matrix(X, "X")
    dictionary = check_dictionary(dictionary, n_features=X.shape[1])
    if init is not None:
        init = check_matrix(init, "init")
        _check_init_shape(init.shape, X.shape[0], dictionary.shape[0])
    return X, dictionary, init


def _check_init_shape(shape, n_samples, n_components):
    if tuple(shape) != (n_samples, n_components):
        raise ValueError(
            f"init must have shape (n_samples, n_components) = "
            f"({n_samples}, {n_components}), got {shape}."
        )


def _check_greedy_k(algorithm, n_nonzero_coefs, n_features, n_components):
    """The checked K of a greedy ``algorithm``; None for the others (they have no K)."""
    if algorithm not in GREEDY_ALGORITHMS:
        return None
    return check_n_nonzero_coefs(n_nonzero_coefs, n_features, n_components, algorithm)


def _encode_arrays(X, dictionary, init, *, device, **parameters):
    """:func:`encode_tensor` between the one conversion to tensors and the one back."""
    device = resolve_device(device)
    dtype = torch_dtype(X.dtype)
    with torch.no_grad():
        codes, n_iter = encode_tensor(
            to_tensor(X, device=device, dtype=dtype),
            to_tensor(dictionary, device=device, dtype=dtype),
            init=None if init is None else to_tensor(init, device=device, dtype=dtype),
            **parameters,
        )
    return to_numpy(codes), n_iter


# dask: the rows of a lazy X are encoded chunk by chunk by the in-memory sparse_encode.


class _Encoder:
    """``sparse_encode`` with everything but the rows bound: the one object in the graph."""

    def __init__(self, dictionary, parameters):
        self.dictionary = dictionary
        self.parameters = parameters

    def __call__(self, block, init=None):
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
    if return_n_iter:
        raise ValueError(
            "return_n_iter=True needs the iterations of every chunk, which a lazy dask "
            "result does not have; call sparse_encode on the chunks you need, or on an "
            "in-memory X."
        )
    if is_dask_array(dictionary):
        dictionary = dictionary.compute()
    X = rows_chunked(X)
    dictionary = check_dictionary(dictionary, n_features=X.shape[1])
    # K is checked here, not at compute time in every chunk.
    _check_greedy_k(parameters["algorithm"], parameters["n_nonzero_coefs"], X.shape[1],
                    dictionary.shape[0])
    # One dtype for the whole result: that of X, as in the in-memory call.
    dictionary = dictionary.astype(X.dtype, copy=False)
    n_components = dictionary.shape[0]
    encoder = model_key(_Encoder(dictionary, parameters))
    out = {
        "chunks": (X.chunks[0], (n_components,)),
        "dtype": X.dtype,
        "meta": np.empty((0, n_components), dtype=X.dtype),
    }
    if init is None:
        return X.map_blocks(_encode_block, encoder, **out)
    import dask.array as da

    if not is_dask_array(init):
        init = da.from_array(check_matrix(init, "init"), chunks=-1)
    _check_init_shape(init.shape, X.shape[0], n_components)
    init = init.rechunk((X.chunks[0], -1))
    return da.map_blocks(_encode_block_from, X, init, encoder, **out)
