"""Progress of the long steps, readable on a terminal and in a log file alike.

On a terminal (stdout and stderr both TTYs) a step shows a live bar (tqdm; Lightning's own bar in
training). Otherwise, when the output goes to a file or a pipe, a live bar is one unreadable line
of carriage returns: `Lines` prints a plain line on stderr every few percent instead,

    test: 472/2832 queries (17%) · 12.3 queries/s · ETA 3m12s

`UNINER_PROGRESS=lines` (or `bar`) forces one or the other.

`run_directory` prints where a tool writes (`run directory: outputs/train/...`), at its start and
its end.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from uniner.threads import say_notice

EVERY_PERCENT = 5.0  # a line each time this share of the work is done
EVERY_SECONDS = 300.0  # and at least this often while a step runs (a slow first percent)


def interactive() -> bool:
    """Whether to draw live bars: `UNINER_PROGRESS=bar|lines`, else both streams are TTYs."""
    forced = os.environ.get("UNINER_PROGRESS", "").strip().lower()
    if forced in ("bar", "bars", "tty"):
        return True
    if forced in ("lines", "line", "plain"):
        return False
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


@contextlib.contextmanager
def library_bars(library_logging, shown: bool):
    """A library's own progress bars on or off inside, as they were after. `library_logging` is
    `datasets.utils.logging` or `transformers.utils.logging` (the same three functions)."""
    before = library_logging.is_progress_bar_enabled()
    (library_logging.enable_progress_bar if shown else library_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (library_logging.enable_progress_bar if before
         else library_logging.disable_progress_bar)()


def duration(seconds: float) -> str:
    """`42s`, `1m03s`, `2h05m`."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def rate_text(per_second: float, unit: str) -> str:
    if per_second <= 0:
        return f"- {unit}/s"
    if per_second < 1:
        return f"{1 / per_second:.1f} s/it" if unit == "it" else f"{1 / per_second:.1f} s each"
    return f"{per_second:.1f} {unit}/s" if per_second < 100 else f"{per_second:.0f} {unit}/s"


class Lines:
    """Plain progress lines: `label: done/total unit (pct%) · rate · ETA · extra`.

    A line when another `every` percent is done, at least every `every_seconds`, and at the end.
    `update(n, **extra)` adds n done and shows `extra` (`loss=0.41`) at the end of the line.
    With `delay`, nothing is printed until the step has run that many seconds (as tqdm's
    `delay`): a step that ends sooner (a re-tokenized epoch of 48 rows) prints no line at all.
    """

    def __init__(self, label: str, total: int | float, unit: str = "it", *,
                 every: float = EVERY_PERCENT, every_seconds: float = EVERY_SECONDS,
                 stream: TextIO | None = None, rate_unit: str | None = None,
                 delay: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit = label, total, unit
        self.rate_unit = rate_unit or unit
        self.every, self.every_seconds, self.delay = every, every_seconds, delay
        self.stream, self.clock = stream, clock
        self.done = self.initial = 0  # `initial`: done before this process (a resumed run)
        self.start = self.last_time = clock()
        self.next_pct = every
        self.closed = False

    def update(self, n: int | float = 1, prefix: str | None = None, **extra) -> str | None:
        """Count `n` more done; returns the line printed, if one was."""
        self.done += n
        now = self.clock()
        pct = 100.0 * self.done / self.total if self.total else 100.0
        if now - self.start < self.delay:
            return None
        if pct + 1e-9 < self.next_pct and now - self.last_time < self.every_seconds \
                and not (self.total and self.done >= self.total):
            return None
        while self.next_pct <= pct + 1e-9:
            self.next_pct += self.every
        self.last_time = now
        return self.emit(self.line(now, prefix, **extra))

    def line(self, now: float | None = None, prefix: str | None = None, **extra) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{prefix} " if prefix else ""]
        if self.total:
            pct = 100.0 * self.done / self.total
            unit = f" {self.unit}" if self.unit else ""
            parts.append(f"{self.done:g}/{self.total:g}{unit} ({pct:.0f}%)")
        else:
            parts.append(f"{self.done:g} {self.unit}".rstrip())
        parts.append(f" · {rate_text(rate, self.rate_unit)}")
        if self.total and self.done < self.total:
            parts.append(f" · ETA {duration((self.total - self.done) / rate)}" if rate > 0
                         else " · ETA -")
        elif self.total:
            parts.append(f" · took {duration(elapsed)}")
        parts.extend(f" · {k} {_value(v)}" for k, v in extra.items() if v is not None)
        return f"{self.label}: {''.join(parts)}"

    def emit(self, line: str) -> str:
        print(line, file=self.stream or sys.stderr, flush=True)
        return line

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


class _Bar:
    """A tqdm bar behind the `Lines` interface (`update(n, **extra)`, `close`)."""

    def __init__(self, label: str, total, unit: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit=unit.rstrip("s") or unit, file=sys.stderr,
                        dynamic_ncols=True)

    def update(self, n=1, prefix: str | None = None, **extra) -> None:
        if extra:
            self.bar.set_postfix({k: v for k, v in extra.items() if v is not None},
                                 refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Off:
    def update(self, n=1, prefix: str | None = None, **extra) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(label: str, total: int | float, unit: str = "it", *, enabled: bool = True):
    """A progress reporter for a step of `total` units: a tqdm bar on a terminal, `Lines`
    otherwise, nothing when not `enabled`. Use as a context manager, `update(n)` as work is
    done."""
    if not enabled:
        return _Off()
    return _Bar(label, total, unit) if interactive() else Lines(label, total, unit)


def shown_path(path: str | Path) -> str:
    """`path` relative to the working directory when inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(p)


def run_directory(path: str | Path, what: str = "run directory") -> None:
    """Print `run directory: <path>` on stderr (a tool's start and end), then the thread notice
    the first time (`threads.say_notice`: the checks have passed by now)."""
    print(f"{what}: {shown_path(path)}", file=sys.stderr, flush=True)
    say_notice()
