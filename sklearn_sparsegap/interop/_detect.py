"""Which format a checkpoint folder holds, decided by the files present."""

from pathlib import Path

from . import _dictionary_learning, _saelens, _sparsify

FORMATS = {
    "saelens": _saelens,
    "sparsify": _sparsify,
    "dictionary_learning": _dictionary_learning,
}
# The files that identify each format (its config file is checked when read).
_MARKERS = {
    "saelens": _saelens.WEIGHTS_FILE,
    "sparsify": _sparsify.WEIGHTS_FILE,
    "dictionary_learning": _dictionary_learning.WEIGHTS_FILE,
}
_PICKLES = ("*.pt", "*.pth", "*.bin", "*.pkl", "*.ckpt")


def checkpoint_folder(path):
    """The folder of a checkpoint given as the folder or one of its files."""
    path = Path(path)
    if path.is_file():
        return path.parent
    if not path.exists():
        raise ValueError(f"path {str(path)!r} does not exist.")
    return path


def detect_format(folder):
    """``"saelens"``, ``"sparsify"`` or ``"dictionary_learning"`` for ``folder``."""
    found = [name for name, marker in _MARKERS.items() if (folder / marker).is_file()]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(
            f"{folder} holds files of several formats ({found}); pass format= to choose."
        )
    nested = sorted(
        child.name
        for child in folder.iterdir()
        if child.is_dir() and any((child / marker).is_file() for marker in _MARKERS.values())
    ) if folder.is_dir() else []
    if nested:
        raise ValueError(
            f"{folder} holds one checkpoint per hookpoint, not a checkpoint: load one of "
            f"its sub-folders, e.g. {str(folder / nested[0])!r} (found: {nested[:10]})."
        )
    pickles = sorted(p.name for pattern in _PICKLES for p in folder.glob(pattern))
    if pickles:
        raise ValueError(
            f"{folder} has pickle checkpoint(s) {pickles} but no safetensors weights "
            f"({_saelens.WEIGHTS_FILE} for SAELens, {_sparsify.WEIGHTS_FILE} for "
            "sparsify) and no dictionary_learning ae.pt: pickle files are never loaded; "
            "convert them to safetensors with the library that wrote them."
        )
    present = sorted(p.name for p in folder.iterdir())[:20] if folder.is_dir() else []
    raise ValueError(
        f"{folder} is not a known SAE checkpoint: expected cfg.json + "
        f"{_saelens.WEIGHTS_FILE} (SAELens), cfg.json + {_sparsify.WEIGHTS_FILE} "
        f"(sparsify) or config.json + ae.pt (dictionary_learning); found {present}."
    )
