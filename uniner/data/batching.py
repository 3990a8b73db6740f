"""How encoded conversations become batches: packing, token budgets and per-rank shards.

Packing puts several conversations in one row of at most `max_length` tokens (best-fit
decreasing), with `position_ids` restarting at 0 for each conversation. transformers reads
those position ids as the boundaries of the packed sequences (the model must run with
`use_cache=False`, or it ignores them): SDPA/eager/flex get a block-diagonal causal mask from
`masking_utils.create_causal_mask`, and flash-attention runs its varlen kernel, which it only
does for a single flattened row, so for flash-attention every batch is one row.

A token budget (`batch_tokens`) sizes batches by what they cost: rows x padded width (padded rows
and packed rows alike; flattened rows: the tokens themselves). Items are sorted by length with
seeded tie-breaks, cut greedily, and the batches shuffled per epoch; under DDP every rank takes
its own share of the same batch list.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import BatchSampler, Dataset, DistributedSampler, Sampler

from uniner.data.args import padded_width
from uniner.data.encoding import IGNORE_INDEX
from uniner.errors import ConfigError


def row_lengths(ds) -> np.ndarray:
    """Token count of every row of an encoded `datasets.Dataset` (read from Arrow, not Python)."""
    return pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_numpy().astype(np.int64)


def padded_cost(rows: int, longest: int, total: int, **width) -> int:
    """Tokens a batch of padded rows occupies: rows x the width they are padded to."""
    return rows * padded_width(longest, **width)


def flat_cost(rows: int, longest: int, total: int) -> int:
    """Tokens of a flattened batch (flash-attention varlen): no padding at all."""
    return total


def pack(lengths: Sequence[int], capacity: int, seed: int = 0) -> list[list[int]]:
    """Group item indices into bins of at most `capacity` tokens (best-fit decreasing).

    Longest first, each into the open bin it fills best; equal lengths are taken in a seeded
    random order, so a new seed (epoch) mixes different conversations at the same fill.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return []
    if lengths.max() > capacity:
        raise ConfigError(f"a row of {lengths.max()} tokens does not fit a packed row of "
                          f"{capacity} (data.max_length)")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(lengths)), -lengths))
    shortest = int(lengths.min())
    bins: list[list[int]] = []
    space: list[int] = []  # free tokens of the open bins, ascending
    owner: list[int] = []  # the bin of each `space` entry
    for i in order.tolist():
        n = int(lengths[i])
        k = bisect.bisect_left(space, n)
        if k == len(space):
            bins.append([i])
            b, free = len(bins) - 1, capacity - n
        else:
            b, free = owner.pop(k), space.pop(k) - n
            bins[b].append(i)
        if free >= shortest:  # a bin nothing fits into any more is closed
            j = bisect.bisect_left(space, free)
            space.insert(j, free)
            owner.insert(j, b)
    return bins


class PackedRows(Dataset):
    """A dataset of packed rows: item i is the list of encoded conversations of bin i."""

    def __init__(self, rows, bins: list[list[int]], lengths: Sequence[int]):
        self.rows, self.bins = rows, bins
        self.lengths = np.array([int(sum(lengths[j] for j in b)) for b in bins], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, i: int) -> list[dict]:
        return [self.rows[j] for j in self.bins[i]]


