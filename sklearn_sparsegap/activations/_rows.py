"""Which rows of an activation set to use: attention sinks left out, splits by sequence.

Position 0 of a causal LM, and the rare later "massive activations", are attention sinks
whose norm dwarfs the others'; every real-data experiment and report leaves them out the
same way, with these functions.
"""

import numpy as np
import torch

from .._batches import iter_row_blocks

# Rows with a norm above this times the median are attention-sink "massive activations".
MAX_NORM_RATIO = 10.0


def split_by_sequence(metadata, n_rows, *, norms=None, max_norm_ratio=MAX_NORM_RATIO,
                      holdout_fraction=0.2, random_state=0):
    """Train and holdout rows, split by input sequence, without attention-sink rows.

    Position 0 of a causal LM is an attention sink (in SmolLM2 its norm is ~100x the
    others' and it carries nearly all the variance), so it is left out of both sets,
    and so are the rare later tokens with the same "massive activation" (Sun et al.,
    2024): with ``norms``, rows whose norm exceeds ``max_norm_ratio`` times the median
    (on SmolLM2's layer 15, 12 of 119,000 rows, at positions 1, 2 and 8, carrying 78%
    of the variance: the variance-weighted FVU would measure those rows alone).
    Whole sequences go to one side, so no holdout context was seen in training.

    Parameters
    ----------
    metadata : dict of ndarray
        From :func:`load_activations` (``sequence`` and ``position`` are used).
    n_rows : int
        Use the first ``n_rows`` rows of the set.
    norms : ndarray of shape (n_rows,), default=None
        The rows' norms; None keeps every row but position 0.
    max_norm_ratio : float or None, default=10
        Rows with a norm above this times the median norm of the other rows are left
        out; None keeps them.
    holdout_fraction : float, default=0.2
        Fraction of the sequences held out.
    random_state : int, default=0
        Seed of the split.

    Returns
    -------
    train_rows, holdout_rows : ndarray of int
        Sorted row indices (rows of a sequence stay contiguous and in order).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap.activations._rows import split_by_sequence
    >>> metadata = {"sequence": np.repeat(np.arange(10), 4),
    ...             "position": np.tile(np.arange(4), 10)}
    >>> train, holdout = split_by_sequence(metadata, 40, holdout_fraction=0.2)
    >>> len(train), len(holdout), set(metadata["position"][holdout]) == {1, 2, 3}
    (24, 6, True)
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction!r}.")
    sequence = np.asarray(metadata["sequence"][:n_rows])
    sequences = np.unique(sequence)
    n_holdout = int(round(holdout_fraction * len(sequences)))
    if len(sequences) < 2 or not 0 < n_holdout < len(sequences):
        raise ValueError(
            f"{n_rows} tokens make {len(sequences)} sequence(s): too few to hold out "
            f"{holdout_fraction:.0%} of them; ask for more tokens."
        )
    held = np.random.default_rng(random_state).choice(sequences, n_holdout, replace=False)
    in_holdout = np.isin(sequence, held)
    usable = usable_rows(metadata, n_rows, norms=norms, max_norm_ratio=max_norm_ratio)
    return np.flatnonzero(usable & ~in_holdout), np.flatnonzero(usable & in_holdout)


def usable_rows(metadata, n_rows, *, norms=None, max_norm_ratio=MAX_NORM_RATIO):
    """Boolean mask of the first ``n_rows`` rows that are not attention sinks: not at
    position 0 and, with ``norms``, of norm at most ``max_norm_ratio`` times the median
    (see ``split_by_sequence``)."""
    usable = np.asarray(metadata["position"][:n_rows]) != 0
    if norms is not None and max_norm_ratio is not None:
        norms = np.asarray(norms)[:n_rows]
        usable &= norms <= max_norm_ratio * np.median(norms[usable])
    return usable


def row_norms(X, n_rows):
    """Euclidean norms of the first ``n_rows`` rows of ``X``, read in blocks."""
    return np.concatenate([np.linalg.norm(rows.astype(np.float64), axis=1)
                           for _, rows in iter_row_blocks(X[:n_rows])])


def input_scale(X):
    """The factor that makes the mean squared row norm of ``X`` equal ``n_features``.

    SAELens' ``normalize_activations="expected_average_only_in"``: one scalar, so every
    method sees the same data and penalties mean the same on any model.
    """
    X = np.asarray(X, dtype=np.float64)
    mean_square = float(np.mean(np.einsum("ij,ij->i", X, X)))
    if not np.isfinite(mean_square) or mean_square <= 0:
        raise ValueError("the training activations are all zero or not finite.")
    return float(np.sqrt(X.shape[1] / mean_square))


def holdout_sequences(metadata, holdout_rows, *, n_sequences, min_length=8):
    """Token-id tensors of up to ``n_sequences`` holdout sequences, one length per batch.

    Each sequence is rebuilt from the metadata with its position-0 token, as the model
    saw it. Sequences of the most common length are taken, so one 2-D tensor holds them.
    """
    sequence = np.asarray(metadata["sequence"])
    held = np.unique(sequence[holdout_rows])
    rows_of = {s: np.flatnonzero(sequence == s) for s in held}
    lengths = np.array([len(rows_of[s]) for s in held])
    if not len(held) or lengths.max() < min_length:
        return None
    length = np.bincount(lengths[lengths >= min_length]).argmax()
    chosen = [s for s in held if len(rows_of[s]) == length][:n_sequences]
    tokens = np.stack([np.asarray(metadata["token"])[rows_of[s]] for s in chosen])
    return torch.as_tensor(tokens, dtype=torch.long)
