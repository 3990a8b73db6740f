"""Speed limits that hold on a busy machine: CPU time, not wall-clock time.

Wall-clock time grows with every other process on the cores (a 2-core runner at load 10 runs a
test five times slower); the CPU time of this process barely moves. `cpu_seconds` is the best of
`repeat` runs' CPU time (the process's, all its threads), so a cold cache or a page fault of the
first run does not count either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def cpu_seconds(fn: Callable[[], T], repeat: int = 1) -> tuple[T, float]:
    """(the result of the last call of `fn`, the least CPU seconds of `repeat` calls)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        result = fn()
        best = min(best, time.process_time() - t)
    return result, best
