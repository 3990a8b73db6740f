"""Training kernels: how the LM loss is computed, fused kernels, `torch.compile`.

`module.kernels` chooses the loss of a training batch:

- `plain`: the model's own forward and loss (transformers): logits for every token of the batch,
  upcast to fp32, and their gradient (a 4,096-token batch with a 32k vocabulary: 0.5 GB each).
- `chunked`: pure PyTorch. The decoder body runs to its last hidden states; only the positions
  whose (shifted) label is not -100 (the assistant tokens: a small share of a conversation) go
  through the LM head, `chunk_tokens` at a time, each chunk's head + cross-entropy checkpointed
  (torch.utils.checkpoint), so at most one chunk's logits exist at once, forward and backward.
- `liger`: liger-kernel's fused linear cross-entropy on the same selected positions (no logits
  tensor at all), with its RMSNorm, RoPE and SwiGLU kernels patched into the model (LLaMA,
  Mistral, Qwen2). Needs CUDA and `pip install -e ".[liger]"`.
- `auto`: `liger` where CUDA and liger-kernel are present, `chunked` on CUDA without it (and under
  FSDP/DeepSpeed: liger reads the head's weight outside its forward, where a sharded weight is
  not gathered; `chunked` calls the head module), `plain` on the CPU.

Every kind computes the mean cross-entropy over the same tokens as transformers' `ForCausalLMLoss`
(labels shifted left by one, -100 ignored), for padded rows (attention mask) and packed rows
(position ids), under LoRA (a `PeftModel`), QLoRA or a full finetune.

`compile_model` applies `torch.compile` to the decoder layers (`layers`) or to the whole decoder
body (`model`), for training only: in eval mode (validation, generation) the eager forward runs,
so generation's changing shapes never recompile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from uniner.errors import ConfigError
from uniner.model.args import check_liger, compile_target, liger_available

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
# model types whose LM logits are `lm_head(last hidden state)` (no softcap, no logit scaling)
# and whose liger patches (RMSNorm, RoPE, SwiGLU) exist
SUPPORTED = ("llama", "mistral", "qwen2")


def resolve_kind(kind: str, device: torch.device) -> str:
    """`auto` -> liger (CUDA + liger-kernel), chunked (CUDA), plain (CPU); `liger` checked."""
    cuda = torch.device(device).type == "cuda"
    if kind == "auto":
        return ("liger" if liger_available() else "chunked") if cuda else "plain"
    if kind == "liger":
        check_liger(cuda=cuda, installed=liger_available())
    return kind


def causal_lm(model):
    """The transformers causal LM inside a `PeftModel` (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _parts(model):
    """(decoder body, LM head, model type) of a supported causal LM."""
    lm = causal_lm(model)
    model_type = getattr(lm.config, "model_type", None)
    if model_type not in SUPPORTED:
        raise ConfigError(f"module.kernels: chunked and liger support {', '.join(SUPPORTED)} "
                          f"backbones, not {model_type!r}; use module.kernels=plain")
    return getattr(lm, lm.base_model_prefix), lm.get_output_embeddings(), model_type


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts, as transformers' `ForCausalLMLoss` shifts it."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def selected_hidden(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """Run the decoder body on a batch; the hidden states of the positions that have a label.

    Returns:
        `(hidden, targets, head)`: hidden (n, H) of the n positions whose shifted label is not
        -100, their targets (n,), and the LM head module.
    """
    body, head, _ = _parts(model)
    inputs = {k: v for k, v in batch.items() if k not in ("num_tokens", "labels")}
    hidden = body(**inputs, use_cache=False).last_hidden_state
    targets = shift_labels(batch["labels"])
    keep = targets != IGNORE_INDEX
    return hidden[keep], targets[keep], head


def _chunk_ce_sum(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor):
    logits = head(hidden).float()  # fp32 as transformers' loss upcasts
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_loss(model, batch: dict, chunk_tokens: int = 1024) -> torch.Tensor:
    """The mean LM loss of a batch, with at most `chunk_tokens` positions' logits at once.

    Each chunk's LM head + cross-entropy is checkpointed: its logits are freed after the forward
    and recomputed, one chunk at a time, in the backward. A batch without any label gives 0
    (the plain loss would be NaN).
    """
    if chunk_tokens < 1:
        raise ConfigError(f"module.chunk_tokens={chunk_tokens}: must be >= 1")
    hidden, targets, head = selected_hidden(model, batch)
    n = targets.numel()
    if n == 0:
        return hidden.sum() * 0.0
    total = None
    for start in range(0, n, chunk_tokens):
        h, y = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        part = checkpoint(_chunk_ce_sum, head, h, y, use_reentrant=False) \
            if torch.is_grad_enabled() else _chunk_ce_sum(head, h, y)
        total = part if total is None else total + part
    return total / n


def liger_loss(model, batch: dict) -> torch.Tensor:
    """The mean LM loss of a batch by liger-kernel's fused linear cross-entropy (CUDA)."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    hidden, targets, head = selected_hidden(model, batch)
    weight = getattr(head, "weight", None)
    if type(head) is not torch.nn.Linear or weight is None:
        raise ConfigError(f"module.kernels=liger needs a plain nn.Linear LM head, got "
                          f"{type(head).__name__} (an adapted or quantized lm_head): use "
                          "module.kernels=chunked")
    n = targets.numel()
    if n == 0:
        return hidden.sum() * 0.0
    accum = torch.float32 if weight.requires_grad and weight.dtype != torch.float32 else None
    loss = liger_fused_linear_cross_entropy(hidden.contiguous(), weight, targets,
                                            bias=head.bias, reduction="sum", accum_dtype=accum)
    return loss / n


def apply_liger_kernels(model) -> None:
    """Patch liger-kernel's RMSNorm, RoPE and SwiGLU into a LLaMA/Mistral/Qwen2 model (in place;
    RoPE is patched in transformers' modeling module, so for every model of that type in the
    process). The loss stays ours (`liger_loss`): liger's own forward is not installed."""
    from liger_kernel.transformers import (
        apply_liger_kernel_to_llama,
        apply_liger_kernel_to_mistral,
        apply_liger_kernel_to_qwen2,
    )

    _, _, model_type = _parts(model)
    apply = {"llama": apply_liger_kernel_to_llama, "mistral": apply_liger_kernel_to_mistral,
             "qwen2": apply_liger_kernel_to_qwen2}[model_type]
    apply(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
          fused_linear_cross_entropy=False, model=causal_lm(model))
    log.info("liger-kernel: RMSNorm, RoPE and SwiGLU kernels applied (%s)", model_type)


def loss_function(kind: str, chunk_tokens: int = 1024) -> Callable[..., torch.Tensor] | None:
    """The loss of a resolved kind: `fn(model, batch)`, or None for the model's own (plain)."""
    if kind == "plain":
        return None
    if kind == "chunked":
        return lambda model, batch: chunked_loss(model, batch, chunk_tokens)
    if kind == "liger":
        return liger_loss
    raise ValueError(f"module.kernels={kind!r}: resolve it first (resolve_kind)")


def _train_only(module: torch.nn.Module, compiled: Callable) -> None:
    eager = module.forward

    def forward(*args, **kwargs):
        return (compiled if module.training else eager)(*args, **kwargs)

    module.forward = forward


def compile_model(model, option) -> None:
    """`torch.compile` the decoder layers (`layers`: one graph shared by all layers) or the whole
    decoder body (`model`), in place, for training (eval mode runs the eager forward)."""
    what = compile_target(option)
    if what is None:
        return
    lm = causal_lm(model)
    body = getattr(lm, lm.base_model_prefix)
    if what == "model":
        _train_only(body, torch.compile(body.forward))
    else:
        for layer in body.layers:
            _train_only(layer, torch.compile(layer.forward))
    log.info("torch.compile: %s", "the decoder body" if what == "model" else
             f"{len(body.layers)} decoder layers")
