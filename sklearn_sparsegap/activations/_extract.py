"""Forward hooks on named submodules and the streaming extraction loop."""

import contextlib
import difflib
import zlib
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ._store import (
    METADATA_FIELDS,
    STORAGE_DTYPES,
    ActivationWriter,
    activations_as_dask,
    open_activation_set,
)

# Batch keys that describe the rows rather than being inputs of the model.
_ROW_KEYS = ("document", "special_tokens_mask")

_SITES = ("output", "input")


class _StopForward(Exception):
    """Raised by the hook to end the forward pass once the activation is captured."""


def get_submodule(model, module):
    """The submodule of ``model`` named ``module``; a ``ValueError`` lists close names."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(module, str):
        raise ValueError(f"module must be a dotted submodule name (str), got {module!r}.")
    modules = dict(model.named_modules())
    if module not in modules:
        names = [name for name in modules if name]
        close = difflib.get_close_matches(module, names, n=5, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        example = ", ".join(names[:5])
        raise ValueError(
            f"module={module!r} is not a submodule of {type(model).__name__}.{hint} "
            f"(Submodule names look like: {example}, ...)"
        )
    return modules[module]


def _first_tensor(value, module, site):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise ValueError(
        f"the {site} of module={module!r} is a {type(value).__name__}, not a tensor or a "
        "tuple starting with one; hook a module whose output is the activation."
    )


def _replace_first(value, tensor):
    if isinstance(value, torch.Tensor):
        return tensor
    return type(value)((tensor, *value[1:]))


@contextlib.contextmanager
def hooked(model, module, site, *, stop=False, replace=None):
    """Capture (and optionally replace) the ``site`` tensor of a submodule.

    Yields a dict whose ``"activation"`` is set to the captured ``(batch, seq, d)``
    tensor on each forward pass. ``stop=True`` ends the pass right after the capture;
    ``replace`` is a function of that tensor whose result is passed on instead.
    """
    if site not in _SITES:
        raise ValueError(f"site must be one of {_SITES}, got {site!r}.")
    target = get_submodule(model, module)
    captured = {}

    def capture(tensor):
        captured["activation"] = tensor
        if stop:
            raise _StopForward
        if replace is not None:
            return replace(tensor)
        return None

    if site == "output":

        def hook(_module, _args, output):
            new = capture(_first_tensor(output, module, site))
            return None if new is None else _replace_first(output, new)

        handle = target.register_forward_hook(hook)
    else:

        def hook(_module, args, kwargs):
            if args:
                new = capture(_first_tensor(args, module, site))
                return None if new is None else (_replace_first(args, new), kwargs)
            if "hidden_states" in kwargs:
                new = capture(_first_tensor(kwargs["hidden_states"], module, site))
                return None if new is None else (args, {**kwargs, "hidden_states": new})
            raise ValueError(f"module={module!r} received no positional input to capture.")

        handle = target.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def model_device(model):
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def split_batch(batch, index):
    """``(model_inputs, input_ids, attention_mask, extra)`` of one batch, validated.

    ``model_inputs`` is the tensor itself for a tensor batch (passed positionally) or
    the dict of keyword inputs.
    """
    if isinstance(batch, torch.Tensor):
        input_ids = batch
        if input_ids.ndim != 2 or input_ids.dtype.is_floating_point:
            raise ValueError(
                f"batch {index}: a tensor batch must be 2-D integer token ids of shape "
                f"(batch, seq), got dtype {input_ids.dtype} and shape {tuple(input_ids.shape)}."
            )
        # A bare tensor has no padding: every position is a real token.
        return input_ids, input_ids, torch.ones_like(input_ids, dtype=torch.bool), {}
    if not hasattr(batch, "keys"):
        raise ValueError(
            f"batch {index}: expected a dict of tensors (a tokenizer's output) or a tensor "
            f"of token ids, got {type(batch).__name__}."
        )
    if "input_ids" not in batch:
        raise ValueError(f"batch {index} has no 'input_ids'.")
    if "attention_mask" not in batch:
        raise ValueError(
            f"batch {index} has no 'attention_mask': without it padding cannot be told "
            "from text. Tokenise with return_attention_mask=True."
        )
    inputs = {key: value for key, value in batch.items() if key not in _ROW_KEYS}
    input_ids = torch.as_tensor(batch["input_ids"])
    mask = torch.as_tensor(batch["attention_mask"])
    if input_ids.ndim != 2 or mask.shape != input_ids.shape:
        raise ValueError(
            f"batch {index}: input_ids and attention_mask must both have shape (batch, seq), "
            f"got {tuple(input_ids.shape)} and {tuple(mask.shape)}."
        )
    extra = {key: torch.as_tensor(batch[key]) for key in _ROW_KEYS if key in batch}
    return inputs, input_ids, mask.bool(), extra


def call_model(model, inputs, device):
    """Run ``model`` on a batch's inputs (a tensor, or a dict of keyword tensors)."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs.to(device))
    return model(**{key: torch.as_tensor(value).to(device) for key, value in inputs.items()})


