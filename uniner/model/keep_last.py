"""A training callback that keeps `last.ckpt` current, so a run stopped by Ctrl-C, SIGTERM (a
scheduler's preemption) or a crash resumes where it was with `ckpt_path=last`: it writes over
`last.ckpt` every `every_minutes` of training, and once more when training stops on an exception,
then prints the command that resumes the run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytorch_lightning as pl


class KeepLast(pl.Callback):
    def __init__(self, path: str | Path, every_minutes: float | None, resume: str,
                 clock=time.monotonic):
        self.path, self.resume, self.clock = Path(path), resume, clock
        self.every = None if every_minutes is None else 60.0 * every_minutes
        self.saved = clock()

    def on_train_start(self, trainer, pl_module) -> None:
        self.saved = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every is not None and self.clock() - self.saved >= self.every:
            self._save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.global_step == 0:  # nothing trained: nothing to resume
            return
        self._save(trainer)
        why = {"KeyboardInterrupt": "interrupted", "SIGTERMException": "stopped by SIGTERM"}.get(
            type(exception).__name__, f"stopped by {type(exception).__name__}")
        print(f"{why} at step {trainer.global_step}: saved {self.path}; resume with:\n"
              f"  {self.resume}", file=sys.stderr, flush=True)

    def _save(self, trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.path)
        self.saved = self.clock()
