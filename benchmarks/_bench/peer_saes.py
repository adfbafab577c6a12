"""sparsify's and dictionary_learning's own trainers behind ``fit`` / ``transform`` /
``inverse_transform``, for the side-by-side benchmarks (SAELens's are in
``_bench/saelens.py``).

Imports the peers lazily (``pip install -e ".[benchmark]"``); only benchmarks import this
module. Written against sparsify 1.3 and dictionary_learning 0.1 (the versions of the
benchmark extra). Each class trains with the peer's own trainer object, on minibatches of
rows reshuffled every epoch (:func:`shuffled_batches`, the last incomplete batch dropped),
at the peer's defaults except what its constructor names: those defaults are what
``None`` means.
"""

import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# sparsify's Triton decoder needs a GPU; set before sparsify is imported.
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")


def shuffled_batches(X, batch_size, epochs, seed):
    """Yield ``epochs`` passes over the rows of the tensor ``X`` in batches of
    ``batch_size`` rows, each pass in a new order drawn from a generator seeded with
    ``seed``; a pass's last incomplete batch is dropped."""
    n = X.shape[0]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, (n // batch_size) * batch_size, batch_size):
            yield X[order[start : start + batch_size]]


def _quiet(show):
    """The peers' progress bars and warnings (stderr, stdout) hidden unless ``show``."""
    if show:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


class _Replay(torch.nn.Module):
    """One 'layer' whose output is the stored activation of each input id (a row
    index): sparsify's trainer hooks a model's module, and this one replays rows."""

    def __init__(self, X):
        super().__init__()
        self.register_buffer("rows", X, persistent=False)

    def forward(self, ids):
        return self.rows[ids.clamp(min=0)]  # -1: padding or a row left out (excluded)


class _ReplayTarget(torch.nn.Module):
    """A second 'layer' mapping the replayed input rows to the stored target rows of the
    same ids (a transcoder's hookpoint: its input is X, its output Y)."""

    def __init__(self, Y):
        super().__init__()
        self.register_buffer("rows", Y, persistent=False)
        self.ids = None

    def forward(self, x):
        return self.rows[self.ids.clamp(min=0)]


class _ReplayModel(torch.nn.Module):
    """The attributes sparsify's ``Trainer`` reads from a Hugging Face model, no more;
    with ``Y`` a second layer whose input is the row of X and output the row of Y."""

    def __init__(self, X, Y=None):
        super().__init__()
        layers = [_Replay(X)] + ([] if Y is None else [_ReplayTarget(Y)])
        self.layers = torch.nn.ModuleList(layers)
        self.config = type("Config", (), {"num_hidden_layers": len(layers)})()
        self.dummy_inputs = {"input_ids": torch.zeros(1, 4, dtype=torch.long)}

    @property
    def base_model(self):
        return self

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids=None, **kwargs):
        output = self.layers[0](input_ids)
        if len(self.layers) > 1:
            self.layers[1].ids = input_ids
            output = self.layers[1](output)
        return output


