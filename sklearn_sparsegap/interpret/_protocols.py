"""Automated interpretability: explain each latent, then score the explanation.

Two protocols, labelled in every output row because their numbers are not comparable:

``"paper"`` (the paper's §5)
    The explainer sees 5 of the latent's top-10 contexts, trimmed to 30 tokens left and 5
    right of the top token (marked ``<<tok>>``), plus the tokens its atom promotes and
    suppresses through the unembedding. The scorer gets the other 5 top contexts as
    positives and the top 5 contexts of a different latent as negatives, shuffled in one
    batch. F1 is the macro F1 over the two classes.

``"delphi"`` (EleutherAI delphi's detection and fuzzing)
    The explainer sees the top contexts (32-token windows) with tokens at >= 0.3 of the
    latent's maximum marked. Detection: positives drawn from 10 activation quantiles, as
    many random windows on which the latent never fires, shuffled, in batches of 5;
    F1 of the positive class and balanced accuracy. Fuzzing: the same positives with
    their activating tokens highlighted and the negatives with as many random tokens
    highlighted; the judge says whether each highlighting is right.
"""

import numbers
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

from ._clients import BackendError

__all__ = ["explain_and_score", "detection_metrics", "PROTOCOLS"]

PROTOCOLS = {
    "paper": {
        "left": 30,
        "right": 5,
        "n_explain": 5,
        "n_positive": 5,
        "batch": 10,
        "scorers": ("detection",),
        "min_firing": 10,
        "f1": "macro",
    },
    "delphi": {
        "left": 15,
        "right": 16,
        "n_explain": 20,
        "batch": 5,
        "scorers": ("detection", "fuzzing"),
        "min_firing": 200,
        "f1": "positive",
        "highlight_fraction": 0.3,
    },
}

_COLUMNS = (
    "latent",
    "protocol",
    "scorer",
    "backend",
    "status",
    "explanation",
    "n_positive",
    "n_negative",
    "tp",
    "fp",
    "fn",
    "tn",
    "precision",
    "recall",
    "f1",
    "f1_average",
    "accuracy",
    "balanced_accuracy",
)


def detection_metrics(y_true, y_pred, *, f1_average="positive"):
    """Return precision, recall, F1, accuracy and balanced accuracy of binary predictions.

    Parameters
    ----------
    y_true, y_pred : array-like of 0/1
        Whether each example activates the latent, and the scorer's predictions.
    f1_average : {"positive", "macro"}, default="positive"
        F1 of the positive class (delphi) or the mean F1 of both classes (the paper's
        scikit-learn macro F1).

    Returns
    -------
    metrics : dict
        ``tp``, ``fp``, ``fn``, ``tn``, ``precision``, ``recall`` (of the positive class),
        ``f1``, ``accuracy``, ``balanced_accuracy``.

    Examples
    --------
    >>> from sklearn_sparsegap.interpret import detection_metrics
    >>> m = detection_metrics([1, 1, 0, 0], [1, 0, 0, 0])
    >>> float(m["precision"]), float(m["recall"]), round(float(m["f1"]), 3)
    (1.0, 0.5, 0.667)
    """
    if f1_average not in ("positive", "macro"):
        raise ValueError(f"f1_average must be 'positive' or 'macro', got {f1_average!r}.")
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError("y_true and y_pred must be 1-D arrays of the same length.")
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    average = "binary" if f1_average == "positive" else "macro"
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": float(
            f1_score(y_true, y_pred, average=average, labels=[0, 1], zero_division=0)
        ),
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
    }


def _trim_context(context, left, right):
    centre = context["centre"]
    start, stop = max(0, centre - left), centre + right + 1
    out = dict(context)
    out["tokens"] = context["tokens"][start:stop]
    out["activations"] = np.asarray(context["activations"][start:stop])
    out["centre"] = centre - start
    return out


def _explain_examples(contexts, mark):
    examples = []
    for context in contexts:
        marked = np.zeros(len(context["tokens"]), dtype=bool)
        if mark == "centre":
            marked[context["centre"]] = True
        else:
            marked = np.asarray(context["activations"]) >= mark
        examples.append(
            {
                "tokens": list(context["tokens"]),
                "activations": np.asarray(context["activations"]),
                "marked": marked.tolist(),
                "centre": context["centre"],
            }
        )
    return examples


