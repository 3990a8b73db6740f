"""Third-party noise, filtered where it is made: only warnings a user can act on remain.

`quiet()` is called by every entry point before its heavy imports (torch, transformers,
bitsandbytes, Lightning, W&B). Each filter names one message (a regex), its category or level, and
the module or logger that emits it; nothing is silenced wholesale, so a new warning of the same
libraries still shows.

- bitsandbytes' "Failed to load CPU gemm_4bit_forward ... pip install kernels", at import (an
  optional faster 4-bit CPU kernel): its logger `bitsandbytes.backends.cpu.ops`;
- transformers' "`is_gradient_checkpointing` is deprecated" FutureWarning: peft's
  `get_peft_model` reads the old property (our code never does): the message, FutureWarning,
  `transformers.modeling_utils`;
- Lightning's "Tip: ... litlogger" and "... litmodels", on every fit: Lightning's rank-zero logger;
- "`isinstance(treespec, LeafSpec)` is deprecated" FutureWarning: Lightning's `utilities._pytree`
  against torch >= 2.10: the message, FutureWarning, that module.

Fixed at the source instead: W&B's anonymous-mode warning (Lightning's `WandbLogger` passes a
deprecated `anonymous=None`; `loggers.build_loggers` drops it), W&B's "Symlinked 1 file" (the run's
output files are copied into the W&B run directory, `loggers.log_results`) and Lightning's
`transfer_batch_to_device` notice (the test batches are a `TestBatch` that Lightning leaves on the
host, so the module does not override the hook).
"""

from __future__ import annotations

import logging
import re
import warnings

# (logger name, message regex): log records that are dropped
LOG_FILTERS: tuple[tuple[str, str], ...] = (
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward"),
    ("pytorch_lightning.utilities.rank_zero", r"Tip: .*\[(litlogger|litmodels)\]"),
    ("lightning_fabric.utilities.rank_zero", r"Tip: .*\[(litlogger|litmodels)\]"),
    ("lightning.pytorch.utilities.rank_zero", r"Tip: .*\[(litlogger|litmodels)\]"),
)
# (message regex, category, module regex): Python warnings that are ignored
WARNING_FILTERS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
     r"(pytorch_lightning|lightning\.pytorch)\.utilities\._pytree"),
)


class DropMessages(logging.Filter):
    """Drops the records of one logger whose message matches `pattern`."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not self.pattern.search(message)


def quiet() -> None:
    """Install the filters (idempotent)."""
    for name, pattern in LOG_FILTERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) and f.pattern.pattern == pattern
                   for f in logger.filters):
            logger.addFilter(DropMessages(pattern))
    for message, category, module in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
