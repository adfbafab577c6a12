"""The on-disk activation set: append-only binary files and an atomically written manifest.

Layout of an activation set directory (format version 1)::

    manifest.json     settings, shapes, dtypes, the committed shards (see below)
    activations.bin   (n_rows, n_features) C-ordered rows of the stored dtype
    document.bin      int64, one per row: index of the source document (text)
    sequence.bin      int64, one per row: index of the input sequence (batch row)
    position.bin      int64, one per row: position of the token in its sequence
    token.bin         int64, one per row: token id

Every file grows by appending one *shard* (a block of rows) at a time. A shard is
committed by (1) writing its rows to every file, (2) ``fsync``, (3) replacing
``manifest.json`` with a version that lists the shard (written to a temporary file,
``fsync``-ed and renamed over the old one, so the manifest is always either the old or
the new version, never half written). The manifest's ``n_rows`` is therefore the number of
rows known to be complete; bytes past it are the remains of a shard interrupted by a crash
and are cut off when the set is reopened for writing. Each committed shard records its
row range and a CRC-32 of its bytes in every file.

One file per array (rather than one file per shard) lets :func:`load_activations` return a
single read-only ``numpy.memmap`` over all rows with no consolidation step and no second
copy on disk.
"""

import json
import os
import uuid
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

FORMAT = "sklearn-sparsegap-activations"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA_FIELDS = ("document", "sequence", "position", "token")
ACTIVATIONS_FILE = "activations.bin"

# numpy has no bfloat16: its rows are stored as their raw 16-bit patterns.
# Rows per chunk of an activation set opened as a dask array when none is given: ~64 MB
# of float32 at 256 features, enough work per task to hide the scheduler's overhead.
DEFAULT_CHUNK_ROWS = 65536
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def _file_name(field):
    return ACTIVATIONS_FILE if field == "activations" else f"{field}.bin"


