"""From a configured source to training batches: passages -> queries -> conversations -> ids.

Three pure steps (sampling, rendering, encoding) and a `collate` bound with `partial`; the
DataModule only wires them together and receives the tokenizer late through `connect`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from uniner.config import group_args
from uniner.data.args import DataArgs, padded_width
from uniner.data.batching import (
    PackedRows,
    TokenBudgetBatchSampler,
    collate_packed,
    flat_cost,
    pack,
    padded_cost,
    row_lengths,
)
from uniner.data.encoding import IGNORE_INDEX, assemble, bos_id, token_ids
from uniner.data.prompts import Message, PromptStyle
from uniner.data.records import Passage, ReadReport
from uniner.data.sampling import NegativeSampler
from uniner.data.sources import load_passages
from uniner.errors import ConfigError
from uniner.progress import Lines, interactive, library_bars

log = logging.getLogger(__name__)

def render_rows(passages: Sequence[Passage], queries: Sequence[Sequence[str]], *,
                style: PromptStyle, train_on_read_reply: bool = True) -> dict[str, list]:
    """The conversations, rendered in `style`, as columns of segments (the form `datasets.map`
    encodes)."""
    rows = {"id": [], "content": [], "masked": [], "eos": []}
    for passage, types in zip(passages, queries):
        msgs = style.conversation(passage, types, train_on_read_reply)
        rows["id"].append(passage.id)
        rows["content"].append([m.content for m in msgs])
        rows["masked"].append([m.masked for m in msgs])
        rows["eos"].append([m.eos for m in msgs])
    return rows


def longest_label_run(labels: Sequence[int], ignore_index: int = IGNORE_INDEX) -> int:
    """The longest run of consecutive supervised (not `ignore_index`) labels: the longest reply
    the model learns to generate, its end token included."""
    supervised = np.asarray(labels) != ignore_index
    if not supervised.any():
        return 0
    edges = np.flatnonzero(np.diff(np.concatenate(([False], supervised, [False])).astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max())


def _encode_batch(batch: dict, tokenizer, max_length: int | None, ignore_index: int,
                  auto_bos: bool, progress=None) -> dict:
    flat = [c for conv in batch["content"] for c in conv]
    ids = token_ids(tokenizer, flat)
    bos, eos = bos_id(tokenizer) if auto_bos else None, tokenizer.eos_token_id
    out = {"input_ids": [], "labels": [], "cut_turns": [], "too_long": [], "label_run": []}
    at = 0
    for content, masked, ends in zip(batch["content"], batch["masked"], batch["eos"]):
        msgs = [Message("", c, m, e) for c, m, e in zip(content, masked, ends)]
        dropped: Counter = Counter()
        enc = assemble(msgs, ids[at: at + len(msgs)], bos=bos, eos=eos, max_length=max_length,
                       ignore_index=ignore_index, dropped=dropped)
        at += len(msgs)
        out["input_ids"].append(enc["input_ids"] if enc else [])
        out["labels"].append(enc["labels"] if enc else [])
        out["cut_turns"].append(dropped["trailing turns cut by max_length"])
        out["too_long"].append(enc is None)
        out["label_run"].append(longest_label_run(enc["labels"], ignore_index) if enc else 0)
    if progress is not None:
        progress(len(batch["content"]))
    return out


def _fingerprint(rows: dict, tokenizer, max_length: int | None, ignore_index: int,
                 features: str = "", auto_bos: bool = True) -> str:
    h = hashlib.sha256(features.encode())  # a cached file of another schema is another key
    h.update(json.dumps([rows["content"], rows["masked"], rows["eos"]]).encode())
    h.update(tokenizer.backend_tokenizer.to_str().encode() if tokenizer.is_fast
             else repr(sorted(tokenizer.get_vocab().items())).encode())
    bos = bos_id(tokenizer) if auto_bos else None
    h.update(f"{max_length}|{ignore_index}|{bos}|{tokenizer.eos_token_id}".encode())
    return h.hexdigest()[:24]


def encode_rows(rows: dict, tokenizer, *, max_length: int | None,
                ignore_index: int = IGNORE_INDEX, cache_dir: str | Path | None = None,
                cache_max_gb: float | None = None, num_proc: int | None = None,
                auto_bos: bool = True):
    """Tokenize rendered conversations with `datasets.map` (batched, cached on disk).

    Returns the dataset (columns `input_ids`, `labels`, and `label_run`: each row's longest
    run of supervised labels, counted while encoding) and the counts of what the max-length
    policy dropped. `auto_bos` is the prompt style's (`prompts.PromptStyle`). The cache is keyed
    by the conversations, the tokenizer and the policy, so a re-run with the same inputs reads
    the ids back instead of tokenizing again; files beyond `cache_max_gb` in all go, the least
    recently used first (`prune_cache`: each epoch's redrawn negatives write a new file, so the
    cache would grow without bound). `num_proc=None` runs one process per 10,000
    conversations, up to the usable cores (a fork costs more than it saves on small sets).
    """
    import datasets
    from datasets.utils import logging as ds_logging

    if num_proc is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        num_proc = min(cores or 1, len(rows["id"]) // 10_000) or None

    strings, flags, ids = (datasets.List(datasets.Value(t)) for t in ("string", "bool", "int32"))
    # declared types: inferring them from 45k nested lists costs seconds
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features(
        {"id": datasets.Value("string"), "content": strings, "masked": flags, "eos": flags}))
    encoded = datasets.Features({"id": datasets.Value("string"), "input_ids": ids,
                                 "labels": ids, "cut_turns": datasets.Value("int32"),
                                 "too_long": datasets.Value("bool"),
                                 "label_run": datasets.Value("int32")})
    # our own key, also as the map's fingerprint: datasets would otherwise dill-hash the
    # tokenizer on every call (seconds for a 32k vocabulary)
    key = _fingerprint(rows, tokenizer, max_length, ignore_index, repr(encoded), auto_bos)
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"encoded-{key}.arrow")
    # datasets' own bar on a terminal; plain lines when the output is a file (one process), or
    # one line (several: each would count its own shard)
    lines = None if interactive() else Lines("tokenizing", len(rows["id"]), "conversations",
                                             delay=2.0)
    if lines is not None and (num_proc or 1) > 1:
        print(f"tokenizing: {len(rows['id'])} conversations in {num_proc} processes",
              file=sys.stderr, flush=True)
    # a terminal bar only for a set that takes a while (5,000 rows: about a second); a redrawn
    # epoch of the sample would otherwise leave a finished bar behind it every epoch
    with library_bars(ds_logging, lines is None and len(rows["id"]) >= 5_000):
        ds = ds.map(_encode_batch, batched=True, batch_size=1000, num_proc=num_proc,
                    fn_kwargs={"tokenizer": tokenizer, "max_length": max_length,
                               "ignore_index": ignore_index, "auto_bos": auto_bos,
                               "progress": lines.update if lines is not None
                               and (num_proc or 1) == 1 else None},
                    remove_columns=["content", "masked", "eos"], cache_file_name=cache_file,
                    load_from_cache_file=cache_file is not None, new_fingerprint=key,
                    features=encoded, desc="tokenizing")
    if cache_file is not None and cache_max_gb is not None:
        prune_cache(Path(cache_dir), int(cache_max_gb * 2**30), keep=Path(cache_file))
    dropped = Counter()
    # summed in Arrow: iterating a column in Python costs as much as writing it
    too_long = pc.sum(ds.data.column("too_long")).as_py() or 0
    if too_long:
        dropped["passage too long for one question"] = too_long
    cut = pc.sum(ds.data.column("cut_turns")).as_py() or 0
    if cut:
        dropped["trailing turns cut by max_length"] = cut
    if too_long:
        with library_bars(ds_logging, False):  # counted above; a bar for a filter is noise
            ds = ds.filter(lambda r: not r, input_columns="too_long")
    return ds.remove_columns(["cut_turns", "too_long"]), dropped


def prune_cache(cache_dir: Path, max_bytes: int, keep: Path) -> list[Path]:
    """Remove the least recently used `encoded-*.arrow` files of `cache_dir` until they hold at
    most `max_bytes` (`keep`, the file in use, stays and counts as just used). Returns those
    removed."""
    if keep.exists():
        keep.touch()  # a file read back from the cache is in use, as one just written
    files = sorted(cache_dir.glob("encoded-*.arrow"), key=lambda p: p.stat().st_mtime,
                   reverse=True)
    total, removed = 0, []
    for f in files:
        total += f.stat().st_size
        if total > max_bytes and f != keep:
            f.unlink(missing_ok=True)
            removed.append(f)
    if removed:
        log.info("tokenized cache %s: removed %d least recently used files (data.cache_max_gb)",
                 cache_dir, len(removed))
    return removed


def collate(batch: list[dict], *, pad_id: int, ignore_index: int = IGNORE_INDEX,
            padding: str = "longest", max_length: int | None = None,
            pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad `input_ids` and `labels` into tensors, with `attention_mask` and `num_tokens`.

    `padding="longest"` pads to the longest row of the batch; `"max_length"` pads every row to
    `max_length` (the official recipe, kept for comparisons). `num_tokens` (the non-pad tokens)
    is for the throughput log; the module does not pass it to the model.
    """
    width = padded_width(max(len(r["input_ids"]) for r in batch), padding=padding,
                         max_length=max_length, pad_to_multiple_of=pad_to_multiple_of)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), ignore_index, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        n = len(r["input_ids"])
        ids[i, :n] = torch.as_tensor(r["input_ids"])
        labels[i, :n] = torch.as_tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "num_tokens": mask.sum()}


