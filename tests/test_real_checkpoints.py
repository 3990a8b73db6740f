"""Real checkpoints train as configured (issue 12): tiny LLaMA / Mistral / Qwen2 models saved in
Hugging Face format with a tokenizer beside them, loaded through `backbone.path` (the path a
user's run takes: `from_pretrained`, which returns a model in eval mode), trained by a real
`pl.Trainer` on the CPU for every allowed `quant` x `adapter` x `gradient_checkpointing`.

Checked inside Lightning at each training step: every module of the model is in train mode;
gradient checkpointing recomputes (the first module of a decoder layer runs twice a step) when on
and not when off; LoRA dropout really drops (its output differs from its input). Validation runs
in eval mode in between. After fit, `export` reloads through `load_trained` to identical logits.
"""

from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from tiny import ARCHS
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForCausalLM

from uniner.config import asset
from uniner.data.datamodule import collate
from uniner.data.prompts import UniNER

# the library under test, in one place (the package layout is being reorganised)
from uniner.model.backbone import build_backbone, build_tokenizer
from uniner.model.export import export, load_trained
from uniner.model.module import NERModule

CONF = Path(__file__).resolve().parents[1] / "conf"
# the architecture families the backbone configs name (llama-*, mistral-7b, qwen2.5-*), tiny:
# 4-bit bitsandbytes on the CPU needs every quantized dimension a multiple of 64
TINY = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 4096,
        "max_position_embeddings": 512}
# every combination the project allows (a quantized base needs LoRA)
TRAINABLE = [("none", "none"), ("none", "lora"), ("int8", "lora"), ("nf4", "lora")]
STEPS = 2


