"""The typed `data` group: the knobs of the training data module, their defaults and their
checks, in one dataclass that `NERDataModule` is built from and the tools' config schema reads
(no torch import: the tools check a config in a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uniner.errors import ConfigError

PADDINGS = ("longest", "max_length")  # data.padding: to the batch's longest row, or max_length


def padded_width(longest: int, *, padding: str, max_length: int | None,
                 pad_to_multiple_of: int | None) -> int:
    """The width a batch whose longest row is `longest` is padded to."""
    if padding not in PADDINGS:  # else an unknown mode would silently pad to the longest row
        raise ConfigError(f"padding={padding!r}: expected one of {', '.join(PADDINGS)}")
    width = longest
    if padding == "max_length":
        if max_length is None:
            raise ConfigError("padding='max_length' needs max_length")
        width = max(width, max_length)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    return width


@dataclass
class DataArgs:
    """The `data` group: where the training passages come from and how they are batched."""

    source: Any = None
    """The source config (`uniner.data.sources.load_passages`): `{format, path, ...}`."""
    name: str | None = None
    """Label for run names and logs."""
    max_length: int = 1024
    """Tokens a conversation (a packed row) may take; longer ones lose trailing turns, counted."""
    batch_size: int = 8
    """Rows a batch (packed rows with `packing`); ignored when `batch_tokens` is set."""
    batch_tokens: int | None = None
    """Batches by tokens (rows x padded width), length-grouped; >= one padded max_length row."""
    packing: bool = False
    """Several conversations a row, up to `max_length` tokens, no attention across them."""
    val_fraction: float = 0.0
    """Share of passages held out for val/loss and val/f1."""
    num_workers: int = 0
    """DataLoader worker processes."""
    padding: str = "longest"
    """longest (the batch's longest row) or max_length (every row: the official recipe)."""
    pad_to_multiple_of: int | None = None
    """Round each batch's width up to a multiple of this."""
    train_on_read_reply: bool = True
    """Also train on the `I've read this text.` reply (the official recipe)."""
    cache_dir: str | None = None
    """Where tokenized conversations are cached, keyed by content and tokenizer; null: none."""
    cache_max_gb: float | None = 2.0
    """The least recently used cache files go beyond this; null: no cap."""
    seed: int = 42
    """Seeds the train/val split and the batch order."""

    def __post_init__(self):
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction={self.val_fraction}: must be in [0, 1)")
        if self.padding not in PADDINGS:
            raise ConfigError(f"data.padding={self.padding}: expected one of "
                              f"{', '.join(PADDINGS)}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size={self.batch_size}: must be >= 1")
        if not isinstance(self.packing, bool):
            raise ConfigError(f"data.packing={self.packing!r}: true or false")
        if self.batch_tokens is not None:
            # any conversation may be max_length tokens long: one such row must fit a batch
            row = padded_width(self.max_length, padding=self.padding, max_length=self.max_length,
                               pad_to_multiple_of=self.pad_to_multiple_of)
            if self.batch_tokens < row:
                raise ConfigError(f"data.batch_tokens={self.batch_tokens}: must be >= {row}, "
                                  f"the tokens of one padded row of "
                                  f"data.max_length={self.max_length}")