def _model_fingerprint(model):
    """Class, parameter count and a checksum of a few weights: tells models apart."""
    crc, n_parameters = 0, 0
    for i, parameter in enumerate(model.parameters()):
        n_parameters += parameter.numel()
        if i < 4:
            sample = parameter.detach().reshape(-1)[:256].to("cpu", torch.float32).numpy()
            crc = zlib.crc32(sample.tobytes(), crc)
    return {"class": type(model).__name__, "n_parameters": n_parameters, "crc32": crc}


def _keep_mask(mask, extra, drop_special_tokens, index):
    keep = mask
    if drop_special_tokens:
        if "special_tokens_mask" not in extra:
            raise ValueError(
                f"drop_special_tokens=True but batch {index} has no 'special_tokens_mask'; "
                "tokenise with return_special_tokens_mask=True (text_batches does)."
            )
        keep = keep & ~extra["special_tokens_mask"].bool()
    return keep


def _row_metadata(input_ids, mask, keep, extra, first_sequence):
    """``(4, n_kept)`` int64: document, sequence, position and token of each kept row."""
    n_sequences, width = input_ids.shape
    sequence = np.arange(first_sequence, first_sequence + n_sequences)[:, None]
    document = extra.get("document")
    document = sequence if document is None else document.cpu().numpy().reshape(-1, 1)
    # The token's position among the attended tokens of its sequence, whichever side
    # the padding is on.
    position = np.cumsum(mask, axis=1) - 1
    shape = (n_sequences, width)
    return np.stack(
        [
            np.broadcast_to(document, shape)[keep],
            np.broadcast_to(sequence, shape)[keep],
            position[keep],
            input_ids[keep],
        ]
    ).astype(np.int64, copy=False)


def _validate(module, path, max_tokens, dtype, shard_size, site):
    if not isinstance(path, (str, Path)):
        raise ValueError(f"path must be a str or pathlib.Path, got {type(path).__name__}.")
    if max_tokens is not None and (
        not isinstance(max_tokens, Integral) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise ValueError(f"max_tokens must be a positive integer or None, got {max_tokens!r}.")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}.")
    if not isinstance(shard_size, Integral) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}.")
    if not isinstance(module, str):
        raise ValueError(f"module must be a dotted submodule name (str), got {module!r}.")
    if site not in _SITES:
        raise ValueError(f"site must be one of {_SITES}, got {site!r}.")


def _extraction_settings(model, module, site, dtype, drop_special_tokens):
    """What an activation set was extracted with: a re-run must match it to resume."""
    return {
        "module": module,
        "site": site,
        "dtype": dtype,
        "drop_special_tokens": bool(drop_special_tokens),
        "model": _model_fingerprint(model),
    }


def _to_storage(rows, dtype):
    """float32 ``(rows, d)`` array -> the storage dtype (bfloat16 as its raw bits)."""
    if dtype == "bfloat16":
        return torch.from_numpy(rows).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return rows.astype(dtype, copy=False)


