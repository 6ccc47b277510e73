"""The process's memory: the C heap's free pages given back, and the collector settled after
the heap changes shape.

Called from the writer thread (after each write), the warm-up thread (after each reading of
the graph) and :meth:`~socialrisk.service.runtime.ServiceRuntime.start`; nothing here runs a
thread of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

__all__ = ["release_free_memory", "settle_heap"]


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to do
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Give the memory the C heap holds free back to the system (glibc's ``malloc_trim``).

    Reading the graph (and, on Neo4j, the stored flags a new flag merges with) runs in several
    threads, each with a heap arena of its own; glibc keeps most of what they free, so the
    resident size of a service taking a flag a second crept up though the live objects did
    not grow (the soak test). Called after each write and each reading of the graph; it takes
    milliseconds."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def settle_heap() -> None:
    """Collect once, then move every object alive to the collector's permanent generation
    (``gc.freeze``), so that later full collections scan only what requests allocate.

    A full collection of the service's heap (some 200,000 objects: the libraries and the
    tables) took 115 ms; allocation-heavy requests (a neighbourhood builds thousands of dicts)
    started one every few dozen requests, and the request that did waited that long (the
    neighbourhood p99). Called after start-up and after each reading of the graph: the
    objects frozen before are thawed first, so that an old graph's cycles are collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