def read_manifest(path):
    """The manifest of the activation set at ``path`` (a dict), or ``None`` if it has none."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"path={str(path)!r}: cannot read {MANIFEST}: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ValueError(f"path={str(path)!r} is not a {FORMAT} directory.")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"path={str(path)!r} has format version {manifest.get('format_version')}, "
            f"this version of the library reads version {FORMAT_VERSION}."
        )
    return manifest


def write_manifest(path, manifest):
    """Replace the manifest atomically: a reader sees the old or the new one, never a mix."""
    final = Path(path) / MANIFEST
    temporary = final.with_suffix(".json.tmp")
    with open(temporary, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    # Make the rename itself durable.
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _row_bytes(manifest, field):
    if field == "activations":
        return manifest["n_features"] * np.dtype(STORAGE_DTYPES[manifest["settings"]["dtype"]]).itemsize
    return np.dtype(np.int64).itemsize


class ActivationWriter:
    """Appends rows to an activation set, one committed shard at a time.

    Opening an existing set checks its settings against ``settings`` (refusing a
    mismatch) and cuts every file back to the committed rows.

    A full shard is written, checksummed, ``fsync``-ed and recorded in the manifest by
    one background thread while the caller fills the next one (two shard buffers, at
    most one shard in flight), so the model's forward pass does not wait for the disk.
    Shards are committed in order; an error of the writing thread is raised by the next
    ``append``, ``commit`` or ``finish``.
    """

    def __init__(self, path, settings, shard_size):
        self.path = Path(path)
        self.shard_size = shard_size
        manifest = read_manifest(self.path) if self.path.is_dir() else None
        if manifest is None:
            if self.path.exists() and not self.path.is_dir():
                raise ValueError(f"path={str(path)!r} exists and is not a directory.")
            if self.path.is_dir() and any(self.path.iterdir()):
                raise ValueError(
                    f"path={str(path)!r} is a non-empty directory without an activation "
                    f"set's {MANIFEST}; refusing to write into it."
                )
            self.path.mkdir(parents=True, exist_ok=True)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "settings": settings,
                "n_features": None,
                "n_rows": 0,
                "complete": False,
                "files": {field: _file_name(field) for field in ("activations", *METADATA_FIELDS)},
                "metadata_dtype": "int64",
                "shards": [],
            }
            for field in manifest["files"]:
                open(self.path / _file_name(field), "wb").close()
            write_manifest(self.path, manifest)
        elif manifest["settings"] != settings:
            differences = sorted(
                key
                for key in set(manifest["settings"]) | set(settings)
                if manifest["settings"].get(key) != settings.get(key)
            )
            details = "; ".join(
                f"{key}: stored {manifest['settings'].get(key)!r}, requested {settings.get(key)!r}"
                for key in differences
            )
            raise ValueError(
                f"path={str(path)!r} holds activations extracted with different settings "
                f"({details}); refusing to overwrite it. Use another path or delete it."
            )
        self.manifest = manifest
        if manifest["n_features"] is not None:
            self._truncate_to_committed()
        self._handles = None
        self._buffers = None
        self._buffer = None
        self._metadata_buffer = None
        self._n_buffered = 0
        # Rows handed to the writing thread (committed or in flight); only the caller's
        # thread changes it, so n_rows never counts a shard twice or not at all.
        self._n_submitted = manifest["n_rows"]
        self._executor = None
        self._pending = None

    @property
    def n_committed(self):
        """Rows safely on disk."""
        return self.manifest["n_rows"]

    @property
    def n_rows(self):
        """Rows on disk or being written, plus rows buffered for the next shard."""
        return self._n_submitted + self._n_buffered

    def _truncate_to_committed(self):
        for field in ("activations", *METADATA_FIELDS):
            file_path = self.path / _file_name(field)
            expected = self.manifest["n_rows"] * _row_bytes(self.manifest, field)
            size = file_path.stat().st_size if file_path.exists() else -1
            if size < expected:
                raise ValueError(
                    f"path={str(self.path)!r}: {file_path.name} holds {max(size, 0)} bytes but "
                    f"the manifest commits {expected}; the set is damaged. Delete it and "
                    "extract again."
                )
            if size > expected:  # the remains of a shard interrupted by a crash: redo it
                os.truncate(file_path, expected)

    def committed_tokens(self):
        """The committed token ids (a read-only memmap), to check a resumed stream."""
        if self.manifest["n_rows"] == 0:
            return np.empty(0, dtype=np.int64)
        return np.memmap(
            self.path / _file_name("token"), dtype=np.int64, mode="r", shape=(self.n_committed,)
        )

    def _open(self, n_features):
        if self.manifest["n_features"] is None:
            self.manifest["n_features"] = int(n_features)
        elif self.manifest["n_features"] != n_features:
            raise ValueError(
                f"path={str(self.path)!r} stores {self.manifest['n_features']} features per "
                f"row but the module now produces {n_features}."
            )
        storage = STORAGE_DTYPES[self.manifest["settings"]["dtype"]]
        # Two buffers: one filled by the caller, one being written by the thread.
        self._buffers = [
            (np.empty((self.shard_size, n_features), dtype=storage),
             np.empty((len(METADATA_FIELDS), self.shard_size), dtype=np.int64))
            for _ in range(2)
        ]  # fmt: skip
        self._buffer, self._metadata_buffer = self._buffers[0]
        self._handles = {
            field: open(self.path / _file_name(field), "ab")
            for field in ("activations", *METADATA_FIELDS)
        }

    def append(self, rows, metadata):
        """Buffer ``rows`` (storage dtype) and their metadata; commit every full shard."""
        if self._handles is None:
            self._open(rows.shape[1])
        start = 0
        while start < rows.shape[0]:
            take = min(self.shard_size - self._n_buffered, rows.shape[0] - start)
            end = self._n_buffered + take
            self._buffer[self._n_buffered : end] = rows[start : start + take]
            self._metadata_buffer[:, self._n_buffered : end] = metadata[:, start : start + take]
            self._n_buffered = end
            start += take
            if self._n_buffered == self.shard_size:
                self._submit()

    def _submit(self):
        """Hand the buffered rows to the writing thread and switch to the other buffer."""
        self._wait()
        if not self._n_buffered:
            return
        n = self._n_buffered
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="activation-writer")
        self._pending = self._executor.submit(
            self._write_shard, self._buffer, self._metadata_buffer, n
        )
        self._n_submitted += n
        self._n_buffered = 0
        self._buffers.reverse()
        self._buffer, self._metadata_buffer = self._buffers[0]

    def _wait(self):
        """Wait for the shard in flight; re-raise the writing thread's error.

        After an error, the rows not committed (that shard's and those buffered since)
        are dropped, as a re-run redoes them.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except BaseException:
            self._n_buffered = 0
            self._n_submitted = self.n_committed
            raise

    def commit(self):
        """Write the buffered rows as one shard, and return once every shard is committed."""
        self._submit()
        self._wait()

    def _write_shard(self, buffer, metadata_buffer, n):
        """Write ``n`` rows as one shard and record it in the manifest (writing thread)."""
        blocks = {"activations": buffer[:n]}
        blocks.update(
            (field, metadata_buffer[i, :n]) for i, field in enumerate(METADATA_FIELDS)
        )
        checksums = {}
        try:
            for field, block in blocks.items():
                data = memoryview(np.ascontiguousarray(block)).cast("B")
                checksums[field] = zlib.crc32(data)
                self._handles[field].write(data)
            for handle in self._handles.values():
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            self._abandon()
            raise OSError(
                exc.errno,
                f"writing shard {len(self.manifest['shards'])} of {str(self.path)!r} failed "
                f"({exc.strerror or exc}); the {self.n_committed} rows committed before it "
                "are intact. Free space and run the same extraction again to resume.",
            ) from exc
        shard = {
            "index": len(self.manifest["shards"]),
            "start": self.n_committed,
            "n_rows": n,
            "crc32": checksums,
            "complete": True,
        }
        self.manifest["shards"].append(shard)
        self.manifest["n_rows"] += n
        write_manifest(self.path, self.manifest)

    def _abandon(self):
        """Close the files and cut off any partly written shard (writing thread)."""
        self._close_files()
        try:
            self._truncate_to_committed()
        except OSError:  # the next open cuts it off instead
            pass

    def finish(self, *, complete, max_tokens_reached):
        """Commit the last partial shard and record how the run ended."""
        self.commit()
        self.manifest["complete"] = bool(complete)
        self.manifest["max_tokens_reached"] = bool(max_tokens_reached)
        write_manifest(self.path, self.manifest)
        self.close()

    def close(self):
        """Close the open files (buffered rows not committed are dropped).

        A shard already handed to the writing thread is finished first (its error, if
        any, is left to the caller's ``commit``: closing never raises it).
        """
        if self._pending is not None:
            self._pending.exception()  # waits; the shard is committed or abandoned
            self._pending = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._close_files()

    def _close_files(self):
        if self._handles is not None:
            for handle in self._handles.values():
                handle.close()
            self._handles = None


def _bfloat16_to_float32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def open_activation_set(path, *, dtype=None, verify=False, convert=True):
    """Open a set's committed rows: ``(X, metadata, manifest)``; see ``load_activations``.

    ``convert=False`` returns the stored rows as they are (bfloat16 as raw ``uint16``)
    and ignores ``dtype``: for readers that convert chunk by chunk themselves.
    """
    if not Path(path).is_dir():
        raise ValueError(f"path={str(path)!r} is not an activation set directory.")
    manifest = read_manifest(path)
    if manifest is None:
        raise ValueError(f"path={str(path)!r} has no {MANIFEST}: it is not an activation set.")
    n_rows, n_features = manifest["n_rows"], manifest["n_features"]
    if not n_rows:
        raise ValueError(f"path={str(path)!r} holds no committed activations yet.")
    if not manifest["complete"] and not manifest.get("max_tokens_reached"):
        warnings.warn(
            f"{str(path)!r} is an interrupted extraction: loading its {n_rows} committed "
            "rows. Run the same extraction again to resume it.",
            UserWarning,
            stacklevel=3,
        )
    stored = manifest["settings"]["dtype"]
    path = Path(path)
    files = {field: path / name for field, name in manifest["files"].items()}
    for field, file_path in files.items():
        needed = n_rows * _row_bytes(manifest, field)
        if not file_path.exists() or file_path.stat().st_size < needed:
            raise ValueError(
                f"path={str(path)!r}: {file_path.name} is shorter than its manifest says; "
                "the set is damaged."
            )
    X = np.memmap(
        files["activations"], dtype=STORAGE_DTYPES[stored], mode="r", shape=(n_rows, n_features)
    )
    metadata = {
        field: np.memmap(files[field], dtype=np.int64, mode="r", shape=(n_rows,))
        for field in METADATA_FIELDS
    }
    if verify:
        arrays = {"activations": X, **metadata}
        for shard in manifest["shards"]:
            rows = slice(shard["start"], shard["start"] + shard["n_rows"])
            for field, array in arrays.items():
                if zlib.crc32(memoryview(np.ascontiguousarray(array[rows])).cast("B")) != shard["crc32"][field]:
                    raise ValueError(
                        f"path={str(path)!r}: shard {shard['index']} of {field} fails its "
                        "CRC-32 check; the set is damaged."
                    )
    if not convert:
        return X, metadata, manifest
    if stored == "bfloat16":
        if dtype is None:
            raise ValueError(
                f"path={str(path)!r} stores bfloat16, which numpy cannot memory-map; pass "
                "dtype='float32' to read it into memory as float32."
            )
    if dtype is not None:
        target = np.dtype(dtype)
        if target.kind != "f":
            raise ValueError(f"dtype must be a floating dtype, got {dtype!r}.")
        if stored == "bfloat16":
            converted = np.empty((n_rows, n_features), dtype=target)
            step = max(1, (1 << 22) // max(1, n_features))
            for start in range(0, n_rows, step):
                converted[start : start + step] = _bfloat16_to_float32(X[start : start + step])
            converted.flags.writeable = False
            X = converted
        elif target != X.dtype:
            X = np.asarray(X, dtype=target)
            X.flags.writeable = False
    return X, metadata, manifest


class ActivationRows:
    """Rows of an on-disk activation set, read on demand: what ``da.from_array`` slices.

    It pickles as its path and shape, never its data, so every worker of a cluster opens
    the file itself (the path must be readable there) and reads only its chunks.
    """

    ndim = 2

    def __init__(self, path, shape, stored, dtype):
        self.path = str(path)
        self.shape = tuple(shape)
        self.stored = stored
        self.dtype = np.dtype(dtype)

    def __reduce__(self):
        return type(self), (self.path, self.shape, self.stored, self.dtype)

    def __getitem__(self, key):
        memmap = np.memmap(
            self.path, dtype=STORAGE_DTYPES[self.stored], mode="r", shape=self.shape
        )
        rows = memmap[key]
        if self.stored == "bfloat16":
            rows = _bfloat16_to_float32(rows)
        # A copy: the chunk must not keep the file mapped once it leaves the worker.
        return np.array(rows, dtype=self.dtype)


def activations_as_dask(path, manifest, *, dtype=None, chunk_rows=None):
    """An activation set's committed rows as a lazy dask array of row chunks."""
    import dask.array as da

    stored = manifest["settings"]["dtype"]
    shape = (manifest["n_rows"], manifest["n_features"])
    if dtype is None:
        # bfloat16 has no numpy dtype: its chunks are converted to float32.
        dtype = np.float32 if stored == "bfloat16" else np.dtype(stored)
    elif np.dtype(dtype).kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dtype!r}.")
    if chunk_rows is None:
        chunk_rows = DEFAULT_CHUNK_ROWS
    elif int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows!r}.")
    rows = ActivationRows(
        Path(path) / manifest["files"]["activations"], shape, stored, dtype
    )
    return da.from_array(
        rows, chunks=(int(chunk_rows), -1), asarray=False, fancy=False, inline_array=False,
        name=f"activations-{uuid.uuid4().hex}",
    )
