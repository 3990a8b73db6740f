"""A training callback that keeps torch's CPU threads at the cores other work leaves free
(`uniner.threads`): it looks every `every_seconds`, and changes the threads only when two looks
in a row agree, so a passing burst of other work does not move them."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch

from uniner import threads

log = logging.getLogger(__name__)


class FreeCores(pl.Callback):
    def __init__(self, every_seconds: float = 20.0, clock=time.monotonic, busy=None):
        self.every, self.clock = every_seconds, clock
        self.busy = busy or (lambda: threads.busy_cores(own=torch.get_num_threads()))
        self.last = clock()
        self.proposed: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        want, have = threads.free_threads(self.busy()), torch.get_num_threads()
        if want == have:
            self.proposed = None
        elif self.proposed == want:  # the second look in a row: the change holds
            torch.set_num_threads(want)
            log.info("CPU threads %d -> %d (other work %s)", have, want,
                     "ended" if want > have else "started")
            self.proposed = None
        else:
            self.proposed = want


def free_core_callbacks(accelerator: str) -> list:
    """[FreeCores()] for a CPU run whose threads the user did not set; [] otherwise."""
    cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return [FreeCores()] if cpu and not threads.user_set() else []
