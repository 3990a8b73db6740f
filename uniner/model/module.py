"""The LightningModule: masked LM loss on assistant turns, AdamW + cosine warmup, and answers by
greedy generation for `val/f1` and the benchmark test."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import LambdaLR

from uniner.data.prompts import PromptStyle
from uniner.evaluation.benchmark import Query
from uniner.evaluation.scoring import Evaluation, evaluate, flat_metrics
from uniner.inference.answers import answer_queries


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup to the peak lr, then cosine decay to 0 (the official recipe's schedule)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class NERModule(pl.LightningModule):
    """Instruction-tunes a causal LM on UniNER conversations.

    Args:
        model: the (possibly quantized, possibly LoRA-wrapped) causal LM.
        tokenizer: its tokenizer.
        optimizer: a partial optimizer (`_partial_: true`), called with the trainable params.
        warmup_ratio: share of the optimizer steps spent warming up.
        max_new_tokens: answer length limit at generation (256 as the official protocol).
        generation_batch_size: queries per `generate` call.
        metric: the test metric, as `uniner-eval`'s: `uniner`, `strict` or `both`.
        style: the prompt style the data renders with (default `UniNER`): val and test queries
            are asked in it.
    """

    def __init__(self, model, tokenizer, optimizer: Callable, *, warmup_ratio: float = 0.04,
                 max_new_tokens: int = 256, generation_batch_size: int = 32,
                 metric: str = "uniner", style: PromptStyle | None = None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.optimizer_factory, self.warmup_ratio = optimizer, warmup_ratio
        self.max_new_tokens, self.generation_batch_size = max_new_tokens, generation_batch_size
        self.metric, self.style = metric, style
        self.val_queries: list[Query] = []
        self.test_queries: list[Query] = []
        self.test_results: dict[str, dict] = {}
        self.test_answers: list[str] = []
        self.test_evaluation: Evaluation | None = None
        self._prompts: dict[tuple[str, str], list[int]] = {}
        self._step_start = 0.0
        # checkpoints hold only trainable weights (a frozen 7B base is rebuilt from the backbone)
        self.strict_loading = False

    def on_fit_start(self):
        # Lightning (>= 2.2) keeps each submodule's mode, and a model loaded by `from_pretrained`
        # is in eval mode: no dropout, and transformers then skips gradient checkpointing.
        # Validation still runs in eval mode (Lightning captures this mode and restores it).
        self.model.train()

    def forward(self, **batch):
        return self.model(**batch)

    def on_train_batch_start(self, batch, batch_idx):
        self._step_start = time.perf_counter()

    def loss(self, batch: dict) -> torch.Tensor:
        """The LM loss of a padded or packed batch (`num_tokens` is only counted, not passed).

        `use_cache=False`: with a cache, transformers ignores the restarting `position_ids` of
        packed rows and lets their conversations attend to each other.
        """
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

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch), prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self):
        if self.val_queries and not self.trainer.sanity_checking:
            results = evaluate(self.val_queries, self.answer(self.val_queries)).results
            self.log("val/f1", results["average"]["f1"], prog_bar=True, sync_dist=True)

    def answer(self, queries: Sequence[Query]) -> list[str]:
        """Greedy answers to queries (prompt ids cached per (text, type))."""
        return answer_queries(self.model, self.tokenizer, queries,
                              max_new_tokens=self.max_new_tokens,
                              batch_size=self.generation_batch_size, prompt_cache=self._prompts,
                              style=self.style)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, list):  # test queries: text, tokenized when answered
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_test_epoch_start(self):
        self._test_answers: dict[int, str] = {}

    def test_step(self, batch: list[tuple[int, Query]], batch_idx):
        answers = self.answer([q for _, q in batch])
        self._test_answers.update((i, a) for (i, _), a in zip(batch, answers))

    def on_test_epoch_end(self):
        answered = self._test_answers
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, answered)
            answered = {i: a for part in parts for i, a in part.items()}
        self.test_answers = [answered[i] for i in range(len(self.test_queries))]
        self.test_evaluation = evaluate(self.test_queries, self.test_answers, metric=self.metric)
        self.test_results = self.test_evaluation.results
        for key, value in flat_metrics(self.test_evaluation, "test").items():
            self.log(key, value, rank_zero_only=True)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(math.ceil(self.warmup_ratio * total))
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
