"""Any trained SAE's amortisation gap, measured and closed by ITO: ``sparsegap gap``.

One function per step, so the command line stays a thin shell and each step is tested on
its own: open the activations (a store or a ``.npy``, never read whole), check them and
pick the usable rows (attention sinks left out), load the SAE and check its width, build
the ladder of ITO budgets on a sample, stream every row through the SAE and each budget,
then the answer in words, the table, the Pareto figure and the HTML report.
"""

import re
import time
from pathlib import Path

import numpy as np

from .._batches import iter_row_blocks, take_rows
from ..activations._rows import MAX_NORM_RATIO, holdout_sequences, usable_rows
from ._gap_report import (
    answer,
    build_table,
    check_out,
    format_table,
    loss_note,
    sae_name,
    write_outputs,
)
from ._report import say

__all__ = ["DEFAULT_BUDGETS", "amortisation_gap_report", "format_table", "loss_note",
           "parse_budget"]

# The ITO ladder run when none is asked for: OMP at each row's own SAE L0 (the
# ``SAEPlusITO(prefit=True)`` defaults), OMP at twice the SAE's mean L0, FISTA at the
# penalty whose mean L0 matches the SAE's.
DEFAULT_BUDGETS = ("omp-l0", "omp-2x", "fista-l0")
# Rows of the sample the refiners are set up on (the SAE's L0, the L1 penalty search).
_SAMPLE_ROWS = 4096
# Rows of the L1 penalty bisection, its solves and the L1 solvers' iteration budget.
_ALPHA_ROWS = 256
_ALPHA_STEPS = 8
_L1_MAX_ITER = 100
# Latents listed in the report as those whose codes ITO changes most, and the rows
# (contexts) kept per latent: those where ITO changed its code most.
_N_CHANGED = 20
_N_CONTEXTS = 3
_BUDGET = re.compile(r"^(omp|mp|gradient_pursuit|fista|ista)-(l0|\d+(?:\.\d+)?x|k\d+)$")
_L1 = ("fista", "ista")


def parse_budget(name):
    """The specification of one ITO budget name.

    ``"<solver>-l0"`` refines at the SAE's own sparsity (a greedy solver at each row's SAE
    L0; an L1 solver at the penalty whose mean L0 matches the SAE's), ``"<greedy>-<m>x"`` at
    ``m`` times the SAE's mean L0 (one K for every row), ``"<greedy>-k<K>"`` at K atoms.

    Parameters
    ----------
    name : str
        E.g. ``"omp-l0"``, ``"omp-2x"``, ``"omp-k32"``, ``"fista-l0"``.

    Returns
    -------
    spec : dict
        ``name``, ``algorithm``, ``kind`` (``"l0"``, ``"multiple"`` or ``"k"``) and
        ``value`` (the multiple or K; None for ``"l0"``).

    Examples
    --------
    >>> from sklearn_sparsegap.experiments._gap import parse_budget
    >>> parse_budget("omp-2x")
    {'name': 'omp-2x', 'algorithm': 'omp', 'kind': 'multiple', 'value': 2.0}
    """
    match = _BUDGET.match(str(name).strip())
    if match is None:
        raise ValueError(
            f"unknown ITO budget {name!r}: use <solver>-l0, <solver>-<m>x or <solver>-k<K> "
            "with solver omp, mp or gradient_pursuit (fista or ista with -l0 only), e.g. "
            "omp-l0,omp-2x,fista-l0"
        )
    algorithm, budget = match.groups()
    if budget == "l0":
        return {"name": match.group(0), "algorithm": algorithm, "kind": "l0", "value": None}
    if algorithm in _L1:
        raise ValueError(f"ITO budget {name!r}: an L1 solver takes only -l0 (its L0-matched "
                         "penalty), e.g. fista-l0")
    if budget.startswith("k"):
        k = int(budget[1:])
        if k < 1:
            raise ValueError(f"ITO budget {name!r}: K must be at least 1")
        return {"name": match.group(0), "algorithm": algorithm, "kind": "k", "value": k}
    multiple = float(budget[:-1])
    if not multiple > 0:
        raise ValueError(f"ITO budget {name!r}: the multiple must be positive")
    return {"name": match.group(0), "algorithm": algorithm, "kind": "multiple",
            "value": multiple}