def budget_batches(lengths: Sequence[int], batch_tokens: int,
                   cost: Callable[[int, int, int], int], seed: int = 0) -> list[list[int]]:
    """Length-grouped batches whose `cost(rows, longest, total)` stays within `batch_tokens`.

    Items are sorted by length (seeded tie-breaks) and cut greedily; an item that costs more than
    the budget on its own is an error (the data module checks the budget against `max_length`
    up front, so this never happens there).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.lexsort((np.random.default_rng(seed).random(len(lengths)), lengths)).tolist()
    batches: list[list[int]] = []
    batch: list[int] = []
    total = 0
    for i in order:
        n = int(lengths[i])
        if cost(1, n, n) > batch_tokens:
            raise ConfigError(f"a row of {n} tokens alone exceeds data.batch_tokens={batch_tokens}")
        # ascending lengths: the newcomer is the longest of the batch
        if batch and cost(len(batch) + 1, n, total + n) > batch_tokens:
            batches.append(batch)
            batch, total = [], 0
        batch.append(i)
        total += n
    if batch:
        batches.append(batch)
    return batches


class TokenBudgetBatchSampler(BatchSampler):
    """Batches of item indices by token budget, shuffled per epoch, sharded over ranks.

    Every rank builds the same batch list from the same lengths, seed and epoch, pads it by
    repeating its first batches to a multiple of the world size (DDP needs the same number of
    steps on every rank), and takes every `num_replicas`-th batch from its `rank`.

    Lightning (`use_distributed_sampler=True`) re-creates a batch sampler with
    `sampler=DistributedSampler(...)` under DDP; that sampler is used only for its `num_replicas`,
    `rank` and `epoch` (Lightning calls its `set_epoch`), never for its index order.
    """

    def __init__(self, sampler: Sampler | None, lengths: Sequence[int], batch_tokens: int,
                 cost: Callable[[int, int, int], int], *, shuffle: bool = True, seed: int = 0,
                 epoch: int = 0, num_replicas: int = 1, rank: int = 0):
        # BatchSampler.__init__ is not called: its batch_size / drop_last don't apply here
        self.sampler, self.lengths, self.cost = sampler, lengths, cost
        self.batch_tokens = batch_tokens
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.num_replicas, self.rank = num_replicas, rank
        if isinstance(sampler, DistributedSampler):
            self.num_replicas, self.rank = sampler.num_replicas, sampler.rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} of {self.num_replicas} replicas")
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch(self) -> int:
        # the data module passes the epoch the loader was built for; when loaders are not
        # rebuilt each epoch, Lightning advances only the DistributedSampler's
        if isinstance(self.sampler, DistributedSampler):
            return max(self.epoch, self.sampler.epoch)
        return self.epoch

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch."""
        epoch = self._epoch()
        if self._cache is None or self._cache[0] != epoch:
            seed = self.seed + epoch
            batches = budget_batches(self.lengths, self.batch_tokens, self.cost, seed=seed)
            if self.shuffle:
                order = np.random.default_rng([seed, 1]).permutation(len(batches))
                batches = [batches[i] for i in order]
            batches += batches[: -len(batches) % self.num_replicas]
            self._cache = (epoch, batches[self.rank:: self.num_replicas])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def collate_packed(bins: list[list[dict]], *, pad_id: int, ignore_index: int = IGNORE_INDEX,
                   padding: str = "longest", max_length: int | None = None,
                   pad_to_multiple_of: int | None = None, flatten: bool = False
                   ) -> dict[str, torch.Tensor]:
    """Packed rows as `input_ids`, `labels`, `position_ids` and `num_tokens` (no attention mask).

    Each bin becomes one row (`flatten=True`: all bins one row, unpadded, as flash-attention's
    varlen path needs). Position ids restart at 0 for every conversation and for the padding
    tail, so transformers sees each as its own sequence; the first label of every conversation
    is `ignore_index`, so the last token of one never learns to predict the next one.
    """
    rows = [[conv for b in bins for conv in b]] if flatten else bins
    longest = max(sum(len(c["input_ids"]) for c in row) for row in rows)
    width = longest if flatten else padded_width(longest, padding=padding, max_length=max_length,
                                                 pad_to_multiple_of=pad_to_multiple_of)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), ignore_index, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        at = 0
        for conv in row:
            n = len(conv["input_ids"])
            ids[i, at: at + n] = torch.as_tensor(conv["input_ids"])
            labels[i, at + 1: at + n] = torch.as_tensor(conv["labels"][1:], dtype=torch.long)
            positions[i, at: at + n] = torch.arange(n)
            at += n
        positions[i, at:] = torch.arange(width - at)
    total = sum(len(c["input_ids"]) for row in rows for c in row)
    return {"input_ids": ids, "labels": labels, "position_ids": positions,
            "num_tokens": torch.tensor(total)}
