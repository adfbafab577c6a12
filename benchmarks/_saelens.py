"""SAELens's own SAEs on our data, as a reference for bench_encoders.py.

Imports ``sae_lens`` (optional, ``pip install -e ".[benchmark]"``), so only benchmarks
import this module; the library never does. Written against sae-lens 6.54.

Settings are SAELens defaults except those the task fixes or the API requires:
``lr=1e-3``, ``steps`` full-batch steps (batch = the whole training set), float32 on CPU,
no wandb / checkpoints, ``lr_end=lr/10`` (required by ``SAETrainer``; what
``LanguageModelSAERunnerConfig`` would set; unused by the constant schedule) and
``torch.manual_seed(random_state)`` for the weight init (the runner would seed 42).
"""

import contextlib
import io

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
        None trains ``StandardTrainingSAE`` (ReLU, L1 coefficient 1.0 scaled by decoder
        norms); an int trains ``TopKTrainingSAE`` with this ``k``.
    steps : int, default=3000
        Full-batch training steps.
    lr : float, default=1e-3
        Adam learning rate.
    random_state : int, default=0
        Seed of torch's global generator before the weight init.

    Attributes
    ----------
    sae_ : StandardTrainingSAE or TopKTrainingSAE
        The trained SAE.
    components_ : ndarray of shape (n_components, n_features)
        Decoder ``W_dec``, one atom per row.
    """

    def __init__(self, n_components=16, *, k=None, steps=3000, lr=1e-3, random_state=0):
        self.n_components = n_components
        self.k = k
        self.steps = steps
        self.lr = lr
        self.random_state = random_state

    def fit(self, X, y=None):
        """Train on ``X`` for ``steps`` full-batch steps (``y`` is ignored).

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
            sae = StandardTrainingSAE(StandardTrainingSAEConfig(**common))
        else:
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(k=self.k, **common))
        trainer_cfg = SAETrainerConfig(
            total_training_samples=self.steps * n_samples,
            train_batch_size_samples=n_samples,
            lr=self.lr,
            lr_end=self.lr / 10,
            device="cpu",
            logger=LoggingConfig(log_to_wandb=False),
        )

        def full_batch():
            while True:
                yield X

        trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=full_batch())
        # SAETrainer always draws a tqdm bar on stderr; keep the table readable.
        with contextlib.redirect_stderr(io.StringIO()):
            self.sae_ = trainer.fit()
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
