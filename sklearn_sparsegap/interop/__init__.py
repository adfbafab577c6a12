"""Load SAEs trained by SAELens, sparsify and dictionary_learning as fitted
:class:`~sklearn_sparsegap.SAEEncoder` objects (their transcoders as
:class:`~sklearn_sparsegap.SAETranscoder`, SAELens's matching-pursuit SAEs as
:class:`~sklearn_sparsegap.GradientSparseCoder`), and export ours to those formats.

A loaded SAE is an ordinary fitted estimator: ``transform`` / ``inverse_transform``
give the original library's codes and reconstructions (a transcoder's ``predict`` its
prediction of the other activation), and it plugs into
:class:`~sklearn_sparsegap.SAEPlusITO` (through ``sklearn.frozen.FrozenEstimator``),
the metrics and ``GridSearchCV``. See :doc:`interop` for the formats field by field.
"""

from pathlib import Path

from sklearn.frozen import FrozenEstimator

from ._build import (
    MatchingPursuitWeights,
    check_dtype,
    encoder_from_weights,
    fold_input_scale,
    weights_from_encoder,
)
from ._detect import FORMATS, checkpoint_folder, detect_format

__all__ = ["load_sae", "save_sae"]


def _check_format(format, allow_auto):
    allowed = (["auto"] if allow_auto else []) + sorted(FORMATS)
    if format not in allowed:
        raise ValueError(f"format must be one of {allowed}, got {format!r}.")


def load_sae(path, *, format="auto", device="auto", dtype="float32", scaling_factor=None):
    """Load an SAE (or transcoder) checkpoint of SAELens, sparsify or dictionary_learning.

    The weights are read with the ``safetensors`` package (SAELens, sparsify) or
    ``torch.load(weights_only=True)`` (dictionary_learning), never with an unrestricted
    unpickler, and turned exactly into this library's form: ``transform`` equals the
    original library's ``encode`` and ``inverse_transform`` its ``decode``. Settings
    that are linear changes of variables are folded into the weights (SAELens
    ``apply_b_dec_to_input=False``, ``expected_average_only_in`` activation scaling,
    TopK ``rescale_acts_by_decoder_norm``; gated SAEs load as ``activation="gated"``,
    parameter for parameter; BatchTopK
    and Matryoshka BatchTopK SAEs with their ``k`` become ``activation="batchtopk"``
    estimators at the checkpoint's global threshold); settings
    that are not (per-input normalisation, sparsify ``groupmax`` and ``signed``) raise a
    ``ValueError`` that names them.

    Transcoders load as a fitted :class:`~sklearn_sparsegap.SAETranscoder` whose
    ``predict`` equals the library's forward pass (prediction of the output activation,
    skip connection included) and whose ``transform`` its ``encode``: SAELens
    ``transcoder``, ``skip_transcoder``, ``jumprelu_transcoder`` and
    ``jumprelu_skip_transcoder`` (``skip_connection=True`` with ``W_skip``), and sparsify
    ``transcode=True`` checkpoints (TopK; ``skip_connection=True`` adds ``W_skip``). A
    sparsify SAE with ``skip_connection=True`` but ``transcode=False`` is a skip
    transcoder of ``Y = X`` and loads as one (the ``b_dec`` it subtracts from the input
    moved into the encoder bias).

    SAELens matching-pursuit SAEs (``matching_pursuit``: no encoder, the codes are
    non-negative matching pursuit on ``W_dec``) load as a fitted
    :class:`~sklearn_sparsegap.GradientSparseCoder` with ``transform_algorithm="mp"``,
    ``transform_alpha`` the ``residual_threshold``, ``transform_n_nonzero_coefs`` the
    ``max_iterations`` and ``intercept_`` the ``b_dec`` (when ``apply_b_dec_to_input``):
    the same steps and stops, the rows of ``W_dec`` used as they are. Without the
    repeated-support stop (``stop_on_duplicate_support=False``) only
    ``residual_threshold=0`` on unit-norm rows loads (as plain MP,
    ``transform_alpha=None``); other settings raise a ``ValueError`` naming them. Its
    activation scale is folded as SAELens folds it for this architecture (``b_dec``
    and the threshold divided by it): the codes are the folded SAE's, those of the
    scaled input divided by the factor.

    Parameters
    ----------
    path : str or path-like
        The checkpoint folder (or a file in it). SAELens: ``cfg.json`` +
        ``sae_weights.safetensors`` (+ ``activation_scaler.json``); sparsify: one
        hookpoint folder with ``cfg.json`` + ``sae.safetensors``; dictionary_learning:
        ``config.json`` + ``ae.pt``.
    format : {"auto", "saelens", "sparsify", "dictionary_learning"}, default="auto"
        ``"auto"`` decides by the files present.
    device : str, default="auto"
        The ``device`` parameter of the returned estimator.
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the stored weights (bfloat16 and float16 checkpoints are converted
        exactly). ``transform`` computes in the dtype of its input, as always.
    scaling_factor : float, default=None
        The factor the SAE expects its inputs multiplied by (it was trained on
        activations scaled by it). None means the checkpoint's own: for a SAELens SAE
        with ``normalize_activations="expected_average_only_in"``, the factor in
        ``activation_scaler.json``; 1 otherwise (dictionary_learning folds its own
        before saving). It is folded into the weights, so the estimator takes raw
        activations. For a transcoder it is the factor of both its input and its
        output (one activation scaler for both, as SAELens's).

    Returns
    -------
    estimator : SAEEncoder, SAETranscoder or GradientSparseCoder
        A fitted estimator with ``n_components`` latents (an ``SAETranscoder`` for a
        transcoder checkpoint, a ``GradientSparseCoder`` for a matching-pursuit SAE). Its
        ``alpha`` is 0: the training penalty is not stored in these checkpoints; set it
        (or pass ``transform_alpha`` to ``SAEPlusITO``) to score with a penalty.

    See Also
    --------
    save_sae : Export a fitted SAEEncoder or SAETranscoder to these formats.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from sklearn_sparsegap import SAEEncoder, make_sparse_dictionary_data
    >>> from sklearn_sparsegap.interop import load_sae, save_sae
    >>> X, _, _ = make_sparse_dictionary_data(256, random_state=0)
    >>> sae = SAEEncoder(n_components=16, activation="topk", n_nonzero_coefs=3,
    ...                  max_iter=50, random_state=0).fit(X)
    >>> folder = tempfile.mkdtemp()
    >>> save_sae(sae, folder, format="sparsify")
    >>> loaded = load_sae(folder)
    >>> loaded.n_nonzero_coefs, loaded.n_components
    (3, 16)
    >>> bool(np.allclose(loaded.transform(X), sae.transform(X), atol=1e-6))
    True
    """
    _check_format(format, allow_auto=True)
    check_dtype(dtype)
    folder = checkpoint_folder(path)
    if format == "auto":
        format = detect_format(folder)
    if format == "saelens":
        weights = FORMATS[format].read(folder, scaling_factor=scaling_factor)
    else:
        weights = FORMATS[format].read(folder)
        if scaling_factor is not None:
            weights = fold_input_scale(weights, scaling_factor)
    return encoder_from_weights(weights, dtype=dtype, device=device, source=str(folder))