# --------------------------------------------------------------------------- data


def open_activations(path, *, max_rows=None):
    """``(X, metadata, description)`` of an activation store or a ``.npy``, never read whole.

    A store (a directory written by :func:`extract_activations`) gives its memory-mapped
    rows and its metadata (``position`` says where the attention sinks are); a ``.npy``
    is memory-mapped and has no metadata (None). ``max_rows`` keeps the first rows.
    """
    from ..activations._extract import load_activations

    path = Path(path)
    if path.is_dir():
        X, metadata = load_activations(path)
        kind = "activation store"
    elif path.suffix == ".npy" and path.is_file():
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"--activations: cannot read {str(path)!r} as a .npy array "
                             f"({exc})") from None
        metadata = None
        kind = ".npy array"
    else:
        raise ValueError(f"--activations: {str(path)!r} is neither an activation store "
                         "(a directory written by extract_activations) nor a .npy file")
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"--activations: {str(path)!r} must hold a non-empty 2-D array of "
                         f"rows, got shape {tuple(X.shape)}")
    if not np.issubdtype(X.dtype, np.floating) and metadata is None:
        raise ValueError(f"--activations: {str(path)!r} holds {X.dtype} values, expected "
                         "floating point")
    if max_rows is not None and max_rows < X.shape[0]:
        X = X[:max_rows]
        if metadata is not None:
            metadata = {key: value[:max_rows] for key, value in metadata.items()}
    return X, metadata, f"{kind} {path} ({X.shape[0]} rows x {X.shape[1]})"


def checked_row_norms(X, *, block_rows=4096):
    """Norms of every row of ``X``, read in blocks; a NaN or inf row raises a ``ValueError``
    naming its index (nothing after it is read)."""
    norms = np.empty(X.shape[0], dtype=np.float64)
    block_bytes = block_rows * X.shape[1] * X.dtype.itemsize
    for start, rows in iter_row_blocks(X, block_bytes=block_bytes):
        rows = np.asarray(rows, dtype=np.float64)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            bad = start + int(np.flatnonzero(~finite)[0])
            raise ValueError(f"activations row {bad} is not finite (NaN or inf); clean or "
                             "drop it")
        norms[start:start + len(rows)] = np.linalg.norm(rows, axis=1)
    return norms


def select_rows(metadata, norms, *, max_norm_ratio=MAX_NORM_RATIO):
    """The usable rows (a boolean mask) and a sentence saying which were left out and why.

    With a store's metadata, position 0 (the attention sink) and the rare later
    "massive activations" (norm above ``max_norm_ratio`` times the median) are left out,
    as in every real-data experiment (:func:`usable_rows`). A ``.npy`` has no positions:
    only the massive-activation rule applies.
    """
    n_rows = len(norms)
    ratio = "" if max_norm_ratio is None else f"norm > {max_norm_ratio:g}x the median"
    if metadata is not None:
        at_zero = int(np.sum(np.asarray(metadata["position"][:n_rows]) == 0))
        usable = usable_rows(metadata, n_rows, norms=norms, max_norm_ratio=max_norm_ratio)
        massive = n_rows - at_zero - int(usable.sum())
        note = (f"attention sinks left out (store metadata): {at_zero} position-0 rows and "
                f"{massive} massive-activation rows ({ratio or 'rule off'}); "
                f"{int(usable.sum())} of {n_rows} rows used")
    else:
        usable = np.ones(n_rows, dtype=bool)
        if max_norm_ratio is not None:
            usable &= norms <= max_norm_ratio * np.median(norms)
        note = (f"a .npy has no token positions, so position 0 cannot be told apart: only "
                f"{n_rows - int(usable.sum())} massive-activation rows ({ratio or 'rule off'})"
                f" left out; {int(usable.sum())} of {n_rows} rows used")
    if not usable.any():
        raise ValueError("no usable activation rows are left once the attention sinks are "
                         "left out")
    return usable, note


