"""SAELens's own SAEs on our data, the reference of the SAELens benchmarks.

Imports ``sae_lens`` (optional, ``pip install -e ".[benchmark]"``), so only benchmarks
import this module; the library never does. Written against sae-lens 6.54.

Settings are SAELens defaults except those the benchmark fixes or the API requires:
the learning rate, full-batch steps or epochs of minibatches, float32 on CPU, no wandb
/ checkpoints, ``lr_end=lr/10`` (required by ``SAETrainer``; what
``LanguageModelSAERunnerConfig`` would set; unused by the constant schedule) and
``torch.manual_seed(random_state)`` for the weight init (the runner would seed 42).
Used by bench_encoders.py (full batch, synthetic data), bench_saelens.py and
activations_saelens.py (minibatches of real activations).
"""

import contextlib
import io
import time

import numpy as np
import torch

# torch.optim's first optimiser of a process imports torch._dynamo (about 2 s): import it
# with SAELens, so that a benchmark importing this module before any timing charges it
# to neither library's fit, whichever fits first.
import torch._dynamo  # noqa: F401
from sae_lens import (
    SAETrainer,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.config import LoggingConfig, SAETrainerConfig


class SAELensSAE:
    """Train a SAELens training SAE with ``SAETrainer``, behind ``fit``/``transform``.

    Parameters
    ----------
    n_components : int, default=16
        Number of latents (``d_sae``).
    k : int or None, default=None
        None trains ``StandardTrainingSAE`` (ReLU, L1 penalty scaled by decoder
        norms); an int trains ``TopKTrainingSAE`` with this ``k``.
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

    Attributes
    ----------
    sae_ : StandardTrainingSAE or TopKTrainingSAE
        The trained SAE.
    components_ : ndarray of shape (n_components, n_features)
        Decoder ``W_dec``, one atom per row.
    train_seconds_ : float
        Wall time of ``SAETrainer.fit`` alone (the model built and the rows converted
        before it).
    """

    def __init__(self, n_components=16, *, k=None, l1_coefficient=1.0, batch_size=None,
                 steps=3000, epochs=1, lr=1e-3, random_state=0):  # fmt: skip
        self.n_components = n_components
        self.k = k
        self.l1_coefficient = l1_coefficient
        self.batch_size = batch_size
        self.steps = steps
        self.epochs = epochs
        self.lr = lr
        self.random_state = random_state

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
        if self.k is None:
            config = StandardTrainingSAEConfig(l1_coefficient=self.l1_coefficient, **common)
            sae = StandardTrainingSAE(config)
        else:
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(k=self.k, **common))
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

        trainer_cfg = SAETrainerConfig(
            total_training_samples=n_steps * batch_size,
            train_batch_size_samples=batch_size,
            lr=self.lr,
            lr_end=self.lr / 10,
            device="cpu",
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
        return self

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
            codes = self.sae_.encode(torch.as_tensor(np.asarray(X), dtype=torch.float32))
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
            return self.sae_.decode(torch.as_tensor(np.asarray(codes), dtype=torch.float32)).numpy()