def _finite_rows(stored, dtype):
    """Which stored rows are finite (``None`` when all are: the common, fast case)."""
    if dtype == "bfloat16":
        # An all-ones exponent is inf or NaN.
        non_finite = (stored & 0x7F80) == 0x7F80
        return None if not non_finite.any() else ~non_finite.any(axis=1)
    if np.isfinite(stored).all():
        return None
    return np.isfinite(stored).all(axis=1)


def _check_resumed_batch(kept_ids, stored_tokens, rows_seen, committed, index, path):
    """Raise unless the batch's kept tokens match the ones already on disk for its rows."""
    n_stored = min(len(kept_ids), committed - rows_seen)
    if not np.array_equal(kept_ids[:n_stored], stored_tokens[rows_seen : rows_seen + n_stored]):
        raise ValueError(
            f"batch {index} differs from the batches this set at "
            f"path={str(path)!r} was extracted from; resuming needs the "
            "same batches in the same order."
        )


def _capture_activation(model, inputs, device, captured, settings, index, ids_shape):
    """Run the model on one batch up to the hook: the ``(batch, seq, d)`` float32 array."""
    module, site = settings["module"], settings["site"]
    captured.clear()
    try:
        call_model(model, inputs, device)
    except _StopForward:
        pass
    if "activation" not in captured:
        raise ValueError(
            f"module={module!r} was not called during the forward pass of batch {index}."
        )
    activation = captured["activation"]
    if activation.ndim != 3 or activation.shape[:2] != ids_shape:
        raise ValueError(
            f"the {site} of module={module!r} has shape "
            f"{tuple(activation.shape)}; expected (batch, seq, d) matching "
            f"input_ids {tuple(ids_shape)}."
        )
    return activation.detach().to("cpu", torch.float32).numpy()


def _append_finite(writer, stored, metadata, settings, index):
    """Append rows in storage dtype; at a non-finite row, keep the rows before it and raise."""
    # Checked after conversion: float16 overflows to inf above 65504.
    finite = _finite_rows(stored, settings["dtype"])
    if finite is not None:
        bad = int(np.flatnonzero(~finite)[0])
        writer.append(stored[:bad], metadata[:, :bad])
        row = dict(zip(METADATA_FIELDS, metadata[:, bad].tolist()))
        raise ValueError(
            f"non-finite activation at row {writer.n_rows} of the set "
            f"(batch {index}, document {row['document']}, position "
            f"{row['position']}, token {row['token']}) in the {settings['site']} of "
            f"module={settings['module']!r} stored as {settings['dtype']}; the rows before "
            "it are kept."
        )
    writer.append(stored, metadata)


def _extract_batches(model, batches, writer, captured, settings, *, resume, max_tokens, path,
                     bar):  # fmt: skip
    """Append the kept rows of every batch not yet on disk; False if ``max_tokens`` stopped it.

    ``resume`` is ``(rows committed, their tokens)``: batches (partly) on disk are
    checked against them and their stored rows skipped, without running the model.
    """
    committed, stored_tokens = resume
    device = model_device(model)
    rows_seen, n_sequences = 0, 0
    for index, batch in enumerate(batches):
        inputs, input_ids, mask, extra = split_batch(batch, index)
        # Row bookkeeping in numpy: small torch ops pay for waking the thread
        # pool on every call, which on a busy machine costs more than the copy.
        keep = _keep_mask(mask, extra, settings["drop_special_tokens"], index).cpu().numpy()
        ids = input_ids.cpu().numpy()
        n_keep = int(keep.sum())
        first_sequence = n_sequences
        n_sequences += input_ids.shape[0]
        if rows_seen < committed:
            _check_resumed_batch(ids[keep], stored_tokens, rows_seen, committed, index, path)
        if rows_seen + n_keep <= committed:
            rows_seen += n_keep
            continue
        skip = max(0, committed - rows_seen)
        take = n_keep - skip
        if max_tokens is not None:
            take = min(take, max_tokens - writer.n_rows)
        activation = _capture_activation(
            model, inputs, device, captured, settings, index, input_ids.shape
        )
        metadata = _row_metadata(ids, mask.cpu().numpy(), keep, extra, first_sequence)
        stored = _to_storage(activation[keep][skip : skip + take], settings["dtype"])
        _append_finite(writer, stored, metadata[:, skip : skip + take], settings, index)
        rows_seen += skip + take
        bar.update(take)
        if max_tokens is not None and writer.n_rows >= max_tokens:
            return False
    return True