def evenly_spaced_rows(X, usable, n_rows):
    """Up to ``n_rows`` evenly spaced usable rows of ``X`` as float32 (an in-memory copy)."""
    index = np.flatnonzero(usable)
    if len(index) > n_rows:
        index = index[np.linspace(0, len(index) - 1, n_rows).astype(np.intp)]
    return np.asarray(take_rows(X, index), dtype=np.float32)


# --------------------------------------------------------------------------- the SAE


def load_checked_sae(sae_path, n_features, *, activations_name="the activations",
                     scaling_factor=None, device="auto"):
    """Load ``sae_path`` with :func:`load_sae` and check that it reads ``n_features``.

    Errors are ``ValueError`` on one line: the loader's (format, architecture) or the
    width mismatch, naming both widths.
    """
    from ..interop import load_sae

    try:
        sae = load_sae(sae_path, device=device, scaling_factor=scaling_factor)
    except (ValueError, OSError) as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    width = int(sae.n_features_in_)
    if width != n_features:
        raise ValueError(f"the SAE {str(sae_path)!r} reads {width}-dimensional activations "
                         f"but {activations_name} has {n_features} columns")
    return sae


def build_refiners(sae, sample, budgets=DEFAULT_BUDGETS, *, device="auto"):
    """One prefit ``SAEPlusITO`` per budget, set up on ``sample``; returns a list of
    ``(name, estimator, description)``.

    ``"<solver>-l0"``: a greedy solver at each row's own SAE L0 with the ``"l0"`` guard
    (never worse, never denser than the SAE, row by row), or an L1 solver at the penalty
    found by a short bisection on ``sample`` (its mean L0 matching the SAE's) with the same
    guard. A larger budget (``"-<m>x"``, ``"-k<K>"``) gives every row K atoms and keeps,
    per row, the refined codes only where their squared error is at most the SAE's
    (``guard="objective"`` at penalty 0).
    """
    import torch

    from .._ito import SAEPlusITO, _l0_matching_alpha
    from .._torch_utils import resolve_device, to_tensor

    n_components, n_features = sae.components_.shape
    specs = [parse_budget(b) if isinstance(b, str) else b for b in budgets]
    if not specs:
        raise ValueError("budgets: give at least one ITO budget")
    names = [spec["name"] for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"budgets: {names} repeats a budget")
    sae_l0 = float(np.mean(np.count_nonzero(sae.transform(sample), axis=1)))
    refiners = []
    for spec in specs:
        algorithm = spec["algorithm"]
        cap = min(n_components, n_features) if algorithm in ("omp", "gradient_pursuit") \
            else n_components
        if spec["kind"] == "l0" and algorithm in _L1:
            dev = resolve_device(device)
            rows = sample[np.linspace(0, len(sample) - 1, min(len(sample), _ALPHA_ROWS))
                          .astype(np.intp)]
            X = to_tensor(rows, device=dev)
            start = to_tensor(np.asarray(sae.transform(rows)), device=dev)
            D = to_tensor(sae.components_, device=dev)
            residual = X - to_tensor(sae.intercept_, device=dev)
            with torch.no_grad():
                alpha, found_l0 = _l0_matching_alpha(
                    residual, D, float((start != 0).sum(1).double().mean()),
                    algorithm=algorithm, positive=True, max_iter=_L1_MAX_ITER, tol=1e-4,
                    init=start, n_steps=_ALPHA_STEPS)
            estimator = SAEPlusITO(sae, prefit=True, transform_algorithm=algorithm,
                                   transform_alpha=alpha, transform_max_iter=_L1_MAX_ITER,
                                   device=device)
            description = (f"{algorithm.upper()} at alpha={alpha:.3g} (L0 {found_l0:.1f} on "
                           f"{len(rows)} rows), {_L1_MAX_ITER} iterations from the SAE "
                           "codes, l0 guard")
        elif spec["kind"] == "l0":
            estimator = SAEPlusITO(sae, prefit=True, transform_algorithm=algorithm,
                                   device=device)
            description = f"{algorithm.upper()} at each row's SAE L0, l0 guard (the default)"
        else:
            k = spec["value"] if spec["kind"] == "k" else max(1, round(spec["value"] * sae_l0))
            k = min(k, cap)
            estimator = SAEPlusITO(sae, prefit=True, transform_algorithm=algorithm,
                                   transform_n_nonzero_coefs=int(k), guard="objective",
                                   device=device)
            description = (f"{algorithm.upper()} at k={k} for every row"
                           + (f" ({spec['value']:g}x the SAE's mean L0)"
                              if spec["kind"] == "multiple" else "")
                           + ", kept where the error is no larger")
        estimator.fit(sample)
        refiners.append((f"SAE+ITO {spec['name']}", estimator, description))
    return refiners