def groups(path: Path, quant: str, adapter: str, *overrides: str):
    """The three groups as `uniner-train backbone=custom backbone.path=...` composes them."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=["+backbone=custom", f"+quant={quant}", f"+adapter={adapter}",
                                 f"backbone.path={path}", *overrides])
    return cfg.backbone, cfg.quant, cfg.adapter


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One saved tiny checkpoint per architecture, its tokenizer saved beside it."""
    tokenizer = build_tokenizer({"name": "shipped", "path": asset("tokenizer")})
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for arch, extra in ARCHS.items():
        kwargs = {**TINY, **extra, "bos_token_id": tokenizer.bos_token_id,
                  "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        paths[arch] = root / arch
        model.save_pretrained(paths[arch])
        tokenizer.save_pretrained(paths[arch])
    return paths


def batches(tokenizer, n: int, seed: int) -> list[dict]:
    """Right-padded batches of two rows of different lengths (a padding mask, as `longest`)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        rows = []
        for length in (24, 17):
            ids = torch.randint(4, len(tokenizer), (length,), generator=gen).tolist()
            rows.append({"input_ids": ids, "labels": ids})
        out.append(collate(rows, pad_id=tokenizer.pad_token_id))
    return out


def base_of(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class Probe(pl.Callback):
    """Records, per training step, the model's modules in eval mode, how often the first decoder
    layer ran, and whether LoRA dropout changed its input; per validation batch, the modules
    in train mode."""

    def __init__(self, model):
        self.model = model
        self.steps: list[dict] = []
        self.val_training: list[list[str]] = []
        self._step: dict | None = None
        layer = base_of(model).model.layers[0]
        # transformers checkpoints the layer's `forward`, so the layer's own hooks stay outside the
        # checkpoint; its first submodule runs again when the backward pass recomputes (a pre-hook:
        # non-reentrant checkpointing stops a recompute once it has what the backward needs)
        layer.input_layernorm.register_forward_pre_hook(self._layer_ran)
        self.dropout = None
        q_proj = layer.self_attn.q_proj
        if hasattr(q_proj, "lora_dropout"):
            self.dropout = q_proj.lora_dropout["default"]
            self.dropout.register_forward_hook(self._dropped)

    def _layer_ran(self, module, args):
        if self._step is not None:
            self._step["layer_calls"] += 1

    def _dropped(self, module, args, output):
        if self._step is not None:
            self._step["dropout_changed"].append(not torch.equal(output, args[0]))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = {"eval_modules": [n for n, m in self.model.named_modules()
                                       if not m.training],
                      "layer_calls": 0, "dropout_changed": []}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(self._step)
        self._step = None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_training.append([n for n, m in self.model.named_modules() if m.training])


def fit(model, tokenizer, *, root: Path) -> Probe:
    """`STEPS` training steps of `NERModule` in a real CPU `pl.Trainer`, validating after each."""
    probe = Probe(model)
    module = NERModule(model, tokenizer, partial(torch.optim.AdamW, lr=1e-2),
                       style=UniNER(tokenizer))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=STEPS, val_check_interval=1,
                         limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, callbacks=[probe])
    trainer.fit(module, train_dataloaders=DataLoader(batches(tokenizer, STEPS, 0), batch_size=None),
                val_dataloaders=DataLoader(batches(tokenizer, 1, 1), batch_size=None))
    assert len(probe.steps) == STEPS
    return probe


@torch.no_grad()
def logits(model, batch: dict) -> torch.Tensor:
    model.eval()
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("checkpointing", [True, False], ids=["ckpt", "no-ckpt"])
@pytest.mark.parametrize("quant, adapter", TRAINABLE, ids=[f"{q}-{a}" for q, a in TRAINABLE])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_a_saved_checkpoint_trains_as_configured(checkpoints, tmp_path, arch, quant, adapter,
                                                 checkpointing):
    model, tokenizer = build_backbone(
        *groups(checkpoints[arch], quant, adapter,
                f"backbone.gradient_checkpointing={str(checkpointing).lower()}"), seed=0)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable

    probe = fit(model, tokenizer, root=tmp_path)

    problems = []  # every defect at once, not only the first
    for i, step in enumerate(probe.steps):  # step 1 comes after a validation run
        if step["eval_modules"]:
            problems.append(f"step {i}: {len(step['eval_modules'])} modules in eval mode while "
                            f"training, e.g. {step['eval_modules'][:3]}")
        if step["layer_calls"] != (2 if checkpointing else 1):
            expect = "on: it must recompute" if checkpointing else "off"
            problems.append(f"step {i}: the decoder layer ran {step['layer_calls']}x "
                            f"(checkpointing {expect})")
        dropped = step["dropout_changed"]
        if adapter == "lora" and not (dropped and all(dropped)):
            problems.append(f"step {i}: LoRA dropout did not drop {step['dropout_changed']}")
    if len(probe.val_training) != STEPS or any(probe.val_training):
        problems.append(f"validation not in eval mode: {[t[:3] for t in probe.val_training]}")
    assert not problems, "\n".join(problems)

    changed = {n for n, p in model.named_parameters()
               if n in trainable and not torch.equal(p.detach(), trainable[n])}
    assert changed == set(trainable), f"not trained: {sorted(set(trainable) - changed)[:5]}"

    batch = batches(tokenizer, 1, 2)[0]
    expected = logits(model, batch)
    out = export(model, tokenizer, tmp_path / "export", style=UniNER(tokenizer))
    reloaded, _ = load_trained(out, device="cpu")
    torch.testing.assert_close(logits(reloaded, batch), expected)


@pytest.mark.parametrize("quant, adapter", [("none", "none"), ("nf4", "lora")])
def test_build_backbone_returns_a_model_ready_to_train(checkpoints, quant, adapter):
    """`from_pretrained` hands back an eval-mode model; `build_backbone` must not."""
    model, _ = build_backbone(*groups(checkpoints["llama"], quant, adapter), seed=0)
    assert [n for n, m in model.named_modules() if not m.training] == []


def test_the_module_trains_a_model_handed_over_in_eval_mode(checkpoints, tmp_path):
    """Whatever built the model (an eval() call, another loader), fit trains in train mode and
    Lightning's mode restore after validation keeps it so."""
    model, tokenizer = build_backbone(*groups(checkpoints["llama"], "none", "lora"), seed=0)
    model.eval()
    probe = fit(model, tokenizer, root=tmp_path)
    assert [s["eval_modules"] for s in probe.steps] == [[]] * STEPS
    assert [s["layer_calls"] for s in probe.steps] == [2] * STEPS  # custom: checkpointing on
    assert all(s["dropout_changed"] and all(s["dropout_changed"]) for s in probe.steps)
    assert all(training == [] for training in probe.val_training)


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("trainer", ["gpu", "ddp", "fsdp", "deepspeed"])
def test_gpu_trainers_pack_pad_to_64_and_allow_tf32(trainer):
    # a real backbone: `backbone=tiny` (the default) brings its own epochs (conf/recipe/tiny.yaml)
    cfg = compose_train(f"trainer={trainer}", "backbone=llama-7b")
    assert (cfg.data.packing, cfg.data.pad_to_multiple_of) == (True, 64)
    assert cfg.float32_matmul_precision == "high"
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert cfg.trainer.max_epochs == 3 and "data" not in cfg.trainer  # cpu.yaml under `trainer`
    # the command line (and experiments, later in the defaults list) still decide
    cfg = compose_train(f"trainer={trainer}", "data.packing=false", "data.pad_to_multiple_of=null")
    assert (cfg.data.packing, cfg.data.pad_to_multiple_of) == (False, None)


def test_the_cpu_trainer_keeps_the_official_padding():
    cfg = compose_train()
    assert (cfg.trainer.accelerator, cfg.data.packing, cfg.data.pad_to_multiple_of) == \
        ("cpu", False, None)
    assert cfg.float32_matmul_precision == "highest"
