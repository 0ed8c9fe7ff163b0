"""Exact vectors on disk: one `.npy` file per shard and encoder, read back a few rows at a time.

An index for millions of utterances keeps compressed codes in memory and re-ranks its candidates
with the exact vectors; those live here, on disk, so memory does not grow with the corpus. Rows
are fetched with positioned reads (`os.pread`) rather than a memory map: a map's touched pages
count against the process, reads land in the page cache, which the kernel gives back on demand.

A segment holds the consecutive ids `first_id, first_id + 1, ...` (an encode shard, or a batch of
documents added later), so finding a row is a binary search over the segments' first ids.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..atomic import atomic_path
from ..errors import EmbedderError


def write(path: str | os.PathLike, X: np.ndarray) -> None:
    """A float32 `.npy` (readable by anyone with numpy), written under a temporary name."""
    X = np.asarray(X, dtype=np.float32)
    with writer(path, *X.shape) as append:
        append(X)


@contextlib.contextmanager
def writer(path: str | os.PathLike, rows: int, dim: int) -> Iterator[Callable[[np.ndarray], None]]:
    """A float32 (rows, dim) `.npy` written a block at a time, under a temporary name, renamed
    once all its rows are in and on disk: a shard's vectors need not be held in memory until the
    shard ends (64k rows of two encoders are 134 MB)."""
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(np.float32).str, "fortran_order": False,
                                                 "shape": (rows, dim)})

        def append(X: np.ndarray) -> None:
            nonlocal written
            X = np.ascontiguousarray(X, dtype=np.float32)
            if X.ndim != 2 or X.shape[1] != dim or written + len(X) > rows:
                raise EmbedderError(f"{path}: {written} + {X.shape} rows do not fit ({rows}, {dim})")
            if len(X):  # (a view of no rows cannot be cast to bytes)
                f.write(memoryview(X).cast("B"))
            written += len(X)

        yield append
        if written != rows:
            raise EmbedderError(f"{path}: {written} rows written, {rows} expected")
        f.flush()
        os.fsync(f.fileno())


def _open_npy(path: Path) -> tuple[int, int, int]:
    """(header bytes, rows, dim) of a 2-d float32 C-order `.npy`."""
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise EmbedderError(f"{path}: missing (the output folder is incomplete; re-run `embed encode`)") from None
    except (ValueError, OSError) as e:
        raise EmbedderError(f"{path}: not a readable .npy file ({e})") from None
    if dtype != np.float32 or fortran or len(shape) != 2:
        raise EmbedderError(f"{path}: expected a 2-d float32 array, found {dtype} {shape}")
    size = path.stat().st_size
    if size < offset + shape[0] * shape[1] * 4:
        raise EmbedderError(f"{path}: truncated ({size} bytes for {shape[0]} × {shape[1]} floats)")
    return offset, int(shape[0]), int(shape[1])


def write_ids(path: str | os.PathLike, ids: np.ndarray) -> None:
    """An int64 `.npy` (the index's table of copies), written under a temporary name."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(ids, dtype=np.int64), allow_pickle=False)


def read_ids(path: str | os.PathLike) -> np.ndarray:
    try:
        ids = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EmbedderError(f"{path}: missing (the output folder is incomplete; re-run `embed encode`)") from None
    except ValueError as e:
        raise EmbedderError(f"{path}: not a readable .npy file ({e})") from None
    if ids.dtype != np.int64 or ids.ndim != 2 or ids.shape[1] != 2:
        raise EmbedderError(f"{path}: expected (n, 2) int64 id pairs, found {ids.dtype} {ids.shape}")
    return ids


def _available_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable); 0 where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Segment:
    path: Path
    first_id: int
    rows: int
    offset: int


