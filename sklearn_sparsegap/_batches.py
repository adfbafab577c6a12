"""Batch sources for the training loop: rows held in memory, or streamed from disk.

:func:`~sklearn_sparsegap._training.train` draws each epoch's minibatches from a source's
``batches(batch_size, generator=..., skip=..., device=...)``. :class:`DiskBatches`
reads a memory-mapped array (``np.memmap``, ``np.load(mmap_mode="r")``,
``load_activations``) in contiguous blocks with ``os.preadv``, so that the pages read do
not stay mapped into the process: memory is a few buffers whatever the number of rows.
Both sources take ``shard=(rank, world_size)``: each rank then sees its own contiguous
range of rows, and every rank makes the same number of batches per epoch.
"""

import math
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ._torch_utils import device_rows, numpy_dtype

__all__ = [
    "DiskBatches",
    "TensorBatches",
    "exceeds_device",
    "is_streamed",
    "iter_row_blocks",
    "read_rows",
    "shard_range",
]

# Bytes of one contiguous read, and of the buffer shuffled together (several blocks from
# random places in the file): 4 MB reads keep the disk sequential; a 64 MB buffer mixes
# rows of ~16 places, and two of them (one being read ahead) bound the memory.
BLOCK_BYTES = 2**22
BUFFER_BYTES = 2**26
# An on-disk array at most this large is simply read into memory (and trained on exactly
# as an in-memory array would be).
IN_MEMORY_BYTES = 2**26


def shard_range(n_samples, shard):
    """The rows ``[start, stop)`` of rank ``shard[0]`` of ``shard[1]`` (contiguous
    ranges whose sizes differ by at most one row); ``shard=None`` is every row."""
    if shard is None:
        return 0, n_samples
    rank, world_size = shard
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int)
            and 0 <= rank < world_size):
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}.")
    if world_size > n_samples:
        raise ValueError(f"shard={shard!r}: {n_samples} rows cannot be split over {world_size} ranks.")
    return rank * n_samples // world_size, (rank + 1) * n_samples // world_size


def _largest_shard(n_samples, shard):
    return n_samples if shard is None else math.ceil(n_samples / shard[1])


def _file_layout(X):
    """``(path, byte offset of row 0)`` when ``X`` is a memmap whose rows are contiguous
    in its file and whose file holds what ``X`` shows (not copy-on-write); else None."""
    if not isinstance(X, np.memmap) or getattr(X, "filename", None) is None:
        return None
    if X.ndim != 2 or getattr(X, "mode", None) == "c":
        return None
    itemsize = X.dtype.itemsize
    if X.strides[1] != itemsize or (X.shape[0] > 1 and X.strides[0] != X.shape[1] * itemsize):
        return None
    root = X
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not isinstance(root, np.memmap) or not isinstance(root.base, mmap.mmap):
        return None
    # The root's first element sits at byte ``root.offset`` of the file.
    offset = root.offset + (X.__array_interface__["data"][0] - root.__array_interface__["data"][0])
    return os.fspath(X.filename), offset


def is_streamed(X):
    """Whether ``X`` is an on-disk array (a memmap) too large to read into memory."""
    return isinstance(X, np.memmap) and X.ndim == 2 and X.nbytes > IN_MEMORY_BYTES


def exceeds_device(n_rows, row_bytes, device):
    """Whether ``n_rows`` rows of ``row_bytes`` would take more of ``device`` than
    ``device_rows`` allows: a training set to send to it in minibatches from the host
    (read-ahead, pinned uploads) rather than whole. Never on the CPU."""
    rows = device_rows(device, row_bytes)
    return rows is not None and rows < n_rows


class _RowReader:
    """Reads rows ``[start, stop)`` of a 2-D memmap into a fresh array: with ``preadv``
    on its file when the layout allows, so the pages are not mapped into the process
    (they stay in the page cache, not in this process's memory), else by slicing."""

    def __init__(self, X):
        self.X, self.shape, self.dtype = X, X.shape, X.dtype
        self.layout = _file_layout(X)
        self.row_bytes = X.shape[1] * X.dtype.itemsize
        self._fd, self._lock = None, threading.Lock()

    def _descriptor(self):
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.layout[0], os.O_RDONLY)
            return self._fd

    def read(self, start, stop, out=None):
        rows = stop - start
        if out is None:
            out = np.empty((rows, self.shape[1]), dtype=self.dtype)
        if self.layout is None or not hasattr(os, "preadv"):
            out[:] = self.X[start:stop]
            return out
        view = memoryview(out.reshape(-1).view(np.uint8))
        position = self.layout[1] + start * self.row_bytes
        done, total = 0, rows * self.row_bytes
        fd = self._descriptor()
        while done < total:
            count = os.preadv(fd, [view[done:]], position + done)
            if count <= 0:
                raise OSError(f"{self.layout[0]}: unexpected end of file at byte {position + done}.")
            done += count
        return out

    def close(self):
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self):
        self.close()