# --------------------------------------------------------------------------- streaming


class _Tally:
    """Streamed sums of one method: the FVU's per-column sums (:class:`ExplainedDeviance`,
    the ones ``fraction_variance_unexplained`` uses), the latents' firing counts and the
    time spent encoding."""

    def __init__(self, n_features, n_components):
        from .._metrics import ExplainedDeviance

        self.deviance = ExplainedDeviance(n_features)
        self.active = np.zeros(n_components, dtype=np.int64)
        self.n = 0
        self.seconds = 0.0

    def update(self, X, X_hat, codes, seconds):
        self.deviance.update(X, X_hat)
        self.active += (np.asarray(codes) != 0).sum(axis=0)
        self.n += len(X)
        self.seconds += seconds

    def metrics(self, dense_threshold=0.1):
        frequency = self.active / self.n
        return {"fvu": float(self.deviance.fvu()),
                "mean_l0": float(self.active.sum() / self.n),
                "dead_fraction": float(np.mean(frequency == 0)),
                "dense_fraction": float(np.mean(frequency > dense_threshold)),
                "seconds_per_1k_rows": 1000.0 * self.seconds / self.n}


class _LatentChanges:
    """What the first ITO budget does to each latent, streamed: the summed absolute
    change of its codes, the rows where it was turned on or off, and the
    ``_N_CONTEXTS`` rows (indices into the activations) where its code changed most,
    with the SAE's and ITO's codes there. Memory: a few numbers per latent."""

    def __init__(self, n_components):
        self.abs_change = np.zeros(n_components)
        self.added = np.zeros(n_components, np.int64)
        self.dropped = np.zeros(n_components, np.int64)
        self.rows_changed = 0
        shape = (_N_CONTEXTS, n_components)
        self.top = {"change": np.zeros(shape), "row": np.full(shape, -1, np.int64),
                    "sae": np.zeros(shape), "ito": np.zeros(shape)}

    def update(self, row_index, codes, refined):
        change = np.abs(refined - codes)
        before, after = codes != 0, refined != 0
        self.abs_change += change.sum(axis=0)
        self.added += (after & ~before).sum(axis=0)
        self.dropped += (before & ~after).sum(axis=0)
        self.rows_changed += int(np.any(refined != codes, axis=1).sum())
        # The block's best rows per latent, merged with the best so far.
        m = min(_N_CONTEXTS, len(change))
        best = np.argpartition(-change, m - 1, axis=0)[:m]
        columns = np.arange(change.shape[1])
        merged = {"change": np.vstack([self.top["change"], change[best, columns]]),
                  "row": np.vstack([self.top["row"], row_index[best]]),
                  "sae": np.vstack([self.top["sae"], codes[best, columns]]),
                  "ito": np.vstack([self.top["ito"], refined[best, columns]])}
        keep = np.argsort(-merged["change"], axis=0, kind="stable")[:_N_CONTEXTS]
        self.top = {key: value[keep, columns] for key, value in merged.items()}

    def contexts(self, latent):
        """``(row, sae code, ito code)`` of the rows where ``latent`` changed most."""
        kept = (self.top["row"][:, latent] >= 0) & (self.top["change"][:, latent] > 0)
        return [(int(self.top["row"][i, latent]), float(self.top["sae"][i, latent]),
                 float(self.top["ito"][i, latent])) for i in np.flatnonzero(kept)]


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def stream_metrics(X, usable, sae, refiners, *, block_rows=2048, progress=True):
    """Stream the usable rows of ``X`` block by block through the SAE and every refiner.

    Memory is a few blocks whatever the number of rows. Returns ``(tallies, changes)``:
    one :class:`_Tally` per method (the SAE first) and the :class:`_LatentChanges` of
    the first refiner.
    """
    from tqdm.auto import tqdm

    n_components, n_features = sae.components_.shape
    tallies = [_Tally(n_features, n_components) for _ in range(len(refiners) + 1)]
    changes = _LatentChanges(n_components)
    block_bytes = block_rows * n_features * X.dtype.itemsize
    bar = tqdm(total=int(usable.sum()), unit="row", desc="SAE + ITO", disable=not progress,
               leave=False)
    try:
        for start, rows in iter_row_blocks(X, block_bytes=block_bytes):
            kept = usable[start:start + len(rows)]
            rows = np.asarray(rows, dtype=np.float32)[kept]
            if not len(rows):
                continue
            codes, seconds = _timed(sae.transform, rows)
            tallies[0].update(rows, sae.inverse_transform(codes), codes, seconds)
            for index, (_, refiner, _) in enumerate(refiners, start=1):
                refined, seconds = _timed(refiner.transform, rows)
                tallies[index].update(rows, refiner.inverse_transform(refined), refined,
                                      seconds)
                if index == 1:
                    changes.update(start + np.flatnonzero(kept), codes, refined)
            bar.update(len(rows))
    finally:
        bar.close()
    return tallies, changes


