"""Export of a trained student and its reload: `export` writes a directory that plain
`transformers` / `peft` can load (an adapter, a merged or a full model), `load_trained` loads it
back with the numerics it was trained with; the prompt style it was trained with is saved beside
it (`prompts.save_prompt_style`), the one inference renders its queries in.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from uniner.config import group_args, redact
from uniner.data.prompts import PromptStyle, save_prompt_style
from uniner.errors import ConfigError
from uniner.model.args import DTYPE_NAMES, QuantArgs
from uniner.model.backbone import ensure_pad, keep_4bit_layout, resolve_dtype, target_device
from uniner.model.gguf import local_dir
from uniner.progress import interactive, library_bars

EXPORT_INFO = "uniner_export.json"
EXPORT_CONFIG = "uniner_config.yaml"  # the run's composed config, secrets redacted

def _quant_of(model) -> dict | None:
    """The `quant` group a loaded model was quantized with (from its config)."""
    qc = getattr(model.config, "quantization_config", None)
    if qc is None:
        return None
    qc = qc if isinstance(qc, dict) else qc.to_dict()
    if qc.get("load_in_4bit"):
        compute = str(qc.get("bnb_4bit_compute_dtype") or "float32").removeprefix("torch.")
        return dataclasses.asdict(QuantArgs(
            name=qc["bnb_4bit_quant_type"], bits=4, quant_type=qc["bnb_4bit_quant_type"],
            double_quant=bool(qc["bnb_4bit_use_double_quant"]),
            compute_dtype=DTYPE_NAMES.get(compute, "fp32")))
    if qc.get("load_in_8bit"):
        return dataclasses.asdict(QuantArgs(name="int8", bits=8,
                                            threshold=qc["llm_int8_threshold"]))
    raise ConfigError(f"unsupported quantization {qc.get('quant_method')!r}: only bitsandbytes")


def _base_state_dict(peft_model) -> dict[str, torch.Tensor]:
    """The base model's state dict with the LoRA wrappers taken out (quantized as it is)."""
    state, seen = {}, set()
    for key, value in peft_model.get_base_model().state_dict().items():
        if "lora_" in key:
            continue
        value = value.detach().contiguous()
        if value.numel() and value.untyped_storage().data_ptr() in seen:
            value = value.clone()  # tied weights: safetensors refuses shared storage
        seen.add(value.untyped_storage().data_ptr())
        state[key.replace(".base_layer.", ".")] = value
    return state


def _save_base(peft_model, out: Path) -> None:
    """Save a random-init base (no hub id to reload it by), quantized as trained."""
    from safetensors.torch import save_file

    base = peft_model.get_base_model()
    out.mkdir(parents=True, exist_ok=True)
    # save_pretrained of a bitsandbytes model ignores a custom state dict, so write it directly
    save_file({k: v.cpu() for k, v in _base_state_dict(peft_model).items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(base.config)
    config.architectures = [type(base).__name__]
    config.save_pretrained(out)
    base.generation_config.save_pretrained(out)


def _merged_model(peft_model):
    """A plain full-precision model with the LoRA updates folded into dequantized base weights."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight

    base = peft_model.get_base_model()
    dtype = next((p.dtype for p in base.parameters() if p.dtype.is_floating_point),
                 torch.float32)
    quantized = tuple()
    if importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes as bnb

        quantized = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    state = {}
    for name, module in base.named_modules():
        if "lora_" in name or isinstance(module, LoraLayer):
            continue  # a LoRA wrapper's base_layer is visited on its own
        prefix = name.replace(".base_layer", "") + "." if name else ""
        if isinstance(module, quantized):
            state[prefix + "weight"] = dequantize_module_weight(module).to(dtype)
            if module.bias is not None:
                state[prefix + "bias"] = module.bias.detach().to(dtype)
            continue
        for pname, p in module.named_parameters(recurse=False):
            if not p.dtype.is_floating_point:
                raise ConfigError(f"cannot merge LoRA into {name}.{pname} ({p.dtype}, "
                                  f"{type(module).__name__}): only bitsandbytes int8/4-bit layers "
                                  "can be dequantized; export the adapter (merge_lora=false)")
            state[prefix + pname] = p.detach()
        for bname, buf in module.named_buffers(recurse=False):
            if bname not in module._non_persistent_buffers_set:
                state[prefix + bname] = buf.detach()
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            key = name + ".weight"
            weight = state[key].clone()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight += module.get_delta_weight(adapter).to(weight.dtype)
            state[key] = weight

    config = copy.deepcopy(base.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        merged = AutoModelForCausalLM.from_config(config, dtype=dtype)
    merged.load_state_dict(state, strict=True, assign=True)
    merged.generation_config = copy.deepcopy(base.generation_config)
    return merged


def export(model, tokenizer, out_dir, *, merge_lora: bool = False,
           resolved_config: dict | None = None, style: PromptStyle) -> Path:
    """Write a trained student so plain `transformers` / `peft` (and `load_trained`) load it.

    Layouts:
        - LoRA: the adapter (`adapter_config.json`, safetensors). Its `base_model_name_or_path`
          is the backbone's hub id or (absolute) directory; a random-init base is saved under
          `out_dir/base` (quantized as trained) and referenced by its absolute path.
        - LoRA with `merge_lora=True`: the merged full model; a quantized base is dequantized to
          the compute dtype first.
        - Full finetune: the full model.
    Always the tokenizer, `uniner_config.yaml` (the resolved config with secret-looking keys
    redacted), `uniner_export.json` (layout, base, quantization to reload with) and the prompt
    style it was trained with (`prompts.save_prompt_style`).

    Args:
        model: the trained model from `build_backbone`.
        tokenizer: its tokenizer.
        out_dir: the export directory (created).
        merge_lora: fold the LoRA update into the base and write a full model.
        resolved_config: the run's config, written as `uniner_config.yaml`.
        style: the prompt style the model was trained with.

    Returns:
        The absolute export directory.

    Raises:
        ValueError: merging into a quantized layer that cannot be dequantized.
    """
    from transformers.utils import logging as hf_logging

    # transformers' "Writing model shards" bar only on a terminal: in a log file it is a line
    # of noise per export
    with library_bars(hf_logging, interactive()):
        return _write(model, tokenizer, out_dir, merge_lora=merge_lora,
                      resolved_config=resolved_config, style=style)


def _write(model, tokenizer, out_dir, *, merge_lora: bool = False,
           resolved_config: dict | None = None, style: PromptStyle) -> Path:
    """`export`'s writing, its layouts and files."""
    from peft import PeftModel

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    info: dict = {"format": "full", "base": None, "quant": None}
    if isinstance(model, PeftModel) and merge_lora:
        _merged_model(model).save_pretrained(out)
        info["format"] = "merged"
    elif isinstance(model, PeftModel):
        base = model.get_base_model()
        source = base.config.name_or_path or ""
        if not source:
            _save_base(model, out / "base")
            source, info["base"] = str(out / "base"), "base"
        else:
            source = str(Path(source).resolve()) if Path(source).is_dir() else source
            info["base"] = source
        info |= {"format": "adapter", "quant": _quant_of(base)}
        peft_config = model.peft_config[model.active_adapter]
        previous = peft_config.base_model_name_or_path
        peft_config.base_model_name_or_path = source  # AutoPeftModel needs an absolute path
        try:
            model.save_pretrained(out)
        finally:
            peft_config.base_model_name_or_path = previous
    else:
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    OmegaConf.save(OmegaConf.create(redact(resolved_config or {})),
                   out / EXPORT_CONFIG)
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2))
    save_prompt_style(style, out)
    return out


