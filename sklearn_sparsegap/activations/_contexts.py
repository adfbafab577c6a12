"""Token context windows around rows of an activation set (for feature pages)."""

from numbers import Integral

import numpy as np


def context_windows(metadata, rows, *, left=30, right=5):
    """The rows (and tokens) around given rows, within the same input sequence.

    Rows of one sequence are stored consecutively in position order, so a row's context
    is its neighbours in the set that belong to the same sequence. This is what a feature
    page shows around a top-activating token (the paper's explainer uses 30 tokens left
    and 5 right).

    Parameters
    ----------
    metadata : dict of ndarray
        The metadata returned by :func:`load_activations` (``sequence`` and ``token`` are
        used).
    rows : array-like of int of shape (n_rows,)
        Rows of the set to centre windows on.
    left : int, default=30
        Tokens to include before each row.
    right : int, default=5
        Tokens to include after each row.

    Returns
    -------
    window_rows : ndarray of shape (n_rows, left + 1 + right)
        Row indices of the window, ``-1`` where the sequence ends first. Column ``left``
        is the row itself.
    window_tokens : ndarray of shape (n_rows, left + 1 + right)
        Their token ids, ``-1`` in the same places.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap.activations import context_windows
    >>> metadata = {"sequence": np.array([0, 0, 0, 1, 1]),
    ...             "token": np.array([10, 11, 12, 20, 21])}
    >>> window_rows, window_tokens = context_windows(metadata, [2, 3], left=1, right=1)
    >>> window_tokens.tolist()
    [[11, 12, -1], [-1, 20, 21]]
    """
    for name, value in (("left", left), ("right", right)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    for key in ("sequence", "token"):
        if key not in metadata:
            raise ValueError(f"metadata has no {key!r} array; pass load_activations' metadata.")
    sequence, token = metadata["sequence"], metadata["token"]
    n = len(sequence)
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and (rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= n)):
        raise ValueError(f"rows must be a 1-D array of row indices in [0, {n}).")
    window = rows[:, None] + np.arange(-left, right + 1)
    clipped = np.clip(window, 0, max(n - 1, 0))
    same = (window >= 0) & (window < n)
    if rows.size:
        same &= np.asarray(sequence[clipped.ravel()]).reshape(clipped.shape) == np.asarray(
            sequence[rows]
        )[:, None]
    window_rows = np.where(same, window, -1)
    tokens = np.asarray(token[clipped.ravel()]).reshape(clipped.shape) if rows.size else clipped
    return window_rows, np.where(same, tokens, -1)
