"""Offline text corpora and their tokenisation into model batches."""

import hashlib
import importlib
import inspect
import pkgutil
import sys
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

# Standard-library packages whose docstrings join the pydoc topics in the offline corpus
# (stdlib only, so the corpus is the same wherever this Python version runs).
CORPUS_PACKAGES = ("json", "email", "collections", "http", "asyncio", "unittest", "typing",
                   "argparse", "logging", "pathlib", "itertools", "functools", "csv")


def pydoc_topics():
    """The standard library's help topics (``pydoc_data``): English text, always offline.

    Returns
    -------
    texts : list of str
        About 90 documents of Python reference prose (about a megabyte), sorted by topic
        name.

    Examples
    --------
    >>> from sklearn_sparsegap.activations import pydoc_topics
    >>> texts = pydoc_topics()
    >>> len(texts) > 50 and all(isinstance(text, str) for text in texts)
    True
    """
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def package_docstrings(packages, *, min_length=200):
    """The docstrings of installed packages' modules, classes and functions.

    Parameters
    ----------
    packages : iterable of str
        Importable package names, e.g. ``["numpy", "sklearn"]``. Their submodules are
        imported; a submodule that fails to import is skipped.
    min_length : int, default=200
        Docstrings shorter than this many characters are left out.

    Returns
    -------
    texts : list of str
        One docstring per object, each once, in import order.

    Examples
    --------
    >>> from sklearn_sparsegap.activations import package_docstrings
    >>> texts = package_docstrings(["json"])
    >>> len(texts) > 3 and min(map(len, texts)) >= 200
    True
    """
    if isinstance(packages, str):
        raise ValueError(f"packages must be a list of package names, got the string {packages!r}.")
    if not isinstance(min_length, Integral) or min_length < 0:
        raise ValueError(f"min_length must be a non-negative integer, got {min_length!r}.")
    texts, seen = [], set()

    def collect(obj):
        doc = inspect.getdoc(obj)
        if doc and len(doc) >= min_length and doc not in seen:
            seen.add(doc)
            texts.append(doc)

    for name in packages:
        try:
            package = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"packages: cannot import {name!r} ({exc}).") from exc
        modules = [package]
        if hasattr(package, "__path__"):
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
                if any(part.startswith("_") or part == "tests" for part in info.name.split(".")[1:]):
                    continue
                try:
                    modules.append(importlib.import_module(info.name))
                except Exception:  # noqa: BLE001 - optional dependencies, platform modules
                    continue
        for module in modules:
            collect(module)
            for _, obj in inspect.getmembers(module):
                if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(
                    obj, "__module__", ""
                ) == module.__name__:
                    collect(obj)
    return texts


def read_text_files(paths, *, encoding="utf-8"):
    """The contents of text files, one document per file.

    Parameters
    ----------
    paths : iterable of str or pathlib.Path
        Files to read.
    encoding : str, default="utf-8"
        Their encoding.

    Returns
    -------
    texts : list of str
        One document per file, in the order given.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sklearn_sparsegap.activations import read_text_files
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     file = pathlib.Path(folder) / "a.txt"
    ...     _ = file.write_text("Hello.")
    ...     read_text_files([file])
    ['Hello.']
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    texts = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"paths: {str(path)!r} is not a file.")
        texts.append(Path(path).read_text(encoding=encoding))
    return texts


def _special_affixes(tokenizer):
    """The token ids the tokenizer adds before and after a text (e.g. BOS, EOS)."""
    plain = tokenizer("x y z", add_special_tokens=False)["input_ids"]
    full = tokenizer("x y z")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def text_batches(texts, tokenizer, *, batch_size=8, max_length=128):
    """Tokenise texts into padded batches of fixed-length contexts.

    Each text is tokenised whole and cut into consecutive windows of at most
    ``max_length`` tokens, each with the tokenizer's special tokens (a Llama tokenizer's
    BOS, a BERT tokenizer's CLS/SEP) around it, so no text is truncated away. Windows are
    right-padded into batches.

    Parameters
    ----------
    texts : iterable of str
        The documents (e.g. :func:`pydoc_topics`). Consumed lazily.
    tokenizer : transformers.PreTrainedTokenizerBase
        Any Hugging Face tokenizer (a callable returning ``input_ids``).
    batch_size : int, default=8
        Windows per batch.
    max_length : int, default=128
        Tokens per window, special tokens included.

    Yields
    ------
    batch : dict of torch.Tensor
        ``input_ids`` and ``attention_mask`` of shape ``(batch, seq)``, the
        ``special_tokens_mask``, and ``document``: the index of each window's text.

    Examples
    --------
    >>> from sklearn_sparsegap.activations import text_batches
    >>> def tokenizer(text, add_special_tokens=True):  # a toy character tokenizer
    ...     return {"input_ids": [ord(c) for c in text]}
    >>> batches = list(text_batches(["abcde", "fg"], tokenizer, batch_size=2, max_length=3))
    >>> batches[0]["input_ids"].tolist(), batches[0]["attention_mask"].tolist()
    ([[97, 98, 99], [100, 101, 0]], [[1, 1, 1], [1, 1, 0]])
    >>> batches[0]["document"].tolist(), batches[1]["document"].tolist()
    ([0, 0], [1])
    """
    for name, value, low in (("batch_size", batch_size, 1), ("max_length", max_length, 1)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of strings, got a single string.")
    prefix, suffix = _special_affixes(tokenizer)
    body = max_length - len(prefix) - len(suffix)
    if body < 1:
        raise ValueError(
            f"max_length={max_length} leaves no room for text beside the tokenizer's "
            f"{len(prefix) + len(suffix)} special tokens."
        )
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = 0 if pad is None else pad
    pending = []

    def emit(windows):
        width = max(len(ids) for ids, _, _ in windows)
        input_ids = torch.full((len(windows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(windows), width), dtype=torch.long)
        special = torch.ones((len(windows), width), dtype=torch.long)
        for row, (ids, n_special_left, document) in enumerate(windows):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            special[row, n_special_left : len(ids) - len(suffix)] = 0
        documents = torch.tensor([document for _, _, document in windows])
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "special_tokens_mask": special,
            "document": documents,
        }

    for document, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts: document {document} is a {type(text).__name__}, not a str.")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), body):
            pending.append((prefix + list(ids[start : start + body]) + suffix, len(prefix), document))
            if len(pending) == batch_size:
                yield emit(pending)
                pending = []
    if pending:
        yield emit(pending)


def offline_corpus(random_state=0):
    """The default text: pydoc topics and standard-library docstrings, shuffled by document.

    Shuffling mixes the alphabetically sorted topics, so a prefix of the corpus (what
    ``--tokens`` takes) is not one corner of the reference manual.

    Parameters
    ----------
    random_state : int, default=0
        Seed of the document order.

    Returns
    -------
    texts : list of str
        The documents.

    Examples
    --------
    >>> from sklearn_sparsegap.activations._corpora import offline_corpus
    >>> texts = offline_corpus()
    >>> len(texts) > 100 and texts == offline_corpus()
    True
    """
    texts = pydoc_topics() + package_docstrings(CORPUS_PACKAGES)
    order = np.random.default_rng(random_state).permutation(len(texts))
    return [texts[i] for i in order]


def corpus_texts(text_files=None):
    """``(texts, corpus key)``: the user's files, or the offline corpus."""
    if text_files:
        texts = read_text_files(text_files)
        digest = hashlib.sha1("\0".join(texts).encode()).hexdigest()[:12]
        return texts, f"files-{digest}"
    return offline_corpus(), f"offline-v1-py{sys.version_info[0]}.{sys.version_info[1]}"
