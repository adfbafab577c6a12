"""Transcoders: ``SAETranscoder``, sparse codes of X that reconstruct Y.

The estimator is an amortised encoder like :class:`~sklearn_sparsegap.SAEEncoder` whose
decoder maps to another space; ``fit(X, Y)`` trains it through the one training function
(:func:`~sklearn_sparsegap._autoencoder.fit_autoencoder`, target ``"transcode"``), the
module and loss being those of ``_families``.
"""

import dataclasses
import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_is_fitted

from ._autoencoder import AutoencoderData
from ._base import FLOAT_DTYPES, blockwise
from ._batches import is_streamed
from ._compat import Interval, StrOptions, _fit_context
from ._families import check_threshold_estimated
from ._sae import _BaseAutoencoder
from ._torch_utils import to_tensor
from ._validation import check_finite_rows, check_matrix, check_same_rows

__all__ = [
    "SAETranscoder",
    "check_transcoder_target",
    "is_transcoder",
    "transcoder_n_inputs",
    "transcoder_signal",
]


def _unwrapped(encoder):
    return getattr(encoder, "estimator", encoder)  # a FrozenEstimator's estimator


def is_transcoder(encoder):
    """Whether ``encoder`` (or the estimator a ``FrozenEstimator`` wraps) is a
    :class:`SAETranscoder`, whose codes reconstruct another space than its input."""
    return isinstance(_unwrapped(encoder), SAETranscoder)


def transcoder_n_inputs(encoder):
    """The number of input features of a fitted transcoder."""
    return _unwrapped(encoder).coefs_[0].shape[1]


def check_transcoder_target(y, n_samples):
    """The outputs ``Y`` of a transcoder as a 2-D finite float array of ``n_samples``
    rows (a 1-D ``y`` is one column); a ``ValueError`` naming ``Y`` otherwise."""
    if y is None:
        raise ValueError("A transcoder's codes reconstruct Y: pass Y (got None).")
    y = y if hasattr(y, "ndim") else np.asarray(y)
    if np.ndim(y) == 1:
        y = np.reshape(y, (-1, 1))
    Y = check_matrix(y, "Y", dtype=FLOAT_DTYPES)
    check_same_rows(np.empty((n_samples, 0)), Y, "X", "Y")
    return Y


@torch.no_grad()
def transcoder_signal(encoder, X, Y):
    """What a transcoder's codes reconstruct through its dictionary, as a tensor like
    ``X``: ``Y`` less the skip connection's part ``X @ skip_.T`` (``Y`` without one)."""
    encoder = _unwrapped(encoder)
    Y = to_tensor(Y, device=X.device, dtype=X.dtype)
    if not encoder.skip_connection:
        return Y
    return Y - X @ to_tensor(encoder.skip_, device=X.device, dtype=X.dtype).T


