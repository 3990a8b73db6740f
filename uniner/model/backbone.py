"""The student model: backbone + quantization + adapter -> (model, tokenizer).

`build_backbone` is the one place where the `backbone`, `quant` and `adapter` config groups meet.
It rejects bad combinations before anything loads, then builds a pretrained causal LM (hub id or
local directory) or a random-init one from a config dict, optionally quantized by bitsandbytes
(int8, nf4 with double quantization) and wrapped with a PEFT LoRA adapter.

Padding side: `build_backbone` / `build_tokenizer` return a right-padding tokenizer (training
batches are right-padded); `export.load_trained` returns a left-padding one (batched generation).
A tokenizer without a pad token gets its `unk` (else its `eos`) as pad, so the vocabulary and the
embedding matrix keep their size; attention masks come from row lengths, never from
`ids != pad_id`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import uniner.config  # noqa: F401  registers the `asset` resolver used by backbone/tiny
from uniner.config import group_args
from uniner.errors import ConfigError
from uniner.model.args import BackboneArgs, QuantArgs, validate
from uniner.model.gguf import local_dir

log = logging.getLogger(__name__)

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def target_device(device) -> torch.device:
    """Where the model will run: `device`, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` -> bf16 on a CUDA device with bf16 support, else fp32; other names as named."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return TORCH_DTYPES[name]


def _attn(name: str, device: torch.device) -> str:
    if name == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if device.type != "cuda" or not is_flash_attn_2_available():
            log.warning("attn_implementation=flash_attention_2 needs flash-attn and a CUDA "
                        "device; using sdpa")
            return "sdpa"
    return name


def attention_of(model) -> str | None:
    """The attention implementation `model` runs (transformers keeps it in its config, under a
    private name, with no public getter: read here only)."""
    return model.config._attn_implementation


def ensure_pad(tokenizer) -> bool:
    """Give `tokenizer` a pad token; True when a new token had to be added to the vocabulary."""
    if tokenizer.pad_token is not None:
        return False
    # unk, else eos: an existing id keeps the vocabulary (and the embeddings) as they are;
    # pad positions are masked out of attention and loss either way
    for name in ("unk_token", "eos_token"):
        token = getattr(tokenizer, name)
        if token is not None:
            tokenizer.pad_token = token
            log.info("tokenizer has no pad token: padding with %s %r", name, token)
            return False
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    log.warning("tokenizer has no pad, unk or eos token: added <pad> (the embeddings grow)")
    return True


def build_tokenizer(backbone, *, padding_side: str = "right"):
    """The backbone's tokenizer with a pad token.

    Args:
        backbone: the `backbone` group (DictConfig, dict or `BackboneArgs`).
        padding_side: `right` for training batches, `left` for batched generation.
    """
    b = group_args(BackboneArgs, "backbone", backbone)
    tokenizer = AutoTokenizer.from_pretrained(local_dir(b.tokenizer),
                                              trust_remote_code=b.trust_remote_code)
    ensure_pad(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


@contextlib.contextmanager
def _seeded(seed: int | None):
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def keep_4bit_layout(model) -> None:
    """Keep bitsandbytes' 4-bit CPU layout the one training uses.

    On AVX512-BF16 CPUs bitsandbytes 0.50 repacks a 4-bit weight in place at the first eval-mode
    no-grad forward (bf16 absmax; out_features must divide by 32). Training after that (a
    validation step, then the next batch) backpropagates through an op without autograd: LoRA
    grads come out None or wrong; and the repacking is lossy, so an export after an eval changes
    the weights. The plain dequantize + matmul path avoids both.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _random_init(b: BackboneArgs, tokenizer, dtype: torch.dtype, attn: str):
    kwargs = dict(b.config)
    model_type = kwargs.pop("model_type", "llama")
    for special in ("bos", "eos", "pad"):
        kwargs.setdefault(f"{special}_token_id", getattr(tokenizer, f"{special}_token_id"))
    config = AutoConfig.for_model(model_type, **kwargs)
    if config.vocab_size < len(tokenizer):
        raise ConfigError(f"backbone={b.name}: config.vocab_size={config.vocab_size} < "
                          f"{len(tokenizer)} tokens of {b.tokenizer}")
    return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn,
                                            trust_remote_code=b.trust_remote_code)


def _load_model(b: BackboneArgs, q: QuantArgs, tokenizer, device, dtype: torch.dtype):
    target = target_device(device)
    attn = _attn(b.attn_implementation, target)
    bnb_config = q.bnb_config(dtype)
    kwargs = dict(dtype=dtype, attn_implementation=attn, trust_remote_code=b.trust_remote_code)
    if bnb_config is not None:  # bitsandbytes quantizes while it loads, straight onto the device
        kwargs |= dict(quantization_config=bnb_config, device_map={"": target})
    elif device is not None:
        kwargs |= dict(device_map={"": target})

    if b.path is not None:
        return AutoModelForCausalLM.from_pretrained(local_dir(b.path), **kwargs)
    model = _random_init(b, tokenizer, dtype, attn)
    if bnb_config is not None:  # quantization happens at load time, so go through a checkpoint
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            model = AutoModelForCausalLM.from_pretrained(tmp, **kwargs)
        model.config.name_or_path = ""  # random init: `export` saves the base itself
        model.name_or_path = ""
    elif device is not None:
        model.to(target)
    return model


def build_backbone(backbone, quant, adapter, *, device=None, seed: int | None = None):
    """Build the student described by the `backbone`, `quant` and `adapter` groups.

    The combination is validated before anything loads. A quantized base is prepared for
    k-bit training by hand rather than with `peft.prepare_model_for_kbit_training`, which upcasts
    every non-quantized weight to fp32 (7B QLoRA at 1x1024: 13 GiB instead of 4.4 GiB): the base is
    frozen, its norms and embeddings stay in the compute dtype, and input grads are enabled for
    gradient checkpointing.

    Args:
        backbone: the `backbone` group (DictConfig, dict or `BackboneArgs`).
        quant: the `quant` group.
        adapter: the `adapter` group.
        device: where the weights go. None leaves an unquantized model on the CPU (Lightning moves
            it) and loads a quantized one onto the current CUDA device, else the CPU.
        seed: seeds the random init (and the LoRA init) without touching the global RNG; None
            uses the global RNG (the caller's `seed_everything`).

    Returns:
        `(model, tokenizer)`: a causal LM (a `PeftModel` with LoRA) in train mode and its
        right-padding tokenizer.

    Raises:
        ValueError: see `validate`.
    """
    b, q, a = validate(backbone, quant, adapter)
    target = target_device(device)
    dtype = resolve_dtype(q.compute_dtype if q.bits and q.compute_dtype != "auto" else b.dtype,
                          target)
    tokenizer = build_tokenizer(b, padding_side="right")
    with _seeded(seed):
        model = _load_model(b, q, tokenizer, device, dtype)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # only after adding <pad>
            model.resize_token_embeddings(len(tokenizer))
        for special in ("bos", "eos", "pad"):
            if getattr(model.generation_config, f"{special}_token_id", None) is None:
                setattr(model.generation_config, f"{special}_token_id",
                        getattr(tokenizer, f"{special}_token_id"))
        if q.bits:
            model.requires_grad_(False)
            keep_4bit_layout(model)
        if b.gradient_checkpointing:
            model.config.use_cache = False  # the cache is useless when activations are recomputed
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
                model.activation_checkpointing_enable(kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            if a.lora:  # the frozen embeddings' output must carry grad into checkpointed blocks
                model.enable_input_require_grads()
        if a.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, bias="none",
                target_modules=a.target_modules, task_type="CAUSAL_LM"))
    # `from_pretrained` (every hub id, `backbone.path` and quantized model) returns eval mode, and
    # transformers checkpoints activations only in train mode: hand back a model ready to train
    model.train()
    return model, tokenizer
