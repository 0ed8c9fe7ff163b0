"""Memory housekeeping for long jobs: freed memory back to the system between stages, and the
long-lived heap kept out of the garbage collector's way."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from typing import Iterator


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed() -> None:
    """Return the C heap's free pages to the system (glibc's `malloc_trim`; a no-op elsewhere).

    glibc keeps what a freed tensor held for the next allocation, in one pool per thread that
    allocated. After encoding, `embed encode` holds a few hundred MB that way that the index
    stage never reuses, so its own allocations came on top and the peak at 1M utterances grew
    past the 100k one (benchmarks/RESULTS.md, "Scale"). So it trims between stages and after
    each shard (65,536 utterances), where the heap otherwise crept up by 0.2 GB over a million
    long utterances: trimming on every free (`MALLOC_TRIM_THRESHOLD_`) made encoding 2x slower.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep what is alive on entry (the model, torch's and the server's modules: hundreds of
    thousands of objects) out of the garbage collector's full collections for the block.

    Each full collection walks every tracked object, and a long job allocates enough to trigger
    one every few seconds: under 32 clients `embed serve` answered its slowest 1% in ~120 ms
    instead of ~30 ms, and `embed encode` at 100k spent 0.5 s in seven of them
    (benchmarks/RESULTS.md, "Serving"). Objects made inside the block are collected as usual. A
    caller that froze its own heap already is left as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