class VectorStore:
    """The exact vectors of one encoder, over segment files plus rows added since the last save."""

    def __init__(self, dim: int, segments: Sequence[tuple[str | os.PathLike, int]] = ()):
        self.dim = dim
        self.segments: list[Segment] = []
        self._fds: dict[Path, int] = {}
        for path, first_id in segments:
            self.append_file(Path(path), first_id)
        self.tail_ids: list[np.ndarray] = []
        self.tail: list[np.ndarray] = []

    def append_file(self, path: Path, first_id: int) -> None:
        offset, rows, dim = _open_npy(path)
        if dim != self.dim:
            raise EmbedderError(f"{path}: vectors of {dim} dims, expected {self.dim}")
        if self.segments and first_id < self.segments[-1].first_id + self.segments[-1].rows:
            raise EmbedderError(f"{path}: ids from {first_id} overlap the previous segment")
        self.segments.append(Segment(path, first_id, rows, offset))
        self._starts = np.array([s.first_id for s in self.segments], dtype=np.int64)
        # per segment, and one empty entry at the end for ids before the first (index -1)
        self._rows = np.array([s.rows for s in self.segments] + [0], dtype=np.int64)
        self._offsets = np.array([s.offset for s in self.segments] + [0], dtype=np.int64)
        self._seg_fds: list[int] | None = None

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments) + sum(len(i) for i in self.tail_ids)

    def add(self, ids: np.ndarray, X: np.ndarray) -> None:
        """Rows not yet in a file (documents added to a running service): kept in memory."""
        self.tail_ids.append(np.asarray(ids, dtype=np.int64))
        self.tail.append(np.asarray(X, dtype=np.float32))

    def flush_tail(self, path: Path) -> tuple[Path, int] | None:
        """Write the in-memory rows as a new segment; returns (path, first id), or None if none.
        Their ids must be consecutive, as the documents store hands them out."""
        if not self.tail:
            return None
        ids, X = np.concatenate(self.tail_ids), np.concatenate(self.tail)
        if not np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
            raise EmbedderError("vectors added since the last save do not have consecutive ids")
        write(path, X)
        self.tail_ids, self.tail = [], []
        self.append_file(path, int(ids[0]))
        return path, int(ids[0])

    def prefetch(self, share_of_free_memory: float = 0.5) -> threading.Thread | None:
        """Read the segment files once, front to back, in a background thread, so that their pages
        are in the page cache when re-ranking reads rows all over them; only where together they
        fit in `share_of_free_memory` of the memory available now. Returns the thread (None when
        nothing is read). From a cold cache every re-ranked row is a disk read: a freshly opened
        1M collection searched at 78-228 queries/s against 1,920-3,376 warm (issue 32). The kernel's
        own read-ahead hint (`posix_fadvise(WILLNEED)`) did nothing measurable on this machine; a
        sequential read of a 1 GB file takes a second or two."""
        files = [s.path for s in self.segments]
        size = sum(p.stat().st_size for p in files)
        if not size or size > share_of_free_memory * _available_memory():
            return None

        def read_through() -> None:
            for path in files:
                try:
                    with open(path, "rb", buffering=0) as f:
                        while f.read(4 << 20):  # the GIL is released while the kernel reads
                            pass
                except OSError:  # a file removed meanwhile: nothing to warm
                    continue

        thread = threading.Thread(target=read_through, name="embedder-read-ahead", daemon=True)
        thread.start()
        return thread

    def evict(self) -> None:
        """Drop the segment files' clean pages from the page cache (a cold start, for benchmarks)."""
        if hasattr(os, "posix_fadvise"):
            for s in self.segments:
                os.posix_fadvise(self._fd(s.path), 0, 0, os.POSIX_FADV_DONTNEED)

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def get(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of these ids, (len(ids), dim); an id it does not hold is an error."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        if self.tail:
            tail_ids = np.concatenate(self.tail_ids)
            where = {int(i): j for j, i in enumerate(tail_ids)}
            tail = np.concatenate(self.tail)
            for k, i in enumerate(ids):
                j = where.get(int(i))
                if j is not None:
                    out[k] = tail[j]
                    found[k] = True
        if self.segments:
            self._read_rows(ids, out, found)
        if not found.all():
            raise EmbedderError(f"no stored vector for id {int(ids[~found][0])}")
        return out

    def _read_rows(self, ids: np.ndarray, out: np.ndarray, found: np.ndarray) -> None:
        """Fill the rows of `out` whose ids the segment files hold, one positioned read each,
        straight into `out`. Re-ranking reads hundreds of rows per query, so the per-row work is
        kept to the read itself (2.7–3.0 µs a row went to 1.6–1.8 µs this way: benchmarks/RESULTS.md)."""
        row_bytes = self.dim * 4
        want = np.flatnonzero(~found)
        seg = np.searchsorted(self._starts, ids[want], side="right") - 1
        row = ids[want] - self._starts[seg]   # seg == -1 reads the empty last entry: no rows
        held = (seg >= 0) & (row >= 0) & (row < self._rows[seg])
        want, seg = want[held], seg[held]
        at = self._offsets[seg] + row[held] * row_bytes
        if self._seg_fds is None:
            self._seg_fds = [self._fd(s.path) for s in self.segments]
        fds = self._seg_fds
        view = memoryview(out).cast("B")
        if hasattr(os, "preadv"):
            for k, s, a in zip(want.tolist(), seg.tolist(), at.tolist()):
                if os.preadv(fds[s], [view[k * row_bytes:(k + 1) * row_bytes]], a) != row_bytes:
                    raise EmbedderError(f"{self.segments[s].path}: truncated (row {k} cut short)")
        else:  # platforms without preadv
            for k, s, a in zip(want.tolist(), seg.tolist(), at.tolist()):
                buf = os.pread(fds[s], row_bytes, a)
                if len(buf) != row_bytes:
                    raise EmbedderError(f"{self.segments[s].path}: truncated (row {k} cut short)")
                view[k * row_bytes:(k + 1) * row_bytes] = buf
        found[want] = True

    def chunks(self, rows: int = 16384) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) over every file in order, a bounded number of rows at a time."""
        for s in self.segments:
            for a in range(0, s.rows, rows):
                yield np.arange(s.first_id + a, s.first_id + min(a + rows, s.rows), dtype=np.int64), \
                    self._read(s, a, min(a + rows, s.rows))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n rows drawn uniformly from the whole store (all of them when it holds fewer): what an
        index trains on, so its clusters describe the corpus and not its first pages."""
        total = sum(s.rows for s in self.segments)
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(total, size=min(n, total), replace=False))
        # filled in place, a block of a segment at a time: a list of pieces joined at the end held
        # the sample twice (2 x 168 MB for IVF4096's 163,840 training vectors)
        out = np.empty((len(picks), self.dim), np.float32)
        start = filled = 0
        for s in self.segments:
            for a in range(0, s.rows, 16384):
                b = min(a + 16384, s.rows)
                lo, hi = np.searchsorted(picks, [start + a, start + b])
                if hi > lo:
                    out[filled:filled + hi - lo] = self._read(s, a, b)[picks[lo:hi] - start - a]
                    filled += hi - lo
            start += s.rows
        return out

    def _read(self, s: Segment, a: int, b: int) -> np.ndarray:
        """Rows a..b of a segment by a plain read (not a map, whose pages would stay resident)."""
        return np.fromfile(s.path, dtype=np.float32, count=(b - a) * self.dim,
                           offset=s.offset + a * self.dim * 4).reshape(b - a, self.dim)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._seg_fds = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
