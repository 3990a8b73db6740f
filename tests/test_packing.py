"""Packing and token budgets: the same loss and gradients as padded rows, no attention across a
conversation boundary, budgets never exceeded, batches sharded per rank (also as Lightning
re-creates the sampler under DDP), and (slow) DDP on 2 CPU processes training packed batches."""

import csv
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning_fabric.utilities.data import _replace_dunder_methods
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from uniner.config import CONF_DIR, asset
from uniner.data.batching import (
    TokenBudgetBatchSampler,
    budget_batches,
    collate_packed,
    pack,
    padded_cost,
    row_lengths,
)
from uniner.data.datamodule import NERDataModule, collate, longest_label_run
from uniner.data.prompts import UniNER
from uniner.model.backbone import build_backbone
from uniner.model.module import NERModule

SAMPLE = {"format": "pile_ner", "path": asset("sample.json")}


def tiny(attn: str = "sdpa"):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(overrides=["+backbone=tiny", "+quant=none", "+adapter=none",
                                 f"backbone.attn_implementation={attn}"])
    return build_backbone(cfg.backbone, cfg.quant, cfg.adapter, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny()[1]


@pytest.fixture(scope="module")
def conversations(tokenizer):
    """The 48 sample conversations encoded with the tiny tokenizer (137 to 198 tokens)."""
    dm = datamodule(tokenizer)
    return dm.encode(dm.train_passages, 0)


def datamodule(tokenizer, **kwargs) -> NERDataModule:
    dm = NERDataModule(SAMPLE, **{"max_length": 512, **kwargs})
    dm.connect(tokenizer, UniNER(tokenizer))
    dm.setup("fit")
    return dm


def module(model, tokenizer) -> NERModule:
    return NERModule(model, tokenizer, partial(torch.optim.AdamW, lr=1e-3),
                     style=UniNER(tokenizer))


def packed_batch(rows: list[dict], capacity: int, pad_id: int, **kwargs) -> dict:
    bins = pack([len(r["input_ids"]) for r in rows], capacity)
    assert max(map(len, bins)) > 1  # conversations really share rows
    return collate_packed([[rows[j] for j in b] for b in bins], pad_id=pad_id, **kwargs)


# ------------------------------------------------------------------------------ packing itself

def test_pack_fits_every_item_once_and_fills_rows():
    lengths = np.random.default_rng(0).integers(100, 1000, size=2000)
    bins = pack(lengths, 1024, seed=3)
    assert sorted(i for b in bins for i in b) == list(range(2000))
    fill = [sum(lengths[b]) for b in bins]
    assert max(fill) <= 1024
    assert sum(fill) / (1024 * len(bins)) > 0.95
    assert pack(lengths, 1024, seed=3) == bins
    with pytest.raises(ValueError, match="data.max_length"):
        pack([5, 2000], 1024)


@pytest.mark.parametrize("ignore_index", [-100, -1])
def test_collate_packed_exact(ignore_index):
    a = {"input_ids": [1, 5, 6], "labels": [ignore_index, 5, 6]}
    b = {"input_ids": [1, 7], "labels": [7, 7]}  # a first label is ignored whatever it says
    c = {"input_ids": [1, 8, 9, 3], "labels": [ignore_index, ignore_index, 9, 3]}
    out = collate_packed([[a, b], [c]], pad_id=0, ignore_index=ignore_index)
    x = ignore_index
    assert out["input_ids"].tolist() == [[1, 5, 6, 1, 7], [1, 8, 9, 3, 0]]
    assert out["labels"].tolist() == [[x, 5, 6, x, 7], [x, x, 9, 3, x]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert out["num_tokens"].item() == 9 and "attention_mask" not in out
    wide = collate_packed([[a, b], [c]], pad_id=0, ignore_index=x, padding="max_length",
                          max_length=6, pad_to_multiple_of=4)
    assert wide["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3]]
    flat = collate_packed([[a, b], [c]], pad_id=0, ignore_index=x, flatten=True)
    assert flat["input_ids"].tolist() == [[1, 5, 6, 1, 7, 1, 8, 9, 3]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert flat["num_tokens"].item() == 9


def test_padded_batches_count_non_pad_tokens():
    out = collate([{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]},
                   {"input_ids": [1, 7], "labels": [-100, 7]}], pad_id=0, padding="max_length",
                  max_length=8)
    assert out["num_tokens"].item() == 5 == out["attention_mask"].sum().item()


# ------------------------------------------------------------------------------ same loss, isolated

@pytest.mark.parametrize("attn,flatten", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_packed_loss_and_gradients_equal_padded(conversations, attn, flatten):
    model, tok = tiny(attn)
    m = module(model, tok)
    rows = [conversations[i] for i in range(7)]
    losses, grads = [], []
    for batch in (collate(rows, pad_id=tok.pad_token_id),
                  packed_batch(rows, 512, tok.pad_token_id, flatten=flatten)):
        model.zero_grad()
        loss = m.loss(batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_attention_across_conversations(conversations, attn):
    """A packed conversation's loss and logits do not change when its neighbours change."""
    model, tok = tiny(attn)
    m = module(model, tok).eval()
    a, b, c = (dict(conversations[i]) for i in range(3))
    alone = [collate([r], pad_id=tok.pad_token_id) for r in (a, b, c)]
    gen = torch.Generator().manual_seed(0)
    other = {"input_ids": torch.randint(4, 4000, (len(a["input_ids"]),),
                                        generator=gen).tolist(), "labels": a["labels"]}
    silent = {**a, "labels": [-100] * len(a["labels"])}  # in the row, but not in the loss
    with torch.no_grad():
        for first in (silent, {**other, "labels": silent["labels"]}):
            row = collate_packed([[first, b, c]], pad_id=tok.pad_token_id, padding="max_length",
                                 max_length=len(a["input_ids"]) + len(b["input_ids"])
                                 + len(c["input_ids"]) + 5)
            packed_logits = model(input_ids=row["input_ids"], position_ids=row["position_ids"],
                                  use_cache=False).logits[0]
            at = len(a["input_ids"])
            for conv, single in ((b, alone[1]), (c, alone[2])):
                n = len(conv["input_ids"])
                torch.testing.assert_close(packed_logits[at: at + n],
                                           model(input_ids=single["input_ids"]).logits[0],
                                           rtol=1e-5, atol=1e-5)
                at += n
            # the module's loss on the row is the loss of b and c alone, together
            both = collate([b, c], pad_id=tok.pad_token_id)
            torch.testing.assert_close(m.loss(row), m.loss(both), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ token budgets

@pytest.mark.parametrize("packing,padding,multiple", [(False, "longest", None),
                                                      (False, "longest", 64),
                                                      (False, "max_length", None),
                                                      (True, "longest", None),
                                                      (True, "max_length", None)])
def test_budget_never_exceeded_and_every_conversation_seen(tokenizer, packing, padding,
                                                           multiple):
    budget = 1100
    dm = datamodule(tokenizer, batch_tokens=budget, packing=packing, padding=padding,
                    pad_to_multiple_of=multiple)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) > 1
    assert all(b["input_ids"].numel() <= budget for b in batches)
    lengths = row_lengths(dm.encode(dm.train_passages, 0))
    assert sum(b["num_tokens"].item() for b in batches) == lengths.sum()
    if packing:
        ids = [i for batch in loader.batch_sampler for j in batch for i in loader.dataset.bins[j]]
    else:
        ids = [i for batch in loader.batch_sampler for i in batch]
    assert sorted(ids) == list(range(len(lengths)))
    if padding == "longest" and not packing:  # length-grouped: batches pad little
        assert sum(b["num_tokens"].item() for b in batches) / sum(
            b["input_ids"].numel() for b in batches) > (0.85 if multiple else 0.95)


def test_flash_attention_gets_one_flat_row_per_batch(tokenizer):
    dm = datamodule(tokenizer, batch_tokens=1100, packing=True)
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    module = NERModule(flash, tokenizer, partial(torch.optim.AdamW, lr=1e-3),
                       style=UniNER(tokenizer))
    assert module.flash_attention
    dm.trainer = SimpleNamespace(current_epoch=0, world_size=1, global_rank=0,
                                 lightning_module=module)
    batches = list(dm.train_dataloader())
    assert all(b["input_ids"].shape[0] == 1 for b in batches)
    assert all(b["input_ids"].numel() == b["num_tokens"].item() <= 1100 for b in batches)


def test_budget_sampler_shards_ranks_and_reshuffles_per_epoch():
    lengths = np.random.default_rng(1).integers(10, 500, size=301)
    cost = partial(padded_cost, padding="longest", max_length=512, pad_to_multiple_of=None)
    everything = budget_batches(lengths, 2048, cost, seed=7)

    def shards(epoch):
        return [list(TokenBudgetBatchSampler(None, lengths, 2048, cost, seed=7, epoch=epoch,
                                             num_replicas=2, rank=r)) for r in (0, 1)]

    zero, one = shards(0)
    assert len(zero) == len(one) == -(-len(everything) // 2)
    seen = [i for batch in zero + one for i in batch]
    assert set(seen) == set(range(301))
    assert len(seen) - 301 <= max(map(len, everything))  # only the padding batch repeats
    assert shards(0) == [zero, one]
    assert shards(1) != [zero, one]
    with pytest.raises(ValueError, match="data.batch_tokens=100"):
        budget_batches([50, 120], 100, cost)


def test_lightning_reinstantiates_the_budget_sampler_per_rank(tokenizer):
    """Under DDP Lightning rebuilds a batch sampler with `sampler=DistributedSampler(...)`."""
    dm = datamodule(tokenizer, batch_tokens=1100, packing=True)
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = dm.train_dataloader()  # as Lightning's _request_dataloader calls it
    every = list(loader.batch_sampler)
    for rank in (0, 1):
        dist = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True)
        shard = _update_dataloader(loader, dist)
        assert isinstance(shard.batch_sampler, TokenBudgetBatchSampler)
        padded = every + every[: len(every) % 2]
        assert list(shard.batch_sampler) == padded[rank::2]


def test_bad_budget_config_names_the_key(tokenizer):
    with pytest.raises(ValueError, match=r"data.batch_tokens=500: must be >= 512"):
        NERDataModule(SAMPLE, max_length=512, batch_tokens=500)
    with pytest.raises(ValueError, match=r"must be >= 512"):  # 500 padded to a multiple of 64
        NERDataModule(SAMPLE, max_length=500, batch_tokens=510, pad_to_multiple_of=64)
    with pytest.raises(ValueError, match="data.padding=max: expected one of longest, max_length"):
        NERDataModule(SAMPLE, padding="max")
    with pytest.raises(ValueError, match=r"data: unknown key\(s\) \['batch_sise'\]"):
        NERDataModule(SAMPLE, batch_sise=4)  # a misspelt knob is named, not silently dropped


# ------------------------------------------------------------------------------ training

def test_packed_budget_training_logs_non_pad_tokens_per_second(tokenizer, tmp_path):
    model, tok = tiny()
    dm = datamodule(tok, batch_tokens=1100, packing=True)
    m = module(model, tok)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(m, datamodule=dm)
    assert trainer.global_step == 3
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert trainer.callback_metrics["train/tokens_per_s"] > 0


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_packed(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "uniner.cli.train", "debug=smoke", "logger=csv", "export=false",
         "trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true",
         "trainer.devices=2", "trainer.log_every_n_steps=1", "data.packing=true",
         "data.batch_tokens=1100", "benchmark.max_sentences=1", "module.max_new_tokens=4",
         f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert (run / "train_ddp_process_1.log").is_file()  # the second process ran
    rows = list(csv.DictReader(next(Path(run, "csv").rglob("metrics.csv")).open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    speeds = [float(r["train/tokens_per_s"]) for r in rows if r.get("train/tokens_per_s")]
    assert len(losses) >= 3 and all(np.isfinite(losses)) and min(speeds) > 0


# ------------------------------------------------------------------------------ strategy configs

def trainer_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(overrides=[*overrides]).trainer


def test_ddp_config_runs_gloo_on_the_cpu(tmp_path):
    cfg = trainer_cfg("+trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true",
                      f"trainer.default_root_dir={tmp_path}")
    trainer = instantiate(cfg, logger=False)
    assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.num_devices == 2
    assert trainer.strategy._get_process_group_backend() == "gloo"


def test_fsdp_and_deepspeed_configs_compose():
    from pytorch_lightning.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    fsdp = trainer_cfg("+trainer=fsdp")
    strategy = instantiate(fsdp.strategy)
    assert isinstance(strategy, FSDPStrategy) and fsdp.precision == "bf16-mixed"
    assert strategy.sharding_strategy.name == "FULL_SHARD"
    assert LlamaDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes
    assert strategy._activation_checkpointing_kwargs  # the same layers are checkpointed
    ds = trainer_cfg("+trainer=deepspeed", "trainer.strategy.stage=2").strategy
    assert ds._target_.endswith("DeepSpeedStrategy") and ds.stage == 2


def test_the_longest_label_run_is_counted_while_encoding(tokenizer):
    """`module.max_new_tokens: auto` reads the longest run of supervised labels the data module
    counted while encoding: on the sample, its longest answer (23 tokens) and `</s>`."""
    assert longest_label_run([-100, 5, 6, -100, 7, 8, 9, -100]) == 3
    assert longest_label_run([1, 2]) == 2 and longest_label_run([-100, -100]) == 0
    assert longest_label_run([-1, 4, -1], ignore_index=-1) == 1
    dm = datamodule(tokenizer)
    ds = dm.encode(dm.train_passages, 0)
    assert "label_run" not in ds.column_names
    assert dm.longest_label_run() == 24 == max(longest_label_run(r) for r in ds["labels"])
    # nothing encoded yet (a run resumed with nothing left to fit): counted on first use
    assert datamodule(tokenizer).longest_label_run() == 24