class SparsifySAE:
    """sparsify's TopK SAE trained by its ``Trainer``.

    Parameters
    ----------
    n_components : int
        ``num_latents``.
    k : int, default=32
        Latents kept per row.
    batch_size : int, default=4096
        Rows per step: ``batch_size // sequence_length`` "sequences" of
        ``sequence_length`` rows each (sparsify's default, 32 sequences, is 4,096 tokens
        of 128-token sequences). The rows of a sequence are drawn at random, so a step
        sees shuffled tokens rather than whole documents.
    sequence_length : int, default=128
        Rows per sequence.
    epochs : int, default=1
        Passes over the rows.
    lr : float or None, default=None
        None: sparsify's choice for the width (``2e-4 / sqrt(num_latents / 2**14)``).
    lr_warmup_steps : int or None, default=None
        None: sparsify's 1,000 steps of linear warm-up.
    auxk_alpha : float or None, default=None
        None: sparsify's 0 (no AuxK).
    dead_feature_threshold : int or None, default=None
        Rows without firing after which a latent is dead (AuxK trains it); None:
        sparsify's 10^7.
    random_state : int, default=0
        ``init_seeds`` and the order of the rows.
    verbose : bool, default=False
        Show sparsify's own output.

    Attributes
    ----------
    sae_ : sparsify.SparseCoder
    train_seconds_ : float
        Wall time of ``Trainer.fit``.
    lr_ : float
        The learning rate used.
    n_steps_ : int
        Optimiser steps.
    rows_seen_ : int
    settings_ : dict
        Every setting, for the record.
    """

    def __init__(self, n_components, *, k=32, batch_size=4096, sequence_length=128,
                 epochs=1, lr=None, lr_warmup_steps=None, auxk_alpha=None,
                 dead_feature_threshold=None, random_state=0, verbose=False):  # fmt: skip
        self.n_components = n_components
        self.k = k
        self.batch_size = batch_size
        self.sequence_length = sequence_length
        self.epochs = epochs
        self.lr = lr
        self.lr_warmup_steps = lr_warmup_steps
        self.auxk_alpha = auxk_alpha
        self.dead_feature_threshold = dead_feature_threshold
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None, sequences=None):
        """Train on the rows of ``X`` (with ``y``, a transcoder of ``X`` into ``y``:
        sparsify's ``transcode=True``).

        ``sequences`` (optional, an int array of shape (n_sequences, sequence_length)):
        the model's own sequences as row indices, -1 marking padding and rows left out
        (sparsify's ``exclude_tokens``); each epoch feeds them in a new order. Without
        it every epoch cuts a new permutation of the rows into sequences.
        """
        from sparsify import SaeConfig, TrainConfig, Trainer

        # a writable float32 array (a copy only when X is read-only, e.g. a memmap)
        X = torch.from_numpy(np.require(X, dtype=np.float32, requirements="W"))
        Y = None if y is None else torch.from_numpy(
            np.require(y, dtype=np.float32, requirements="W"))  # fmt: skip
        hookpoint = "layers.0" if Y is None else "layers.1"
        rng = np.random.default_rng(self.random_state)
        if sequences is None:
            length = self.sequence_length
            usable = (X.shape[0] // length) * length
            sequences = np.concatenate([
                rng.permutation(X.shape[0])[:usable].reshape(-1, length)
                for _ in range(self.epochs)
            ])  # fmt: skip
        else:
            sequences = np.asarray(sequences, dtype=np.int64)
            length = sequences.shape[1]
            # sparsify does not shuffle ("the dataset should be shuffled before")
            sequences = np.concatenate(
                [sequences[rng.permutation(len(sequences))] for _ in range(self.epochs)]
            )
        if self.batch_size % length:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of the sequence length "
                f"{length}."
            )
        dataset = [{"input_ids": torch.as_tensor(row)} for row in sequences]
        optional = {
            name: value
            for name, value in (("lr", self.lr), ("lr_warmup_steps", self.lr_warmup_steps),
                                ("auxk_alpha", self.auxk_alpha),
                                ("dead_feature_threshold", self.dead_feature_threshold))
            if value is not None
        }  # fmt: skip
        with tempfile.TemporaryDirectory() as scratch, _quiet(self.verbose):
            cfg = TrainConfig(
                SaeConfig(num_latents=self.n_components, k=self.k, transcode=Y is not None),
                batch_size=self.batch_size // length,
                hookpoints=[hookpoint],
                init_seeds=[self.random_state],
                log_to_wandb=False,
                save_dir=scratch,
                run_name="run",
                exclude_tokens=[-1],
                **optional,
            )
            trainer = Trainer(cfg, dataset, _ReplayModel(X, Y))
            start = time.perf_counter()
            trainer.fit()
            self.train_seconds_ = time.perf_counter() - start
        self.sae_ = trainer.saes[hookpoint].eval()
        self.lr_ = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.n_steps_ = int(trainer.global_step)
        self.rows_seen_ = int((sequences >= 0).sum())
        self.settings_ = {
            "trainer": "sparsify Trainer (TopK SparseCoder"
            + (", transcode=True)" if Y is not None else ")"),
            "batch_size": f"{cfg.batch_size} sequences of {length} shuffled rows",
            "optimizer": cfg.optimizer,
            "lr": self.lr_,
            "lr_warmup_steps": cfg.lr_warmup_steps,
            "auxk_alpha": cfg.auxk_alpha,
            "dead_feature_threshold": cfg.dead_feature_threshold,
            "loss": cfg.loss_fn,
        }
        return self

    def save(self, folder):
        """Save with sparsify's own ``save_to_disk`` (``cfg.json`` + ``sae.safetensors``,
        what its ``Trainer`` writes for each hookpoint)."""
        self.sae_.save_to_disk(folder)
        return Path(folder)

    def transform(self, X):
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
            out = self.sae_.encode(x)
            codes = torch.zeros(x.shape[0], self.n_components)
            codes.scatter_(1, out.top_indices, out.top_acts.float())
        return codes.numpy()

    def inverse_transform(self, codes):
        with torch.no_grad():
            codes = torch.as_tensor(np.asarray(codes), dtype=torch.float32)
            return (codes @ self.sae_.W_dec + self.sae_.b_dec).numpy()

    def predict(self, X):
        """A transcoder's output for ``X`` (the reconstruction of an SAE)."""
        return self.inverse_transform(self.transform(X))


# dictionary_learning's trainers: (module, trainer class, SAE class); the gated trainer's
# SAE takes no k.
_DL_TRAINERS = {
    "topk": ("top_k", "TopKTrainer", "AutoEncoderTopK"),
    "batchtopk": ("batch_top_k", "BatchTopKTrainer", "BatchTopKSAE"),
    "matryoshka_batchtopk": ("matryoshka_batch_top_k", "MatryoshkaBatchTopKTrainer",
                             "MatryoshkaBatchTopKSAE"),
    "gated": ("gdm", "GatedSAETrainer", None),
}  # fmt: skip


