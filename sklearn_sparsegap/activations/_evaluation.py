"""Metrics on real activations: streamed FVU, sparsity statistics, loss recovered."""

from numbers import Integral, Real

import numpy as np
import torch

from .._batches import read_rows
from .._metrics import ExplainedDeviance
from .._torch_utils import to_numpy, to_tensor
from ._extract import call_model, hooked, model_device, split_batch

_DEFAULT_BATCH_SIZE = 4096


def _check_batch_size(batch_size):
    if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")


def _check_2d(array, name):
    if not hasattr(array, "shape") or len(array.shape) != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features).")


def _encodes_on_device(estimator):
    """Whether ``estimator`` is a sparse coder of this library that encodes and decodes
    tensors on its own device (``_encode_decode``)."""
    return hasattr(estimator, "_encode") and hasattr(estimator, "_encode_decode")


def _active_and_reconstruction(estimator, block):
    """Per-latent counts of non-zero codes of the rows ``block`` and their
    reconstruction (numpy). A sparse coder of this library computes both on its device:
    the codes, the widest array, never come back to the host."""
    if not _encodes_on_device(estimator):
        codes = estimator.transform(block)
        return (np.asarray(codes) != 0).sum(axis=0), estimator.inverse_transform(codes)
    rows = estimator._validate_X(block, reset=False)
    with torch.no_grad():
        codes, reconstruction = estimator._encode_decode(
            to_tensor(rows, device=estimator._resolved_device()))
        return to_numpy((codes != 0).sum(dim=0)), to_numpy(reconstruction)


def _row_batches(n_rows, batch_size):
    for start in range(0, n_rows, batch_size):
        yield slice(start, min(start + batch_size, n_rows))


def fraction_variance_unexplained(X, X_pred, *, batch_size=_DEFAULT_BATCH_SIZE):
    """Fraction of the variance of ``X`` that ``X_pred`` leaves unexplained, streamed.

    Equals ``1 - sklearn.metrics.r2_score(X, X_pred, multioutput="variance_weighted")``,
    i.e. ``sum_j ||x_j - xhat_j||^2 / sum_j ||x_j - mean(x_j)||^2`` over the columns j
    (columns of zero variance are left out of the numerator, as scikit-learn does), but
    reads ``X`` and ``X_pred`` ``batch_size`` rows at a time, so memory-mapped arrays of
    any size work: both sums are sums over rows, accumulated per batch (the centred one
    with a numerically stable pairwise update).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The true activations, e.g. from :func:`load_activations`.
    X_pred : array-like of shape (n_samples, n_features)
        Their reconstruction.
    batch_size : int, default=4096
        Rows per batch.

    Returns
    -------
    fvu : float
        0 for a perfect reconstruction, 1 for predicting every column's mean.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics import r2_score
    >>> from sklearn_sparsegap.activations import fraction_variance_unexplained
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 5))
    >>> X_pred = X + 0.1 * rng.normal(size=X.shape)
    >>> fvu = fraction_variance_unexplained(X, X_pred, batch_size=7)
    >>> bool(np.isclose(fvu, 1 - r2_score(X, X_pred, multioutput="variance_weighted")))
    True
    """
    _check_2d(X, "X")
    _check_2d(X_pred, "X_pred")
    _check_batch_size(batch_size)
    if tuple(X.shape) != tuple(X_pred.shape):
        raise ValueError(
            f"X and X_pred must have the same shape, got {tuple(X.shape)} and {tuple(X_pred.shape)}."
        )
    sums = ExplainedDeviance(X.shape[1])
    for rows in _row_batches(X.shape[0], batch_size):
        # read, not mapped in (a memmap's pages would stay in this process's memory)
        block = read_rows(X, rows.start, rows.stop)
        predicted = read_rows(X_pred, rows.start, rows.stop)
        if not (np.isfinite(block).all() and np.isfinite(predicted).all()):
            raise ValueError(f"X and X_pred must be finite; rows {rows.start}-{rows.stop} are not.")
        sums.update(block, predicted)
    return sums.fvu()