def _commit_and_close(writer):
    """Commit every row extracted so far (a re-run resumes after them), then close."""
    try:
        writer.commit()
    finally:
        writer.close()


def extract_activations(
    model,
    batches,
    *,
    module,
    path,
    site="output",
    max_tokens=None,
    dtype="float32",
    drop_special_tokens=False,
    shard_size=16384,
    progress=True,
):
    """Run a model over token batches and write one submodule's activations to disk.

    A forward hook on the submodule ``module`` captures its output (or input) on every
    batch, the forward pass stops right after it (later layers do no work), and the
    activations at the positions the attention mask keeps are appended to the activation
    set at ``path`` in shards of ``shard_size`` rows, with each row's document, sequence,
    position and token id. Memory stays bounded by one shard plus one batch, whatever the
    number of tokens.

    The extraction is resumable: run the same call again after an interruption (a crash,
    ``KeyboardInterrupt``, a full disk, an error raised by the model) and it skips the
    rows already on disk and continues, without duplicating or losing any; a shard cut
    short by a crash is detected and redone. Every shard completed before the
    interruption stays valid. A ``path`` holding a set made with different settings
    (model, module, site, dtype, special-token handling) is refused, never overwritten.
    The on-disk format is described in :doc:`/activations`.

    Parameters
    ----------
    model : torch.nn.Module
        The network, e.g. a Hugging Face causal LM (see :func:`load_model`). It is put in
        evaluation mode and run under :func:`torch.inference_mode`.
    batches : iterable
        Batches of token ids: dicts with ``input_ids`` and ``attention_mask`` tensors of
        shape ``(batch, seq)`` (a tokenizer's output, or :func:`text_batches`; other keys
        such as ``token_type_ids`` are passed to the model, except ``document`` and
        ``special_tokens_mask``, which describe the rows), or 2-D integer tensors of
        unpadded token ids. Re-running must yield the same batches in the same order.
    module : str
        Dotted name of the submodule to hook, as in ``model.named_modules()``, e.g.
        ``"model.layers.15"`` (Llama) or ``"transformer.h.9"`` (GPT-2).
    path : str or pathlib.Path
        Directory of the activation set (created if missing).
    site : {"output", "input"}, default="output"
        Capture the submodule's output, or its first input (``"input"`` of block 9 is the
        residual stream entering it, ``resid_pre`` in TransformerLens' terms). A tuple
        output contributes its first element.
    max_tokens : int, default=None
        Stop after this many rows (tokens). ``None`` runs through every batch. A later
        call with a larger value extends the set.
    dtype : {"float32", "float16", "bfloat16"}, default="float32"
        Storage precision. numpy cannot memory-map bfloat16 (see
        :func:`load_activations`).
    drop_special_tokens : bool, default=False
        Also drop positions the batch's ``special_tokens_mask`` marks (BOS, EOS, ...).
    shard_size : int, default=16384
        Rows per shard: the unit of buffering (memory) and of commit (what a crash can
        lose).
    progress : bool, default=True
        Show a tqdm progress bar counting tokens.

    Returns
    -------
    path : pathlib.Path
        The activation set's directory, ready for :func:`load_activations`.

    Examples
    --------
    >>> import tempfile, torch
    >>> from sklearn_sparsegap.activations import extract_activations, load_activations
    >>> class TinyLM(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(50, 8)
    ...         self.head = torch.nn.Linear(8, 50)
    ...     def forward(self, input_ids, attention_mask=None):
    ...         return self.head(self.embed(input_ids))
    >>> batch = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 0]]),
    ...          "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = extract_activations(TinyLM(), [batch], module="embed",
    ...                                path=folder + "/acts", progress=False)
    ...     X, metadata = load_activations(path)
    ...     X.shape, metadata["token"].tolist(), metadata["position"].tolist()
    ((5, 8), [1, 2, 3, 4, 5], [0, 1, 2, 0, 1])
    """
    _validate(module, path, max_tokens, dtype, shard_size, site)
    get_submodule(model, module)
    settings = _extraction_settings(model, module, site, dtype, drop_special_tokens)
    writer = ActivationWriter(path, settings, shard_size)
    if writer.manifest["complete"] or (max_tokens is not None and writer.n_committed >= max_tokens):
        writer.close()
        return Path(path)
    resume = writer.n_committed, writer.committed_tokens()
    was_training = model.training
    model.eval()
    bar = tqdm(total=max_tokens, initial=resume[0], unit="tok", disable=not progress)
    try:
        with torch.inference_mode(), hooked(model, module, site, stop=True) as captured:
            complete = _extract_batches(model, batches, writer, captured, settings, resume=resume,
                                        max_tokens=max_tokens, path=path, bar=bar)
        writer.finish(complete=complete, max_tokens_reached=not complete)
    except BaseException:
        # Shards are whole rows of whole batches' prefixes: keep every row so far.
        _commit_and_close(writer)
        raise
    finally:
        bar.close()
        model.train(was_training)
    return Path(path)