def changed_latents(changes, tallies, n=_N_CHANGED, *, metadata=None, tokenizer=None):
    """The ``n`` latents whose codes the first ITO budget changes most (mean |change|),
    each with the rows where it changed most (``contexts``: the row, the SAE's and ITO's
    codes and, with a store's ``metadata`` and a ``tokenizer``, the text before the token
    and the token itself)."""
    n_rows = tallies[0].n
    order = np.argsort(-changes.abs_change, kind="stable")[:n]
    order = order[changes.abs_change[order] > 0]
    contexts = [[{"row": row, "sae": sae, "ito": ito} for row, sae, ito in changes.contexts(j)]
                for j in order]  # fmt: skip
    if metadata is not None and tokenizer is not None and "token" in metadata:
        _add_context_text(contexts, metadata, tokenizer)
    return {"latent": order.tolist(),
            "mean_abs_change": (changes.abs_change[order] / n_rows).tolist(),
            "sae_frequency": (tallies[0].active[order] / n_rows).tolist(),
            "ito_frequency": (tallies[1].active[order] / n_rows).tolist(),
            "rows_added": changes.added[order].tolist(),
            "rows_dropped": changes.dropped[order].tolist(),
            "contexts": contexts}


def _add_context_text(contexts, metadata, tokenizer, left=12):
    """Give each context its ``text`` (up to ``left`` tokens before the row's token, in
    its sequence) and ``token`` (the row's own token), decoded by ``tokenizer``."""
    from ..activations import context_windows

    flat = [context for latent in contexts for context in latent]
    if not flat:
        return
    _, tokens = context_windows(metadata, np.array([c["row"] for c in flat]), left=left,
                                right=0)  # fmt: skip
    for context, window in zip(flat, tokens):
        before = [int(t) for t in window[:left] if t >= 0]
        context["text"] = tokenizer.decode(before)
        context["token"] = tokenizer.decode([int(window[left])])


# --------------------------------------------------------------------------- loss recovered


def _check_module(model, module):
    """With a ``model``, its ``module`` must be named and exist (close names listed)."""
    if model is None:
        return
    from ..activations._extract import get_submodule

    if module is None:
        raise ValueError("module: the hooked submodule is needed with model")
    get_submodule(model, module)


