"""SAELens's own SAEs on our data, the reference of the SAELens benchmarks.

Imports ``sae_lens`` (optional, ``pip install -e ".[benchmark]"``), so only benchmarks
import this module; the library never does. Written against sae-lens 6.54.

Settings are SAELens defaults except those the benchmark fixes or the API requires:
the learning rate, full-batch steps or epochs of minibatches, float32 on CPU, no wandb
/ checkpoints, ``lr_end=lr/10`` (required by ``SAETrainer``; what
``LanguageModelSAERunnerConfig`` would set; unused by the constant schedule) and
``torch.manual_seed(random_state)`` for the weight init (the runner would seed 42).

:meth:`SAELensSAE.tuned` is SAELens as a careful user runs it on short budgets: the
decoder bias started at the training mean (SAELens 6 always starts it at zero), the
dead-feature window one epoch of steps (its default, 1000 steps, never switches AuxK on
in runs of a few hundred steps) and, for L1 SAEs, the L1 coefficient warmed up over the
first 5% of the steps.
Used by bench_encoders.py (full batch, synthetic data), bench_saelens.py and
activations_saelens.py (minibatches of real activations).
"""

import contextlib
import io
import tempfile
import time

import numpy as np
import torch

# torch.optim's first optimiser of a process imports torch._dynamo (about 2 s): import it
# with SAELens, so that a benchmark importing this module before any timing charges it
# to neither library's fit, whichever fits first.
import torch._dynamo  # noqa: F401
from sae_lens import SAE, SAETrainer
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.registry import get_sae_training_class