def read_rows(X, start, stop):
    """Rows ``[start, stop)`` of ``X`` as a new in-memory array (see :class:`_RowReader`)."""
    return _RowReader(X).read(start, stop) if isinstance(X, np.memmap) else np.array(X[start:stop])


def take_rows(X, index):
    """Rows ``index`` (integers, in any order) of ``X`` as a new in-memory array.

    A memmap's rows are read from its file (:class:`_RowReader`), one run of consecutive
    rows per call, never through the mapping: indexing a memmap with scattered rows
    faults in the pages around each one (the kernel reads ahead), so a few thousand
    sample rows would map in most of a large file and count in this process's memory.
    """
    index = np.asarray(index, dtype=np.intp)
    if not isinstance(X, np.memmap):
        return np.array(X[index])
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    rows = np.empty((len(index), X.shape[1]), dtype=X.dtype)
    reader = _RowReader(X)
    try:
        # runs of consecutive rows (a repeated row starts a run of its own)
        starts = np.flatnonzero(np.diff(ordered, prepend=-2) != 1)
        for first, end in zip(starts, [*starts[1:], len(ordered)]):
            reader.read(ordered[first], ordered[end - 1] + 1, out=rows[first:end])
    finally:
        reader.close()
    out = np.empty_like(rows)
    out[order] = rows
    return out


