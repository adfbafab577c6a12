"""Amortised encoders: ``SAEEncoder`` and ``MLPEncoder``.

The estimators validate their input and keep the fitted state; the numerics live in
``_autoencoder.py`` (initialisation, decoders, gradients, resampling) and the training
loop in ``_training.py``.
"""

import math
import os
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from ._autoencoder import (
    AutoencoderData,
    AutoencoderSettings,
    AutoencoderState,
    data_scale,
    fit_autoencoder,
    load_weights,
    make_module,
)
from ._base import FLOAT_DTYPES, BaseSparseEstimator, checkpoint_config
from ._batches import is_streamed
from ._compat import Interval, StrOptions, _fit_context
from ._distributed import check_versions, current_group, rank_device
from ._families import check_matryoshka_prefixes, check_threshold_estimated
from ._torch_utils import resolve_device, torch_dtype
from ._training import DEAD_WINDOW_ROWS
from ._validation import check_dictionary, check_finite_rows, check_matrix, check_same_rows
from .flops import encoder_inference_flops

# Default optimiser steps (max_iter=None, rounded up to whole epochs) per target; see
# the user guide's defaults page.
_MAX_ITER = {"reconstruction": 2000, "codes": 500}
_MLP_MAX_ITER = {"reconstruction": 1500, "codes": 500}
# batch_size=None: full-batch steps up to this many rows in memory, else minibatches of
# DEFAULT_BATCH_SIZE (SAELens's and sparsify's usual size). One full-batch step on 2e5
# rows of 384 features took 17.6 s and 7 GiB.
FULL_BATCH_MAX_ROWS = 8192
DEFAULT_BATCH_SIZE = 4096
# The zero-code warning: at least this fraction of (at most ZERO_CODE_ROWS) training rows
# encoded to all zeros.
ZERO_CODE_FRACTION = 0.95
ZERO_CODE_ROWS = 8192
# learning_rate=None with minibatches: sparsify's rule, 2e-4 at 2^14 latents scaled by
# 1/sqrt(n_components / 2^14) (Gao et al. 2024's fit), capped at the full-batch default.
MINIBATCH_LEARNING_RATE = 2e-4
MINIBATCH_LEARNING_RATE_WIDTH = 2**14
# MLPEncoder's learning_rate=None: its full-batch rate (6e-3) times
# min(1, MLP_LEARNING_RATE_WIDTH / H), H its widest hidden layer (muP's 1/fan-in for Adam:
# each of the next layer's H weights moves by about the rate, so its output by about
# rate * H). Chosen on the known-codes and unknown-dictionary tasks
# (docs/results/mlp_width.json).
MLP_LEARNING_RATE_WIDTH = 256


