"""Per-value work of a load (normalising phone numbers, hashing identifiers) spread over the
machine's cores.

The work is pure Python per value (``phonenumbers``, HMAC), so threads would not help; forked
worker processes each take a share of the values. Forked rather than spawned: a spawned worker
imports the caller's ``__main__`` again, which runs a script without a main guard a second time.
Forking is safe here because the workers only run the given function, and take none of the
locks another thread of the loading process (a driver's, a progress bar's) may hold. Linux only:
elsewhere (macOS) forking a process with threads is unsafe, and the values are processed here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["PARALLEL_FROM", "map_chunks"]

T = TypeVar("T")

#: Values from which the work is spread over worker processes, one per core (at most 8).
PARALLEL_FROM = 200_000


def map_chunks(fn: Callable[..., list[T]], values: Sequence[Any], *args: Any, parallel_from: int | None = None) -> list[T]:
    """``fn(chunk, *args)`` over chunks of ``values``, results end to end in order; in worker
    processes when there are at least ``parallel_from`` values (default :data:`PARALLEL_FROM`)
    and more than one core, on Linux.

    ``fn`` must be a module-level function returning one result per value of its chunk.
    """
    threshold = PARALLEL_FROM if parallel_from is None else parallel_from
    workers = min(os.cpu_count() or 1, 8)
    if len(values) < threshold or workers < 2 or sys.platform != "linux":
        return fn(list(values), *args)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(values) // (workers * 4))
    chunks = [list(values[i : i + size]) for i in range(0, len(values), size)]
    out: list[T] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for part in pool.map(fn, chunks, *([a] * len(chunks) for a in args)):
            out.extend(part)
    return out
