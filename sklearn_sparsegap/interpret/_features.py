"""Per-latent feature statistics streamed over an activation set.

One pass over ``X`` in row batches keeps, per latent, running counts, sums and maxima, a
bounded top-k "heap" (merged with a stable sort, so ties go to the earliest row whatever the
batch size), a uniform sample of the rows where it fires and a uniform sample of windows
where it never fires (bottom-k of a hash of (row, latent): a reservoir sample that does not
depend on the batch size). A second, small pass re-encodes only the rows around the chosen
examples to get each latent's activation on every token of its contexts. Memory depends on
the number of latents and examples kept, never on the number of tokens.
"""

import numbers
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["FeatureStatistics", "compute_feature_statistics", "TokenVocabulary"]

_HASH_MASK = (1 << 62) - 1


class TokenVocabulary:
    """Map token ids to display strings, from a tokenizer or a plain sequence.

    Parameters
    ----------
    vocabulary : tokenizer or sequence of str
        A tokenizer-like object with ``decode`` (preferred: it gives readable text such as
        ``" the"``) or ``convert_ids_to_tokens``, or a list/array whose item ``i`` is the
        string of token ``i``.

    Examples
    --------
    >>> from sklearn_sparsegap.interpret import TokenVocabulary
    >>> TokenVocabulary(["a", "b", "c"]).strings([2, 0])
    ['c', 'a']
    """

    def __init__(self, vocabulary):
        if isinstance(vocabulary, TokenVocabulary):
            vocabulary = vocabulary.vocabulary
        self.vocabulary = vocabulary
        self._cache = {}
        if hasattr(vocabulary, "decode") or hasattr(vocabulary, "convert_ids_to_tokens"):
            self._sequence = None
        else:
            try:
                self._sequence = [str(token) for token in vocabulary]
            except TypeError as exc:
                raise ValueError(
                    "vocabulary must be a tokenizer with decode/convert_ids_to_tokens or a "
                    f"sequence of strings, got {type(vocabulary).__name__}."
                ) from exc

    def __len__(self):
        if self._sequence is not None:
            return len(self._sequence)
        return len(self.vocabulary)

    def string(self, token_id):
        """Return the display string of one token id.

        Parameters
        ----------
        token_id : int
            The token id.

        Returns
        -------
        text : str
            Its string.
        """
        token_id = int(token_id)
        if self._sequence is not None:
            if not 0 <= token_id < len(self._sequence):
                raise ValueError(
                    f"token id {token_id} is outside the vocabulary of "
                    f"{len(self._sequence)} strings."
                )
            return self._sequence[token_id]
        if token_id not in self._cache:
            if hasattr(self.vocabulary, "decode"):
                text = self.vocabulary.decode([token_id])
            else:
                text = self.vocabulary.convert_ids_to_tokens([token_id])[0]
            self._cache[token_id] = str(text)
        return self._cache[token_id]

    def strings(self, token_ids):
        """Return the display strings of a sequence of token ids.

        Parameters
        ----------
        token_ids : sequence of int
            Token ids.

        Returns
        -------
        texts : list of str
            Their strings.
        """
        return [self.string(token_id) for token_id in token_ids]


def _hash_keys(index, column, n_columns, seed):
    """A 62-bit integer hash of (index, column) -> uniform random-looking keys.

    Keeping the k smallest keys is a uniform sample without replacement (a reservoir), and
    because the key depends only on (index, column, seed) the sample is the same for
    every batch size.
    """
    h = index.to(torch.int64) * n_columns + torch.as_tensor(column, dtype=torch.int64)
    offset = (seed * 0x5851F42D4C957F2D) & ((1 << 64) - 1)
    h = h + (offset - (1 << 64) if offset >= 1 << 63 else offset)
    # splitmix64-style finaliser; int64 arithmetic wraps, which is what a hash wants.
    h = (h ^ (h >> 31)) * -0x40A7B892E31B1A47
    h = (h ^ (h >> 27)) * -0x6B2FB644ECCEEE15
    h = h ^ (h >> 33)
    return (h & _HASH_MASK).numpy()


class _KeptPerColumn:
    """The ``k`` smallest entries per column by (key1, key2), over a stream of entries.

    Entries are flat arrays (column, key1, key2, payload...), so the cost of an update is
    proportional to the entries offered and the columns they touch, not to
    ``batch x n_columns``. An entry that cannot beat the current k-th of its column is
    dropped before any sorting.
    """

    def __init__(self, n_columns, k, payload_dtypes):
        self.n_columns, self.k = n_columns, k
        self.column = np.empty(0, dtype=np.int64)
        self.key1 = np.empty(0)
        self.key2 = np.empty(0, dtype=np.int64)
        self.payload = [np.empty(0, dtype=dtype) for dtype in payload_dtypes]
        self.count = np.zeros(n_columns, dtype=np.int64)
        self.worst1 = np.full(n_columns, np.inf)
        self.worst2 = np.full(n_columns, np.iinfo(np.int64).max)

    def offer(self, column, key1, key2, payload):
        full = self.count[column] >= self.k
        w1, w2 = self.worst1[column], self.worst2[column]
        better = ~full | (key1 < w1) | ((key1 == w1) & (key2 < w2))
        if not better.any():
            return
        column, key1, key2 = column[better], key1[better], key2[better]
        payload = [p[better] for p in payload]
        touched = np.zeros(self.n_columns, dtype=bool)
        touched[column] = True
        old = touched[self.column]
        pool_column = np.concatenate([self.column[old], column])
        pool_key1 = np.concatenate([self.key1[old], key1])
        pool_key2 = np.concatenate([self.key2[old], key2])
        pool_payload = [np.concatenate([p[old], q]) for p, q in zip(self.payload, payload)]
        order = np.lexsort((pool_key2, pool_key1, pool_column))
        sorted_column = pool_column[order]
        first = np.searchsorted(sorted_column, sorted_column, side="left")
        keep = order[np.arange(len(order)) - first < self.k]
        self.column = np.concatenate([self.column[~old], pool_column[keep]])
        self.key1 = np.concatenate([self.key1[~old], pool_key1[keep]])
        self.key2 = np.concatenate([self.key2[~old], pool_key2[keep]])
        self.payload = [
            np.concatenate([p[~old], q[keep]]) for p, q in zip(self.payload, pool_payload)
        ]
        kept_column = pool_column[keep]  # sorted by (column, key1, key2)
        self.count[touched] = 0
        np.add.at(self.count, kept_column, 1)
        last = np.r_[kept_column[1:] != kept_column[:-1], True]
        self.worst1[kept_column[last]] = pool_key1[keep][last]
        self.worst2[kept_column[last]] = pool_key2[keep][last]

    def dense(self, fill):
        """(n_columns, k) arrays of key1, key2 and payloads, best first, padded."""
        order = np.lexsort((self.key2, self.key1, self.column))
        column = self.column[order]
        rank = np.arange(len(order)) - np.searchsorted(column, column, side="left")
        arrays = [self.key1, self.key2, *self.payload]
        out = []
        for array, value in zip(arrays, fill):
            dense = np.full((self.n_columns, self.k), value, dtype=array.dtype)
            dense[column, rank] = array[order]
            out.append(dense)
        return out


def _check_metadata(metadata, n_tokens):
    if not hasattr(metadata, "keys"):
        raise ValueError(
            "metadata must be a dict of 1-D integer arrays 'document', 'position' and "
            f"'token', got {type(metadata).__name__}."
        )
    arrays = {}
    for key in ("document", "position", "token"):
        if key not in metadata:
            raise ValueError(f"metadata is missing the {key!r} array.")
        array = np.asarray(metadata[key])
        if array.ndim != 1 or array.shape[0] != n_tokens:
            raise ValueError(
                f"metadata[{key!r}] must be 1-D with one entry per row of X "
                f"({n_tokens}), got shape {array.shape}."
            )
        if array.dtype.kind not in "iu":
            raise ValueError(
                f"metadata[{key!r}] must hold integers, got dtype {array.dtype}."
            )
        arrays[key] = array.astype(np.int64, copy=False)
    document, position = arrays["document"], arrays["position"]
    starts = np.flatnonzero(np.r_[True, document[1:] != document[:-1]])
    if len(np.unique(document)) != len(starts):
        raise ValueError(
            "metadata['document']: the rows of each document must be contiguous."
        )
    same_document = document[1:] == document[:-1]
    if np.any(np.diff(position)[same_document] <= 0):
        raise ValueError(
            "metadata['position'] must increase within each document (rows in position "
            "order)."
        )
    if np.any(arrays["token"] < 0):
        raise ValueError("metadata['token'] must hold non-negative token ids.")
    return arrays, starts