class _BaseAutoencoder(BaseSparseEstimator):
    """Shared implementation of the amortised encoders."""

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "activation": [StrOptions({"relu", "topk", "jumprelu", "batchtopk", "gated"})],
        "n_nonzero_coefs": [Interval(Integral, 1, None, closed="left"), None],
        "dictionary": ["array-like", None],
        "target": [StrOptions({"reconstruction", "codes"})],
        "codes_loss": [StrOptions({"sample", "latent"})],
        "rescale_codes": ["boolean"],
        "fit_intercept": ["boolean"],
        "scale_input": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), None],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "resample_dead_every": [Interval(Integral, 1, None, closed="left"), None],
        "dead_window": [Interval(Integral, 1, None, closed="left"), None],
        "auxk_alpha": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "device": [str],
        "verbose": ["verbose"],
    }

    _default_max_iter = _MAX_ITER
    # learning_rate=None with full-batch steps (chosen on the paper's task).
    _full_batch_learning_rate = 1e-2

    def _hidden_layer_sizes(self):
        return ()

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, X_val=None):
        """Train the encoder (and the dictionary, unless it is given) on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples, n_components), default=None
            The true codes when ``target="codes"`` (required then); ignored otherwise, so
            that ``GridSearchCV(..., scoring=mcc_scorer).fit(X, codes)`` works.
        X_val : array-like of shape (n_val_samples, n_features), default=None
            Held-out rows (in memory or an on-disk memmap, read in blocks). At every
            log of ``history_`` the model is evaluated on them and ``history_`` gets
            ``val_fvu`` (fraction of variance unexplained), ``val_l0`` (mean number of
            active latents) and ``val_dead_fraction`` (latents active on no held-out
            row). Pass it through a pipeline as ``fit(X, encoder__X_val=X_val)``.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        # None: resolved in _fit, where the number of steps per epoch is known.
        max_iter = self.max_iter
        if self.warm_start and hasattr(self, "components_"):
            return self._fit(X, y, n_epochs=max_iter, first=False, X_val=X_val)
        for attribute in ("components_", "_optimizer_state", "_trained_biases", "_dead_since"):
            self.__dict__.pop(attribute, None)
        return self._fit(X, y, n_epochs=max_iter, first=True, X_val=X_val)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, *, X_val=None):
        """Continue training from the current state for one epoch over ``X``.

        One epoch is one step on the whole of ``X`` when ``batch_size`` is None, else one
        pass of shuffled minibatches. Call it on successive chunks of data that does not
        fit in memory (e.g. slices of an ``np.memmap``). With ``target="codes"`` the
        least-squares decoder is fitted on all the chunks seen so far (running means
        and cross-products, not the chunks themselves, are kept).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data.
        y : array-like of shape (n_samples, n_components), default=None
            The true codes of the chunk when ``target="codes"``; ignored otherwise.
        X_val : array-like of shape (n_val_samples, n_features), default=None
            Held-out rows evaluated at the end of the epoch, as in :meth:`fit`.

        Returns
        -------
        self : object
            The updated estimator.
        """
        return self._fit(X, y, n_epochs=1, first=not hasattr(self, "components_"), chunk=True,
                         X_val=X_val)  # fmt: skip

    def _fit(self, X, y, *, n_epochs, first, chunk=False, X_val=None):
        # validate -> resolve -> fit_autoencoder (the numerics) -> store.
        data = self._validated_data(X, y, X_val, first=first)
        group = current_group()
        # The rank's GPU is pinned before the first collective: with NCCL, a collective
        # issued before torch.cuda.set_device runs every rank on cuda:0 and fails.
        if group is None:
            device = self._resolved_device()
        else:
            device = resolve_device(rank_device(self.device))
        if group is not None:
            check_versions(group)
        settings = self._resolved_settings(data, n_epochs=n_epochs, first=first, chunk=chunk,
                                           group=group, device=device)  # fmt: skip
        state = fit_autoencoder(data, settings, None if first else self._fitted_state(),
                                group=group, zero_code_rows=ZERO_CODE_ROWS)  # fmt: skip
        self._store_state(state)
        self._warn_if_codes_are_zero(state.zero_code_fraction)
        self._trained_target = self.target
        self.device_ = str(settings.device)
        self.n_components_ = settings.n_components
        self.max_iter_ = settings.n_epochs if not chunk else getattr(self, "max_iter_", 1)
        self.batch_size_ = settings.batch_size
        return self

    def _validated_data(self, X, y, X_val, *, first):
        """The training problem as :class:`AutoencoderData`: ``X`` (a memmap stays on
        disk), the known codes, the held-out rows and the fixed dictionary, checked."""
        if not first and self.target != self._trained_target:
            raise ValueError(
                f"target={self.target!r} but the estimator was trained with "
                f"target={self._trained_target!r}; warm_start and partial_fit continue "
                "that training: fit with warm_start=False to change target."
            )
        X = self._validate_X(X, reset=first)
        streamed = is_streamed(X)
        if not first and not streamed:
            X = X.astype(self.components_.dtype, copy=False)
        n_samples, n_features = X.shape
        dictionary = None
        if self.dictionary is not None:
            dictionary = check_dictionary(self.dictionary, n_features=n_features)
        return AutoencoderData(
            X=X, target_codes=self._check_target(y, n_samples),
            X_val=self._check_X_val(X_val, n_features), dictionary=dictionary,
            streamed=streamed,
        )  # fmt: skip

    def _resolved_settings(self, data, *, n_epochs, first, chunk, group, device):
        """Every default resolved (and stored: ``learning_rate_``, ``dead_window_``)
        into the :class:`AutoencoderSettings` of this fit."""
        n_samples, n_features = data.X.shape
        n_components = self._check_n_components(n_features, data.dictionary, data.target_codes)
        hidden = self._hidden_layer_sizes()
        batch_size = self._resolved_batch_size(n_samples, data.streamed)
        if data.streamed and batch_size >= n_samples:
            raise ValueError(
                f"X is on disk ({data.X.nbytes / 2**30:.1f} GiB, {n_samples} rows) and is "
                f"streamed in minibatches, but batch_size={self.batch_size} means "
                "full-batch steps on all of it: set batch_size (e.g. 4096)."
            )
        if n_epochs is None:
            # The default number of steps, as whole epochs (at least one).
            steps_per_epoch = -(-n_samples // batch_size)
            n_epochs = max(1, -(-self._default_max_iter[self.target] // steps_per_epoch))
        if first or not hasattr(self, "dead_window_"):
            # (A model loaded from another library's checkpoint continues with no
            # resolved training settings: they are resolved on its first data.)
            self.dead_window_ = (
                min(n_samples, DEAD_WINDOW_ROWS) if self.dead_window is None
                else self.dead_window
            )  # fmt: skip
        if first or not hasattr(self, "learning_rate_"):
            self.learning_rate_ = self._resolved_learning_rate(
                full_batch=batch_size >= n_samples, n_components=n_components
            )
        checkpoint = None
        if self.checkpoint_path is not None and first and not chunk:
            config = checkpoint_config(self, data.X, data.target_codes, data.X_val)
            if group is not None:
                # Shards and steps per epoch depend on it: resume on as many ranks.
                config["world_size"] = group.world_size
            checkpoint = (self.checkpoint_path, self.checkpoint_every, config)
        return AutoencoderSettings(
            n_components=n_components, hidden_layer_sizes=hidden,
            activation=self.activation, k=self.n_nonzero_coefs,
            fit_intercept=self.fit_intercept, target=self.target, alpha=self.alpha,
            codes_loss=self.codes_loss, rescale=self._rescales(),
            fit_scale=self.scale_input and self.target == "reconstruction",
            small_encoder_start=self._small_encoder_start(hidden, data.dictionary),
            auxk_alpha=self.auxk_alpha, batch_size=batch_size, n_epochs=n_epochs,
            learning_rate=self.learning_rate_, dead_window=self.dead_window_, tol=self.tol,
            max_grad_norm=getattr(self, "max_grad_norm", None),
            resample_dead_every=self.resample_dead_every, random_state=self.random_state,
            device=device,
            dtype=torch_dtype(data.X.dtype if first else self.components_.dtype),
            description=type(self).__name__,
            advice=(
                "or pass scale_input=True"
                if not self.scale_input and self.target == "reconstruction"
                else "or lower alpha"
            ),
            verbose=bool(self.verbose), checkpoint=checkpoint, chunk=chunk,
            matryoshka_prefixes=self._matryoshka_levels(n_components),
        )  # fmt: skip

    def _matryoshka_levels(self, n_components):
        """The nested widths of ``matryoshka_prefixes`` (checked; the full width last),
        the number of widths to sample per step, or None; the families train on
        reconstruction only."""
        levels = check_matryoshka_prefixes(
            getattr(self, "matryoshka_prefixes", None), n_components
        )
        family = f"activation={self.activation!r}" if self.activation in (
            "batchtopk", "gated") else (
            "matryoshka_prefixes" if levels is not None else None
        )  # fmt: skip
        if family is not None and self.target != "reconstruction":
            raise ValueError(
                f"{family} trains on the reconstruction loss; target={self.target!r} is "
                "not supported with it (use activation='topk' for known codes)."
            )
        return levels

    def _small_encoder_start(self, hidden, dictionary):
        """Whether a minibatch fit's encoder starts at ``MINIBATCH_RELU_ENCODER_SCALE``
        times the decoder's transpose: a linear ReLU SAE learning its dictionary by
        reconstruction (full-batch fits keep the paper-task start)."""
        return (self.activation == "relu" and not hidden and dictionary is None
                and self.target == "reconstruction")  # fmt: skip

    def _resolved_learning_rate(self, *, full_batch, n_components):
        """``learning_rate``; None means the full-batch default with full-batch steps,
        else ``MINIBATCH_LEARNING_RATE / sqrt(n_components / 2^14)`` capped at it."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        full_batch_rate = self._default_full_batch_learning_rate()
        if full_batch:
            return full_batch_rate
        width = math.sqrt(n_components / MINIBATCH_LEARNING_RATE_WIDTH)
        return min(full_batch_rate, MINIBATCH_LEARNING_RATE / width)

    def _default_full_batch_learning_rate(self):
        """The rate of ``learning_rate=None`` with full-batch steps (and the cap of the
        minibatch rule)."""
        return self._full_batch_learning_rate

    def _check_X_val(self, X_val, n_features):
        """Validate the held-out rows: 2-D, ``n_features`` columns, finite (an on-disk
        array checked in blocks, not read whole)."""
        if X_val is None:
            return None
        if isinstance(X_val, np.memmap) and X_val.ndim == 2:
            check_finite_rows(X_val, "X_val")
        else:
            X_val = check_matrix(X_val, "X_val", dtype=FLOAT_DTYPES)
        if X_val.shape[1] != n_features:
            raise ValueError(
                f"X_val has {X_val.shape[1]} features but X has {n_features}: the held-out "
                "rows must have the training data's columns."
            )
        if X_val.shape[0] < 1:
            raise ValueError("X_val has 0 rows; pass at least one held-out row or None.")
        return X_val

    def _score_alpha(self):
        # The penalty trained on scale * X, expressed on X's scale: score is then the
        # training objective divided by scale**2.
        return self.alpha / getattr(self, "input_scale_", 1.0)

    def _resolved_batch_size(self, n_samples, streamed):
        """``batch_size``, capped at ``n_samples``; None means the full batch up to
        ``FULL_BATCH_MAX_ROWS`` rows in memory, else ``DEFAULT_BATCH_SIZE``."""
        if self.batch_size is not None:
            return min(self.batch_size, n_samples)
        if n_samples <= FULL_BATCH_MAX_ROWS and not streamed:
            return n_samples
        return min(DEFAULT_BATCH_SIZE, n_samples)

    def _warn_if_codes_are_zero(self, zero):
        """A fit whose codes are (nearly) all zero is useless but not an error (the
        penalty may simply be too large): say so. ``zero`` is the fraction of (at most
        ``ZERO_CODE_ROWS`` evenly spaced) training rows encoded to all zeros."""
        if zero >= ZERO_CODE_FRACTION:
            advice = "lower alpha" if self.scale_input else "lower alpha, or pass scale_input=True"
            warnings.warn(
                f"{type(self).__name__}: {zero:.0%} of the training rows have all-zero "
                "codes at the end of training, so the model reconstructs almost nothing; "
                f"alpha={self.alpha} is probably too large for X ({advice}).",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _check_target(self, y, n_samples):
        if self.target != "codes":
            return None
        if y is None:
            raise ValueError(
                "target='codes' trains the encoder on known codes: pass them as y, "
                "fit(X, codes)."
            )
        codes = check_matrix(y, "y", dtype=FLOAT_DTYPES)
        check_same_rows(np.empty((n_samples, 0)), codes, "X", "y")
        if self.n_components is not None and codes.shape[1] != self.n_components:
            raise ValueError(
                f"y has {codes.shape[1]} columns but n_components={self.n_components}; "
                "with target='codes', y must have shape (n_samples, n_components)."
            )
        if hasattr(self, "components_") and codes.shape[1] != self.components_.shape[0]:
            raise ValueError(
                f"y has {codes.shape[1]} columns but the estimator was fitted with "
                f"{self.components_.shape[0]} components."
            )
        return codes

    def _check_n_components(self, n_features, dictionary, target_codes):
        if dictionary is not None:
            if self.n_components is not None and dictionary.shape[0] != self.n_components:
                raise ValueError(
                    f"dictionary has {dictionary.shape[0]} rows (atoms) but "
                    f"n_components={self.n_components}."
                )
            if target_codes is not None and target_codes.shape[1] != dictionary.shape[0]:
                raise ValueError(
                    f"y has {target_codes.shape[1]} columns but dictionary has "
                    f"{dictionary.shape[0]} rows (atoms); with target='codes', y must have "
                    "one column per atom."
                )
            n_components = dictionary.shape[0]
        elif target_codes is not None:
            n_components = target_codes.shape[1]
        elif hasattr(self, "components_"):
            n_components = self.components_.shape[0]
        else:
            n_components = n_features if self.n_components is None else self.n_components
        if self.activation in ("topk", "batchtopk"):
            if self.n_nonzero_coefs is None:
                raise ValueError(
                    f"activation={self.activation!r} needs n_nonzero_coefs, the number of "
                    "active latents (k of a TopK SAE; per row on average for BatchTopK)."
                )
            if self.n_nonzero_coefs > n_components:
                raise ValueError(
                    f"n_nonzero_coefs={self.n_nonzero_coefs} must be at most "
                    f"n_components={n_components}."
                )
        return n_components

    # ------------------------------------------------------------- fitted state
    def _fitted_state(self):
        """The fitted model as the :class:`AutoencoderState` a continued fit starts from
        (also a model loaded from another library, which has no training history)."""
        return AutoencoderState(
            components=self.components_, intercept=self.intercept_, coefs=self.coefs_,
            intercepts=self.intercepts_,
            threshold=(
                self.threshold_ if self.activation in ("jumprelu", "batchtopk") else None
            ),
            skip=getattr(self, "skip_", None),
            gate=(
                (self.magnitude_log_scale_, self.magnitude_bias_)
                if self.activation == "gated" else None
            ),  # fmt: skip
            trained_biases=getattr(self, "_trained_biases", None),
            input_scale=getattr(self, "input_scale_", 1.0), history=self.history_,
            optimizer_state=getattr(self, "_optimizer_state", None),
            dead_since=getattr(self, "_dead_since", None), n_steps=self._n_steps,
            n_epochs=self.n_iter_, training_flops=self.training_flops_,
            code_moments=getattr(self, "_code_moments", None),
        )  # fmt: skip

    def _store_state(self, state):
        self.components_ = state.components
        self.intercept_ = state.intercept
        self.coefs_ = state.coefs
        self.intercepts_ = state.intercepts
        if state.threshold is not None:
            self.threshold_ = state.threshold
        if state.skip is not None:
            self.skip_ = state.skip
        if state.gate is not None:
            self.magnitude_log_scale_, self.magnitude_bias_ = state.gate
        self._trained_biases = state.trained_biases
        self.input_scale_ = state.input_scale
        self.history_ = state.history
        self._optimizer_state = state.optimizer_state
        self._dead_since = state.dead_since
        self._n_steps, self.n_iter_ = state.n_steps, state.n_epochs
        self.training_flops_ = state.training_flops
        self.dead_fraction_ = state.dead_fraction
        if state.code_moments is not None:
            self._code_moments = state.code_moments

    def _module_layout(self):
        """The architecture of the fitted model, as :func:`make_module`'s arguments."""
        return {"hidden_layer_sizes": self._hidden_layer_sizes(), "activation": self.activation,
                "k": self.n_nonzero_coefs, "fit_intercept": self.fit_intercept}

    def _module(self, dtype, device):
        """The fitted model as an ``nn.Module`` on ``device`` in ``dtype``: built and
        uploaded once, then kept for the following calls (see ``_device_copy``)."""

        def build():
            # The encoder's input width: X's (a transcoder decodes into another space).
            module = make_module(self.coefs_[0].shape[1], self.components_.shape[0],
                                 device=device, dtype=dtype, **self._module_layout())
            load_weights(module, self._fitted_state())
            module.requires_grad_(False)  # inference only: the copy is shared by calls
            return module

        sources = (self.components_, self.intercept_, *self.coefs_, *self.intercepts_,
                   getattr(self, "threshold_", None), getattr(self, "skip_", None),
                   getattr(self, "magnitude_log_scale_", None),
                   getattr(self, "magnitude_bias_", None))  # fmt: skip
        return self._device_copy("module", sources, device, dtype, build)

    def _decoder_tensors(self, device, dtype):
        # The decoder of the module's device copy: no second upload of the dictionary.
        module = self._module(dtype, device)
        return module.components, module.intercept if module.fit_intercept else None

    def _encode(self, X):
        if self.activation == "batchtopk":
            check_threshold_estimated(self.threshold_, type(self).__name__)
        module = self._module(X.dtype, X.device)
        codes = module.encode(X)
        if self._rescales():
            # The cosine loss leaves each sample's scale free: take it from the data.
            codes = codes * data_scale(codes @ module.components, X - module.intercept)
        return codes

    def _rescales(self):
        return self.target == "codes" and self.codes_loss == "sample" and self.rescale_codes

    def inference_flops(self, n_samples):
        """FLOPs of encoding and decoding ``n_samples`` (Appendix I.2-I.3).

        Parameters
        ----------
        n_samples : int
            Number of samples.

        Returns
        -------
        flops : int
            ``flops.encoder_inference_flops`` for this architecture (with
            ``rescale_codes``, its per-sample rescaling included).
        """
        check_is_fitted(self)
        return encoder_inference_flops(
            self.components_.shape[1],
            self.components_.shape[0],
            n_samples,
            hidden_layer_sizes=self._hidden_layer_sizes(),
            rescale=self._rescales(),
        )


class SAEEncoder(_BaseAutoencoder):
    """Sparse autoencoder: linear encoder, sparse activation, unit-norm linear decoder.

    Amortised sparse inference: ``transform`` is one matrix product and a nonlinearity.
    Trained with full-batch (or minibatch) Adam on the library objective; the decoder's
    atoms are kept at unit norm (with ``target="codes"`` only the encoder is trained,
    and the decoder is the least-squares one of ``X`` on the codes).
    The defaults (a decoder bias, the encoder initialised as the decoder's transpose,
    ``alpha=0.4`` on the scaled input, a full-batch learning rate of 1e-2, 2000 epochs)
    were chosen on the paper's N=16, M=8, K=3 task; the user guide's page on the
    defaults gives the measurements, and those of the minibatch defaults on real
    activations (there a ReLU SAE's encoder starts at 0.1 times the decoder's
    transpose, as SAELens's, and ``learning_rate=None`` follows the width).

    Parameters
    ----------
    n_components : int, default=None
        Number of latents (atoms). None means ``n_features``, or the number of rows of
        ``dictionary`` / columns of ``y``; stored as ``n_components_``.
    alpha : float, default=0.4
        Weight of the L1 penalty in the objective
        ``0.5 * ||x - s @ D - b||^2 + alpha * ||s||_1`` (per sample, averaged, on the
        scaled data ``input_scale_ * X``); for ``activation="jumprelu"`` it weights
        the L0 count instead. The paper's per-entry lambda converts with
        :func:`paper_l1_to_alpha` (with ``scale_input=False``). The default was chosen
        on the paper's N=16, M=8, K=3 benchmark: large enough to make the codes
        sparse, small enough to keep shrinkage low (0.4 on the scaled data is 0.25 on
        that task's own scale, the default before ``scale_input``).
    activation : {"relu", "topk", "jumprelu", "batchtopk", "gated"}, default="relu"
        Output nonlinearity. ``"topk"`` keeps the ``n_nonzero_coefs`` largest pre-activations and
        zeroes the rest, then applies a ReLU (Makhzani & Frey 2013, Gao et al. 2024), so
        at most ``n_nonzero_coefs`` latents are active; with ``alpha > 0`` the L1 term pushes some of
        them to zero (set ``alpha=0`` for the pure TopK objective). ``"jumprelu"`` learns one
        threshold per latent through a straight-through estimator with an L0 penalty
        (Rajamanoharan et al. 2024). ``"batchtopk"`` (Bussmann et al. 2024) keeps, in
        training, the ``n_nonzero_coefs * batch_size`` largest ReLU-ed pre-activations of
        the whole batch (``n_nonzero_coefs`` per row on average) and keeps a running
        estimate of one global threshold (the smallest kept activation, averaged as
        SAELens does); ``transform`` keeps the pre-activations above that threshold
        (``threshold_``), so a row's codes do not depend on the other rows. Trained
        with autograd; reconstruction target only. ``"gated"`` (Rajamanoharan et al.
        2024): a gate ``pi_gate = u + b_gate`` and a magnitude ``pi_mag = exp(r_mag) u
        + b_mag`` share the encoder product ``u`` (``coefs_``; ``b_gate`` is
        ``intercepts_[-1]``), codes ``1[pi_gate > 0] * ReLU(pi_mag)``; ``alpha`` weights
        the L1 norm of ``ReLU(pi_gate)`` and the loss adds the gate path's
        reconstruction through the frozen decoder (half of dictionary_learning's gated
        loss at ``alpha = l1_penalty / 2``; see
        :func:`~sklearn_sparsegap._families.family_gradient_function`). Trained with
        autograd; reconstruction target only.
    n_nonzero_coefs : int, default=None
        The k of a TopK SAE: the number of active latents for ``activation="topk"``
        (per row on average for ``"batchtopk"``).
    dictionary : array-like of shape (n_components, n_features), default=None
        A known dictionary. When given it is used as the decoder and held fixed
        (``components_`` equals it); only the encoder is trained. With
        ``target="codes"`` it is the decoder of the rescaling and of
        ``inverse_transform``, and only the bias is fitted.
    target : {"reconstruction", "codes"}, default="reconstruction"
        ``"codes"`` trains the encoder alone on known codes passed as ``y`` with the loss
        ``1 - cos(f(x), s*)`` (the paper's known-codes scenario); ``components_`` and
        ``intercept_`` are then the least-squares decoder of ``X`` on those codes.
    codes_loss : {"sample", "latent"}, default="sample"
        How ``target="codes"`` averages the cosine: per sample, between each sample's
        predicted and true code vectors (the paper's formula), or per latent, between
        each latent's predicted and true values across the batch (the authors' code,
        where the paper's known-codes numbers come from). With minibatches the
        per-latent cosine is computed within each batch.
    rescale_codes : bool, default=True
        Only with ``target="codes"`` and ``codes_loss="sample"``. The per-sample cosine
        fixes each sample's codes only up to a positive factor, which training never
        sees, so the raw encoder output has an arbitrary scale per sample. With True,
        ``transform`` multiplies each sample's encoder output by the non-negative factor
        that best reconstructs it through ``components_`` (least squares; ``4M + N``
        more FLOPs per sample): the codes get the data's scale and
        ``inverse_transform(transform(X))`` approximates ``X``. The per-latent loss
        leaves one factor per latent free, shared by all samples, which a per-sample
        factor cannot undo: its codes are returned as the encoder gives them. False
        returns the encoder's own output (the paper's setting).
    fit_intercept : bool, default=True
        Learn a decoder bias, subtracted before encoding (Bricken et al. 2023), and
        encoder biases. ``False`` reproduces the paper's bias-free models.
    scale_input : bool, default=True
        Train on ``input_scale_ * X``, where ``input_scale_`` makes the mean squared
        row norm equal to ``n_features`` (as SAELens's ``normalize_activations``; the
        norms of the centred rows when ``fit_intercept``, whose bias carries the mean), so
        that ``alpha`` and ``learning_rate`` mean the same on any scale of ``X``: a fit
        on ``100 * X`` gives 100 times the codes of a fit on ``X``. The factor is
        folded into the stored biases, so ``transform``, ``inverse_transform`` and
        ``intercept_`` are on the scale of ``X``; ``history_`` is on the trained
        scale. Only the reconstruction target scales (known codes fix the units).
        False trains on ``X`` as given (the paper's setting).
    max_iter : int or None, default=None
        Number of epochs (passes over the training data): with full-batch steps an
        epoch is one Adam step, with minibatches it is ``ceil(n_samples / batch_size)``
        steps. None means the epochs that make at least 2000 steps (500 with
        ``target="codes"``, where the encoder's output layer starts at the (ridge)
        regression onto the codes), and at least one epoch: 2000 epochs in full batch,
        ``ceil(2000 / steps_per_epoch)`` with minibatches. Stored as ``max_iter_``.
    batch_size : int, default=None
        Minibatch size. None means the full batch (the paper's setting) up to 8,192
        rows in memory, and minibatches of 4,096 rows above that or when ``X`` is
        streamed from disk. Stored, capped at ``n_samples``, as ``batch_size_``.
    learning_rate : float, default=None
        Adam learning rate. None means 0.01 with full-batch steps (chosen on the
        paper's task) and, with minibatches, sparsify's width rule
        ``2e-4 / sqrt(n_components / 2**14)`` capped at 0.01 (6.5e-4 for 1,536
        latents; Gao et al. 2024 fit the best rate to scale so). Stored as
        ``learning_rate_``.
    max_grad_norm : float, default=None
        Clip the global norm of each optimiser step's gradient (every parameter
        together) to this value before the Adam step, as dictionary_learning's and
        SAELens's trainers do (with 1.0). Inputs scaled by ``scale_input`` give gradient
        norms of about 3-15 on real activations, so 1.0 normalises every step's
        gradient; Adam's second moments then follow that scale rather than the large
        first gradients. It lowered a TopK SAE's held-out FVU at every rate tried on
        three activation sets (2-12%, ``benchmarks/peers/grad_clip.py``). None: no
        clipping (the default until it is chosen with a rate that depends on the
        number of steps).
    tol : float, default=0.0
        Stop when the training loss (its running minimum over the logged values)
        improved by less than ``tol``, relative, over the last 100 optimiser steps
        (rounded up to whole epochs). The loss is logged every 10 epochs in full batch
        and every epoch with minibatches. The default 0 runs all ``max_iter`` epochs:
        SAE losses often plateau and then drop when a latent comes alive, so early
        stopping is opt-in. Only the first ``fit`` of a ``warm_start`` sequence, not
        ``partial_fit``, stops early.
    resample_dead_every : int, default=None
        Every this many steps, the dead latents (see ``dead_window``) are
        reinitialised towards the residuals of poorly reconstructed samples
        (Bricken et al. 2023) and their window restarts. None disables resampling;
        so does a given ``dictionary``, which is never modified.
    dead_window : int, default=None
        A latent is dead when it has not fired on the last ``dead_window`` training
        rows (SAELens's ``dead_feature_window``, sparsify's ``dead_feature_threshold``,
        counted in rows so that it does not depend on the batch size); before that many
        rows were seen no latent is dead. None means one epoch, capped at 10**6 rows
        (a latent firing on fewer than one row in a million is dead by the usual
        threshold). The one definition of dead for ``history_``, ``dead_fraction_``,
        resampling and ``auxk_alpha``. Stored as ``dead_window_``.
    auxk_alpha : float, default=1/32
        Weight of the AuxK auxiliary loss of a TopK SAE (Gao et al. 2024; sparsify's
        default weight): the ``n_features // 2`` largest pre-activations of the dead
        latents reconstruct the residual ``x - x_hat`` through their atoms, which
        gives dead latents a gradient and revives them. Weighted by
        ``min(n_dead / (n_features // 2), 1)``; it costs nothing while no latent is
        dead. Only with ``activation="topk"`` or ``"batchtopk"`` (ignored otherwise);
        0 disables it.
    matryoshka_prefixes : tuple of int or int, default=None
        A Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024). Training sums the
        reconstruction loss of the codes restricted to each prefix of the latents, so
        the first latents learn the most general features; encoding and decoding use
        the full width. Either

        - fixed widths (Bussmann et al.; SAELens's ``matryoshka_widths``,
          dictionary_learning's ``group_fractions``): strictly increasing and at most
          ``n_components``, the full width added last when missing, as SAELens adds
          ``d_sae``; or
        - an int ``n``: ``n`` widths sampled anew at every training step (Nabeshima's
          Matryoshka SAEs), the full width and ``n - 1`` distinct smaller widths drawn
          from a truncated power law that favours small prefixes
          (``_families.sample_matryoshka_prefixes``), so that no latent sits at a
          fixed boundary. Exported to the peers as the same SAE without fixed widths
          (its inference does not depend on them).

        The peers train it with ``activation="batchtopk"`` (any activation works).
        Trained with autograd; reconstruction target only.
    warm_start : bool, default=False
        When True, ``fit`` on a fitted estimator continues training from its current
        state (weights, dictionary and Adam moments; with ``target="codes"`` the
        decoder is refitted on the new call's data) for ``max_iter`` more
        epochs instead of starting over, as in scikit-learn's ``MLPClassifier``.
        Fitting in segments this way traces learning curves at no extra cost.
    checkpoint_path : str or path-like, default=None
        Where ``fit`` saves its training state (weights, Adam moments, counters,
        random generators, history), every ``checkpoint_every`` steps. When the file
        exists at the start of ``fit`` training resumes from it, mid-epoch too (also
        when ``X`` is streamed from disk), and ends with the model an uninterrupted fit
        with the same seed gives. A checkpoint saved with other parameters or other
        data is refused with a ``ValueError`` saying what differs; delete the file to
        start over. The file is kept after the fit. ``partial_fit`` and ``warm_start``
        continuations do not checkpoint.
    checkpoint_every : int, default=None
        Optimiser steps between checkpoints; None saves at the end of every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the minibatch order; a fixed seed gives identical
        results on the CPU.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    verbose : int, default=0
        Show a progress bar with the current loss.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The decoder (dictionary): the given ``dictionary``, or learned with unit-norm
        rows. With ``target="codes"`` and no ``dictionary``, the least-squares
        dictionary of ``X`` on the given codes (over every ``partial_fit`` chunk), in
        their units, so that ``inverse_transform(codes)`` approximates ``X``.
    intercept_ : ndarray of shape (n_features,)
        The decoder bias (zeros when ``fit_intercept=False``); least squares, with
        ``components_``, when ``target="codes"``.
    coefs_ : list of ndarray
        Encoder weights, ``coefs_[i]`` of shape (n_out, n_in) for layer ``i``.
    intercepts_ : list of ndarray
        Encoder biases.
    threshold_ : ndarray of shape (n_components,)
        JumpReLU thresholds (only with ``activation="jumprelu"``); with
        ``"batchtopk"`` the global threshold in every entry (NaN until estimated); with
        ``"gated"`` the JumpReLU threshold it equals at inference,
        ``magnitude_bias_ - exp(magnitude_log_scale_) * intercepts_[-1]`` (the gate is
        open exactly where ``pi_mag`` exceeds it).
    magnitude_log_scale_ : ndarray of shape (n_components,)
        A gated SAE's ``r_mag``: the magnitude path's encoder is ``exp(r_mag)`` times
        the gate's (only with ``activation="gated"``).
    magnitude_bias_ : ndarray of shape (n_components,)
        A gated SAE's magnitude bias ``b_mag`` (only with ``activation="gated"``).
    n_components_ : int
        Number of latents.
    input_scale_ : float
        The factor the training data was multiplied by (``scale_input``; 1.0 when
        not scaled). Fitted by the first ``fit``/``partial_fit`` call.
    max_iter_ : int
        The epochs a ``fit`` call runs: ``max_iter``, or its default when None.
    batch_size_ : int
        The minibatch size used: ``batch_size`` capped at ``n_samples``, or its
        default when None (``n_samples`` for a full batch).
    n_iter_ : int
        Epochs run, over all ``fit``/``partial_fit`` calls.
    history_ : dict of ndarray
        Training log with keys ``step``, ``loss``, ``mse``, ``l1``, ``l0``,
        ``dead_fraction`` and ``flops`` (cumulative), one entry per log (every 10
        epochs in full batch, every epoch with minibatches, and the last epoch of
        each call): the loss, mse, l1 and l0 are averaged over the steps since the
        previous log, and ``dead_fraction`` is the fraction of latents dead at the
        log (not fired on the last ``dead_window_`` training rows). With ``X_val``
        also ``val_fvu``, ``val_l0`` and ``val_dead_fraction`` on the held-out rows
        (NaN for the logs of calls without ``X_val``).
    dead_fraction_ : float
        The fraction of latents dead at the end of training (see ``dead_window``).
    dead_window_ : int
        The rows of the dead-latent window: ``dead_window``, or its default.
    learning_rate_ : float
        The Adam learning rate of the first fit: ``learning_rate``, or its default.
    training_flops_ : int
        Training FLOPs so far (Appendix I), accumulated over ``fit``/``partial_fit``:
        the gradient steps (the least-squares decoder of ``target="codes"`` is not
        counted, as in the paper).
    device_ : str
        The device the model was trained on.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    MLPEncoder : The same model with an MLP encoder.
    SAEPlusITO : SAE codes refined by inference-time optimisation.

    Examples
    --------
    On data generated from a known dictionary, the learned atoms match the true ones:

    >>> from sklearn_sparsegap import SAEEncoder, dictionary_mcc, make_sparse_dictionary_data
    >>> X, dictionary, codes = make_sparse_dictionary_data(1024, random_state=0)
    >>> sae = SAEEncoder(n_components=16, random_state=0).fit(X)
    >>> print(f"{dictionary_mcc(dictionary, sae.components_):.2f}")
    0.91
    >>> sae.transform(X[:2]).shape, sae.max_iter_, sae.batch_size_
    ((2, 16), 2000, 1024)
    """

    _parameter_constraints = {
        **_BaseAutoencoder._parameter_constraints,
        "matryoshka_prefixes": [tuple, list, Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        n_components=None,
        *,
        alpha=0.4,
        activation="relu",
        n_nonzero_coefs=None,
        dictionary=None,
        target="reconstruction",
        codes_loss="sample",
        rescale_codes=True,
        fit_intercept=True,
        scale_input=True,
        max_iter=None,
        batch_size=None,
        learning_rate=None,
        max_grad_norm=None,
        tol=0.0,
        resample_dead_every=None,
        dead_window=None,
        auxk_alpha=1 / 32,
        matryoshka_prefixes=None,
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
        self.dictionary = dictionary
        self.target = target
        self.codes_loss = codes_loss
        self.rescale_codes = rescale_codes
        self.fit_intercept = fit_intercept
        self.scale_input = scale_input
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm
        self.tol = tol
        self.resample_dead_every = resample_dead_every
        self.dead_window = dead_window
        self.auxk_alpha = auxk_alpha
        self.matryoshka_prefixes = matryoshka_prefixes
        self.warm_start = warm_start
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.random_state = random_state
        self.device = device
        self.verbose = verbose


class MLPEncoder(_BaseAutoencoder):
    """Sparse autoencoder whose encoder is an MLP (ReLU hidden layers).

    Same decoder, activation and objective as :class:`SAEEncoder`; the encoder is
    ``hidden_layer_sizes`` ReLU layers then a linear layer to the latents. The paper shows
    a wider encoder narrows the amortisation gap at a higher compute cost.

    The defaults (hidden width, learning rate, epochs) were chosen on the paper's
    N=16, M=8, K=3 task; the user guide's page on the defaults gives the measurements.

    Parameters
    ----------
    n_components : int, default=None
        Number of latents (atoms). None means ``n_features``, or the number of rows of
        ``dictionary`` / columns of ``y``.
    hidden_layer_sizes : tuple of int, default=(64,)
        Widths of the hidden layers.
    alpha : float, default=0.3
        Weight of the L1 penalty in the objective
        ``0.5 * ||x - s @ D - b||^2 + alpha * ||s||_1`` (per sample, averaged, on the
        scaled data ``input_scale_ * X``); for ``activation="jumprelu"`` it weights
        the L0 count instead. The paper's per-entry lambda converts with
        :func:`paper_l1_to_alpha` (with ``scale_input=False``). The default was chosen
        on the paper's N=16, M=8, K=3 benchmark: large enough to make the codes
        sparse, small enough to keep shrinkage low.
    activation : {"relu", "topk", "jumprelu", "batchtopk", "gated"}, default="relu"
        Output nonlinearity. ``"topk"`` keeps the ``n_nonzero_coefs`` largest pre-activations and
        zeroes the rest, then applies a ReLU (Makhzani & Frey 2013, Gao et al. 2024), so
        at most ``n_nonzero_coefs`` latents are active; with ``alpha > 0`` the L1 term pushes some of
        them to zero (set ``alpha=0`` for the pure TopK objective). ``"jumprelu"`` learns one
        threshold per latent through a straight-through estimator with an L0 penalty
        (Rajamanoharan et al. 2024). ``"batchtopk"`` (Bussmann et al. 2024) keeps, in
        training, the ``n_nonzero_coefs * batch_size`` largest ReLU-ed pre-activations of
        the whole batch (``n_nonzero_coefs`` per row on average) and keeps a running
        estimate of one global threshold (the smallest kept activation, averaged as
        SAELens does); ``transform`` keeps the pre-activations above that threshold
        (``threshold_``), so a row's codes do not depend on the other rows. Trained
        with autograd; reconstruction target only. ``"gated"`` (Rajamanoharan et al.
        2024): a gate ``pi_gate = u + b_gate`` and a magnitude ``pi_mag = exp(r_mag) u
        + b_mag`` share the encoder product ``u`` (``coefs_``; ``b_gate`` is
        ``intercepts_[-1]``), codes ``1[pi_gate > 0] * ReLU(pi_mag)``; ``alpha`` weights
        the L1 norm of ``ReLU(pi_gate)`` and the loss adds the gate path's
        reconstruction through the frozen decoder (half of dictionary_learning's gated
        loss at ``alpha = l1_penalty / 2``; see
        :func:`~sklearn_sparsegap._families.family_gradient_function`). Trained with
        autograd; reconstruction target only.
    n_nonzero_coefs : int, default=None
        The k of a TopK SAE: the number of active latents for ``activation="topk"``
        (per row on average for ``"batchtopk"``).
    dictionary : array-like of shape (n_components, n_features), default=None
        A known dictionary. When given it is used as the decoder and held fixed
        (``components_`` equals it); only the encoder is trained. With
        ``target="codes"`` it is the decoder of the rescaling and of
        ``inverse_transform``, and only the bias is fitted.
    target : {"reconstruction", "codes"}, default="reconstruction"
        ``"codes"`` trains the encoder alone on known codes passed as ``y`` with the loss
        ``1 - cos(f(x), s*)`` (the paper's known-codes scenario); ``components_`` and
        ``intercept_`` are then the least-squares decoder of ``X`` on those codes.
    codes_loss : {"sample", "latent"}, default="sample"
        How ``target="codes"`` averages the cosine: per sample, between each sample's
        predicted and true code vectors (the paper's formula), or per latent, between
        each latent's predicted and true values across the batch (the authors' code,
        where the paper's known-codes numbers come from). With minibatches the
        per-latent cosine is computed within each batch.
    rescale_codes : bool, default=True
        Only with ``target="codes"`` and ``codes_loss="sample"``. The per-sample cosine
        fixes each sample's codes only up to a positive factor, which training never
        sees, so the raw encoder output has an arbitrary scale per sample. With True,
        ``transform`` multiplies each sample's encoder output by the non-negative factor
        that best reconstructs it through ``components_`` (least squares; ``4M + N``
        more FLOPs per sample): the codes get the data's scale and
        ``inverse_transform(transform(X))`` approximates ``X``. The per-latent loss
        leaves one factor per latent free, shared by all samples, which a per-sample
        factor cannot undo: its codes are returned as the encoder gives them. False
        returns the encoder's own output (the paper's setting).
    fit_intercept : bool, default=True
        Learn a decoder bias, subtracted before encoding (Bricken et al. 2023), and
        encoder biases. ``False`` reproduces the paper's bias-free models.
    scale_input : bool, default=True
        Train on ``input_scale_ * X``, where ``input_scale_`` makes the mean squared
        row norm equal to ``n_features`` (as SAELens's ``normalize_activations``; the
        norms of the centred rows when ``fit_intercept``, whose bias carries the mean), so
        that ``alpha`` and ``learning_rate`` mean the same on any scale of ``X``: a fit
        on ``100 * X`` gives 100 times the codes of a fit on ``X``. The factor is
        folded into the stored biases, so ``transform``, ``inverse_transform`` and
        ``intercept_`` are on the scale of ``X``; ``history_`` is on the trained
        scale. Only the reconstruction target scales (known codes fix the units).
        False trains on ``X`` as given (the paper's setting).
    max_iter : int or None, default=None
        Number of epochs (passes over the training data): with full-batch steps an
        epoch is one Adam step, with minibatches it is ``ceil(n_samples / batch_size)``
        steps. None means the epochs that make at least 1500 steps (500 with
        ``target="codes"``, where the encoder's output layer starts at the (ridge)
        regression onto the codes), and at least one epoch: 1500 epochs in full batch,
        ``ceil(1500 / steps_per_epoch)`` with minibatches. Stored as ``max_iter_``.
    batch_size : int, default=None
        Minibatch size. None means the full batch (the paper's setting) up to 8,192
        rows in memory, and minibatches of 4,096 rows above that or when ``X`` is
        streamed from disk. Stored, capped at ``n_samples``, as ``batch_size_``.
    learning_rate : float, default=None
        Adam learning rate. None means, with full-batch steps,
        ``0.006 * min(1, 256 / H)`` for the widest hidden layer ``H`` (0.006 up to 256
        hidden units, 0.0015 at 1,024: the next layer's output moves about
        ``rate * H`` per Adam step, so the rate falls as ``1 / H``, muP's rule; at
        H=1,024 the width-blind 0.006 left output latents dead, MCC 0.89 against 0.97
        on the paper's known-codes task) and, with minibatches, sparsify's width rule
        ``2e-4 / sqrt(n_components / 2**14)`` capped at the full-batch rate (6.5e-4 for
        1,536 latents; Gao et al. 2024 fit the best rate to scale so). Stored as
        ``learning_rate_``.
    max_grad_norm : float, default=None
        Clip each step's global gradient norm to this value (as in :class:`SAEEncoder`).
    tol : float, default=0.0
        Stop when the training loss (its running minimum over the logged values)
        improved by less than ``tol``, relative, over the last 100 optimiser steps
        (rounded up to whole epochs). The loss is logged every 10 epochs in full batch
        and every epoch with minibatches. The default 0 runs all ``max_iter`` epochs:
        SAE losses often plateau and then drop when a latent comes alive, so early
        stopping is opt-in. Only the first ``fit`` of a ``warm_start`` sequence, not
        ``partial_fit``, stops early.
    resample_dead_every : int, default=None
        Every this many steps, the dead latents (see ``dead_window``) are
        reinitialised towards the residuals of poorly reconstructed samples
        (Bricken et al. 2023) and their window restarts. None disables resampling;
        so does a given ``dictionary``, which is never modified.
    dead_window : int, default=None
        A latent is dead when it has not fired on the last ``dead_window`` training
        rows (SAELens's ``dead_feature_window``, sparsify's ``dead_feature_threshold``,
        counted in rows so that it does not depend on the batch size); before that many
        rows were seen no latent is dead. None means one epoch, capped at 10**6 rows
        (a latent firing on fewer than one row in a million is dead by the usual
        threshold). The one definition of dead for ``history_``, ``dead_fraction_``,
        resampling and ``auxk_alpha``. Stored as ``dead_window_``.
    auxk_alpha : float, default=1/32
        Weight of the AuxK auxiliary loss of a TopK SAE (Gao et al. 2024; sparsify's
        default weight): the ``n_features // 2`` largest pre-activations of the dead
        latents reconstruct the residual ``x - x_hat`` through their atoms, which
        gives dead latents a gradient and revives them. Weighted by
        ``min(n_dead / (n_features // 2), 1)``; it costs nothing while no latent is
        dead. Only with ``activation="topk"`` or ``"batchtopk"`` (ignored otherwise);
        0 disables it.
    warm_start : bool, default=False
        When True, ``fit`` on a fitted estimator continues training from its current
        state (weights, dictionary and Adam moments; with ``target="codes"`` the
        decoder is refitted on the new call's data) for ``max_iter`` more
        epochs instead of starting over, as in scikit-learn's ``MLPClassifier``.
        Fitting in segments this way traces learning curves at no extra cost.
    checkpoint_path : str or path-like, default=None
        Where ``fit`` saves its training state (weights, Adam moments, counters,
        random generators, history), every ``checkpoint_every`` steps. When the file
        exists at the start of ``fit`` training resumes from it, mid-epoch too (also
        when ``X`` is streamed from disk), and ends with the model an uninterrupted fit
        with the same seed gives. A checkpoint saved with other parameters or other
        data is refused with a ``ValueError`` saying what differs; delete the file to
        start over. The file is kept after the fit. ``partial_fit`` and ``warm_start``
        continuations do not checkpoint.
    checkpoint_every : int, default=None
        Optimiser steps between checkpoints; None saves at the end of every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the minibatch order; a fixed seed gives identical
        results on the CPU.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    verbose : int, default=0
        Show a progress bar with the current loss.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The decoder (dictionary): the given ``dictionary``, or learned with unit-norm
        rows. With ``target="codes"`` and no ``dictionary``, the least-squares
        dictionary of ``X`` on the given codes (over every ``partial_fit`` chunk), in
        their units, so that ``inverse_transform(codes)`` approximates ``X``.
    intercept_ : ndarray of shape (n_features,)
        The decoder bias (zeros when ``fit_intercept=False``); least squares, with
        ``components_``, when ``target="codes"``.
    coefs_ : list of ndarray
        Encoder weights, ``coefs_[i]`` of shape (n_out, n_in) for layer ``i``.
    intercepts_ : list of ndarray
        Encoder biases.
    threshold_ : ndarray of shape (n_components,)
        JumpReLU thresholds (only with ``activation="jumprelu"``); with
        ``"batchtopk"`` the global threshold in every entry (NaN until estimated); with
        ``"gated"`` the JumpReLU threshold it equals at inference,
        ``magnitude_bias_ - exp(magnitude_log_scale_) * intercepts_[-1]`` (the gate is
        open exactly where ``pi_mag`` exceeds it).
    magnitude_log_scale_ : ndarray of shape (n_components,)
        A gated SAE's ``r_mag``: the magnitude path's encoder is ``exp(r_mag)`` times
        the gate's (only with ``activation="gated"``).
    magnitude_bias_ : ndarray of shape (n_components,)
        A gated SAE's magnitude bias ``b_mag`` (only with ``activation="gated"``).
    n_components_ : int
        Number of latents.
    input_scale_ : float
        The factor the training data was multiplied by (``scale_input``; 1.0 when
        not scaled). Fitted by the first ``fit``/``partial_fit`` call.
    max_iter_ : int
        The epochs a ``fit`` call runs: ``max_iter``, or its default when None.
    batch_size_ : int
        The minibatch size used: ``batch_size`` capped at ``n_samples``, or its
        default when None (``n_samples`` for a full batch).
    n_iter_ : int
        Epochs run, over all ``fit``/``partial_fit`` calls.
    history_ : dict of ndarray
        Training log with keys ``step``, ``loss``, ``mse``, ``l1``, ``l0``,
        ``dead_fraction`` and ``flops`` (cumulative), one entry per log (every 10
        epochs in full batch, every epoch with minibatches, and the last epoch of
        each call): the loss, mse, l1 and l0 are averaged over the steps since the
        previous log, and ``dead_fraction`` is the fraction of latents dead at the
        log (not fired on the last ``dead_window_`` training rows). With ``X_val``
        also ``val_fvu``, ``val_l0`` and ``val_dead_fraction`` on the held-out rows
        (NaN for the logs of calls without ``X_val``).
    dead_fraction_ : float
        The fraction of latents dead at the end of training (see ``dead_window``).
    dead_window_ : int
        The rows of the dead-latent window: ``dead_window``, or its default.
    learning_rate_ : float
        The Adam learning rate of the first fit: ``learning_rate``, or its default.
    training_flops_ : int
        Training FLOPs so far (Appendix I), accumulated over ``fit``/``partial_fit``:
        the gradient steps (the least-squares decoder of ``target="codes"`` is not
        counted, as in the paper).
    device_ : str
        The device the model was trained on.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    SAEEncoder : The same model with a linear encoder.

    Examples
    --------
    With a known dictionary only the encoder is trained; its codes correlate with the
    true ones (mean correlation of matched latents):

    >>> from sklearn_sparsegap import MLPEncoder, make_sparse_dictionary_data, mean_corr_coef
    >>> X, dictionary, codes = make_sparse_dictionary_data(1024, random_state=0)
    >>> mlp = MLPEncoder(dictionary=dictionary, random_state=0).fit(X)
    >>> print(f"{mean_corr_coef(codes, mlp.transform(X)):.2f}")
    0.92
    """

    _default_max_iter = _MLP_MAX_ITER
    _full_batch_learning_rate = 6e-3
    _parameter_constraints = {
        **_BaseAutoencoder._parameter_constraints,
        "hidden_layer_sizes": [tuple, list],
    }

    def __init__(
        self,
        n_components=None,
        *,
        hidden_layer_sizes=(64,),
        alpha=0.3,
        activation="relu",
        n_nonzero_coefs=None,
        dictionary=None,
        target="reconstruction",
        codes_loss="sample",
        rescale_codes=True,
        fit_intercept=True,
        scale_input=True,
        max_iter=None,
        batch_size=None,
        learning_rate=None,
        max_grad_norm=None,
        tol=0.0,
        resample_dead_every=None,
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.activation = activation
        self.n_nonzero_coefs = n_nonzero_coefs
        self.dictionary = dictionary
        self.target = target
        self.codes_loss = codes_loss
        self.rescale_codes = rescale_codes
        self.fit_intercept = fit_intercept
        self.scale_input = scale_input
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm
        self.tol = tol
        self.resample_dead_every = resample_dead_every
        self.dead_window = dead_window
        self.auxk_alpha = auxk_alpha
        self.warm_start = warm_start
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _default_full_batch_learning_rate(self):
        """6e-3 up to ``MLP_LEARNING_RATE_WIDTH`` (256) hidden units, then
        ``6e-3 * 256 / H`` for the widest hidden layer ``H``."""
        widest = max(self._hidden_layer_sizes())
        return self._full_batch_learning_rate * min(1.0, MLP_LEARNING_RATE_WIDTH / widest)

    def _hidden_layer_sizes(self):
        sizes = tuple(self.hidden_layer_sizes)
        if not sizes or any(
            not isinstance(size, Integral) or isinstance(size, bool) or size < 1
            for size in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a non-empty tuple of positive integers, got "
                f"{self.hidden_layer_sizes!r}."
            )
        return sizes
