"""The inference knobs, torch-free: their choices and defaults, and `GenerationArgs`, the keys
uniner-eval, uniner-predict and uniner-demo share (their types, defaults and checks in one
dataclass that the tools' config schema reads and that the engine is built from)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from uniner.config import group_args
from uniner.errors import ConfigError
from uniner.model.args import QuantArgs

DECODINGS = ("greedy", "constrained")  # decoding=: `decoding.DECODERS`, in this order
ENGINES = ("hf", "vllm")  # uniner-eval engine=: uniner's own engine, or vLLM's
BATCH_TOKENS = 65536  # KV slots per batch: 32 GiB of bf16 cache for LLaMA-7B
BATCH_ROWS = 512  # rows per batch: a decode step reads the weights once for all of its rows


@dataclass
class GenerationArgs:
    """How a trained model is loaded and asked: the keys uniner-eval, uniner-predict and
    uniner-demo share (the tools' own keys are theirs)."""

    checkpoint: str | None = None
    """An export of uniner-train, or any HF causal LM directory or hub id."""
    quant: QuantArgs | None = None
    """The `quant` group to load the base in; null: as trained."""
    prompt: str | None = None
    """The prompt style; null: as trained (its export says; uniner for other models)."""
    decoding: str = "greedy"
    """greedy, or constrained (only JSON lists of strings found in the text)."""
    max_new_tokens: int = 256
    """Answer tokens at most."""
    batch_size: int = BATCH_ROWS
    """Queries a batch at most (the engine's `batch_rows`)."""
    batch_tokens: int = BATCH_TOKENS
    """KV slots a batch (each text's prefix once + rows x (suffix + new tokens))."""
    device: str | None = None
    """null: CUDA when present, else the CPU."""
    dtype: str | None = None
    """auto | bf16 | fp16 | fp32; null: a quantized base's compute dtype, else auto."""

    def __post_init__(self):
        if self.decoding not in DECODINGS:
            raise ConfigError(f"decoding={self.decoding}: expected one of "
                              f"{', '.join(DECODINGS)}")
        for key in ("max_new_tokens", "batch_size", "batch_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be >= 1")
        if self.quant is not None:
            self.quant = group_args(QuantArgs, "quant", self.quant)

    @classmethod
    def of(cls, cfg) -> GenerationArgs:
        """The generation keys of a tool's config (a DictConfig or a mapping); its other keys
        are neither read nor resolved."""
        values = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg}
        if isinstance(cfg, DictConfig) and isinstance(values.get("quant"), DictConfig):
            values["quant"] = OmegaConf.to_container(values["quant"], resolve=True)
        return cls(**values)

    def extractor_args(self) -> dict:
        """`Extractor.from_pretrained`'s keyword arguments but the path."""
        return dict(device=self.device, dtype=self.dtype, quant=self.quant,
                    max_new_tokens=self.max_new_tokens, batch_tokens=self.batch_tokens,
                    batch_rows=self.batch_size, decoding=self.decoding, prompt=self.prompt)