def _check_positive_int(value, name, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


class FeatureStatistics:
    """What each latent of an encoder does on an activation set.

    Made by :func:`compute_feature_statistics`; read by the feature browser and the
    automated-interpretability protocols. Array attributes have one row per latent.

    Parameters
    ----------
    **arrays
        The attributes below, as computed by :func:`compute_feature_statistics`.

    Attributes
    ----------
    n_tokens : int
        Rows of the activation set.
    n_latents : int
        Latents of the encoder (rows of ``components_``).
    frequency : ndarray of shape (n_latents,)
        Fraction of tokens on which the latent fires (activation above ``threshold``).
    mean_activation : ndarray of shape (n_latents,)
        Mean activation over the tokens where it fires (NaN for a latent that never fires).
    max_activation : ndarray of shape (n_latents,)
        Largest activation (0 for a latent that never fires).
    dead : ndarray of shape (n_latents,) of bool
        Latents that never fire on this activation set.
    context_tokens : ndarray of shape (n_latents, n_examples, window)
        Token ids of each example's context (-1 outside its document). The example's own
        token is at index ``left``. Examples ``0 .. n_top - 1`` are the top-activating
        ones in decreasing order; the rest are the quantile samples.
    context_activations : ndarray of shape (n_latents, n_examples, window)
        The latent's activation on every token of those contexts.
    example_rows : ndarray of shape (n_latents, n_examples)
        Row of ``X`` of each example (-1 where the latent has fewer examples).
    example_quantile : ndarray of shape (n_latents, n_examples)
        -1 for top examples, else the activation-quantile bin (0 = lowest) of the sample.
    random_tokens : ndarray of shape (n_latents, n_random, window_length)
        Token ids of windows on which the latent never fires (-1 padding).
    histogram_counts, histogram_edges : ndarray
        Histogram of the activations of a uniform sample of firing tokens, scaled to the
        estimated number of firing tokens.
    top_logit_tokens, top_logit_values, bottom_logit_tokens, bottom_logit_values : ndarray
        Tokens each latent's atom promotes / suppresses most through the unembedding
        (``W_U @ atom``); None when no unembedding was given.
    vocabulary : TokenVocabulary or None
        Token strings.
    left, right, n_top, window_length, threshold : int or float
        The settings the statistics were computed with.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap.interpret import compute_feature_statistics
    >>> class Identity:
    ...     components_ = np.eye(2)
    ...     def transform(self, X):
    ...         return np.maximum(X, 0)
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> metadata = {"document": [0, 0, 0], "position": [0, 1, 2], "token": [0, 1, 2]}
    >>> stats = compute_feature_statistics(Identity(), X, metadata, vocabulary=list("abc"))
    >>> stats.frequency.round(3)
    array([0.333, 0.333])
    >>> stats.top_contexts(1)[0]["tokens"]
    ['a', 'b', 'c']
    """

    def __init__(self, **arrays):
        for name, value in arrays.items():
            setattr(self, name, value)

    def __repr__(self):
        return (
            f"FeatureStatistics(n_latents={self.n_latents}, n_tokens={self.n_tokens}, "
            f"dead={int(self.dead.sum())})"
        )

    def summary(self):
        """Return the per-latent scalar statistics as a dict of equal-length arrays.

        Returns
        -------
        table : dict of ndarray
            ``latent``, ``frequency``, ``mean_activation``, ``max_activation``,
            ``n_firing`` and ``dead``; ``pandas.DataFrame(table)`` works.
        """
        return {
            "latent": np.arange(self.n_latents),
            "frequency": self.frequency,
            "mean_activation": self.mean_activation,
            "max_activation": self.max_activation,
            "n_firing": self.n_firing,
            "dead": self.dead,
        }

    def _check_latent(self, latent):
        if not isinstance(latent, numbers.Integral) or not 0 <= latent < self.n_latents:
            raise ValueError(
                f"latent must be an integer in [0, {self.n_latents}), got {latent!r}."
            )
        return int(latent)

    def _contexts(self, latent, selection, left, right):
        latent = self._check_latent(latent)
        left = self.left if left is None else min(left, self.left)
        right = self.right if right is None else min(right, self.right)
        window = slice(self.left - left, self.left + right + 1)
        contexts = []
        for index in np.flatnonzero(selection):
            tokens = self.context_tokens[latent, index, window]
            activations = self.context_activations[latent, index, window]
            inside = tokens >= 0
            centre = left - int(np.count_nonzero(~inside[:left]))
            ids = tokens[inside]
            contexts.append(
                {
                    "row": int(self.example_rows[latent, index]),
                    "token_ids": ids,
                    "tokens": self.vocabulary.strings(ids) if self.vocabulary else None,
                    "activations": activations[inside].astype(np.float64),
                    "centre": centre,
                    "quantile": int(self.example_quantile[latent, index]),
                }
            )
        return contexts

    def top_contexts(self, latent, *, left=None, right=None):
        """Return the top-activating contexts of a latent, strongest first.

        Parameters
        ----------
        latent : int
            The latent.
        left, right : int, default=None
            Tokens kept left / right of the example's token (at most the stored window).

        Returns
        -------
        contexts : list of dict
            Each with ``tokens`` (strings), ``token_ids``, ``activations`` (the latent's
            activation per token), ``centre`` (index of the example's token) and ``row``.
        """
        latent = self._check_latent(latent)
        selection = (self.example_quantile[latent] < 0) & (self.example_rows[latent] >= 0)
        return self._contexts(latent, selection, left, right)

    def quantile_contexts(self, latent, *, left=None, right=None):
        """Return contexts sampled across the latent's activation quantiles.

        Parameters
        ----------
        latent : int
            The latent.
        left, right : int, default=None
            Tokens kept left / right of the example's token (at most the stored window).

        Returns
        -------
        contexts : list of dict
            As :meth:`top_contexts`, with ``quantile`` the bin (0 = lowest activations).
        """
        latent = self._check_latent(latent)
        selection = (self.example_quantile[latent] >= 0) & (self.example_rows[latent] >= 0)
        return self._contexts(latent, selection, left, right)

    def random_contexts(self, latent):
        """Return random windows on which the latent never fires.

        Parameters
        ----------
        latent : int
            The latent.

        Returns
        -------
        contexts : list of dict
            Each with ``tokens``, ``token_ids`` and all-zero ``activations``.
        """
        latent = self._check_latent(latent)
        contexts = []
        for tokens in self.random_tokens[latent]:
            ids = tokens[tokens >= 0]
            if len(ids) == 0:
                continue
            contexts.append(
                {
                    "row": -1,
                    "token_ids": ids,
                    "tokens": self.vocabulary.strings(ids) if self.vocabulary else None,
                    "activations": np.zeros(len(ids)),
                    "centre": -1,
                    "quantile": -1,
                }
            )
        return contexts

    def logit_effects(self, latent):
        """Return the tokens the latent's atom promotes and suppresses most.

        Parameters
        ----------
        latent : int
            The latent.

        Returns
        -------
        effects : dict or None
            ``top`` and ``bottom``: lists of (token string, value) pairs; None without an
            unembedding.
        """
        latent = self._check_latent(latent)
        if self.top_logit_tokens is None:
            return None

        def pairs(tokens, values):
            names = (
                self.vocabulary.strings(tokens)
                if self.vocabulary
                else [str(t) for t in tokens]
            )
            return [(name, float(value)) for name, value in zip(names, values)]

        return {
            "top": pairs(self.top_logit_tokens[latent], self.top_logit_values[latent]),
            "bottom": pairs(
                self.bottom_logit_tokens[latent], self.bottom_logit_values[latent]
            ),
        }


def _transform(encoder, X, start, stop, n_latents):
    codes = encoder.transform(np.asarray(X[start:stop]))
    codes = torch.as_tensor(np.asarray(codes, dtype=np.float32))
    if codes.shape != (stop - start, n_latents):
        raise ValueError(
            f"encoder.transform returned shape {tuple(codes.shape)} for {stop - start} "
            f"rows; expected ({stop - start}, {n_latents}) (one column per row of "
            "components_)."
        )
    if not torch.isfinite(codes).all():
        raise ValueError("encoder.transform returned NaN or infinite codes.")
    return codes


def _logit_effects(W_U, components, n_logits, chunk=1024):
    W_U = torch.as_tensor(np.asarray(W_U, dtype=np.float32))
    atoms = torch.as_tensor(np.asarray(components, dtype=np.float32))
    if W_U.ndim != 2 or W_U.shape[1] != atoms.shape[1]:
        raise ValueError(
            f"W_U must have shape (vocab, {atoms.shape[1]}) (n_features of the encoder), "
            f"got {tuple(W_U.shape)}."
        )
    n_logits = min(n_logits, W_U.shape[0])
    out = {key: [] for key in ("tt", "tv", "bt", "bv")}
    # Chunks of latents keep the (vocab, chunk) product small for large vocabularies.
    for start in range(0, atoms.shape[0], chunk):
        effects = W_U @ atoms[start : start + chunk].T
        top = torch.topk(effects, n_logits, dim=0)
        bottom = torch.topk(effects, n_logits, dim=0, largest=False)
        out["tt"].append(top.indices.T)
        out["tv"].append(top.values.T)
        out["bt"].append(bottom.indices.T)
        out["bv"].append(bottom.values.T)
    return [torch.cat(out[key]).numpy() for key in ("tt", "tv", "bt", "bv")]


class _DocumentLayout(NamedTuple):
    """Where each row's document starts and stops, and the fixed-length windows."""

    run_start: np.ndarray  # first row of each row's document
    run_stop: np.ndarray  # one past the last row of each row's document
    window_id: np.ndarray  # window of each row (windows restart at every document)
    window_starts: np.ndarray  # first row of each window


def _document_layout(document, starts, n_tokens, window_length):
    """Cut the rows into documents (contiguous runs) and windows of ``window_length``."""
    run = np.cumsum(np.r_[True, document[1:] != document[:-1]]) - 1
    run_start = starts[run]
    run_stop = np.r_[starts[1:], n_tokens][run]
    offset = np.arange(n_tokens) - run_start
    window_start_mask = offset % window_length == 0
    window_id = np.cumsum(window_start_mask) - 1
    window_starts = np.flatnonzero(window_start_mask)
    return _DocumentLayout(run_start, run_stop, window_id, window_starts)


def _batch_cuts(window_starts, n_tokens, batch_size):
    """Batch boundaries: about ``batch_size`` rows each, rounded down to whole windows."""
    cuts = np.unique(
        window_starts[
            np.searchsorted(window_starts, np.arange(0, n_tokens, batch_size), "right") - 1
        ]
    )
    return np.r_[cuts, n_tokens]


def _offer_firing_tokens(top, sample, codes, fires, start, seed):
    """Offer a batch's firing (row, latent) pairs to the top-k and the uniform sample.

    Top-k keeps the largest values, ties to the earliest row; the sample keeps the
    smallest hash keys, so neither depends on how the rows were batched.
    """
    local_rows, columns = torch.nonzero(fires, as_tuple=True)
    values = codes[local_rows, columns].numpy()
    rows = local_rows.numpy() + start
    columns = columns.numpy()
    top.offer(columns, -values.astype(np.float64), rows, [values])
    keys = _hash_keys(torch.as_tensor(rows), columns, fires.shape[1], seed)
    sample.offer(columns, keys.astype(np.float64), rows, [values])


def _offer_quiet_windows(quiet, fires, batch_window_id, seed):
    """Offer the (window, latent) pairs of a batch where the latent never fires.

    ``batch_window_id`` is the window of each row of the batch (whole windows only).
    """
    local = torch.as_tensor(batch_window_id - batch_window_id[0])
    n_windows = int(local[-1]) + 1
    window_fires = torch.zeros(n_windows, fires.shape[1]).index_add_(
        0, local, fires.to(torch.float32)
    ) > 0
    quiet_windows, quiet_columns = torch.nonzero(~window_fires, as_tuple=True)
    windows = quiet_windows.numpy() + int(batch_window_id[0])
    quiet_columns = quiet_columns.numpy()
    keys = _hash_keys(torch.as_tensor(windows), quiet_columns, fires.shape[1], seed)
    quiet.offer(quiet_columns, keys.astype(np.float64), windows, [])


class _StreamedStatistics(NamedTuple):
    """What one pass over the rows keeps per latent."""

    count: np.ndarray  # tokens on which the latent fires
    total: np.ndarray  # sum of its firing activations (float64)
    maximum: np.ndarray  # largest firing activation, 0 if none (float32)
    top: _KeptPerColumn  # top-activating rows
    sample: _KeptPerColumn  # uniform sample of firing rows
    quiet: _KeptPerColumn  # uniform sample of windows where it never fires


def _stream_latent_statistics(encoder, X, cuts, window_id, n_latents, *, n_top,
                              sample_size, n_random, threshold, seed):
    """Encode ``X`` batch by batch (between ``cuts``) and keep per-latent statistics."""
    count = torch.zeros(n_latents, dtype=torch.int64)
    total = torch.zeros(n_latents, dtype=torch.float64)
    maximum = torch.zeros(n_latents, dtype=torch.float32)
    top = _KeptPerColumn(n_latents, n_top, [np.float32])
    sample = _KeptPerColumn(n_latents, sample_size, [np.float32])
    quiet = _KeptPerColumn(n_latents, max(n_random, 1), [])
    for start, stop in zip(cuts[:-1], cuts[1:]):
        codes = _transform(encoder, X, start, stop, n_latents)
        fires = codes > threshold
        count += fires.sum(0)
        firing_codes = torch.where(fires, codes, 0)
        total += firing_codes.sum(0, dtype=torch.float64)
        maximum = torch.maximum(maximum, firing_codes.amax(0))
        _offer_firing_tokens(top, sample, codes, fires, start, seed)
        if n_random:
            _offer_quiet_windows(quiet, fires, window_id[start:stop], seed + 1)
    return _StreamedStatistics(count.numpy(), total.numpy(), maximum.numpy(), top,
                               sample, quiet)


def _activation_histograms(sample_rows, sample_values, maximum, count, n_bins):
    """Histogram of each live latent's sampled activations on [0, max], scaled to its
    number of firing tokens (zeros for a latent that never fires)."""
    n_latents = len(count)
    histogram_counts = np.zeros((n_latents, n_bins))
    histogram_edges = np.zeros((n_latents, n_bins + 1))
    for latent in np.flatnonzero(count != 0):
        values = sample_values[latent, sample_rows[latent] >= 0]
        counts, edges = np.histogram(
            values, bins=n_bins, range=(0.0, float(maximum[latent]) or 1.0)
        )
        histogram_counts[latent] = counts * (count[latent] / max(len(values), 1))
        histogram_edges[latent] = edges
    return histogram_counts, histogram_edges


def _quantile_examples(sample_rows, sample_values, top_rows, dead, n_quantiles,
                       n_per_quantile, seed):
    """Choose ``n_per_quantile`` sampled rows from each activation-quantile bin.

    The top examples are left out; within a latent the chosen rows run from the lowest
    bin up, strongest first inside a bin. Returns the rows and their bins (-1 padding).
    """
    n_latents = len(dead)
    quantile_rows = np.full((n_latents, n_quantiles * n_per_quantile), -1, dtype=np.int64)
    quantile_bins = np.full((n_latents, n_quantiles * n_per_quantile), -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for latent in np.flatnonzero(~dead):
        valid = sample_rows[latent] >= 0
        rows, values = sample_rows[latent, valid], sample_values[latent, valid]
        keep = ~np.isin(rows, top_rows[latent])
        rows, values = rows[keep], values[keep]
        if len(rows) == 0 or n_per_quantile == 0:
            continue
        order = np.lexsort((rows, values))
        filled = 0
        for bin_index, members in enumerate(np.array_split(order, n_quantiles)):
            if len(members) == 0:
                continue
            chosen = rng.choice(members, min(n_per_quantile, len(members)), replace=False)
            chosen = chosen[np.argsort(-values[chosen], kind="stable")]
            quantile_rows[latent, filled : filled + len(chosen)] = rows[chosen]
            quantile_bins[latent, filled : filled + len(chosen)] = bin_index
            filled += len(chosen)
    return quantile_rows, quantile_bins


def _context_rows(example_rows, layout, left, right):
    """Rows of the window around each example, and which of them are inside its
    document (``example_rows`` -1 means no example: nothing inside)."""
    centre = np.where(example_rows >= 0, example_rows, 0)
    context_rows = centre[..., None] + np.arange(-left, right + 1)
    inside = (
        (example_rows[..., None] >= 0)
        & (context_rows >= layout.run_start[centre][..., None])
        & (context_rows < layout.run_stop[centre][..., None])
    )
    return np.where(inside, context_rows, 0), inside


def _reencode_context_activations(encoder, X, context_rows, inside, batch_size):
    """Each latent's activation on the rows of its contexts (0 outside), re-encoding
    every needed row once, ``batch_size`` rows at a time."""
    context_activations = np.zeros(context_rows.shape, dtype=np.float32)
    latent_index = np.broadcast_to(
        np.arange(context_rows.shape[0])[:, None, None], context_rows.shape
    )
    pair_rows = context_rows[inside]
    pair_latents = latent_index[inside]
    unique_rows, inverse = np.unique(pair_rows, return_inverse=True)
    pair_values = np.zeros(len(pair_rows), dtype=np.float32)
    order = np.argsort(inverse, kind="stable")
    sorted_inverse = inverse[order]
    for chunk_start in range(0, len(unique_rows), batch_size):
        chunk = unique_rows[chunk_start : chunk_start + batch_size]
        # Re-encoding row by row keeps memmap reads to the rows needed.
        codes = encoder.transform(np.asarray(X[chunk])) if len(chunk) else None
        codes = np.asarray(codes, dtype=np.float32)
        lo, hi = np.searchsorted(sorted_inverse, [chunk_start, chunk_start + len(chunk)])
        members = order[lo:hi]
        pair_values[members] = codes[inverse[members] - chunk_start, pair_latents[members]]
    context_activations[inside] = pair_values
    return context_activations


def _quiet_window_tokens(quiet, layout, token, n_random, window_length):
    """Token ids of each latent's sampled non-firing windows (-1 padding, and past the
    end of the window's document)."""
    n_latents, n_tokens = quiet.n_columns, len(token)
    random_tokens = np.full((n_latents, n_random, window_length), -1, dtype=np.int32)
    if not n_random:
        return random_tokens
    _, quiet_windows, = quiet.dense([np.inf, -1])
    quiet_windows = quiet_windows[:, :n_random]
    quiet_valid = quiet_windows >= 0
    first = layout.window_starts[np.where(quiet_valid, quiet_windows, 0)]
    window_rows = first[..., None] + np.arange(window_length)
    ok = quiet_valid[..., None] & (
        window_rows < layout.run_stop[np.minimum(first, n_tokens - 1)][..., None]
    )
    window_rows = np.minimum(window_rows, n_tokens - 1)
    filled = np.where(ok, token[window_rows], -1)
    random_tokens[:, : filled.shape[1]] = filled
    return random_tokens


def _compute_feature_statistics(encoder, X, components, metadata, starts, vocabulary,
                                W_U, *, batch_size, n_top, n_quantiles, n_per_quantile,
                                n_random, left, right, window_length, n_logits,
                                n_histogram_bins, sample_size, threshold, seed):
    """The steps of :func:`compute_feature_statistics`, on validated arguments."""
    n_tokens, n_latents = int(X.shape[0]), components.shape[0]
    token = metadata["token"]
    layout = _document_layout(metadata["document"], starts, n_tokens, window_length)
    cuts = _batch_cuts(layout.window_starts, n_tokens, batch_size)
    streamed = _stream_latent_statistics(
        encoder, X, cuts, layout.window_id, n_latents, n_top=n_top,
        sample_size=sample_size, n_random=n_random, threshold=threshold, seed=seed,
    )
    count = streamed.count
    dead = count == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_activation = np.where(dead, np.nan, streamed.total / np.maximum(count, 1))
    _, top_rows, _ = streamed.top.dense([np.inf, -1, 0.0])
    _, sample_rows, sample_values = streamed.sample.dense([np.inf, -1, 0.0])
    histogram_counts, histogram_edges = _activation_histograms(
        sample_rows, sample_values, streamed.maximum, count, n_histogram_bins
    )
    quantile_rows, quantile_bins = _quantile_examples(
        sample_rows, sample_values, top_rows, dead, n_quantiles, n_per_quantile, seed
    )
    example_rows = np.concatenate([top_rows, quantile_rows], axis=1)
    example_quantile = np.concatenate(
        [np.full(top_rows.shape, -1, dtype=np.int64), quantile_bins], axis=1
    )
    context_rows, inside = _context_rows(example_rows, layout, left, right)
    context_activations = _reencode_context_activations(
        encoder, X, context_rows, inside, batch_size
    )
    random_tokens = _quiet_window_tokens(
        streamed.quiet, layout, token, n_random, window_length
    )
    logits = [None] * 4 if W_U is None else _logit_effects(W_U, components, n_logits)
    return FeatureStatistics(
        n_tokens=n_tokens,
        n_latents=n_latents,
        n_firing=count,
        frequency=count / n_tokens,
        mean_activation=mean_activation,
        max_activation=streamed.maximum.astype(np.float64),
        dead=dead,
        example_rows=example_rows,
        example_quantile=example_quantile,
        context_tokens=np.where(inside, token[context_rows], -1).astype(np.int32),
        context_activations=context_activations,
        random_tokens=random_tokens,
        histogram_counts=histogram_counts,
        histogram_edges=histogram_edges,
        top_logit_tokens=logits[0],
        top_logit_values=logits[1],
        bottom_logit_tokens=logits[2],
        bottom_logit_values=logits[3],
        vocabulary=vocabulary,
        left=left,
        right=right,
        width=left + 1 + right,
        n_top=n_top,
        window_length=window_length,
        threshold=float(threshold),
    )


def _check_encoder_and_X(encoder, X):
    """The encoder's ``components_`` and ``X`` as an indexable 2-D array with rows."""
    if not hasattr(encoder, "transform") or not hasattr(encoder, "components_"):
        raise ValueError(
            "encoder must be fitted and have transform and components_, got "
            f"{type(encoder).__name__}."
        )
    components = np.asarray(encoder.components_)
    if components.ndim != 2:
        raise ValueError("encoder.components_ must be 2-D (n_latents, n_features).")
    if hasattr(X, "iloc"):  # a DataFrame: index rows by position below
        X = X.to_numpy()
    if not hasattr(X, "shape") or len(X.shape) != 2:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_tokens, n_features), got {X.ndim}-D.")
    if int(X.shape[0]) == 0:
        raise ValueError("X has no rows.")
    return components, X


def compute_feature_statistics(
    encoder,
    X,
    metadata,
    *,
    vocabulary=None,
    W_U=None,
    batch_size=1024,
    n_top=20,
    n_quantiles=10,
    n_per_quantile=5,
    n_random=100,
    left=30,
    right=16,
    window_length=32,
    n_logits=10,
    n_histogram_bins=30,
    sample_size=500,
    threshold=0.0,
    random_state=0,
):
    """Compute what every latent of a fitted encoder does on an activation set.

    Streams ``X`` in row batches (``X`` may be a read-only memmap larger than memory):
    per-latent firing frequency, mean and max activation, the ``n_top`` top-activating
    contexts, contexts sampled across ``n_quantiles`` activation quantiles (delphi's
    sampling), windows on which the latent never fires, an activation histogram and,
    given an unembedding, logit effects.

    Parameters
    ----------
    encoder : fitted estimator
        Anything with ``transform(X) -> codes`` and ``components_`` of shape
        (n_latents, n_features), e.g. ``SAEEncoder``, ``MLPEncoder``, ``SAEPlusITO``.
    X : array-like of shape (n_tokens, n_features)
        Activations, one row per token.
    metadata : dict of 1-D int arrays
        ``document``, ``position`` and ``token`` of every row; rows of a document are
        contiguous and in position order.
    vocabulary : tokenizer or sequence of str, default=None
        Token strings (see :class:`TokenVocabulary`).
    W_U : array-like of shape (vocab, n_features), default=None
        Unembedding; logit effects are ``W_U @ atom``.
    batch_size : int, default=1024
        Rows encoded at once (rounded to whole windows).
    n_top : int, default=20
        Top-activating contexts kept per latent.
    n_quantiles, n_per_quantile : int, default=10, 5
        Contexts sampled per activation-quantile bin, from a uniform sample of the
        latent's firing tokens (top examples excluded).
    n_random : int, default=100
        Random windows on which the latent never fires.
    left, right : int, default=30, 16
        Tokens of the same document kept left / right of each example's token.
    window_length : int, default=32
        Length of the non-firing windows (documents are cut into such windows).
    n_logits : int, default=10
        Promoted / suppressed tokens kept per latent.
    n_histogram_bins : int, default=30
        Bins of the activation histogram.
    sample_size : int, default=500
        Size of the uniform sample of firing tokens behind the quantiles and histogram.
    threshold : float, default=0.0
        A latent fires on a token when its activation exceeds this.
    random_state : int, default=0
        Seed of the samples (the samples do not depend on ``batch_size``).

    Returns
    -------
    stats : FeatureStatistics
        The statistics.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap.interpret import compute_feature_statistics
    >>> class Relu:
    ...     components_ = np.eye(3)
    ...     def transform(self, X):
    ...         return np.maximum(X, 0)
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> metadata = {"document": np.repeat(np.arange(4), 50),
    ...             "position": np.tile(np.arange(50), 4), "token": np.arange(200) % 7}
    >>> stats = compute_feature_statistics(Relu(), X, metadata, n_top=5)
    >>> bool(np.allclose(stats.frequency, (X > 0).mean(axis=0)))
    True
    """
    components, X = _check_encoder_and_X(encoder, X)
    sizes = {
        name: _check_positive_int(value, name, minimum)
        for name, value, minimum in (
            ("batch_size", batch_size, 1), ("n_top", n_top, 1),
            ("n_quantiles", n_quantiles, 1), ("n_per_quantile", n_per_quantile, 0),
            ("n_random", n_random, 0), ("left", left, 0), ("right", right, 0),
            ("window_length", window_length, 1), ("n_logits", n_logits, 1),
            ("n_histogram_bins", n_histogram_bins, 1), ("sample_size", sample_size, 1),
        )
    }
    seed = int(np.random.default_rng(random_state).integers(2**31))
    arrays, starts = _check_metadata(metadata, int(X.shape[0]))
    vocab = None if vocabulary is None else TokenVocabulary(vocabulary)
    return _compute_feature_statistics(
        encoder, X, components, arrays, starts, vocab, W_U, threshold=threshold,
        seed=seed, **sizes,
    )