class SAETranscoder(_BaseAutoencoder):
    """Transcoder: a sparse autoencoder whose codes of ``X`` reconstruct ``Y``.

    ``fit(X, Y)`` learns a linear encoder of ``X`` with a sparse activation and a
    unit-norm linear decoder into ``Y``'s space (e.g. an MLP block's input and output:
    the transcoder replaces the block by sparse, interpretable latents; SAELens's
    ``Transcoder``, sparsify's ``transcode=True``). ``transform(X)`` gives the codes,
    ``predict(X)`` the prediction ``Y_hat``, ``score(X, Y)`` the fraction of the
    variance of ``Y`` explained. With ``skip_connection=True`` a linear map of ``X`` is
    added to the prediction (a skip transcoder, Paulo et al. 2025; SAELens's
    ``SkipTranscoder``, sparsify's ``skip_connection``).

    The objective is the library's with ``Y`` in place of ``X``:
    ``0.5 * ||y - s @ D - b - W_skip x||^2 + alpha * ||s||_1`` (per sample, averaged),
    trained with minibatch or full-batch Adam by the same loop as the SAEs (streaming
    from disk, checkpoints, callbacks, data-parallel training); the encoder reads ``x``
    as it is (no decoder bias is subtracted: it lives in the other space).

    Parameters
    ----------
    n_components : int, default=None
        Number of latents. None means ``n_features`` of ``X``; stored as
        ``n_components_``.
    alpha : float, default=0.4
        Weight of the L1 penalty (of the L0 count for ``activation="jumprelu"``), on the
        scaled data (see ``scale_input``). Set 0 for the pure TopK / BatchTopK
        objectives.
    activation : {"relu", "topk", "jumprelu", "batchtopk"}, default="relu"
        The sparse activation, as in :class:`SAEEncoder`.
    n_nonzero_coefs : int, default=None
        The k of ``"topk"`` (per row on average for ``"batchtopk"``).
    skip_connection : bool, default=False
        Add a trained linear map of ``X`` (``skip_``, zeros at the start) to the
        prediction.
    fit_intercept : bool, default=True
        Learn the encoder bias and the output bias ``intercept_``.
    scale_input : bool, default=True
        Train on ``c * X`` and ``c * Y``, ``c`` making the mean squared (centred) row
        norm of ``Y`` equal to its number of columns, so that ``alpha`` and
        ``learning_rate`` mean the same on any scale; one factor for both keeps the
        model exact when it is folded back (``input_scale_``).
    max_iter : int, default=None
        Epochs; None means the epochs that make at least 2000 steps.
    batch_size : int, default=None
        As in :class:`SAEEncoder` (None: the full batch up to 8,192 rows in memory).
    learning_rate : float, default=None
        Adam learning rate; None as in :class:`SAEEncoder`.
    max_grad_norm : float, default=None
        Clip each step's global gradient norm to this value (as in :class:`SAEEncoder`).
    tol : float, default=0.0
        Relative improvement of the logged loss over 100 steps below which training
        stops; 0 runs every epoch.
    dead_window : int, default=None
        Rows without firing after which a latent is dead (as in :class:`SAEEncoder`).
    auxk_alpha : float, default=1/32
        Weight of the AuxK loss of dead latents (``"topk"`` and ``"batchtopk"``): their
        largest pre-activations reconstruct the residual ``y - y_hat``.
    warm_start : bool, default=False
        ``fit`` continues from the fitted state.
    checkpoint_path : str or path-like, default=None
        Where ``fit`` saves (and resumes) its training state.
    checkpoint_every : int, default=None
        Steps between checkpoints; None saves at every epoch's end.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the minibatch order.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    verbose : int, default=0
        Show a progress bar.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_outputs)
        The decoder atoms (unit norm), in ``Y``'s space.
    intercept_ : ndarray of shape (n_outputs,)
        The output bias.
    coefs_ : list of ndarray
        ``coefs_[0]`` is the encoder, of shape (n_components, n_features).
    intercepts_ : list of ndarray
        The encoder bias.
    skip_ : ndarray of shape (n_outputs, n_features)
        The skip connection (only with ``skip_connection=True``).
    threshold_ : ndarray of shape (n_components,)
        JumpReLU thresholds, or the BatchTopK global threshold in every entry.
    n_components_ : int
        Number of latents.
    n_outputs_ : int
        Number of columns of ``Y``.
    input_scale_ : float
        The factor ``X`` and ``Y`` were multiplied by in training.
    max_iter_ : int
        The epochs a ``fit`` call runs.
    batch_size_ : int
        The minibatch size used.
    learning_rate_ : float
        The Adam learning rate used.
    dead_window_ : int
        The rows of the dead-latent window.
    dead_fraction_ : float
        Fraction of latents dead at the end of training.
    n_iter_ : int
        Epochs run.
    history_ : dict of ndarray
        Training log (``step``, ``loss``, ``mse`` (on ``Y``), ``l1``, ``l0``,
        ``dead_fraction``, ``flops``).
    training_flops_ : int
        Training FLOPs (the encoder-decoder count of ``n_features`` inputs; the
        decoder's ``n_outputs`` is not counted separately).
    device_ : str
        The device the model was trained on.
    n_features_in_ : int
        Number of features of ``X``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    SAEEncoder : The autoencoder (``Y = X``).
    SAEPlusITO : Refines a transcoder's codes against ``Y`` (``transform(X, Y)``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap import SAETranscoder, make_sparse_dictionary_data
    >>> X, _, codes = make_sparse_dictionary_data(512, n_components=16, random_state=0)
    >>> rng = np.random.default_rng(0)
    >>> Y = codes @ rng.normal(size=(16, 5))  # another view of the same sparse causes
    >>> tc = SAETranscoder(n_components=16, activation="topk", n_nonzero_coefs=3, alpha=0.0,
    ...                    max_iter=300, random_state=0).fit(X, Y)
    >>> tc.predict(X).shape, tc.transform(X).shape
    ((512, 5), (512, 16))
    >>> bool(tc.score(X, Y) > 0.5)
    True
    """

    # What the shared autoencoder code reads and a transcoder does not offer: it always
    # trains on its own target, with no fixed dictionary and no resampling (which
    # reinitialises atoms from input residuals).
    target = "transcode"
    dictionary = None
    codes_loss = "sample"
    rescale_codes = False
    resample_dead_every = None
    _default_max_iter = {"transcode": 2000}

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "activation": [StrOptions({"relu", "topk", "jumprelu", "batchtopk"})],
        "n_nonzero_coefs": [Interval(Integral, 1, None, closed="left"), None],
        "skip_connection": ["boolean"],
        "fit_intercept": ["boolean"],
        "scale_input": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), None],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "dead_window": [Interval(Integral, 1, None, closed="left"), None],
        "auxk_alpha": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "device": [str],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_components=None,
        *,
        alpha=0.4,
        activation="relu",
        n_nonzero_coefs=None,
        skip_connection=False,
        fit_intercept=True,
        scale_input=True,
        max_iter=None,
        batch_size=None,
        learning_rate=None,
        max_grad_norm=None,
        tol=0.0,
        dead_window=None,
        auxk_alpha=1 / 32,
        warm_start=False,
        checkpoint_path=None,
        checkpoint_every=None,
        random_state=None,
        device="auto",
        verbose=0,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.activation = activation
        self.n_nonzero_coefs = n_nonzero_coefs
        self.skip_connection = skip_connection
        self.fit_intercept = fit_intercept
        self.scale_input = scale_input
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm
        self.tol = tol
        self.dead_window = dead_window
        self.auxk_alpha = auxk_alpha
        self.warm_start = warm_start
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the transcoder: codes of ``X`` that reconstruct ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input rows (an on-disk memmap is streamed in minibatches).
        y : array-like of shape (n_samples, n_outputs) or (n_samples,)
            The output rows ``Y`` to reconstruct (required; a 1-D ``y`` is one output
            column).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        if self.warm_start and hasattr(self, "components_"):
            return self._fit(X, y, n_epochs=self.max_iter, first=False)
        for attribute in ("components_", "_optimizer_state", "_trained_biases", "_dead_since",
                          "skip_", "threshold_"):
            self.__dict__.pop(attribute, None)
        return self._fit(X, y, n_epochs=self.max_iter, first=True)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Continue training for one epoch over the chunk ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of input rows.
        y : array-like of shape (n_samples, n_outputs) or (n_samples,)
            Its output rows (required).

        Returns
        -------
        self : object
            The updated estimator.
        """
        return self._fit(X, y, n_epochs=1, first=not hasattr(self, "components_"), chunk=True)

    def _validated_data(self, X, y, X_val, *, first):
        """``(X, Y)`` checked, as :class:`AutoencoderData` (``Y`` where the shared
        code keeps paired rows, ``target_codes``)."""
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: "
                "it learns codes of X that reconstruct Y, so pass Y, fit(X, Y)."
            )
        X = self._validate_X(X, reset=first)
        streamed = is_streamed(X)
        if not first and not streamed:
            X = X.astype(self.components_.dtype, copy=False)
        Y = self._check_Y(y, X.shape[0], streamed)
        if not first and Y.shape[1] != self.components_.shape[1]:
            raise ValueError(
                f"Y has {Y.shape[1]} columns but the transcoder was fitted with "
                f"{self.components_.shape[1]} outputs."
            )
        return AutoencoderData(X=X, target_codes=Y, streamed=streamed)

    def _check_Y(self, y, n_samples, streamed):
        """``y`` as a 2-D finite float array with ``n_samples`` rows (``Y`` in messages;
        with a streamed ``X`` an on-disk ``Y`` stays on disk)."""
        if streamed and isinstance(y, np.memmap) and np.ndim(y) == 2:
            check_finite_rows(y, "Y")
            check_same_rows(np.empty((n_samples, 0)), y, "X", "Y")
            return y
        return check_transcoder_target(y, n_samples)

    def _check_n_components(self, n_features, dictionary, target_codes):
        # Y's columns are outputs, not latents.
        return super()._check_n_components(n_features, None, None)

    def _resolved_settings(self, data, **kwargs):
        settings = super()._resolved_settings(data, **kwargs)
        self.n_outputs_ = data.target_codes.shape[1]
        return dataclasses.replace(
            settings, target="transcode", fit_scale=self.scale_input,
            n_outputs=self.n_outputs_, skip_connection=self.skip_connection,
            small_encoder_start=False, advice="or lower alpha",
        )  # fmt: skip

    def _matryoshka_levels(self, n_components):
        return None

    # -------------------------------------------------------------- inference
    def _module_layout(self):
        # Decoded into Y's space, with the optional skip from X: the shared _module
        # builds (and keeps on the device) this architecture.
        return {**super()._module_layout(), "n_outputs": self.components_.shape[1],
                "skip_connection": self.skip_connection}

    def predict(self, X):
        """The prediction ``Y_hat`` of ``X``: its codes decoded (plus the skip).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input rows (an on-disk memmap is read in blocks).

        Returns
        -------
        Y_hat : ndarray of shape (n_samples, n_outputs)
            The prediction, in the dtype of ``X``.
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        return blockwise(self._predict_tensor, X, self._resolved_device(), self.components_.shape[0])

    def _predict_tensor(self, X):
        if self.activation == "batchtopk":
            check_threshold_estimated(self.threshold_, type(self).__name__)
        return self._module(X.dtype, X.device)(X)[1]

    def inverse_transform(self, X):
        """Decode codes into ``Y``'s space: ``codes @ components_ + intercept_``.

        With ``skip_connection`` the skip term, a function of the input rather than
        of the codes, is not included: :meth:`predict` gives the full prediction.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Codes, e.g. the output of :meth:`transform`.

        Returns
        -------
        Y_hat : ndarray of shape (n_samples, n_outputs)
            The decoded codes.
        """
        return super().inverse_transform(X)

    def score(self, X, y=None):
        """The fraction of the variance of ``y`` explained by :meth:`predict`: ``1 - FVU``.

        ``FVU = sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` (scikit-learn's
        ``r2_score`` with ``multioutput="variance_weighted"``). Higher is better.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input rows.
        y : array-like of shape (n_samples, n_outputs) or (n_samples,)
            The true outputs ``Y``.

        Returns
        -------
        score : float
            ``1 - FVU`` on ``Y``.
        """
        check_is_fitted(self)
        if y is None:
            raise ValueError("score(X, Y) measures the prediction of Y: pass Y.")
        Y = self._check_Y(y, np.shape(X)[0], False)
        prediction = self.predict(X)
        return float(r2_score(Y, prediction, multioutput="variance_weighted"))

    def inference_flops(self, n_samples):
        """FLOPs of encoding ``n_samples`` and predicting their outputs.

        Parameters
        ----------
        n_samples : int
            Number of samples.

        Returns
        -------
        flops : int
            ``(2 M N + N + 2 N P (+ 2 M P with the skip)) * n_samples`` for ``M``
            input features, ``N`` latents and ``P`` outputs.
        """
        check_is_fitted(self)
        n_components, n_outputs = self.components_.shape
        n_features = self.coefs_[0].shape[1]
        per_sample = 2 * n_features * n_components + n_components + 2 * n_components * n_outputs
        if self.skip_connection:
            per_sample += 2 * n_features * n_outputs
        return int(per_sample * n_samples)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags
