"""Paths as the records and the docs write them: never one machine's directories.

A record names its data by placeholder: ``DATA_DIR/<name>`` for a data set outside the
repository (``DATA_DIR`` is wherever the reader keeps activation sets: the folder that
``sparsegap activations`` or ``extract_activations`` wrote to), a path relative to the
repository root for a file inside it, and only the part after ``site-packages/`` for a
library that a thread pool was loaded from.
"""

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = "DATA_DIR"


def recorded_path(path):
    """``path`` as a record may name it: relative to the repository root when inside it,
    else ``DATA_DIR/<its last component>``."""
    path = Path(path).expanduser().resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return f"{DATA_DIR}/{path.name}"


def recorded_threadpools(pools):
    """``threadpoolctl.threadpool_info()`` with each library's ``filepath`` cut to the part
    after ``site-packages/`` (which package it came from, not where it was installed)."""
    return [
        {**pool, "filepath": pool["filepath"].rpartition("site-packages/")[2]}
        if "filepath" in pool else pool
        for pool in pools
    ]


def scratch(name):
    """A scratch file ``name`` in the system's temporary directory."""
    return Path(tempfile.gettempdir()) / name