def loss_recovered_rows(model, module, metadata, usable, estimators, *, n_sequences=8,
                        progress=True):
    """Loss recovered of each estimator (:func:`loss_recovered`, the spliced forward pass
    on up to ``n_sequences`` of the activations' own sequences, position 0 kept true);
    None per estimator when no sequence is long enough. Returns ``(scores, intervals,
    n_tokens, n_sequences)``: each score's 95% bootstrap interval over the sequences
    (None when it has none). Without a ``model``, or without the tokens (a ``.npy`` has
    no ``metadata``), every score is None."""
    import torch

    from ..activations._evaluation import loss_recovered

    nothing = [None] * len(estimators), [None] * len(estimators), 0, 0
    if model is None:
        return nothing
    if metadata is None:
        say("a .npy has no tokens: no loss recovered", progress=progress)
        return nothing
    tokens = holdout_sequences(metadata, np.flatnonzero(usable), n_sequences=n_sequences)
    if tokens is None:
        return nothing
    batches = list(torch.split(tokens, 4))
    scores, intervals, baseline = [], [], None
    for name, estimator in estimators:
        say(f"loss recovered: {name}", progress=progress)
        # Position 0 (the attention sink) stays true in every run and out of the mean.
        result = loss_recovered(model, batches, module=module, site="output",
                                reconstruct=estimator, baseline=baseline)
        baseline = baseline or result
        scores.append(result["score"])
        interval = result.get("score_interval")
        intervals.append(None if interval is None else tuple(float(v) for v in interval))
    return scores, intervals, baseline["n_tokens"], len(tokens)


def _settings(sae, sae_path, description, rows_note, tallies, specs, refiners, changes, *,
              max_norm_ratio, device, module, loss_tokens, loss_sequences, n_features):
    """What a run measured, on what: the ``settings`` of its record."""
    from ..interop._detect import checkpoint_folder, detect_format

    return {"sae": sae_name(sae), "sae_path": str(sae_path),
            "sae_format": detect_format(checkpoint_folder(sae_path)),
            "activations": description, "rows_note": rows_note,
            "n_rows": int(tallies[0].n), "n_features": int(n_features),
            "n_components": int(sae.n_components), "budgets": [s["name"] for s in specs],
            "budget_descriptions": [d for _, _, d in refiners],
            "max_norm_ratio": max_norm_ratio, "device": str(device),
            "rows_changed_fraction": changes.rows_changed / tallies[0].n,
            "loss_recovered_tokens": loss_tokens, "loss_recovered_sequences": loss_sequences,
            "module": module}


