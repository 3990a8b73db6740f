"""The typed `backbone`, `quant`, `adapter`, `module` and `checkpoint` groups and their
combination, checked without loading anything (no torch import: the tools check a config in a
second). `backbone`, `NERModule` and the checkpoint callbacks build from them; the tools' config
schemas use them as they are.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from uniner.config import group_args
from uniner.errors import ConfigError
from uniner.evaluation.scoring import METRICS

DTYPES = ("bf16", "fp16", "fp32")
DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
LAST = "last.ckpt"  # Lightning's name (`save_last`) for the checkpoint a run resumes from


@dataclass
class BackboneArgs:
    """The `backbone` group: which causal LM, in which precision."""

    name: str
    """Label for run names and logs."""
    path: str | None = None
    """Hub id or local directory of a pretrained causal LM; null for a random-init `config`."""
    config: dict | None = None
    """Model config kwargs for a random-init model (`model_type` defaults to `llama`)."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; null means `path`."""
    dtype: str = "auto"
    """auto | bf16 | fp16 | fp32; auto = bf16 on a CUDA device with bf16 support, else fp32."""
    attn_implementation: str = "sdpa"
    """sdpa | eager | flash_attention_2 (sdpa where flash-attn is not installed)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (non-reentrant)."""
    trust_remote_code: bool = False
    """Allow model code from the hub; off unless you trust the repository."""

    def __post_init__(self):
        if (self.path is None) == (self.config is None):
            raise ConfigError(f"backbone={self.name}: set exactly one of `path` (a pretrained "
                              "model) and `config` (a random-init model)")
        if self.tokenizer is None:
            if self.path is None:
                raise ConfigError(f"backbone={self.name}: a random-init `config` needs `tokenizer`")
            self.tokenizer = self.path
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ConfigError(f"backbone.dtype={self.dtype!r}: choose auto, {', '.join(DTYPES)}")


@dataclass
class QuantArgs:
    """The `quant` group: how bitsandbytes stores the frozen base weights."""

    name: str = "none"
    """Label (none, int8, nf4)."""
    bits: int | None = None
    """null (no quantization), 8 (LLM.int8) or 4 (QLoRA)."""
    quant_type: str = "nf4"
    """4-bit data type: nf4 | fp4."""
    double_quant: bool = True
    """4-bit: also quantize the quantization constants (~0.4 bit/param saved)."""
    compute_dtype: str = "auto"
    """4-bit matmul dtype and the dtype of the non-quantized weights; auto = `backbone.dtype`."""
    threshold: float = 6.0
    """8-bit: LLM.int8 outlier threshold."""

    def __post_init__(self):
        if self.bits not in (None, 4, 8):
            raise ConfigError(f"quant={self.name}: bits={self.bits!r}, choose null, 8 or 4")
        if self.quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"quant.quant_type={self.quant_type!r}: choose nf4 or fp4")
        if self.compute_dtype != "auto" and self.compute_dtype not in DTYPES:
            raise ConfigError(f"quant.compute_dtype={self.compute_dtype!r}: "
                              f"choose auto, {', '.join(DTYPES)}")

    def bnb_config(self, compute_dtype):
        """The transformers quantization config (for `compute_dtype`, a torch dtype), None
        without quantization."""
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.threshold)
        if self.bits == 4:
            return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
                                      bnb_4bit_use_double_quant=self.double_quant,
                                      bnb_4bit_compute_dtype=compute_dtype)
        return None


