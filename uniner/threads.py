"""torch's CPU threads sized to the cores other work leaves free.

torch runs one OpenMP thread a core, and its threads wait on each other at every operation; when
another busy process holds a core, the waits dominate (the default run's steps were 2x slower
with 2 threads than with 1 beside one busy process on 2 cores, experiments/RESULTS.md). So each
tool that runs a model starts with `free_threads()` threads (`fit_threads`), and training looks
again every 20 seconds (`uniner.model.free_cores.FreeCores`), since the other work comes and goes.
`OMP_NUM_THREADS` set by the user wins: nothing here changes it.

The notice that says so waits until the tool's checks have passed (`say_notice`, called with the
first `run directory:` line): a user's mistake stays one line on stderr, whatever the load.
"""

from __future__ import annotations

import os
import sys
import time


def user_set() -> bool:
    """Whether the user chose the threads (`OMP_NUM_THREADS`)."""
    return bool(os.environ.get("OMP_NUM_THREADS"))


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_cores(own: int = 1, samples: int = 5, interval: float = 0.02) -> int | None:
    """Tasks running now besides this process's `own` running threads: the median of a few
    reads of /proc/stat's `procs_running` (an instant count, where the load average lags a minute
    behind); None where there is no /proc."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next(ln for ln in f if ln.startswith("procs_running"))
        except (OSError, StopIteration):
            return None
        counts.append(max(0, int(line.split()[1]) - own))
        if i + 1 < samples:
            time.sleep(interval)
    return sorted(counts)[len(counts) // 2]


def free_threads(busy: int | None, total: int | None = None) -> int:
    """The threads to run: the cores that `busy` other tasks leave free, at least 1."""
    total = total or cores()
    return total if busy is None else max(1, min(total, total - busy))


_notice: str | None = None  # fit_threads' line, until say_notice prints it


def fit_threads(prog: str) -> int | None:
    """At a tool's start: torch's threads set to `free_threads` when some cores are busy and the
    user has not set `OMP_NUM_THREADS`; the line that says so is kept for `say_notice`. Returns
    the threads set, if any."""
    global _notice
    _notice = None
    if user_set():
        return None
    total, busy = cores(), busy_cores()
    threads = free_threads(busy, total)
    if threads >= total:
        return None
    import torch

    torch.set_num_threads(threads)
    _notice = (f"{prog}: {threads} of {total} CPU threads ({busy} other tasks running at the "
               f"start; OMP_NUM_THREADS={total} uses every core)")
    return threads


def say_notice() -> None:
    """Print the thread notice of `fit_threads` on stderr, once (after the tool's checks)."""
    global _notice
    if _notice is not None:
        print(_notice, file=sys.stderr, flush=True)
        _notice = None