class DictionaryLearningSAE:
    """An SAE of dictionary_learning trained by its own trainer object, one ``update``
    per batch, as its ``trainSAE`` does.

    Parameters
    ----------
    n_components : int
        ``dict_size``.
    k : int, default=32
        Latents per row (the TopK families; unused by ``"gated"``).
    trainer : {"topk", "batchtopk", "matryoshka_batchtopk", "gated"}, default="topk"
        ``TopKTrainer`` (``AutoEncoderTopK``), ``BatchTopKTrainer``,
        ``MatryoshkaBatchTopKTrainer`` or ``GatedSAETrainer`` (``trainers/gdm.py``).
    batch_size : int, default=8192
        Rows per step (``ActivationBuffer``'s default ``out_batch_size``).
    epochs : int, default=1
    lr : float or None, default=None
        None: the trainer's default (TopK families: ``2e-4 / sqrt(dict_size / 2**14)``;
        gated: 5e-5).
    warmup_steps : int or None, default=None
        None: its 1,000 steps (the trainer refuses a run of fewer steps than that).
    dead_feature_threshold : int or None, default=None
        Rows without firing after which a latent is dead (AuxK trains it); None: the
        TopK trainers' 10^7 (an attribute they set, not a constructor argument).
    trainer_options : dict, default=None
        More constructor arguments of the trainer: ``group_fractions`` (Matryoshka),
        ``l1_penalty`` and ``sparsity_warmup_steps`` (gated), ``threshold_start_step``
        (BatchTopK families), ...
    random_state : int, default=0
        ``seed`` and the order of the rows.
    verbose : bool, default=False

    ``transform`` is the SAE's own ``encode`` at inference (the BatchTopK families keep
    what exceeds their learned threshold).
    """

    def __init__(self, n_components, *, k=32, trainer="topk", batch_size=8192, epochs=1,
                 lr=None, warmup_steps=None, dead_feature_threshold=None,
                 trainer_options=None, random_state=0, verbose=False):  # fmt: skip
        self.n_components = n_components
        self.k = k
        self.trainer = trainer
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.dead_feature_threshold = dead_feature_threshold
        self.trainer_options = trainer_options
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        import importlib

        if self.trainer not in _DL_TRAINERS:
            raise ValueError(f"trainer must be one of {sorted(_DL_TRAINERS)}, got {self.trainer!r}.")
        module_name, trainer_name, sae_name = _DL_TRAINERS[self.trainer]
        module = importlib.import_module(f"dictionary_learning.trainers.{module_name}")
        # a writable float32 array (a copy only when X is read-only, e.g. a memmap)
        X = torch.from_numpy(np.require(X, dtype=np.float32, requirements="W"))
        steps = self.epochs * (X.shape[0] // self.batch_size)
        options = {
            name: value
            for name, value in (("lr", self.lr), ("warmup_steps", self.warmup_steps))
            if value is not None
        }
        if sae_name is not None:
            options.update(k=self.k, dict_class=getattr(module, sae_name))
        options.update(self.trainer_options or {})
        with _quiet(self.verbose):
            trainer = getattr(module, trainer_name)(
                steps=steps, activation_dim=X.shape[1], dict_size=self.n_components, layer=0,
                lm_name="replayed activations", seed=self.random_state, device="cpu",
                **options,
            )  # fmt: skip
            if self.dead_feature_threshold is not None:
                trainer.dead_feature_threshold = int(self.dead_feature_threshold)
            start = time.perf_counter()
            for step, batch in enumerate(
                shuffled_batches(X, self.batch_size, self.epochs, self.random_state)
            ):
                trainer.update(step, batch)
            self.train_seconds_ = time.perf_counter() - start
        self.ae_ = trainer.ae.eval()
        self.config_ = trainer.config
        self.lr_ = float(trainer.lr)
        self.n_steps_ = steps
        self.rows_seen_ = steps * self.batch_size
        self.settings_ = {
            "trainer": f"dictionary_learning {trainer_name} ({type(trainer.ae).__name__})",
            "batch_size": self.batch_size,
            "optimizer": "Adam",
            "lr": self.lr_,
            "warmup_steps": trainer.warmup_steps,
            **{name: _plain(getattr(trainer, name)) for name in (
                "auxk_alpha", "dead_feature_threshold", "threshold_start_step", "l1_penalty",
                "sparsity_warmup_steps") if hasattr(trainer, name)},
            **{name: _plain(value) for name, value in (self.trainer_options or {}).items()},
        }  # fmt: skip
        return self

    def save(self, folder):
        """Save as its ``trainSAE`` does: ``ae.pt`` (the state dict) and ``config.json``
        (``{"trainer": trainer.config}``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.ae_.state_dict().items()}, folder / "ae.pt")
        (folder / "config.json").write_text(json.dumps({"trainer": self.config_}, indent=4))
        return folder

    def transform(self, X):
        with torch.no_grad():
            return self.ae_.encode(torch.as_tensor(np.asarray(X), dtype=torch.float32)).numpy()

    def inverse_transform(self, codes):
        with torch.no_grad():
            return self.ae_.decode(torch.as_tensor(np.asarray(codes), dtype=torch.float32)).numpy()


def _plain(value):
    """A setting as JSON holds it."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return value if isinstance(value, (int, float, str, bool, list, type(None))) else str(value)