class NERDataModule(pl.LightningDataModule):
    """Training conversations of one source with a negative sampler.

    Negatives and type order are drawn per epoch when the sampler re-draws (the trainer then
    reloads the train dataloader every epoch).

    Batches: `batch_size` rows, or with `batch_tokens` as many rows as fit that many tokens
    (rows x padded width), length-grouped. With `packing`, a row holds several conversations
    (up to `max_length` tokens) and `batch_size` / `batch_tokens` count packed rows / their tokens.
    See `uniner.data.batching`.
    """

    def __init__(self, source: dict, sampler: NegativeSampler | None = None, **knobs):
        """`source` and the other `DataArgs` knobs (`knobs`), checked there."""
        super().__init__()
        self.args = group_args(DataArgs, "data", {"source": dict(source), **knobs})
        self.sampler = sampler or NegativeSampler(strategy="none", k=None)
        self.tokenizer, self.style = None, None
        self.train_passages: list[Passage] = []
        self.val_passages: list[Passage] = []
        self.report = ReadReport(str(source.get("path")))
        self.dropped: Counter = Counter()
        # the longest run of supervised labels in the rows encoded so far (answer + end token):
        # what `module.max_new_tokens: auto` sizes generation by
        self._longest_label_run = 0
        self._logged_rows = None

    def connect(self, tokenizer, style: PromptStyle) -> None:
        """The backbone's tokenizer and the prompt style to render with."""
        self.tokenizer, self.style = tokenizer, style

    def setup(self, stage: str | None = None) -> None:
        if self.train_passages:
            return
        passages = load_passages(self.args.source, self.report)
        if not passages:
            raise ConfigError(f"data source {self.args.source.get('path')} yielded no passages")
        # the split has its own generator, so other seeded draws don't move it
        order = np.random.default_rng(self.args.seed).permutation(len(passages))
        n_val = int(round(self.args.val_fraction * len(passages)))
        self.val_passages = [passages[i] for i in sorted(order[:n_val])]
        self.train_passages = [passages[i] for i in sorted(order[n_val:])]

    def encode(self, passages: Sequence[Passage], epoch: int):
        if self.tokenizer is None:
            raise RuntimeError("NERDataModule.connect(tokenizer) must be called before encoding")
        queries = self.sampler.queries(passages, epoch)
        rows = render_rows(passages, queries, style=self.style,
                           train_on_read_reply=self.args.train_on_read_reply)
        cache_dir = os.path.expanduser(self.args.cache_dir) if self.args.cache_dir else None
        ds, dropped = encode_rows(rows, self.tokenizer, max_length=self.args.max_length,
                                  cache_dir=cache_dir, cache_max_gb=self.args.cache_max_gb,
                                  auto_bos=self.style.auto_bos)
        for reason, n in dropped.items():
            if epoch == 0 or self.sampler.redraw_each_epoch:
                log.warning("epoch %d: %s: %d", epoch, reason, n)
        self.dropped = dropped
        if len(ds):
            self._longest_label_run = max(self._longest_label_run,
                                          pc.max(ds.data.column("label_run")).as_py() or 0)
        return ds.remove_columns(["label_run"])

    def longest_label_run(self) -> int:
        """The longest run of supervised labels in the training rows encoded so far (the longest
        answer and its end token, for `module.max_new_tokens: auto`). A method, not a property:
        epoch 0's rows are encoded on first use (a resumed run may have had nothing left to
        fit), once."""
        if not self._longest_label_run and self.train_passages:
            self.encode(self.train_passages, 0)
        return self._longest_label_run

    def _flash_attention(self) -> bool:
        """Whether the module being fitted runs flash-attention (packed rows must then be one
        row), as it says (`NERModule.flash_attention`)."""
        module = self.trainer.lightning_module if self.trainer else None
        return bool(getattr(module, "flash_attention", False))

    def _loader(self, ds, epoch: int, shuffle: bool) -> DataLoader:
        width = dict(padding=self.args.padding, max_length=self.args.max_length,
                     pad_to_multiple_of=self.args.pad_to_multiple_of)
        flatten = self.args.packing and self._flash_attention()
        lengths = row_lengths(ds)
        if self.args.packing:
            # repacked each epoch (the loader is rebuilt), ties broken by the epoch's seed
            bins = pack(lengths, self.args.max_length, seed=self.args.seed + epoch)
            ds = PackedRows(ds, bins, lengths)
            lengths = ds.lengths
            fn = partial(collate_packed, pad_id=self.tokenizer.pad_token_id, flatten=flatten,
                         **width)
        else:
            fn = partial(collate, pad_id=self.tokenizer.pad_token_id, **width)
        if self.args.batch_tokens is None:
            # the epoch's order is a function of (seed, epoch) alone, not of a generator's state,
            # so a run resumed from `last` sees exactly the batches the interrupted one would have
            order = np.random.default_rng([self.args.seed, epoch]).permutation(len(ds)).tolist() \
                if shuffle else None
            # its own generator: each iterator draws a worker seed, never from the global RNG
            gen = torch.Generator().manual_seed(self.args.seed + epoch)
            return DataLoader(ds, batch_size=self.args.batch_size, sampler=order, collate_fn=fn,
                              num_workers=self.args.num_workers, generator=gen)
        cost = flat_cost if flatten else partial(padded_cost, **width)
        # this rank's share; under DDP Lightning re-creates the sampler with a DistributedSampler
        # that says the same (see TokenBudgetBatchSampler)
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer \
            else (1, 0)
        batches = TokenBudgetBatchSampler(None, lengths, self.args.batch_tokens, cost,
                                          shuffle=shuffle, seed=self.args.seed, epoch=epoch,
                                          num_replicas=world, rank=rank)
        return DataLoader(ds, batch_sampler=batches, collate_fn=fn,
                          num_workers=self.args.num_workers)

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer else 0
        ds = self.encode(self.train_passages, epoch)
        # once, and again only when the count changes (rows dropped in a redraw): not 150 lines
        level = logging.INFO if len(ds) != self._logged_rows else logging.DEBUG
        self._logged_rows = len(ds)
        log.log(level, "epoch %d: %d training conversations", epoch, len(ds))
        return self._loader(ds, epoch, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_passages:
            return []
        return self._loader(self.encode(self.val_passages, 0), 0, shuffle=False)