def _empty_row(latent, protocol, scorer, backend, status, explanation=""):
    row = dict.fromkeys(_COLUMNS, np.nan)
    row.update(
        latent=latent,
        protocol=protocol,
        scorer=scorer,
        backend=backend,
        status=status,
        explanation=explanation,
        f1_average=PROTOCOLS[protocol]["f1"],
    )
    for key in ("n_positive", "n_negative", "tp", "fp", "fn", "tn"):
        row[key] = 0
    return row


def _judge_in_batches(judge, items, batch, rng):
    """Shuffle, ask ``judge`` batch by batch, and return predictions in item order."""
    order = rng.permutation(len(items))
    predictions = np.zeros(len(items), dtype=int)
    for start in range(0, len(items), batch):
        chosen = order[start : start + batch]
        answer = judge([items[i] for i in chosen])
        if len(answer) != len(chosen):
            raise BackendError(
                f"scorer returned {len(answer)} labels for {len(chosen)} examples"
            )
        predictions[chosen] = answer
    return predictions


def _score_rows(latent, protocol, scorers, explanation, backend_name, positives,
                negatives, judges, settings, rng):
    rows = []
    labels = np.r_[np.ones(len(positives), int), np.zeros(len(negatives), int)]
    for scorer in scorers:
        try:
            if scorer == "detection":
                items = [p["tokens"] for p in positives] + [n["tokens"] for n in negatives]
                predictions = _judge_in_batches(
                    lambda batch: judges["detection"](explanation, batch),
                    items, settings["batch"], rng,
                )
            else:  # fuzzing
                fraction = settings["highlight_fraction"]
                pos_marks = [
                    np.asarray(p["activations"]) >= fraction * np.max(p["activations"])
                    for p in positives
                ]
                neg_marks = []
                for negative in negatives:
                    n_marks = int(pos_marks[rng.integers(len(pos_marks))].sum())
                    mask = np.zeros(len(negative["tokens"]), dtype=bool)
                    mask[rng.choice(len(mask), min(n_marks, len(mask)), replace=False)] = True
                    neg_marks.append(mask)
                items = list(zip(
                    [p["tokens"] for p in positives] + [n["tokens"] for n in negatives],
                    pos_marks + neg_marks,
                ))
                predictions = _judge_in_batches(
                    lambda batch: judges["fuzzing"](
                        explanation, [w for w, _ in batch], [h for _, h in batch]
                    ),
                    items, settings["batch"], rng,
                )
        except BackendError as exc:
            rows.append(_empty_row(latent, protocol, scorer, backend_name,
                                   f"unscored: {exc}", explanation))
            continue
        row = _empty_row(latent, protocol, scorer, backend_name, "scored", explanation)
        row.update(detection_metrics(labels, predictions, f1_average=settings["f1"]))
        row.update(n_positive=len(positives), n_negative=len(negatives))
        rows.append(row)
    return rows