def load_activations(path, *, dtype=None, verify=False, as_dask=False, chunk_rows=None):
    """Open an activation set as a read-only memory-mapped array and its row metadata.

    Nothing is read into memory: ``X`` is a :class:`numpy.memmap` over the committed
    rows of every shard, which every estimator of this library accepts as ``X`` (fits
    stream it in minibatches), and the metadata arrays are memmaps too.

    Parameters
    ----------
    path : str or pathlib.Path
        An activation set written by :func:`extract_activations`. Loading an interrupted
        extraction warns and opens its committed rows.
    dtype : str or numpy.dtype, default=None
        ``None`` keeps the stored dtype (float32 or float16) without reading anything.
        numpy has no bfloat16, so a bfloat16 set needs ``dtype="float32"``, which reads
        it into memory converted. Another dtype converts into memory too.
    verify : bool, default=False
        Check every shard's CRC-32 (reads the whole set once).
    as_dask : bool, default=False
        Return ``X`` as a lazy :class:`dask.array.Array` of row chunks instead (needs
        the ``dask`` extra). Each chunk is read from the file by the task that needs it,
        so on a cluster every worker must see ``path``; a bfloat16 set is converted
        chunk by chunk (to float32 unless ``dtype`` says otherwise).
    chunk_rows : int, default=None
        Rows per dask chunk when ``as_dask`` is True (None: 65536).

    Returns
    -------
    X : numpy.memmap or dask.array.Array of shape (n_tokens, n_features)
        The activations, read-only.
    metadata : dict of ndarray of shape (n_tokens,)
        ``document`` (index of the source text, or of the sequence when the batches did
        not say), ``sequence`` (index of the input sequence over all batches),
        ``position`` (the token's position among the attended tokens of its sequence)
        and ``token`` (its id). ``pandas.DataFrame(metadata)`` works.

    Examples
    --------
    >>> import tempfile, torch
    >>> from sklearn_sparsegap.activations import extract_activations, load_activations
    >>> model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 4))
    >>> tokens = torch.randint(50, (4, 16))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = extract_activations(model, [tokens], module="1", path=folder + "/acts",
    ...                                progress=False)
    ...     X, metadata = load_activations(path)
    ...     type(X).__name__, X.shape, X.flags.writeable, sorted(metadata)
    ('memmap', (64, 4), False, ['document', 'position', 'sequence', 'token'])
    """
    if as_dask:
        # Nothing is read here: the chunks read and convert their own rows.
        _, metadata, manifest = open_activation_set(path, verify=verify, convert=False)
        return activations_as_dask(path, manifest, dtype=dtype, chunk_rows=chunk_rows), metadata
    X, metadata, _ = open_activation_set(path, dtype=dtype, verify=verify)
    return X, metadata