def iter_row_blocks(X, block_bytes=BLOCK_BYTES * 8):
    """Yield ``(start, rows)`` over ``X`` in blocks of about ``block_bytes`` (in-memory
    copies; on-disk arrays are read, never mapped whole)."""
    n_samples = X.shape[0]
    row_bytes = max(1, X.shape[1] * X.dtype.itemsize)
    block = max(1, block_bytes // row_bytes)
    reader = _RowReader(X) if isinstance(X, np.memmap) else None
    try:
        for start in range(0, n_samples, block):
            stop = min(start + block, n_samples)
            yield start, (reader.read(start, stop) if reader else np.asarray(X[start:stop]))
    finally:
        if reader is not None:
            reader.close()


def _to_tensor(rows, dtype, device):
    # ``rows`` is a fresh array owned by the source: wrapping it shares nothing with X.
    return torch.from_numpy(rows).to(device=device, dtype=dtype)


def _host_buffer(shape, dtype, device):
    """``(array, pinned)``: an empty numpy array of ``shape`` and ``dtype`` to read rows
    into and, when they go to a CUDA ``device``, the pinned (page-locked) torch tensor it
    views (else None), so that their upload is an asynchronous DMA. Upload from
    ``pinned`` itself: torch's host allocator then keeps its block from being reused
    until the copy is done (it caches pinned blocks across buffers)."""
    if torch.device(device).type != "cuda":
        return np.empty(shape, dtype=dtype), None
    try:
        torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except TypeError:  # a dtype torch cannot wrap: pageable memory
        return np.empty(shape, dtype=dtype), None
    pinned = torch.empty(shape, dtype=torch_dtype, pin_memory=True)
    return pinned.numpy(), pinned


class _Upload:
    """Rows (and target rows) uploaded on a side CUDA stream, ready once ``event`` has
    passed; :meth:`tensors` makes the caller's stream wait for it (without blocking the
    host) and tells the allocator the tensors are used there."""

    def __init__(self, X, target, event):
        self.X, self.target, self.event = X, target, event

    def tensors(self):
        if self.event is not None:
            stream = torch.cuda.current_stream(self.X.device)
            stream.wait_event(self.event)
            for tensor in (self.X, self.target):
                if tensor is not None:
                    tensor.record_stream(stream)
            self.event = None
        return self.X, self.target


class TensorBatches:
    """Minibatches of in-memory tensors: each epoch, a random permutation of the rows
    split into ``batch_size`` pieces (``batch_size=None``: every row at once); yields
    ``X`` rows, or ``(X rows, target rows)`` when ``target`` is given.

    With ``shard=(rank, world_size)`` the source holds the rank's contiguous range of
    rows only; every rank makes ``ceil(largest shard / batch_size)`` batches, a smaller
    shard completing its last batch with its epoch's first rows.
    """

    def __init__(self, X, target=None, *, shard=None):
        start, stop = shard_range(X.shape[0], shard)
        self.X = X[start:stop]
        self.target = None if target is None else target[start:stop]
        self.n_samples = stop - start
        self.epoch_rows = _largest_shard(X.shape[0], shard)

    def n_batches(self, batch_size):
        return 1 if batch_size is None else math.ceil(self.epoch_rows / batch_size)

    def sample(self, n_rows):
        """Evenly spaced rows (at most ``n_rows``), for initialisations."""
        if self.n_samples <= n_rows:
            return self.X
        return self.X[torch.linspace(0, self.n_samples - 1, n_rows, device=self.X.device).long()]

    def _rows(self, indices):
        batch = self.X if indices is None else self.X[indices]
        if self.target is None:
            return batch
        return batch, (self.target if indices is None else self.target[indices])

    def batches(self, batch_size, *, generator=None, skip=0, device=None):
        if batch_size is None:
            if skip == 0:
                yield self._rows(None)
            return
        order = torch.randperm(self.n_samples, generator=generator).to(self.X.device)
        if self.epoch_rows > self.n_samples:
            order = torch.cat([order, order[: self.epoch_rows - self.n_samples]])
        yield from (self._rows(indices) for indices in order.split(batch_size)[skip:])


class DiskBatches:
    """Minibatches streamed from an on-disk 2-D array.

    The rows are cut into contiguous blocks of about ``BLOCK_BYTES``; each epoch the
    block order is permuted, consecutive blocks of that order are read together into a
    buffer of about ``BUFFER_BYTES`` whose rows are permuted, and the stream of permuted
    rows is cut into ``batch_size`` pieces (a batch may span two buffers). All random
    draws come from ``generator``, so an epoch is a function of the generator's state
    at its start: ``skip`` batches are skipped without reading them (resuming a
    checkpoint mid-epoch) and leave the generator where the full epoch would. The
    next buffer is read in a background thread while the current one is consumed.

    Parameters
    ----------
    X : np.memmap of shape (n_samples, n_features)
    target : array-like of shape (n_samples, n_targets) or None
        Read row for row with ``X`` (sliced, so a memmap works too).
    dtype : torch.dtype
        Batches are converted to it (default: float32 for float32 data, else float64).
    shard : (rank, world_size) or None
        See :class:`TensorBatches`.
    block_rows, buffer_rows : int or None
        Override the block and buffer sizes (in rows).
    """

    def __init__(self, X, target=None, *, dtype=None, shard=None, block_rows=None,
                 buffer_rows=None):
        self.reader = _RowReader(X)
        self.target = target
        self.start, stop = shard_range(X.shape[0], shard)
        self.n_samples = stop - self.start
        self.epoch_rows = _largest_shard(X.shape[0], shard)
        self.dtype = dtype if dtype is not None else (
            torch.float32 if numpy_dtype(X.dtype) == np.float32 else torch.float64
        )
        row_bytes = max(1, self.reader.row_bytes)
        self.block_rows = block_rows or max(1, BLOCK_BYTES // row_bytes)
        buffer_rows = buffer_rows or max(self.block_rows, BUFFER_BYTES // row_bytes)
        self.blocks_per_buffer = max(1, buffer_rows // self.block_rows)
        self.n_blocks = math.ceil(self.n_samples / self.block_rows)

    def n_batches(self, batch_size):
        return 1 if batch_size is None else math.ceil(self.epoch_rows / batch_size)

    def _block(self, index):
        start = self.start + index * self.block_rows
        return start, min(start + self.block_rows, self.start + self.n_samples)

    def _read(self, blocks, device):
        """The rows of ``blocks`` (in file order), as an :class:`_Upload` of tensors on
        ``device``. On CUDA the rows are read into pinned memory and uploaded without
        blocking on a side stream (this runs in the read-ahead thread, so the copy
        overlaps the training steps on the buffer before)."""
        spans = [self._block(b) for b in sorted(blocks)]
        n_rows = sum(stop - start for start, stop in spans)
        rows, pinned = _host_buffer((n_rows, self.reader.shape[1]), self.reader.dtype, device)
        targets = []
        at = 0
        for start, stop in spans:
            self.reader.read(start, stop, out=rows[at : at + stop - start])
            if self.target is not None:
                targets.append(np.asarray(self.target[start:stop]))
            at += stop - start
        target = None if self.target is None else np.ascontiguousarray(np.concatenate(targets))
        if pinned is None:
            return _Upload(_to_tensor(rows, self.dtype, device),
                           None if target is None else _to_tensor(target, self.dtype, device),
                           None)  # fmt: skip
        stream = self._upload_stream(device)
        with torch.cuda.stream(stream):
            X = pinned.to(device, non_blocking=True).to(self.dtype)
            if target is not None:
                target = torch.from_numpy(target).pin_memory()
                target = target.to(device, non_blocking=True).to(self.dtype)
            event = torch.cuda.Event()
            event.record(stream)
        return _Upload(X, target, event)

    def _upload_stream(self, device):
        streams = self.__dict__.setdefault("_streams", {})
        device = torch.device(device)
        if device not in streams:
            streams[device] = torch.cuda.Stream(device)
        return streams[device]

    def sample(self, n_rows, device=None):
        """At most ``n_rows`` rows from evenly spaced blocks (no random draw), for
        initialisations that need a bounded sample of the data."""
        n_wanted = math.ceil(min(n_rows, self.n_samples) / self.block_rows)
        blocks = np.unique(np.linspace(0, self.n_blocks - 1, n_wanted).round().astype(int))
        X, target = self._read(blocks.tolist(), device or "cpu").tensors()
        X = X[:n_rows]
        return X if target is None else (X, target[:n_rows])

    def _file_rows(self, group):
        """File row of every row of ``group``'s buffer (blocks in file order)."""
        return np.concatenate([np.arange(*self._block(b)) for b in sorted(group)])

    def batches(self, batch_size, *, generator=None, skip=0, device=None):
        device = device or "cpu"
        if batch_size is None:
            batch_size = self.epoch_rows
        order = torch.randperm(self.n_blocks, generator=generator).tolist()
        groups = [order[i : i + self.blocks_per_buffer]
                  for i in range(0, self.n_blocks, self.blocks_per_buffer)]
        lengths = [sum(self._block(b)[1] - self._block(b)[0] for b in group) for group in groups]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        n_total = self.epoch_rows
        # A smaller shard ends its epoch with its stream's first row(s) again.
        wrap = n_total - self.n_samples
        first = skip * batch_size
        needed = [g for g in range(len(groups)) if starts[g] + lengths[g] > first]
        executor = ThreadPoolExecutor(1, thread_name_prefix="sparsegap-read")
        futures, queue = {}, list(reversed(needed))

        def submit_next():
            if queue:
                g = queue.pop()
                futures[g] = executor.submit(self._read, groups[g], device)

        try:
            submit_next()  # one buffer read ahead: two in memory at most
            pieces = []
            for g, (start, length) in enumerate(zip(starts, lengths)):
                # Every buffer's permutation is drawn, read or skipped, so the generator
                # ends the epoch in the same state whatever was skipped.
                perm = torch.randperm(length, generator=generator)
                if g == 0:
                    wrap_rows = self._file_rows(groups[0])[perm[:wrap].numpy()]
                if start + length <= first:
                    continue
                X, target = futures.pop(g).result().tensors()
                submit_next()
                position, stop = max(first, start), start + length
                perm = perm.to(X.device)
                while position < stop:
                    boundary = min((position // batch_size + 1) * batch_size, n_total)
                    end = min(boundary, stop)
                    indices = perm[position - start : end - start]
                    pieces.append((X[indices], None if target is None else target[indices]))
                    position = end
                    if position == boundary:
                        yield self._join(pieces)
                        pieces = []
                del X, target
            if wrap > 0 and first < n_total:
                pieces.append(self._rows_at(wrap_rows, device))
                yield self._join(pieces)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _rows_at(self, file_rows, device):
        X = np.stack([self.reader.read(r, r + 1)[0] for r in file_rows])
        X = _to_tensor(X, self.dtype, device)
        if self.target is None:
            return X, None
        target = np.stack([np.asarray(self.target[r]) for r in file_rows])
        return X, _to_tensor(np.ascontiguousarray(target), self.dtype, device)

    def _join(self, pieces):
        X = pieces[0][0] if len(pieces) == 1 else torch.cat([p[0] for p in pieces])
        if self.target is None:
            return X
        target = pieces[0][1] if len(pieces) == 1 else torch.cat([p[1] for p in pieces])
        return X, target

    def close(self):
        self.reader.close()