def _saved_quantization(model_dir: Path) -> dict | None:
    config = model_dir / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("quantization_config")


def load_trained(path, *, quant=None, device=None, dtype: str | None = None):
    """Load an `export` directory (an adapter, a merged or a full model) for inference.

    Args:
        path: the export directory. An adapter export finds its base in `path/base` first (so a
            moved export still loads), else by `base_model_name_or_path`.
        quant: the `quant` group to load the base with. None: as trained (the quantization
            recorded by the export for an adapter; none for a merged or full model). A base saved
            in the export is loaded as saved and cannot be re-quantized.
        device: where the weights go; None = CUDA when present, else the CPU.
        dtype: auto | bf16 | fp16 | fp32 for the non-quantized weights; None = the quantization's
            compute dtype, else auto.

    Returns:
        `(model, tokenizer)`: the model in eval mode and a left-padding tokenizer; the prompt
        style to query it in is `prompts.load_prompt_style(path, tokenizer)`.
    """
    from peft import PeftConfig, PeftModel

    path = local_dir(path)  # a GGUF file: its dequantized copy
    local = Path(path).expanduser()
    out = local.resolve() if local.is_dir() else str(path)  # a directory, else a hub id
    info_file = Path(out) / EXPORT_INFO
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    adapter = (Path(out) / "adapter_config.json").is_file()
    if adapter and (out / "base").is_dir():
        source = out / "base"
    elif adapter:
        source = PeftConfig.from_pretrained(out).base_model_name_or_path
    else:
        source = out
    saved = _saved_quantization(source) if isinstance(source, Path) else None
    if saved is not None and quant is not None:
        raise ConfigError(f"{source} holds a base quantized as trained; load it with quant=None")
    if quant is None:
        q = QuantArgs(**info["quant"]) if adapter and info.get("quant") else QuantArgs()
    else:
        q = group_args(QuantArgs, "quant", quant)

    target = target_device(device)
    if dtype is None:
        dtype = q.compute_dtype if q.bits else "auto"
    if saved is not None and dtype == "auto":
        compute = saved.get("bnb_4bit_compute_dtype") or "float32"
        dtype = DTYPE_NAMES.get(str(compute).removeprefix("torch."), "auto")
    torch_dtype = resolve_dtype(dtype, target)
    kwargs = dict(dtype=torch_dtype, device_map={"": target})
    if q.bits and saved is None:
        kwargs["quantization_config"] = q.bnb_config(torch_dtype)

    tokenizer = AutoTokenizer.from_pretrained(out)
    ensure_pad(tokenizer)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    if adapter:
        model = PeftModel.from_pretrained(model, out)
    if q.bits or saved is not None:
        keep_4bit_layout(model)
    return model.eval(), tokenizer