def amortisation_gap_report(sae_path, activations, *, budgets=DEFAULT_BUDGETS, out=None,
                            max_rows=None, block_rows=2048, max_norm_ratio=MAX_NORM_RATIO,
                            scaling_factor=None, device="auto", model=None, module=None,
                            tokenizer=None, n_loss_sequences=8, progress=True):
    """Measure a trained SAE's amortisation gap on activations and close it with ITO.

    Loads the SAE (any checkpoint :func:`~sklearn_sparsegap.interop.load_sae` reads),
    leaves the attention sinks out of the activations (with a store's metadata: position 0
    and massive-activation rows), sets up a ladder of ITO budgets on a sample of the rows
    (:func:`build_refiners`: by default OMP at each row's own SAE L0 with the ``"l0"``
    guard, OMP at twice the SAE's mean L0, FISTA at the L0-matched penalty), then streams
    every usable row block by block through the SAE and each budget (bounded memory) and
    reports, per method, FVU, mean L0, dead and dense fractions, inference FLOPs and
    seconds per 1,000 rows, and loss recovered when ``model`` is given.

    Parameters
    ----------
    sae_path : str or path-like
        An SAELens, sparsify or dictionary_learning checkpoint folder (or one written by
        :func:`~sklearn_sparsegap.interop.save_sae`).
    activations : str or path-like
        An activation store written by
        :func:`~sklearn_sparsegap.activations.extract_activations` or a ``.npy`` array.
    budgets : sequence of str, default=("omp-l0", "omp-2x", "fista-l0")
        The ITO ladder (:func:`parse_budget`); the first is the one the answer quotes.
    out : str or path-like, default=None
        Write ``results.json``, ``results.csv``, ``pareto.png`` and ``report.html``
        there (it must not already hold files). None writes nothing.
    max_rows : int, default=None
        Use only the first rows of the activations.
    block_rows : int, default=2048
        Rows read and refined at a time.
    max_norm_ratio : float or None, default=10
        Rows with a norm above this times the median are left out as attention sinks.
    scaling_factor : float, default=None
        Passed to :func:`~sklearn_sparsegap.interop.load_sae`.
    device : str, default="auto"
        Device of the SAE and the refinement.
    model : torch.nn.Module, default=None
        The model the activations came from (a store's sequences are re-run through it):
        adds loss recovered (the reconstruction spliced in at ``module``).
    module : str, default=None
        The hooked submodule, needed with ``model``.
    tokenizer : tokenizer, default=None
        With a store's activations, decodes the contexts (the text before the token and
        the token) of the rows where ITO changed each listed latent most; without it
        they are given by row.
    n_loss_sequences : int, default=8
        Sequences of the loss-recovered splice.
    progress : bool, default=True
        Progress lines and bars on stderr.

    Returns
    -------
    record : dict
        ``answer`` (the result in one sentence), ``table`` (a dict of equal-length
        lists, one row per method, the SAE first: ``pandas.DataFrame(record["table"])``),
        ``changed_latents`` (dict of lists; ``contexts`` gives per latent the rows
        where its code changed most), ``settings`` and ``paths``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sklearn_sparsegap import SAEEncoder, make_sparse_dictionary_data
    >>> from sklearn_sparsegap.interop import save_sae
    >>> from sklearn_sparsegap.experiments import amortisation_gap_report
    >>> X, _, _ = make_sparse_dictionary_data(300, n_components=16, n_features=8,
    ...                                       random_state=0)
    >>> sae = SAEEncoder(n_components=16, activation="topk", n_nonzero_coefs=3,
    ...                  max_iter=30, random_state=0).fit(X)
    >>> folder = tempfile.mkdtemp()
    >>> save_sae(sae, folder + "/sae", format="saelens")
    >>> np.save(folder + "/X.npy", X.astype(np.float32))
    >>> record = amortisation_gap_report(folder + "/sae", folder + "/X.npy",
    ...                                  budgets=["omp-l0"], progress=False)
    >>> record["table"]["fvu"][1] <= record["table"]["fvu"][0] + 1e-6
    True
    """
    started = time.perf_counter()
    if out is not None:
        check_out(out)
    specs = [parse_budget(b) for b in budgets]
    if not specs:
        raise ValueError("budgets: give at least one ITO budget")
    _check_module(model, module)
    X, metadata, description = open_activations(activations, max_rows=max_rows)
    sae = load_checked_sae(sae_path, X.shape[1], activations_name=str(activations),
                           scaling_factor=scaling_factor, device=device)
    say(f"{sae_name(sae)} on {description}", progress=progress)
    norms = checked_row_norms(X, block_rows=block_rows)
    usable, rows_note = select_rows(metadata, norms, max_norm_ratio=max_norm_ratio)
    say(rows_note, progress=progress)
    sample = evenly_spaced_rows(X, usable, _SAMPLE_ROWS)
    say(f"setting up {len(specs)} ITO budget(s) on {len(sample)} sample rows",
        progress=progress)
    refiners = build_refiners(sae, sample, specs, device=device)
    tallies, changes = stream_metrics(X, usable, sae, refiners, block_rows=block_rows,
                                      progress=progress)
    loss_scores, loss_intervals, loss_tokens, loss_sequences = loss_recovered_rows(
        model, module, metadata, usable,
        [(sae_name(sae), sae)] + [(name, est) for name, est, _ in refiners],
        n_sequences=n_loss_sequences, progress=progress)
    table = build_table(sae, refiners, tallies, loss_scores, loss_intervals)
    settings = _settings(sae, sae_path, description, rows_note, tallies, specs, refiners,
                         changes, max_norm_ratio=max_norm_ratio, device=device, module=module,
                         loss_tokens=loss_tokens, loss_sequences=loss_sequences,
                         n_features=X.shape[1])
    record = {"answer": answer(table), "table": table,
              "changed_latents": changed_latents(changes, tallies, metadata=metadata,
                                                 tokenizer=tokenizer),
              "settings": settings,
              "paths": {}}
    settings["seconds"] = time.perf_counter() - started
    if out is not None:
        record["paths"] = write_outputs(record, out, progress=progress)
    return record
