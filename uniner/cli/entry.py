"""How a tool starts and ends: Hydra's composition, the checks, the run directory, and a user's
mistake told in one line.

`tool(prog)` wraps a `@hydra.main` function. A mistake in the command line itself (an option
that a config group lacks, `data=nope`; a key the config lacks, `foo=1`; an override that does
not parse) is Hydra's to find, and Hydra prints it in several lines; `tool` prints it as one,

    uniner-train: error: data=nope: no such option; choose one of bio, instructuie, ...

and exits with status 2, as `user_errors` does for what the checks find once the config is
composed (a `UserError`: a `ConfigError`, a `DataError` naming file and line). Any other
exception is a bug and keeps its traceback. `HYDRA_FULL_ERROR=1` shows the traceback of every
error.

`tool` also sizes torch's CPU threads to the cores other work leaves free at the start
(`uniner.threads.fit_threads`; `OMP_NUM_THREADS` set by the user wins).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from uniner.errors import UserError
from uniner.progress import run_directory
from uniner.threads import fit_threads

# set by `tool` while Hydra runs (it reads the variable itself): the user's own choice
_full_error: bool | None = None


def full_error() -> bool:
    """Whether the user asked for tracebacks (`HYDRA_FULL_ERROR=1`)."""
    if _full_error is not None:
        return _full_error
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(err: BaseException) -> str:
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


def fail(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Report a `UserError` raised inside as one line on stderr and exit 2 (no traceback); also
    one that a component's constructor raised under Hydra's `instantiate`, which wraps it."""
    from hydra.errors import InstantiationException

    try:
        yield
    except UserError as err:
        if full_error():
            raise
        fail(prog, one_line(err))
    except InstantiationException as err:
        if full_error() or not isinstance(err.__cause__, UserError):
            raise
        fail(prog, one_line(err.__cause__))


def run_tool(prog: str, check, work, out: str):
    """A tool's body: `check()` (a user error is one line, see `user_errors`; the run directory,
    which then holds nothing of use, is removed), then `work()` between the two
    `run directory:` lines (the second one when it ends well: an error's line comes last);
    returns what `work` returns."""
    with user_errors(prog):
        try:
            check()
        except UserError:
            remove_if_unused(out)
            raise
        run_directory(out)
        result = work()
    run_directory(out)
    return result


def remove_if_unused(out: str) -> None:
    """Remove a run directory that holds only Hydra's `.hydra/` and empty logs, and the folders
    above it (under the working directory) that it leaves empty."""
    path = Path(out)
    if not path.is_dir():
        return
    for f in path.rglob("*"):
        if f.is_file() and f.parts[len(path.parts)] != ".hydra" and f.stat().st_size > 0:
            return
    shutil.rmtree(path, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in path.resolve().parents:  # outputs/eval/<name>/ left empty by it, not above cwd
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


def tool(prog: str, *, torch_threads: bool = True) -> Callable[[Callable], Callable]:
    """Wrap a `@hydra.main` function so that a command-line mistake Hydra finds while composing
    is one line and exit status 2, and (`torch_threads`, for tools that run a model) size
    torch's threads to the free cores (see the module's docstring)."""
    def wrap(hydra_main: Callable) -> Callable:
        @functools.wraps(hydra_main)
        def entry(*args, **kwargs):
            global _full_error
            from hydra.errors import (
                ConfigCompositionException,
                OverrideParseException,
                SearchPathException,
            )

            _full_error = full_error()
            if torch_threads:
                fit_threads(prog)
            before = os.environ.get("HYDRA_FULL_ERROR")
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises, rather than printing
            try:
                return hydra_main(*args, **kwargs)
            except (ConfigCompositionException, OverrideParseException,
                    SearchPathException) as err:
                if _full_error:
                    raise
                fail(prog, composition_error(err))
            finally:
                if before is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = before
                _full_error = None
        return entry
    return wrap


def composition_error(err: Exception) -> str:
    """Hydra's message for a command-line mistake, in one line that names the override."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    text = str(err)
    if isinstance(err, OverrideParseException):
        reason = re.sub(r"^Error parsing override '[^']*'; ", "",
                        one_line(err.message).split("; See https")[0])
        return f"{err.override}: {reason} " \
               "(the override grammar: key=value, group=option, +new_key=value)"
    found = re.search(r"Could not find '([^']+)'", text)
    if isinstance(err, MissingConfigException) and found:
        group, _, name = found.group(1).rpartition("/")
        # `_base` and the like are shared pieces of a group, not options
        options = [o for o in (err.options or []) if not o.startswith("_")]
        if group and options:
            return f"{group}={name}: no such option; choose one of {', '.join(options)}"
        return f"{found.group(1)}: no such config"
    override = re.search(r"Could not override '([^']+)'", text)
    if override and isinstance(err.__cause__, (ConfigKeyError, ConfigAttributeError)):
        key = override.group(1)
        return f"{key}: no such key in the config (a new key is added with +{key}=...)"
    append = re.search(r"use (\+\S+)", text)
    if override and "defaults list" in text and append:
        return (f"{override.group(1)}: not a config group of this tool "
                f"(to add it: {append.group(1)})")
    if override:
        return f"{override.group(1)}: {one_line(err).split('; ', 1)[-1]}"
    cause = f"; {one_line(err.__cause__)}" if err.__cause__ is not None else ""
    lines = [ln for ln in (one_line(err) + cause).split("; ")
             if not ln.startswith(("full_key:", "object_type=", "Set the environment"))]
    return "; ".join(lines)
