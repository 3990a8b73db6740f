"""The checkpoints a training run keeps (`checkpoints`): Lightning's `ModelCheckpoint` and
`KeepLast`, a callback that keeps `last.ckpt` current, so a run stopped by Ctrl-C, SIGTERM (a
scheduler's preemption) or a crash resumes where it was with `ckpt_path=last`: it writes over
`last.ckpt` every `every_minutes` of training, and once more when training stops on an exception,
then prints the command that resumes the run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from uniner.config import group_args
from uniner.model.args import LAST, CheckpointArgs


def checkpoints(checkpoint, dirpath: Path, *, validating: bool, resume: str
                ) -> list[pl.Callback]:
    """The callbacks that write a run's checkpoints into `dirpath`, as the `checkpoint` group
    asks: `last.ckpt` (kept current by `KeepLast`, whose stop message names `resume`), and every
    epoch's `epoch=N.ckpt` on request, else the best one by `monitor` when `validating`."""
    args = group_args(CheckpointArgs, "checkpoint", checkpoint)
    monitor = args.monitor if validating else None
    # a resumed run writes over its own files (last.ckpt stays `last`, never last-v1.ckpt)
    keep = -1 if args.every_epoch else 1 if monitor else 0
    return [ModelCheckpoint(dirpath=dirpath, filename="{epoch}", save_last=True, monitor=monitor,
                            mode=args.mode, save_top_k=keep, enable_version_counter=False),
            KeepLast(Path(dirpath) / LAST, args.every_minutes, resume)]


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