def _run_latent(stats, latent, protocol, backend, scorers, settings, min_firing, seed,
                other_latents):
    name = getattr(backend, "name", type(backend).__name__)
    rng = np.random.default_rng([seed, latent])
    if stats.dead[latent]:
        return [_empty_row(latent, protocol, s, name, "dead: never fires") for s in scorers]
    if stats.n_firing[latent] < min_firing:
        status = f"skipped: fires on {stats.n_firing[latent]} tokens < min_firing={min_firing}"
        return [_empty_row(latent, protocol, s, name, status) for s in scorers]
    left, right = settings["left"], settings["right"]
    top = [_trim_context(c, left, right) for c in stats.top_contexts(latent)]
    random_windows = stats.random_contexts(latent)
    if protocol == "paper":
        n_explain, n_positive = settings["n_explain"], settings["n_positive"]
        explain_set = top[:n_explain]
        positives = top[n_explain : n_explain + n_positive]
        candidates = [o for o in other_latents if o != latent]
        negatives = []
        if candidates:
            other = int(rng.choice(candidates))
            negatives = [
                _trim_context(c, left, right) for c in stats.top_contexts(other)
            ][:n_positive]
        examples = _explain_examples(explain_set, "centre")
        logits = stats.logit_effects(latent)
        background = [w["tokens"] for w in random_windows]
    else:
        positives = [_trim_context(c, left, right) for c in stats.quantile_contexts(latent)]
        if len(random_windows) < 2:
            status = (
                f"skipped: {len(random_windows)} windows of {stats.window_length} tokens "
                "where it never fires (too dense for non-activating negatives)"
            )
            return [_empty_row(latent, protocol, s, name, status) for s in scorers]
        # As many negatives as positives, and as many other quiet windows again for the
        # explainer's background; a dense latent has few windows where it never fires,
        # so both sets shrink to fit (the positives keep every quantile represented).
        n_test = min(len(positives), len(random_windows) // 2)
        if n_test < len(positives):
            keep = np.sort(rng.choice(len(positives), n_test, replace=False))
            positives = [positives[i] for i in keep]
        negatives = random_windows[n_test : 2 * n_test]
        background = [w["tokens"] for w in random_windows[:n_test]]
        explain_set = top[: settings["n_explain"]]
        cutoff = settings["highlight_fraction"] * stats.max_activation[latent]
        examples = _explain_examples(explain_set, cutoff)
        logits = None
    if not positives or not negatives:
        status = (
            f"skipped: {len(positives)} positive and {len(negatives)} negative examples"
        )
        return [_empty_row(latent, protocol, s, name, status) for s in scorers]
    try:
        explanation = backend.explain(examples, logits=logits, background=background)
    except BackendError as exc:
        return [_empty_row(latent, protocol, s, name, f"unscored: {exc}") for s in scorers]
    judges = {"detection": backend.detect, "fuzzing": backend.fuzz}
    return _score_rows(latent, protocol, scorers, explanation, name, positives,
                       negatives, judges, settings, rng)


def _check_protocol_arguments(stats, backend, protocol, scorers, latents, min_firing,
                              n_jobs):
    """Validate the arguments of :func:`explain_and_score` and fill in the defaults.

    Returns the protocol's settings, the scorers (a tuple), the latents (an array),
    ``min_firing`` and ``n_jobs``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}.")
    settings = PROTOCOLS[protocol]
    if scorers is None:
        scorers = settings["scorers"]
    scorers = tuple(scorers)
    unknown = set(scorers) - set(settings["scorers"])
    if not scorers or unknown:
        raise ValueError(
            f"scorers for protocol {protocol!r} must be a non-empty subset of "
            f"{settings['scorers']}, got {scorers!r}."
        )
    if stats.vocabulary is None:
        raise ValueError(
            "stats has no vocabulary: pass vocabulary= to compute_feature_statistics."
        )
    for name in ("explain", "detect", "fuzz"):
        if not callable(getattr(backend, name, None)):
            raise ValueError(f"backend must have a callable {name}(), got {backend!r}.")
    if min_firing is None:
        min_firing = settings["min_firing"]
    if latents is None:
        latents = np.arange(stats.n_latents)
    latents = np.asarray(latents)
    if latents.ndim != 1 or latents.dtype.kind not in "iu" or (
        len(latents) and (latents.min() < 0 or latents.max() >= stats.n_latents)
    ):
        raise ValueError(f"latents must be 1-D integers in [0, {stats.n_latents}).")
    if n_jobs is None:
        n_jobs = getattr(backend, "max_workers", 1)
    if not isinstance(n_jobs, numbers.Integral) or n_jobs < 1:
        raise ValueError(f"n_jobs must be an integer >= 1, got {n_jobs!r}.")
    return settings, scorers, latents, min_firing, n_jobs


def _negative_latents(stats, n_needed):
    """Latents whose top contexts can be another latent's negatives (the paper's
    protocol): latents that fire, with at least ``n_needed`` top contexts."""
    filled = (stats.example_rows[:, : stats.n_top] >= 0).sum(axis=1)
    return np.flatnonzero(~stats.dead & (filled >= n_needed))


def _evaluate_latents(evaluate, latents, n_jobs):
    """``evaluate`` of every latent, in the order of ``latents``, on ``n_jobs`` threads."""
    if n_jobs == 1:
        return [evaluate(latent) for latent in latents]
    with ThreadPoolExecutor(n_jobs) as pool:
        return list(pool.map(evaluate, latents))


def _as_columns(per_latent):
    """The rows of every latent, in order, as one dict of lists (one per column)."""
    results = {column: [] for column in _COLUMNS}
    for rows in per_latent:
        for row in rows:
            for column in _COLUMNS:
                results[column].append(row[column])
    return results


def explain_and_score(
    stats,
    backend,
    *,
    protocol="paper",
    scorers=None,
    latents=None,
    min_firing=None,
    n_jobs=None,
    random_state=0,
):
    """Explain each latent from its contexts and score the explanation.

    Every latent gets one row per scorer. A latent that never fires is reported with
    status ``"dead: never fires"`` and NaN scores (never a silent F1 of 0); one whose
    explainer or scorer fails (timeouts, malformed answers after retries, a prompt that
    cannot fit) is ``"unscored: <reason>"``, and the run goes on.

    Parameters
    ----------
    stats : FeatureStatistics
        From :func:`compute_feature_statistics` (with a vocabulary).
    backend : NGramExplainer, LLMExplainer or compatible
        Has ``explain``, ``detect`` and ``fuzz``.
    protocol : {"paper", "delphi"}, default="paper"
        See the module description; labelled in the ``protocol`` column.
    scorers : tuple of {"detection", "fuzzing"}, default=None
        ``("detection",)`` for the paper, ``("detection", "fuzzing")`` for delphi.
    latents : array-like of int, default=None
        Latents to evaluate; all by default.
    min_firing : int, default=None
        Latents firing on fewer tokens are skipped (reported); 10 for the paper, 200 for
        delphi (its default).
    n_jobs : int, default=None
        Latents evaluated at once (threads); the back end's ``max_workers`` by default.
    random_state : int, default=0
        Seed of the shuffles, the negative latent and the fuzzing highlights.

    Returns
    -------
    results : dict of lists
        One entry per (latent, scorer): ``latent``, ``protocol``, ``scorer``, ``backend``,
        ``status``, ``explanation``, ``n_positive``, ``n_negative``, ``tp``, ``fp``,
        ``fn``, ``tn``, ``precision``, ``recall``, ``f1``, ``f1_average`` (``"macro"`` or
        ``"positive"``), ``accuracy``, ``balanced_accuracy``; ``pandas.DataFrame(results)``
        works.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap.interpret import (
    ...     NGramExplainer, compute_feature_statistics, explain_and_score)
    >>> tokens = np.random.default_rng(0).integers(0, 20, size=2000)
    >>> class FiresOnSeven:
    ...     components_ = np.eye(1)
    ...     def transform(self, X):
    ...         return (X == 7).astype(float)
    >>> metadata = {"document": np.arange(2000) // 100,
    ...             "position": np.arange(2000) % 100, "token": tokens}
    >>> stats = compute_feature_statistics(
    ...     FiresOnSeven(), tokens[:, None].astype(float), metadata,
    ...     vocabulary=[f"t{i}" for i in range(20)])
    >>> results = explain_and_score(stats, NGramExplainer(), protocol="delphi",
    ...                             min_firing=10)
    >>> results["scorer"], results["f1"]
    (['detection', 'fuzzing'], [1.0, 1.0])
    """
    settings, scorers, latents, min_firing, n_jobs = _check_protocol_arguments(
        stats, backend, protocol, scorers, latents, min_firing, n_jobs
    )
    seed = int(np.random.default_rng(random_state).integers(2**31))
    # Negatives of the paper's protocol come from latents with a full set of top contexts.
    other_latents = _negative_latents(stats, settings.get("n_positive", 1))

    def run(latent):
        return _run_latent(stats, int(latent), protocol, backend, scorers, settings,
                           min_firing, seed, other_latents)

    return _as_columns(_evaluate_latents(run, latents, n_jobs))
