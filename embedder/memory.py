"""Giving freed memory back to the system between the stages of a long job."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


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
    past the 100k one (benchmarks/RESULTS.md, "Scale"). So it trims once, between stages:
    trimming on every free (`MALLOC_TRIM_THRESHOLD_`) made encoding 2x slower.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