class SAELensSAE:
    """Train a SAELens training SAE with ``SAETrainer``, behind ``fit``/``transform``.

    Parameters
    ----------
    n_components : int, default=16
        Number of latents (``d_sae``).
    k : int or None, default=None
        The TopK / BatchTopK SAEs' ``k``; the matching-pursuit SAE's
        ``max_iterations`` (SAELens's d_in when None).
    architecture : str or None, default=None
        The training SAE: ``"standard"`` (ReLU, L1 penalty scaled by decoder norms),
        ``"topk"``, ``"batchtopk"``, ``"matryoshka_batchtopk"``, ``"gated"`` or
        ``"matching_pursuit"`` (codes by matching pursuit on the decoder, stopping when
        the residual norm falls under ``residual_threshold``, after ``k`` atoms or when
        the support repeats). None: ``"standard"`` without ``k``, ``"topk"`` with it.
    matryoshka_widths : list of int, default=None
        The Matryoshka BatchTopK SAE's nested widths (``d_sae`` is appended).
    residual_threshold : float, default=1e-2
        The matching-pursuit SAE's residual-norm stop (SAELens's default).
    l1_coefficient : float, default=1.0
        The standard SAE's L1 coefficient (SAELens's default); unused with ``k``.
    batch_size : int or None, default=None
        None: full-batch steps (batch = the whole training set), ``steps`` of them.
        An int: ``epochs`` epochs of minibatches of this size, in an order reshuffled
        each epoch (the last, incomplete batch of an epoch is dropped).
    steps : int, default=3000
        Full-batch training steps (``batch_size=None`` only).
    epochs : int, default=1
        Epochs of minibatches (``batch_size`` given only).
    lr : float, default=1e-3
        Adam learning rate; ``lr_end`` is a tenth of it (required by ``SAETrainer``;
        unused by its constant schedule).
    random_state : int, default=0
        Seed of torch's global generator before the weight init, and of the minibatch
        order.
    b_dec_init : {"zeros", "mean"}, default="zeros"
        The decoder bias at the start: SAELens's zeros, or the training mean.
    dead_feature_window : int, "epoch" or None, default=None
        Steps without firing after which a latent is dead (AuxK trains it); None keeps
        SAELens's 1000, "epoch" is one epoch of steps.
    l1_warm_up_steps : int, default=0
        Steps over which the standard SAE's L1 coefficient ramps up from zero.
    record_aux_loss : bool, default=False
        Keep the TopK SAE's auxiliary (AuxK) loss of every step in ``aux_losses_``
        (one host sync per step: off for timed runs).

    Attributes
    ----------
    sae_ : StandardTrainingSAE or TopKTrainingSAE
        The trained SAE.
    components_ : ndarray of shape (n_components, n_features)
        Decoder ``W_dec``, one atom per row.
    train_seconds_ : float
        Wall time of ``SAETrainer.fit`` alone (the model built and the rows converted
        before it).
    b_dec_start_ : ndarray of shape (n_features,)
        The decoder bias training started from.
    dead_feature_window_ : int
        The dead-feature window used, in steps.
    aux_losses_ : list of float
        With ``record_aux_loss``, the AuxK loss of every step (TopK only).
    """

    def __init__(self, n_components=16, *, k=None, architecture=None, matryoshka_widths=None,
                 residual_threshold=1e-2, l1_coefficient=1.0, batch_size=None,
                 steps=3000, epochs=1, lr=1e-3, random_state=0, b_dec_init="zeros",
                 dead_feature_window=None, l1_warm_up_steps=0,
                 record_aux_loss=False):  # fmt: skip
        self.n_components = n_components
        self.k = k
        self.architecture = architecture
        self.matryoshka_widths = matryoshka_widths
        self.residual_threshold = residual_threshold
        self.l1_coefficient = l1_coefficient
        self.batch_size = batch_size
        self.steps = steps
        self.epochs = epochs
        self.lr = lr
        self.random_state = random_state
        self.b_dec_init = b_dec_init
        self.dead_feature_window = dead_feature_window
        self.l1_warm_up_steps = l1_warm_up_steps
        self.record_aux_loss = record_aux_loss

    @classmethod
    def tuned(cls, n_samples, **params):
        """SAELens as a careful user configures it for ``n_samples`` training rows: the
        decoder bias at the training mean, a dead-feature window of one epoch and (L1
        SAEs) an L1 warm-up over 5% of the steps. ``params`` as for the constructor
        (they win)."""
        est = cls(**params)
        batch = n_samples if est.batch_size is None else est.batch_size
        n_steps = est.steps if est.batch_size is None else est.epochs * (n_samples // batch)
        settings = {"b_dec_init": "mean", "dead_feature_window": "epoch",
                    "l1_warm_up_steps": max(1, n_steps // 20)
                    if est.architecture_ in ("standard", "gated") else 0}
        return cls(**{**settings, **params})

    @property
    def architecture_(self):
        """The training SAE's architecture (``architecture`` or its default)."""
        if self.architecture is not None:
            return self.architecture
        return "standard" if self.k is None else "topk"

    def _training_sae(self, common):
        """The untrained training SAE of ``architecture_`` (SAELens's registered class
        and config), with ``common`` config fields."""
        architecture = self.architecture_
        if architecture == "matryoshka_batchtopk" and not self.matryoshka_widths:
            raise ValueError("architecture='matryoshka_batchtopk' needs matryoshka_widths.")
        extra = {
            "standard": dict(l1_coefficient=self.l1_coefficient,
                             l1_warm_up_steps=self.l1_warm_up_steps),
            "gated": dict(l1_coefficient=self.l1_coefficient,
                          l1_warm_up_steps=self.l1_warm_up_steps),
            "topk": dict(k=self.k),
            "batchtopk": dict(k=self.k),
            "matryoshka_batchtopk": dict(k=self.k, matryoshka_widths=[
                *(self.matryoshka_widths or ()), self.n_components]),
            "matching_pursuit": dict(residual_threshold=self.residual_threshold,
                                     max_iterations=self.k),
        }  # fmt: skip
        if architecture not in extra:
            raise ValueError(f"architecture must be one of {sorted(extra)}, got {architecture!r}.")
        sae_class, config_class = get_sae_training_class(architecture)
        return sae_class(config_class(**extra[architecture], **common))

    def fit(self, X, y=None):
        """Train on ``X`` (``y`` is ignored).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored.

        Returns
        -------
        self : SAELensSAE
            The fitted object.
        """
        X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        n_samples, n_features = X.shape
        common = dict(d_in=n_features, d_sae=self.n_components, dtype="float32", device="cpu")
        torch.manual_seed(self.random_state)
        if self.b_dec_init not in ("zeros", "mean"):
            raise ValueError(f"b_dec_init must be 'zeros' or 'mean', got {self.b_dec_init!r}.")
        sae = self._training_sae(common)
        if self.b_dec_init == "mean":
            with torch.no_grad():
                sae.b_dec.copy_(X.mean(dim=0))
        self.b_dec_start_ = sae.b_dec.detach().numpy().copy()
        self.aux_losses_ = []
        if self.record_aux_loss and self.architecture_ in ("topk", "batchtopk"):
            calculate = sae.calculate_aux_loss

            def recording(*args, **kwargs):
                losses = calculate(*args, **kwargs)
                self.aux_losses_.append(float(losses["auxiliary_reconstruction_loss"].detach()))
                return losses

            sae.calculate_aux_loss = recording
        if self.batch_size is None:
            batch_size, n_steps = n_samples, self.steps

            def batches():
                while True:
                    yield X

        else:
            batch_size = self.batch_size
            steps_per_epoch = n_samples // batch_size
            n_steps = self.epochs * steps_per_epoch
            generator = torch.Generator().manual_seed(self.random_state)

            def batches():
                while True:
                    order = torch.randperm(n_samples, generator=generator)
                    for start in range(0, steps_per_epoch * batch_size, batch_size):
                        yield X[order[start : start + batch_size]]

        window = self.dead_feature_window
        if window == "epoch":
            # One epoch: one step in full batch (the library's window is one epoch of rows).
            window = 1 if self.batch_size is None else steps_per_epoch
        self.dead_feature_window_ = 1000 if window is None else int(window)
        trainer_cfg = SAETrainerConfig(
            total_training_samples=n_steps * batch_size,
            train_batch_size_samples=batch_size,
            lr=self.lr,
            lr_end=self.lr / 10,
            device="cpu",
            dead_feature_window=self.dead_feature_window_,
            logger=LoggingConfig(log_to_wandb=False),
        )
        trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches())
        start = time.perf_counter()
        # SAETrainer always draws a tqdm bar on stderr; keep the table readable.
        with contextlib.redirect_stderr(io.StringIO()):
            self.sae_ = trainer.fit()
        self.train_seconds_ = time.perf_counter() - start
        self.sae_.eval()
        self.components_ = self.sae_.W_dec.detach().numpy().copy()
        self.inference_sae_ = self.sae_
        if self.architecture_ in ("batchtopk", "matryoshka_batchtopk"):
            # Training keeps the top k*batch of a batch; the saved SAE that SAELens loads
            # for inference thresholds each row at the learned global threshold.
            with tempfile.TemporaryDirectory() as folder:
                self.sae_.save_inference_model(folder)
                self.inference_sae_ = SAE.load_from_disk(folder).eval()
        return self

    def save(self, folder):
        """Save with SAELens's own ``save_model`` (``cfg.json`` +
        ``sae_weights.safetensors``, the training SAE's checkpoint)."""
        self.sae_.save_model(str(folder))
        return folder

    def transform(self, X):
        """Latent activations ``sae_.encode(X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
            Latent activations.
        """
        with torch.no_grad():
            codes = self.inference_sae_.encode(torch.as_tensor(np.asarray(X), dtype=torch.float32))
        return codes.numpy()

    def inverse_transform(self, codes):
        """Reconstructions ``sae_.decode(codes)``.

        Parameters
        ----------
        codes : array-like of shape (n_samples, n_components)
            Latent activations.

        Returns
        -------
        X_hat : ndarray of shape (n_samples, n_features)
            Reconstructions.
        """
        with torch.no_grad():
            codes = torch.as_tensor(np.asarray(codes), dtype=torch.float32)
            return self.inference_sae_.decode(codes).numpy()