def save_sae(estimator, path, *, format):
    """Write a fitted SAE, transcoder or MP coder in the checkpoint format of a peer library.

    The folder loads back with that library's own loader (SAELens
    ``SAE.load_from_disk``, sparsify ``SparseCoder.load_from_disk``, dictionary_learning
    ``utils.load_dictionary``) and with :func:`load_sae`, and encodes as the estimator
    does. Weights are written in float32.

    Parameters
    ----------
    estimator : SAEEncoder, SAETranscoder or GradientSparseCoder
        A fitted linear SAE or transcoder, or a matching-pursuit coder
        (``sklearn.frozen.FrozenEstimator`` of one is accepted).
        sparsify stores TopK SAEs only; SAELens and dictionary_learning store ReLU,
        TopK and JumpReLU SAEs; BatchTopK (and Matryoshka) SAEs go to
        dictionary_learning as ``BatchTopKSAE`` (``MatryoshkaBatchTopKSAE``) and to
        SAELens as the JumpReLU they encode as at inference (what SAELens's own
        ``save_inference_model`` writes); gated SAEs go to SAELens as ``gated``
        (``GatedSAE``) and to dictionary_learning as ``GatedAutoEncoder``.
        Transcoders: ReLU and JumpReLU ones go to SAELens as ``transcoder`` /
        ``jumprelu_transcoder`` (``skip_transcoder`` / ``jumprelu_skip_transcoder``
        with ``skip_connection=True``), BatchTopK ones as the JumpReLU transcoder they
        are at inference; TopK ones go to sparsify (``transcode=True``, with
        ``skip_connection``) when ``n_outputs`` equals ``n_features`` (sparsify's
        outputs have the input's width). What a format cannot hold (a TopK transcoder
        in SAELens, any other activation or another output width in sparsify, any
        transcoder in dictionary_learning) raises a ``ValueError`` naming it.
        A ``GradientSparseCoder`` with ``transform_algorithm="mp"`` and
        ``positive_code=True`` goes to SAELens only, as ``matching_pursuit``: with a
        ``transform_alpha``, ``residual_threshold=transform_alpha`` and
        ``stop_on_duplicate_support=True``; without one (plain MP, a fixed number of
        steps), ``residual_threshold=0``, ``stop_on_duplicate_support=False`` and
        ``max_iterations`` the number of steps, which is the same pursuit only on
        unit-norm atoms (any other dictionary raises). Signed codes and other
        algorithms raise too.
    path : str or path-like
        The folder to write (created if needed; existing files of the format are
        replaced).
    format : {"saelens", "sparsify", "dictionary_learning"}
        The format to write.

    See Also
    --------
    load_sae : Load such a checkpoint.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn_sparsegap import SAEEncoder, make_sparse_dictionary_data
    >>> from sklearn_sparsegap.interop import save_sae
    >>> X, _, _ = make_sparse_dictionary_data(256, random_state=0)
    >>> sae = SAEEncoder(n_components=16, max_iter=50, random_state=0).fit(X)
    >>> folder = tempfile.mkdtemp()
    >>> save_sae(sae, folder, format="saelens")
    >>> sorted(os.listdir(folder))
    ['cfg.json', 'sae_weights.safetensors']
    """
    _check_format(format, allow_auto=False)
    if isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    weights = weights_from_encoder(estimator)
    if isinstance(weights, MatchingPursuitWeights) and format != "saelens":
        raise ValueError(
            f"format={format!r} has no matching-pursuit SAE: a GradientSparseCoder is "
            "saved in the SAELens format only (architecture 'matching_pursuit')."
        )
    FORMATS[format].write(weights, Path(path))