@dataclass
class AdapterArgs:
    """The `adapter` group: full finetune (`none`) or LoRA."""

    name: str = "none"
    """none (every weight trains) or lora."""
    lr: float | None = None
    """Peak learning rate the optimizer reads as `${adapter.lr}`."""
    r: int = 8
    """LoRA rank."""
    alpha: float = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: Any = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Module names to adapt, or `all-linear` (Any: OmegaConf holds no list-or-str union)."""

    def __post_init__(self):
        if self.name not in ("none", "lora"):
            raise ConfigError(f"adapter={self.name!r}: choose none or lora")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"adapter.lr={self.lr}: must be > 0")
        if self.r < 1 or not self.alpha > 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f"adapter: r={self.r}, alpha={self.alpha}, dropout={self.dropout}: "
                              "need r >= 1, alpha > 0, 0 <= dropout < 1")
        if isinstance(self.target_modules, str):
            if self.target_modules != "all-linear":
                raise ConfigError(f"adapter.target_modules={self.target_modules!r}: "
                                  "a list of module names or 'all-linear'")
        elif not self.target_modules or not all(isinstance(m, str) for m in self.target_modules):
            raise ConfigError(f"adapter.target_modules={self.target_modules!r}: "
                              "a non-empty list of module names or 'all-linear'")
        else:
            self.target_modules = list(self.target_modules)

    @property
    def lora(self) -> bool:
        return self.name == "lora"


def validate(backbone, quant, adapter) -> tuple[BackboneArgs, QuantArgs, AdapterArgs]:
    """Check the three groups and their combination without loading anything.

    Args:
        backbone: the `backbone` group (DictConfig, dict or `BackboneArgs`).
        quant: the `quant` group.
        adapter: the `adapter` group.

    Returns:
        The typed groups.

    Raises:
        ValueError: an unknown key, a bad value or a bad combination (a quantized base without
            LoRA, bitsandbytes missing).
    """
    b = group_args(BackboneArgs, "backbone", backbone)
    q = group_args(QuantArgs, "quant", quant)
    a = group_args(AdapterArgs, "adapter", adapter)
    if q.bits and not a.lora:
        raise ConfigError(f"quant={q.name} needs adapter=lora: a quantized base is frozen and "
                          f"cannot be fully finetuned; add adapter=lora (QLoRA) or use quant=none")
    if q.bits and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"quant={q.name} needs bitsandbytes: pip install bitsandbytes")
    return b, q, a


KERNELS = ("auto", "plain", "chunked", "liger")  # module.kernels: how the loss is computed
COMPILE = (False, True, "layers", "model")  # module.compile: true means layers


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def check_liger(*, cuda: bool, installed: bool) -> None:
    """`module.kernels=liger` can run: on a CUDA device, with liger-kernel installed.

    Raises:
        ConfigError: what to change, when it cannot.
    """
    if not cuda:
        raise ConfigError("module.kernels=liger needs a CUDA device (liger-kernel's Triton "
                          "kernels): add trainer=gpu, or use module.kernels=chunked or plain")
    if not installed:
        raise ConfigError('module.kernels=liger needs liger-kernel: pip install -e ".[liger]" '
                          "(or module.kernels=chunked)")


def check_max_new_tokens(value) -> int | str:
    """`module.max_new_tokens`: an integer >= 1, or `auto` (sized by the training answers)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
    raise ConfigError(f"module.max_new_tokens={shown}: expected an integer >= 1 or auto")


def compile_target(option) -> str | None:
    """`module.compile` as None (off), `layers` or `model`."""
    if option not in COMPILE:
        raise ConfigError(f"module.compile={option!r}: choose false, true (= layers), layers "
                          "or model")
    return None if option is False else "layers" if option is True else option


@dataclass
class ModuleArgs:
    """The `module` group: how `NERModule` trains and answers its val/test queries."""

    warmup_ratio: float = 0.04
    """Share of the optimizer steps spent warming up (then cosine decay to 0)."""
    max_new_tokens: Any = 256
    """Answer length limit at val/test generation (256: the official protocol), or `auto`: the
    longest answer the training rows teach (its supervised tokens + end token) + 8, <= 256."""
    generation_batch_size: int = 32
    """Queries a test step (the engine shares each text's prefix)."""
    metric: str = "uniner"
    """The test metric, as uniner-eval's: uniner, strict or both."""
    kernels: str = "auto"
    """The training loss: plain (the model's own, full logits), chunked (LM head +
    cross-entropy on the labelled positions only, in checkpointed chunks), liger
    (liger-kernel's fused kernels; CUDA), auto (liger, else chunked on CUDA; plain on the CPU)."""
    chunk_tokens: int = 1024
    """Positions a chunk of the `chunked` loss."""
    compile: Any = False
    """`torch.compile` for training: false, true or `layers` (each decoder layer), `model`."""

    def __post_init__(self):
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"module.warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        check_max_new_tokens(self.max_new_tokens)
        if self.generation_batch_size < 1:
            raise ConfigError(f"module.generation_batch_size={self.generation_batch_size}: "
                              "must be >= 1")
        if self.metric not in METRICS:
            raise ConfigError(f"module.metric={self.metric}: expected one of "
                              f"{', '.join(METRICS)}")
        if self.kernels not in KERNELS:
            raise ConfigError(f"module.kernels={self.kernels!r}: choose one of "
                              f"{', '.join(KERNELS)}")
        if self.chunk_tokens < 1:
            raise ConfigError(f"module.chunk_tokens={self.chunk_tokens}: must be >= 1")
        compile_target(self.compile)


@dataclass
class CheckpointArgs:
    """The `checkpoint` group: which checkpoints a training run keeps (`keep_last.checkpoints`)."""

    monitor: str | None = None
    """The metric that picks the best epoch's checkpoint; used when passages are held out."""
    mode: str = "max"
    """max or min: which value of `monitor` is best."""
    every_epoch: bool = False
    """Also keep `epoch=N.ckpt` of every epoch (`ckpt_path=...` resumes any)."""
    every_minutes: float | None = 10.0
    """`last.ckpt` is rewritten this often while training (and on Ctrl-C, SIGTERM or a crash);
    null: only on those and at the end."""

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ConfigError(f"checkpoint.mode={self.mode}: expected one of max, min")
        if self.every_minutes is not None and self.every_minutes <= 0:
            raise ConfigError(f"checkpoint.every_minutes={self.every_minutes}: must be > 0 "
                              "(or null: only on a stop and at the end)")
