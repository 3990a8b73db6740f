"""The LightningModule: masked LM loss on assistant turns, AdamW + cosine warmup, and answers by
greedy generation for `val/f1` and the benchmark test."""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from uniner.config import group_args
from uniner.data.prompts import PromptStyle
from uniner.errors import ConfigError
from uniner.evaluation.benchmark import Query, passage_queries
from uniner.evaluation.scoring import Evaluation, evaluate, flat_metrics
from uniner.model import kernels as kernel_lib
from uniner.model.args import ModuleArgs
from uniner.model.backbone import attention_of

log = logging.getLogger(__name__)

AUTO_MARGIN, AUTO_CAP = 8, 256  # `max_new_tokens: auto`: the longest trained reply + 8, <= 256


def auto_max_new_tokens(longest_label_run: int, margin: int = AUTO_MARGIN,
                        cap: int = AUTO_CAP) -> int:
    """`module.max_new_tokens: auto`: the longest run of supervised labels in the training rows
    (the longest answer and its end token) plus a margin, at most `cap` (the official limit);
    `cap` when nothing was counted."""
    if longest_label_run < 1:
        return cap
    return min(cap, longest_label_run + margin)


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup to the peak lr, then cosine decay to 0 (the official recipe's schedule)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class TestBatch:
    """A test batch: (index, query) pairs, text until answered. Neither a sequence nor a
    dataclass, so Lightning's batch transfer leaves it as it is (no `transfer_batch_to_device`
    override, which Lightning warns about beside a datamodule)."""

    def __init__(self, items: Sequence[tuple[int, Query]]):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class NERModule(pl.LightningModule):
    """Instruction-tunes a causal LM on UniNER conversations.

    Args:
        model: the (possibly quantized, possibly LoRA-wrapped) causal LM.
        tokenizer: its tokenizer.
        optimizer: a partial optimizer (`_partial_: true`), called with the trainable params.
        style: the prompt style the data renders with: val and test queries are asked in it.
        answerer: answers val/test queries, `(model, tokenizer, queries, **options) -> answers`
            (`uniner-train` passes `uniner.inference.query_answers.answer_queries`); given by the
            caller, so that `uniner.model` does not import `uniner.inference`, which builds on it.
        **knobs: the `module` group (`uniner.model.args.ModuleArgs`, checked there). With
            `max_new_tokens: auto`, answers are sized by the trainer's data module's
            `longest_label_run()`; `kernels` is resolved for the device at fit start (or at the
            first loss).
    """

    def __init__(self, model, tokenizer, optimizer: Callable, *, style: PromptStyle,
                 answerer: Callable | None = None, **knobs):
        super().__init__()
        self.args = group_args(ModuleArgs, "module", knobs)
        self.resolved_kernels: str | None = None
        self._loss_fn = None
        self.model, self.tokenizer = model, tokenizer
        self.optimizer_factory, self.style, self.answerer = optimizer, style, answerer
        self.val_queries: list[Query] = []
        self.test_queries: list[Query] = []
        self.test_results: dict[str, dict] = {}
        self.test_answers: list[str] = []
        self.test_evaluation: Evaluation | None = None
        self._prompts: dict[tuple[str, str], list[int]] = {}
        # called with the number of test queries answered after each engine batch (set by the
        # line progress bar, `uniner.model.train_progress`)
        self.answer_progress: Callable[[int], None] | None = None
        self._step_start = 0.0
        # checkpoints hold only trainable weights (a frozen 7B base is rebuilt from the backbone)
        self.strict_loading = False

    def setup(self, stage: str) -> None:
        # the data module's held-out passages (Lightning sets it up first), asked their
        # sampled types: val/f1 after each validation
        datamodule = self.trainer.datamodule
        if stage == "fit" and datamodule is not None and datamodule.val_passages:
            types = datamodule.sampler.queries(datamodule.val_passages, epoch=0)
            self.val_queries = passage_queries(datamodule.val_passages, types, "val")

    @property
    def flash_attention(self) -> bool:
        """Whether the model attends with flash-attention (packed rows must then be one flat
        row: the data module asks)."""
        return "flash" in (attention_of(self.model) or "")

    def on_fit_start(self):
        # Lightning (>= 2.2) keeps each submodule's mode, and a model loaded by `from_pretrained`
        # is in eval mode: no dropout, and transformers then skips gradient checkpointing.
        # Validation still runs in eval mode (Lightning captures this mode and restores it).
        self.model.train()
        strategy = type(self.trainer.strategy).__name__.lower()
        self.setup_kernels(self.device, sharded="fsdp" in strategy or "deepspeed" in strategy)

    def forward(self, **batch):
        return self.model(**batch)

    def setup_kernels(self, device: torch.device, sharded: bool = False) -> str:
        """Resolve `kernels` for `device` and apply liger's kernels and `compile`, once.

        `sharded` (FSDP, DeepSpeed): liger's loss reads the LM head's weight outside the head's
        forward, where a sharded weight is not gathered: `auto` takes `chunked` there (which
        calls the head), an explicit `liger` is an error.
        """
        if self.resolved_kernels is None:
            kind = kernel_lib.resolve_kind(self.args.kernels, device)
            if kind == "liger" and sharded:
                if self.args.kernels == "liger":
                    raise ConfigError("module.kernels=liger does not work with a sharded "
                                      "strategy (FSDP, DeepSpeed): use module.kernels=chunked")
                kind = "chunked"
            if kind == "liger":
                kernel_lib.apply_liger_kernels(self.model)
            kernel_lib.compile_model(self.model, self.args.compile)
            self._loss_fn = kernel_lib.loss_function(kind, self.args.chunk_tokens)
            self.resolved_kernels = kind
        return self.resolved_kernels

    def on_train_batch_start(self, batch, batch_idx):
        self._step_start = time.perf_counter()

    def loss(self, batch: dict) -> torch.Tensor:
        """The LM loss of a padded or packed batch (`num_tokens` is only counted, not passed):
        the mean cross-entropy over the labelled tokens, by the `kernels` chosen.

        `use_cache=False`: with a cache, transformers ignores the restarting `position_ids` of
        packed rows and lets their conversations attend to each other.
        """
        self.setup_kernels(batch["input_ids"].device)
        if self._loss_fn is not None:
            return self._loss_fn(self.model, batch)
        inputs = {k: v for k, v in batch.items() if k != "num_tokens"}
        return self.model(**inputs, use_cache=False).loss

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        seconds = time.perf_counter() - self._step_start
        self.log("train/tokens_per_s", batch["num_tokens"].float() / max(seconds, 1e-9))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        # the peak so far: raise data.batch_tokens until it nears the card's memory
        if self.device.type == "cuda":
            self.log("train/peak_mem_gib", torch.cuda.max_memory_allocated(self.device) / 2**30)
        else:  # the process's peak resident memory (Linux: KiB)
            self.log("train/peak_rss_gib",
                     resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch), prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self):
        if self.val_queries and not self.trainer.sanity_checking:
            results = evaluate(self.val_queries, self.answer(self.val_queries)).results
            self.log("val/f1", results["average"]["f1"], prog_bar=True, sync_dist=True)

    def longest_label_run(self) -> int:
        """The longest supervised run of the training rows, as the trainer's data module
        counted it (0 without one)."""
        datamodule = self._trainer.datamodule if self._trainer else None
        return datamodule.longest_label_run() if datamodule is not None else 0

    def generation_limit(self) -> int:
        """The tokens an answer may take: `max_new_tokens`, or for `auto` the rule of
        `auto_max_new_tokens` on the longest label run the data module counted."""
        if self.args.max_new_tokens != "auto":
            return self.args.max_new_tokens
        return auto_max_new_tokens(self.longest_label_run())

    def answer(self, queries: Sequence[Query],
               progress: Callable[[int], None] | None = None) -> list[str]:
        """Greedy answers to queries (prompt ids cached per (text, type)); `progress` is called
        with the number answered after each batch."""
        if self.answerer is None:
            raise RuntimeError("NERModule(answerer=...) is needed to answer val/test queries")
        return self.answerer(self.model, self.tokenizer, queries,
                             max_new_tokens=self.generation_limit(),
                             batch_size=self.args.generation_batch_size, prompt_cache=self._prompts,
                             style=self.style, progress=progress)

    def on_test_epoch_start(self):
        self._test_answers: dict[int, str] = {}
        if self.args.max_new_tokens == "auto":
            longest = self.longest_label_run()
            log.info("module.max_new_tokens=auto: %d (longest trained answer %d tokens + %d)",
                     auto_max_new_tokens(longest), longest, AUTO_MARGIN)

    def test_dataloader(self) -> DataLoader:
        """The test queries grouped by text (shortest first), `generation_batch_size` a batch: a
        batch holds all the types of its texts, so the engine computes each prefix once."""
        queries = self.test_queries
        order = sorted(range(len(queries)), key=lambda i: (len(queries[i].text), queries[i].text))
        return DataLoader([(i, queries[i]) for i in order],
                          batch_size=self.args.generation_batch_size, collate_fn=TestBatch)

    def test_step(self, batch: TestBatch, batch_idx):
        answers = self.answer([q for _, q in batch], progress=self.answer_progress)
        self._test_answers.update((i, a) for (i, _), a in zip(batch, answers))

    def on_test_epoch_end(self):
        answered = self._test_answers
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, answered)
            answered = {i: a for part in parts for i, a in part.items()}
        self.test_answers = [answered[i] for i in range(len(self.test_queries))]
        self.test_evaluation = evaluate(self.test_queries, self.test_answers,
                                        metric=self.args.metric)
        self.test_results = self.test_evaluation.results
        for key, value in flat_metrics(self.test_evaluation, "test").items():
            self.log(key, value, rank_zero_only=True)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(math.ceil(self.args.warmup_ratio * total))
        scheduler = LambdaLR(optimizer, cosine_with_warmup(warmup, total))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k in trainable}
        # Lightning does not keep torch's RNG; dropout draws from it, so a resumed run needs it
        checkpoint["torch_rng"] = {"cpu": torch.get_rng_state(),
                                   "cuda": torch.cuda.get_rng_state_all()
                                   if torch.cuda.is_available() else []}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng"]["cpu"])
            if checkpoint["torch_rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(checkpoint["torch_rng"]["cuda"])
