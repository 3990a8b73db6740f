"""What a new user's first commands cost on this machine (issue 18).

    python experiments/bench_first_hour.py default            # `uniner-train` as the README says
    python experiments/bench_first_hour.py threads --busy 1   # 1 vs 2 threads beside busy work

`default` runs `uniner-train` with no overrides in an empty directory and prints its wall time,
its training line (`train: ... took`) and its results row. `threads` runs a short training
(`--epochs`, no logger, no export) with `OMP_NUM_THREADS=1` and then with every core, each
beside `--busy` processes that spin a core, and prints the steps a second of each. Run it on an
otherwise idle machine: its own load is the measurement.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = re.compile(r"^train: .*took.*$", re.M)
ROW = re.compile(r"^\| sample \|.*$", re.M)


def uniner_train(*overrides: str, cwd: Path, env: dict | None = None) -> tuple[float, str]:
    """Run `uniner-train overrides...` in `cwd`; (wall seconds, stdout + stderr)."""
    command = shutil.which("uniner-train")
    argv = [command] if command else [sys.executable, "-m", "uniner.cli.train"]
    start = time.perf_counter()
    done = subprocess.run([*argv, *overrides], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"uniner-train {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout + done.stderr


def steps_per_second(log: str) -> float:
    """From the last `train:` line: `7.6 it/s` or `1.4 s/it`."""
    line = TRAIN.findall(log)[-1]
    value, unit = re.search(r"([\d.]+) (it/s|s/it)", line).groups()
    return float(value) if unit == "it/s" else 1 / float(value)


def default(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wall, log = uniner_train(cwd=Path(tmp))
    print(f"uniner-train (no overrides): {wall:.0f} s wall")
    print(TRAIN.findall(log)[-1])
    print(ROW.findall(log)[-1])


def threads(args) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
    try:
        time.sleep(1)
        print(f"beside {args.busy} busy processes on {cores} cores, {args.epochs} epochs:")
        for n in (1, cores):
            with tempfile.TemporaryDirectory() as tmp:
                wall, log = uniner_train(f"trainer.max_epochs={args.epochs}", "logger=none",
                                         "export=false", cwd=Path(tmp),
                                         env={"OMP_NUM_THREADS": str(n)})
            print(f"  OMP_NUM_THREADS={n}: {steps_per_second(log):.1f} steps/s "
                  f"({TRAIN.findall(log)[-1].split('took ')[1].split(' ')[0]} of training)")
    finally:
        for p in spinners:
            p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("default", help="the no-override run")
    t = sub.add_parser("threads", help="1 vs every thread beside busy processes")
    t.add_argument("--busy", type=int, default=1, help="processes spinning a core each")
    t.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    {"default": default, "threads": threads}[args.what](args)


if __name__ == "__main__":
    main()
