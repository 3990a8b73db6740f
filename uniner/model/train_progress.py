"""Lightning's progress as plain lines, for a run whose output goes to a file (`uniner.progress`).

    train: epoch 3/150 · step 120/7200 (2%) · 1.9 it/s · ETA 1h02m · loss 0.41
    val: epoch 3 · val/loss 0.52 · val/f1 0.31
    test: 472/2832 queries (17%) · 12.3 queries/s · ETA 3m12s

A line every few percent of the optimizer steps, after each validation, and every few percent of
the test questions answered (the module reports each answered batch of the engine).
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar

from uniner.progress import Lines, interactive


class LineProgressBar(ProgressBar):
    """Lightning's progress bar replaced by `uniner.progress.Lines`."""

    def __init__(self, stream=None):
        super().__init__()
        self.enabled = True
        self.stream = stream
        self.train_lines: Lines | None = None
        self.test_lines: Lines | None = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    # ----------------------------------------------------------------------------- training
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 \
            else trainer.estimated_stepping_batches
        self.train_lines = Lines("train", total, "", rate_unit="it", stream=self.stream)
        # a resumed run counts from where it was, its rate from what this process does
        self.train_lines.done = self.train_lines.initial = trainer.global_step
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        lines = self.train_lines
        if lines is None or trainer.global_step == self._step:  # accumulating
            return
        done, self._step = trainer.global_step - self._step, trainer.global_step
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        epoch = f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs else "")
        loss = trainer.callback_metrics.get("train/loss")
        lines.update(done, prefix=f"{epoch} · step",
                     loss=float(loss) if loss is not None else None)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1}
        if shown:
            metrics = " · ".join(f"{k} {v:.3g}" for k, v in sorted(shown.items()))
            print(f"val: epoch {trainer.current_epoch + 1} · {metrics}",
                  file=self.stream or sys.stderr, flush=True)

    # ----------------------------------------------------------------------------- test
    def on_test_start(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        # this rank's share of the questions (the test sampler splits them between ranks)
        total = -(-len(getattr(pl_module, "test_queries", []) or []) // trainer.world_size)
        if total and hasattr(pl_module, "answer_progress"):
            self.test_lines = Lines("test", total, "queries", stream=self.stream)
            pl_module.answer_progress = self.test_lines.update

    def on_test_end(self, trainer, pl_module) -> None:
        if self.test_lines is not None:
            self.test_lines.close()
            self.test_lines = None
            pl_module.answer_progress = None


def progress_callbacks(enabled: bool) -> list:
    """[LineProgressBar()] when progress is on and the output is not a terminal (Lightning
    keeps its own bar on a terminal); [] otherwise."""
    return [LineProgressBar()] if enabled and not interactive() else []