def _check_estimator(estimator):
    for method in ("transform", "inverse_transform"):
        if not callable(getattr(estimator, method, None)):
            raise ValueError(
                f"estimator must be a fitted sparse coder with transform and "
                f"inverse_transform, got {type(estimator).__name__} without {method}."
            )


def reconstruction_metrics(
    estimator,
    X,
    *,
    batch_size=_DEFAULT_BATCH_SIZE,
    dense_threshold=0.1,
    n_bins=20,
):
    """Reconstruction and sparsity statistics of a fitted encoder on activations.

    Streams ``X`` (a memory-mapped activation set works) through
    ``estimator.transform`` and ``estimator.inverse_transform`` ``batch_size`` rows at a
    time, so memory does not grow with the number of rows.

    Parameters
    ----------
    estimator : fitted estimator
        Any sparse coder of this library (``SAEEncoder``, ``MLPEncoder``,
        ``GradientSparseCoder``, ``SAEPlusITO``, ...), fitted on data like ``X``.
    X : array-like of shape (n_samples, n_features)
        Activations, e.g. from :func:`load_activations`.
    batch_size : int, default=4096
        Rows per batch.
    dense_threshold : float, default=0.1
        A latent active on more than this fraction of rows counts as dense.
    n_bins : int, default=20
        Bins of the activation-frequency histogram (over ``log10`` of the frequency of
        the latents that fire at least once).

    Returns
    -------
    metrics : dict
        ``fvu`` (fraction of variance unexplained, see
        :func:`fraction_variance_unexplained`), ``mean_l0`` (mean number of non-zero
        codes per row), ``dead_fraction`` (latents never active), ``dense_fraction``
        (latents active on more than ``dense_threshold`` of rows), ``frequency`` (per
        latent, the fraction of rows where it is non-zero), ``frequency_histogram`` (a
        ``(counts, log10_edges)`` pair) and ``n_samples``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_sparsegap.activations import reconstruction_metrics
    >>> X = np.random.default_rng(0).normal(size=(200, 6))
    >>> metrics = reconstruction_metrics(PCA(n_components=6).fit(X), X, batch_size=64)
    >>> round(metrics["fvu"], 6), metrics["mean_l0"], metrics["dead_fraction"]
    (0.0, 6.0, 0.0)
    """
    _check_estimator(estimator)
    _check_2d(X, "X")
    _check_batch_size(batch_size)
    if not isinstance(dense_threshold, Real) or not 0 <= dense_threshold <= 1:
        raise ValueError(f"dense_threshold must be in [0, 1], got {dense_threshold!r}.")
    if not isinstance(n_bins, Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    sums = ExplainedDeviance(X.shape[1])
    active_counts, total_l0 = None, 0
    for rows in _row_batches(X.shape[0], batch_size):
        block = read_rows(X, rows.start, rows.stop)
        counts, reconstruction = _active_and_reconstruction(estimator, block)
        active_counts = counts if active_counts is None else active_counts + counts
        total_l0 += int(counts.sum())
        sums.update(block, reconstruction)
    n_samples = X.shape[0]
    frequency = active_counts / n_samples
    alive = frequency[frequency > 0]
    if alive.size:
        low = np.log10(alive.min())
        edges = np.linspace(low, max(0.0, low + 1e-9), n_bins + 1)
        counts, edges = np.histogram(np.log10(alive), bins=edges)
    else:
        counts, edges = np.zeros(n_bins, dtype=np.int64), np.linspace(-1, 0, n_bins + 1)
    return {
        "fvu": sums.fvu(),
        "mean_l0": total_l0 / n_samples,
        "dead_fraction": float(np.mean(frequency == 0)),
        "dense_fraction": float(np.mean(frequency > dense_threshold)),
        "frequency": frequency,
        "frequency_histogram": (counts, edges),
        "n_samples": n_samples,
    }


def _as_reconstructor(reconstruct, scale=1.0):
    """A function ``(rows, d) tensor -> (rows, d) tensor`` from an estimator or callable,
    applied on ``scale * rows`` and brought back to the model's scale."""
    if _encodes_on_device(reconstruct):

        def function(rows):
            # On the coder's device, in float32/64 (a half-precision model's rows are
            # encoded in float32, as transform would): no round trip through numpy.
            if rows.shape[-1] != reconstruct.n_features_in_:
                raise ValueError(
                    f"reconstruct was fitted on {reconstruct.n_features_in_} features but "
                    f"the activations have {rows.shape[-1]}."
                )
            dtype = rows.dtype if rows.dtype in (torch.float32, torch.float64) else torch.float32
            with torch.no_grad():
                _, reconstruction = reconstruct._encode_decode(
                    rows.to(device=reconstruct._resolved_device(), dtype=dtype))
            return reconstruction.to(device=rows.device, dtype=rows.dtype)

    elif hasattr(reconstruct, "transform") and hasattr(reconstruct, "inverse_transform"):

        def function(rows):
            codes = reconstruct.transform(to_numpy(rows))
            return to_tensor(reconstruct.inverse_transform(codes), device=rows.device, dtype=rows.dtype)

    elif callable(reconstruct):
        function = reconstruct
    else:
        function = None
    if function is not None:
        if scale == 1.0:
            return function
        return lambda rows: function(rows * scale) / scale
    raise ValueError(
        "reconstruct must be a fitted estimator (with transform and inverse_transform) or "
        f"a callable on (n_tokens, n_features) tensors, got {type(reconstruct).__name__}."
    )


def _logits(output):
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def _check_baseline(baseline):
    """``{"clean", "ablation", "n_tokens", "sequences"}`` of an earlier result (its
    per-sequence sums, when it has them, give the interval), or None without one."""
    if baseline is None:
        return None
    try:
        sequences = baseline.get("per_sequence")
        if sequences is not None and sequences.get("clean") is None:
            sequences = None
        return {"clean": float(baseline["ce_clean"]),
                "ablation": float(baseline["ce_ablation"]),
                "n_tokens": int(baseline["n_tokens"]),
                "sequences": None if sequences is None else {
                    key: np.asarray(sequences[key], dtype=np.float64)
                    for key in ("clean", "ablation", "n_tokens")}}  # fmt: skip
    except (TypeError, KeyError, ValueError, AttributeError):
        raise ValueError(
            "baseline must be a result of loss_recovered (with ce_clean, ce_ablation "
            f"and n_tokens), got {baseline!r}."
        ) from None


def _splice(keep, function):
    """A hook replacement putting ``function(rows)`` at the ``keep`` positions of a copy."""

    def replace(activation):
        out = activation.clone()
        rows = activation[keep]
        # The reconstruction runs outside inference mode: inference mode is
        # per thread, and a user's reconstruction that works in threads of its
        # own could not update tensors created under it.
        with torch.inference_mode(False), torch.no_grad():
            replacement = function(rows)
        out[keep] = replacement.to(activation.dtype)
        return out

    return replace


def _replaced_and_predicted(mask, exclude_first):
    """``(replaced, predicted)`` masks of a batch: the positions whose activation a run
    replaces, and the positions whose next-token prediction counts. With
    ``exclude_first`` each sequence's first real token (position 0, the attention sink;
    after left padding, the first unmasked one) is neither replaced nor counted."""
    replaced = mask
    if exclude_first:
        replaced = mask & (mask.long().cumsum(dim=1) > 1)
    predicted = replaced[:, :-1] & mask[:, 1:]
    return replaced, predicted


def _cross_entropy_sums(model, batches, *, module, site, runs, exclude_first=False):
    """Per-sequence summed next-token cross-entropy of each run, and token counts.

    ``runs`` maps a name to the replacement function of the hooked activation's
    replaced rows (None runs the model as it is). Returns ``(sums, n_tokens)``: arrays
    with one entry per sequence of every batch, in order.
    """
    device = model_device(model)
    sums = {name: [] for name in runs}
    n_tokens = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for index, batch in enumerate(batches):
                inputs, input_ids, mask, _ = split_batch(batch, index)
                input_ids, mask = input_ids.to(device), mask.to(device).bool()
                replaced, predicted = _replaced_and_predicted(mask, exclude_first)
                targets = input_ids[:, 1:]
                n_tokens.append(predicted.sum(dim=1).cpu().numpy())
                for name, function in runs.items():
                    replace = None if function is None else _splice(replaced, function)
                    with hooked(model, module, site, replace=replace) as captured:
                        logits = _logits(call_model(model, inputs, device))
                    if "activation" not in captured:
                        raise ValueError(
                            f"module={module!r} was not called during the forward pass of "
                            f"batch {index}."
                        )
                    losses = torch.nn.functional.cross_entropy(
                        logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
                    )
                    per_sequence = (losses * predicted).sum(dim=1, dtype=torch.float64)
                    sums[name].append(per_sequence.cpu().numpy())
    finally:
        model.train(was_training)
    sums = {name: np.concatenate(values) if values else np.zeros(0)
            for name, values in sums.items()}
    return sums, np.concatenate(n_tokens) if n_tokens else np.zeros(0, dtype=np.int64)


def _bootstrap_interval(sums, n_tokens, *, confidence, n_resamples, random_state):
    """Percentile bootstrap interval of the score, resampling whole sequences (tokens of a
    sequence are not independent). None with fewer than two sequences."""
    if len(n_tokens) < 2 or not n_resamples:
        return None
    n = len(n_tokens)
    picks = np.random.default_rng(random_state).integers(0, n, size=(n_resamples, n))
    # How often each sequence is drawn in each resample: one bincount over all resamples.
    offsets = picks + n * np.arange(n_resamples)[:, None]
    counts = np.bincount(offsets.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    total = {name: counts @ sums[name] for name in ("clean", "ablation", "reconstruction")}
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = ((total["ablation"] - total["reconstruction"])
                  / (total["ablation"] - total["clean"]))  # fmt: skip
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return None
    tail = (1 - confidence) / 2
    low, high = np.quantile(scores, [tail, 1 - tail])
    return float(low), float(high)


def _loss_recovered_score(sums, n_tokens, reference, *, confidence=0.95, n_resamples=1000,
                          random_state=0):
    """The result dict from the per-sequence cross-entropy sums and token counts
    (``reference``: a checked baseline)."""
    total_tokens = int(np.sum(n_tokens))
    if total_tokens == 0:
        raise ValueError("batches hold no predicted tokens (every sequence is shorter than 2).")
    ce = {name: float(np.sum(values)) / total_tokens for name, values in sums.items()}
    if reference is not None:
        if reference["n_tokens"] != total_tokens:
            raise ValueError(
                f"baseline was measured on {reference['n_tokens']} predicted tokens, these "
                f"batches have {total_tokens}: it must come from the same batches."
            )
        ce.update(clean=reference["clean"], ablation=reference["ablation"])
        sequences = reference["sequences"]
        if sequences is not None and np.array_equal(sequences["n_tokens"], n_tokens):
            sums = {**sums, "clean": sequences["clean"], "ablation": sequences["ablation"]}
        else:  # no per-sequence baseline: no interval
            sums = dict(sums, clean=None)
    gap = ce["ablation"] - ce["clean"]
    if gap == 0:
        raise ValueError(
            "zero ablation does not change the loss at this module, so the loss-recovered "
            "score is undefined."
        )
    interval = None
    if sums.get("clean") is not None:
        interval = _bootstrap_interval(sums, n_tokens, confidence=confidence,
                                       n_resamples=n_resamples, random_state=random_state)
    return {
        "score": (ce["ablation"] - ce["reconstruction"]) / gap,
        "score_interval": interval,
        "ce_clean": ce["clean"],
        "ce_ablation": ce["ablation"],
        "ce_reconstruction": ce["reconstruction"],
        "n_tokens": total_tokens,
        "n_sequences": int(len(n_tokens)),
        "per_sequence": {
            "clean": None if sums.get("clean") is None else np.asarray(sums["clean"]),
            "ablation": None if sums.get("clean") is None else np.asarray(sums["ablation"]),
            "reconstruction": np.asarray(sums["reconstruction"]),
            "n_tokens": np.asarray(n_tokens),
        },
    }


def loss_recovered(model, batches, *, module, reconstruct, site="output", baseline=None,
                   scale=1.0, exclude_first=True, confidence=0.95, n_resamples=1000,
                   random_state=0):
    """How much of the language-modelling loss a reconstruction keeps (SAEBench's score).

    For every batch the model runs three times: clean; with the activation at
    ``module`` replaced by zeros (ablation); and with it replaced by its reconstruction
    ``reconstruct(x)``. Replacement happens at the positions the attention mask keeps
    (but the first, with ``exclude_first``); the next-token cross-entropy is averaged
    over every predicted token. The score is
    ``(CE_ablation - CE_reconstruction) / (CE_ablation - CE_clean)``: 1 when the
    reconstruction is as good as the true activation, 0 when it is no better than
    zeros. Its interval is a percentile bootstrap over whole sequences.

    Parameters
    ----------
    model : torch.nn.Module
        A causal language model whose output is (or has ``.logits``) the next-token
        logits of shape ``(batch, seq, vocabulary)``.
    batches : iterable
        Token batches, as for :func:`extract_activations`.
    module : str
        Dotted name of the hooked submodule (the one the activations came from).
    reconstruct : fitted estimator or callable
        A sparse coder fitted on the activations (its ``inverse_transform(transform(x))``
        is spliced in), or a function mapping a ``(n_tokens, n_features)`` tensor to its
        replacement.
    site : {"output", "input"}, default="output"
        Which tensor of the submodule is replaced, as in :func:`extract_activations`.
    baseline : dict, default=None
        The result of an earlier call on the same model, batches, module and site:
        its ``ce_clean`` and ``ce_ablation`` are reused, so the model runs once per
        batch instead of three times (scoring several reconstructions). Its
        ``n_tokens`` must match these batches'.
    scale : float, default=1.0
        The estimator was trained on ``scale * x`` (activations scaled before fitting,
        e.g. to mean squared norm ``n_features``): the rows are multiplied by ``scale``
        before ``reconstruct`` and its output divided by it. An estimator fitted with
        ``scale_input=True`` handles its own scale: leave 1.0.
    exclude_first : bool, default=True
        Leave each sequence's first real token (position 0, an attention sink in causal
        LMs; after left padding, the first unmasked token) out: its activation is never
        replaced, in the ablation neither, and the prediction made from it is not in the
        mean (it would be the same in every run), as SAELens does.
    confidence : float, default=0.95
        Coverage of ``score_interval``.
    n_resamples : int, default=1000
        Bootstrap resamples of the sequences (0: no interval).
    random_state : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    result : dict
        ``score``, ``score_interval`` (``(low, high)``, None with fewer than two
        sequences or a baseline without per-sequence sums), ``ce_clean``,
        ``ce_ablation``, ``ce_reconstruction`` (mean cross-entropy in nats per predicted
        token), ``n_tokens`` (predicted tokens counted), ``n_sequences`` and
        ``per_sequence`` (each run's summed cross-entropy and token count per sequence,
        what a later call's ``baseline`` reuses).

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap.activations import loss_recovered
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Linear(8, 20))
    >>> tokens = torch.randint(20, (2, 10))
    >>> result = loss_recovered(model, [tokens], module="0", reconstruct=lambda x: x)
    >>> result["score"]
    1.0
    >>> halved = loss_recovered(model, [tokens], module="0", reconstruct=lambda x: x / 2,
    ...                         baseline=result)
    >>> halved["ce_clean"] == result["ce_clean"] and halved["score"] < 1
    True
    """
    if not (isinstance(scale, Real) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    if not isinstance(n_resamples, Integral) or n_resamples < 0:
        raise ValueError(f"n_resamples must be a non-negative integer, got {n_resamples!r}.")
    reconstructor = _as_reconstructor(reconstruct, float(scale))
    reference = _check_baseline(baseline)
    runs = {"reconstruction": reconstructor}
    if reference is None:
        runs = {"clean": None, "ablation": torch.zeros_like, **runs}
    sums, n_tokens = _cross_entropy_sums(model, batches, module=module, site=site, runs=runs,
                                         exclude_first=exclude_first)  # fmt: skip
    return _loss_recovered_score(sums, n_tokens, reference, confidence=confidence,
                                 n_resamples=n_resamples, random_state=random_state)
