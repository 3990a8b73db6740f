"""The backbone x quant x adapter groups: composition, validation, CPU training steps (bitsandbytes
int8 / nf4 included), export and reload with identical logits."""

import json
import shutil
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM

from uniner.data.prompts import UniNER
from uniner.model.args import validate
from uniner.model.backbone import build_backbone, build_tokenizer
from uniner.model.export import export, load_trained

CONF = Path(__file__).resolve().parents[1] / "conf"
BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml"))
QUANTS = ["none", "int8", "nf4"]
ADAPTERS = ["none", "lora"]
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANT_LAYER = {"int8": bnb.nn.Linear8bitLt, "nf4": bnb.nn.Linear4bit}
TRAINABLE = [("none", "none"), ("none", "lora"), ("int8", "lora"), ("nf4", "lora")]
SECRETS = {"teacher": {"api_key": "sk-live-123", "base_url": "http://127.0.0.1:8000/v1"},
           "logger": {"wandb_token": "abc", "password": "hunter2"}, "seed": 42}


def groups(backbone: str = "tiny", quant: str = "none", adapter: str = "none", *overrides: str):
    """The three groups as `uniner-train` composes them (no root config needed)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+backbone={backbone}", f"+quant={quant}",
                                 f"+adapter={adapter}", *overrides])
    return cfg.backbone, cfg.quant, cfg.adapter


def tiny(quant: str = "none", adapter: str = "none", *overrides: str, seed: int = 0):
    model, tokenizer = build_backbone(*groups("tiny", quant, adapter, *overrides), seed=seed)
    if adapter == "lora":  # B starts at zero; make the adapter change the logits
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model, tokenizer


def batch(tokenizer, rows: int = 2, width: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(4, len(tokenizer), (rows, width), generator=gen)


@torch.no_grad()
def logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids).logits


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_combination_composes_and_validates(backbone, quant, adapter):
    extra = ["backbone.path=/models/any-causal-lm"] if backbone == "custom" else []
    b, q, a = groups(backbone, quant, adapter, *extra)
    assert a.lr == (2e-4 if adapter == "lora" else 2e-5)
    if quant != "none" and adapter == "none":
        with pytest.raises(ValueError, match=f"quant={quant} needs adapter=lora"):
            validate(b, q, a)
        # raised before any load: the real checkpoints are not on this machine
        with pytest.raises(ValueError, match=f"quant={quant} needs adapter=lora"):
            build_backbone(b, q, a)
        return
    bb, qq, aa = validate(b, q, a)
    assert bb.name == backbone and qq.name == quant and aa.name == adapter
    assert (bb.path is None) == (backbone == "tiny") and bb.tokenizer
    assert qq.bits == {"none": None, "int8": 8, "nf4": 4}[quant]


def test_group_inheritance_and_tiny_asset():
    b13, _, _ = groups("llama-13b")
    assert (b13.name, b13.path, b13.gradient_checkpointing) == ("llama-13b",
                                                                "huggyllama/llama-13b", True)
    assert groups("qwen2.5-7b")[0].path == "Qwen/Qwen2.5-7B"
    b, _, _ = groups("tiny")
    assert Path(b.tokenizer).is_absolute() and (Path(b.tokenizer) / "tokenizer.json").is_file()
    assert b.config.vocab_size == len(build_tokenizer(b))


def test_custom_needs_a_path():
    with pytest.raises(ValueError, match="backbone.*path"):
        validate(*groups("custom"))


@pytest.mark.parametrize("override, match", [
    ("+backbone.revision=main", r"backbone: unknown key\(s\) \['revision'\]"),
    ("+quant.blocksize=64", r"quant: unknown key\(s\) \['blocksize'\]"),
    ("+adapter.rank=16", r"adapter: unknown key\(s\) \['rank'\]"),
    ("backbone.dtype=fp8", "backbone.dtype='fp8'"),
    ("quant.quant_type=int4", "quant_type='int4'"),
    ("adapter.target_modules=attention", "target_modules='attention'"),
    ("adapter.dropout=1.5", "dropout=1.5"),
])
def test_unknown_keys_and_bad_values_are_rejected(override, match):
    with pytest.raises(ValueError, match=match):
        validate(*groups("tiny", "nf4", "lora", override))


def test_all_linear_targets():
    model, _ = build_backbone(*groups("tiny", "none", "lora", "adapter.target_modules=all-linear"))
    adapted = {n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == set(PROJECTIONS)


@pytest.mark.parametrize("quant, adapter", TRAINABLE)
def test_tiny_trains_on_cpu(quant, adapter):
    model, tokenizer = tiny(quant, adapter, "backbone.gradient_checkpointing=true")
    base = model.get_base_model() if adapter == "lora" else model
    assert sum(p.numel() for p in base.parameters()) < 3_000_000
    assert base.get_input_embeddings().num_embeddings == len(tokenizer) == 4096
    if quant != "none":
        for layer in base.model.layers:
            for name, module in layer.named_modules():
                if name.rsplit(".", 1)[-1] in PROJECTIONS:
                    linear = module.base_layer if hasattr(module, "base_layer") else module
                    assert isinstance(linear, QUANT_LAYER[quant]), name
        assert not isinstance(base.lm_head, QUANT_LAYER[quant])
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if adapter == "lora":
        assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    else:
        assert len(trainable) == len(list(model.parameters()))

    ids = batch(tokenizer)
    logits(model, ids)  # a validation step first: training afterwards must still get grads
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
    assert all(p.grad.abs().sum() > 0 for n, p in trainable.items() if "lora_A" not in n)


def test_seeded_init_is_reproducible():
    a, _ = build_backbone(*groups("tiny"), seed=7)
    b, _ = build_backbone(*groups("tiny"), seed=7)
    c, _ = build_backbone(*groups("tiny"), seed=8)
    torch.testing.assert_close(a.state_dict(), b.state_dict())
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_flash_attention_falls_back_to_sdpa(caplog):
    model, _ = build_backbone(*groups("tiny", "none", "none",
                                      "backbone.attn_implementation=flash_attention_2"))
    assert model.config._attn_implementation == "sdpa"
    assert "flash_attention_2" in caplog.text


@pytest.mark.parametrize("quant, adapter", TRAINABLE)
def test_export_reloads_with_identical_logits(tmp_path, quant, adapter):
    model, tokenizer = tiny(quant, adapter)
    ids = batch(tokenizer)
    expected = logits(model, ids)
    out = export(model, tokenizer, tmp_path / "export", style=UniNER(tokenizer),
                 resolved_config=SECRETS)

    saved = OmegaConf.load(out / "uniner_config.yaml")
    assert saved.teacher.api_key == saved.logger.wandb_token == saved.logger.password \
        == "<redacted>"
    assert saved.teacher.base_url == SECRETS["teacher"]["base_url"] and saved.seed == 42
    assert (out / "tokenizer.json").is_file()
    if adapter == "lora":
        assert (out / "adapter_model.safetensors").is_file()
        # random init: the base is written beside the adapter and named by its absolute path
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(out / "base")
    else:
        assert (out / "model.safetensors").is_file() and not (out / "base").exists()

    reloaded, reloaded_tokenizer = load_trained(out)
    torch.testing.assert_close(logits(reloaded, ids), expected)
    assert reloaded_tokenizer.padding_side == "left"
    assert reloaded_tokenizer.pad_token_id == tokenizer.pad_token_id
    if quant != "none":
        assert any(isinstance(m, QUANT_LAYER[quant]) for m in reloaded.modules())

    # plain transformers / peft, no uniner code on the load path
    plain = (AutoPeftModelForCausalLM if adapter == "lora" else AutoModelForCausalLM
             ).from_pretrained(out)
    # plain bitsandbytes runs 4-bit inference on AVX512-BF16 CPUs through a bf16 repacked layout
    tolerance = {"atol": 1e-2, "rtol": 0.0} if quant == "nf4" else {}
    torch.testing.assert_close(logits(plain, ids), expected, **tolerance)


def test_moved_adapter_export_still_loads(tmp_path):
    model, tokenizer = tiny("nf4", "lora")
    ids = batch(tokenizer)
    expected = logits(model, ids)
    out = export(model, tokenizer, tmp_path / "a", style=UniNER(tokenizer))
    moved = Path(shutil.move(out, tmp_path / "b"))
    reloaded, _ = load_trained(moved)
    assert isinstance(reloaded, PeftModel)
    torch.testing.assert_close(logits(reloaded, ids), expected)


@pytest.mark.parametrize("quant", QUANTS)
def test_merged_export_matches_the_adapter(tmp_path, quant):
    model, tokenizer = tiny(quant, "lora", "adapter.dropout=0.0")
    ids = batch(tokenizer)
    if quant == "int8":  # train mode: bitsandbytes' int8 dequantize+matmul, no activation quant
        model.train()
        with torch.no_grad():
            expected = model(input_ids=ids).logits
    else:
        expected = logits(model, ids)
    out = export(model, tokenizer, tmp_path / "merged", style=UniNER(tokenizer), merge_lora=True)

    assert not (out / "adapter_config.json").exists()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert all(type(merged.model.layers[0].self_attn.get_submodule(p)) is torch.nn.Linear
               for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
    torch.testing.assert_close(logits(merged, ids), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits(load_trained(out)[0], ids), logits(merged, ids))


def test_merge_refuses_a_layer_it_cannot_dequantize(tmp_path):
    model, tokenizer = tiny("none", "lora")
    up = model.get_base_model().model.layers[0].mlp.up_proj
    up.weight = torch.nn.Parameter(up.weight.detach().to(torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match="cannot merge LoRA into model.layers.0.mlp.up_proj"):
        export(model, tokenizer, tmp_path / "merged", style=UniNER(tokenizer), merge_lora=True)


def test_tokenizer_without_pad_keeps_its_vocabulary(data_root, tmp_path):
    sp32k = str(data_root / "tokenizer_sp32k")
    plain = build_tokenizer({"name": "sp32k", "path": sp32k})
    assert plain.pad_token == "<unk>" and len(plain) == 32000
    config = {**OmegaConf.to_container(groups("tiny")[0].config), "vocab_size": 32000}
    model, tokenizer = build_backbone(
        {"name": "tiny-sp32k", "config": config, "tokenizer": sp32k}, {}, {"name": "none"})
    assert tokenizer.pad_token == tokenizer.unk_token == "<unk>" and tokenizer.pad_token_id == 0
    assert len(tokenizer) == 32000 == model.get_input_embeddings().num_embeddings
    assert tokenizer.padding_side == "right"
    reloaded, reloaded_tokenizer = load_trained(export(model, tokenizer, tmp_path / "sp",
                                                       style=UniNER(tokenizer)))
    assert reloaded_tokenizer.pad_token_id == 0 and len(reloaded_tokenizer) == 32000
    assert reloaded_tokenizer.padding_side == "left"
