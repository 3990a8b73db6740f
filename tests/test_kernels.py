"""Training kernels (issue 13): the chunked loss equals the model's own loss and gradients on tiny
LLaMA / Mistral / Qwen2 students (padded, packed and flattened packed rows; LoRA and full
finetune; fp32), and never holds a full logits tensor; `torch.compile` gives the same loss;
`module.kernels` resolves and fails clearly; (gpu) liger's loss equals the plain loss."""

from functools import partial

import pytest
import torch
from tiny import ARCHS
from torch.utils._python_dispatch import TorchDispatchMode

from uniner.config import asset
from uniner.data.batching import collate_packed, pack
from uniner.data.datamodule import NERDataModule, collate
from uniner.data.prompts import UniNER
from uniner.model import kernels
from uniner.model.backbone import build_backbone
from uniner.model.module import NERModule

SAMPLE = {"format": "pile_ner", "path": asset("sample.json")}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 4096,
        "max_position_embeddings": 1024}
ADAPTERS = {"none": {"name": "none"},
            "lora": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.05,
                     "target_modules": ["q_proj", "v_proj"]}}


def student(arch: str, adapter: str, quant: dict | None = None, **backbone):
    model, tok = build_backbone({"name": arch, "config": {**TINY, **ARCHS[arch]},
                                 "tokenizer": asset("tokenizer"), "dtype": "fp32", **backbone},
                                quant or {"name": "none"}, ADAPTERS[adapter], seed=0)
    if adapter == "lora":  # B starts at 0, which would leave A's gradient 0: make both count
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model, tok


@pytest.fixture(scope="module")
def conversations():
    """Seven of the sample conversations (137 to 198 tokens; the loss on the replies only)."""
    _, tok = student("llama", "none")
    dm = NERDataModule(SAMPLE, max_length=512)
    dm.connect(tok, UniNER(tok))
    dm.setup("fit")
    encoded = dm.encode(dm.train_passages, 0)
    return [encoded[i] for i in range(7)], tok.pad_token_id


def layouts(rows: list[dict], pad_id: int) -> dict[str, dict]:
    bins = pack([len(r["input_ids"]) for r in rows], 512)
    assert max(map(len, bins)) > 1
    grouped = [[rows[j] for j in b] for b in bins]
    return {"padded": collate(rows, pad_id=pad_id),
            "packed": collate_packed(grouped, pad_id=pad_id),
            "flat": collate_packed(grouped, pad_id=pad_id, flatten=True)}


def loss_and_grads(model, loss_fn, batch):
    model.zero_grad()
    torch.manual_seed(0)  # the same LoRA dropout masks for both losses
    loss = loss_fn(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.requires_grad}


def plain(model, batch):
    return model(**{k: v for k, v in batch.items() if k != "num_tokens"}, use_cache=False).loss


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_chunked_loss_and_gradients_equal_plain(conversations, arch, adapter):
    rows, pad_id = conversations
    model, _ = student(arch, adapter)
    model.train()
    for layout, batch in layouts(rows, pad_id).items():
        ref_loss, ref_grads = loss_and_grads(model, partial(plain, model), batch)
        # small chunks: several chunks a batch, the last one partial
        loss, grads = loss_and_grads(model, partial(kernels.chunked_loss, model,
                                                    chunk_tokens=100), batch)
        assert abs(loss - ref_loss) / ref_loss < 1e-5, (layout, loss, ref_loss)
        assert grads.keys() == ref_grads.keys() and grads
        for name, grad in ref_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6,
                                       msg=f"{layout}: {name}")


def assert_chunked_equals_plain(model, batch) -> None:
    """The chunked loss and its gradients equal the model's own loss (fp32)."""
    ref_loss, ref_grads = loss_and_grads(model, partial(plain, model), batch)
    loss, grads = loss_and_grads(model, partial(kernels.chunked_loss, model), batch)
    assert abs(loss - ref_loss) / ref_loss < 1e-5
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_chunked_loss_equals_plain_under_qlora(conversations):
    """QLoRA: a 4-bit (nf4) base on bitsandbytes' CPU path, LoRA on top."""
    rows, pad_id = conversations
    model, _ = student("llama", "lora", {"name": "nf4", "bits": 4, "quant_type": "nf4"},
                       gradient_checkpointing=True)
    batch = layouts(rows, pad_id)["packed"]
    assert_chunked_equals_plain(model, batch)


class LargestLogits(TorchDispatchMode):
    """The most positions of any vocabulary-wide tensor an op creates (logits, their softmax,
    their gradient), forward, recompute and backward."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.largest = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab:
                self.largest = max(self.largest, t.numel() // self.vocab)
        return out


def test_chunked_loss_never_holds_the_full_logits(conversations):
    rows, pad_id = conversations
    model, _ = student("llama", "lora")
    batch = layouts(rows, pad_id)["packed"]
    vocab = model.config.vocab_size
    positions = batch["input_ids"].numel()
    labelled = int((kernels.shift_labels(batch["labels"]) != -100).sum())
    assert labelled < positions / 3  # the replies: a small share of the conversations

    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    try:
        with LargestLogits(vocab) as plain_mode:
            plain(model, batch).backward()
        assert seen == [(*batch["input_ids"].shape, TINY["hidden_size"])]
        assert plain_mode.largest == positions  # the probe sees the full logits
        seen.clear()
        with LargestLogits(vocab) as chunked_mode:
            kernels.chunked_loss(model, batch, chunk_tokens=64).backward()
    finally:
        handle.remove()
    # the head sees only labelled positions, 64 at a time: forward, then recomputed in backward
    sizes = [s[0] for s in seen]
    assert sum(sizes) == 2 * labelled and max(sizes) <= 64, sizes
    assert chunked_mode.largest == 64 < positions


def test_chunked_loss_with_gradient_checkpointing_and_without_labels(conversations):
    rows, pad_id = conversations
    model, _ = student("qwen2", "lora", gradient_checkpointing=True)
    batch = layouts(rows, pad_id)["packed"]
    assert_chunked_equals_plain(model, batch)
    silent = {**batch, "labels": torch.full_like(batch["labels"], -100)}
    empty = kernels.chunked_loss(model, silent)
    assert empty.item() == 0.0
    empty.backward()  # still part of the graph: a step without labels trains nothing


def test_module_uses_the_configured_kernels(conversations):
    rows, pad_id = conversations
    model, tok = student("mistral", "none")
    batch = layouts(rows, pad_id)["padded"]
    opt = partial(torch.optim.AdamW, lr=1e-3)
    auto = NERModule(model, tok, opt, style=UniNER(tok))  # auto on the CPU: the plain loss
    assert auto.args.kernels == "auto"
    chunked = NERModule(model, tok, opt, style=UniNER(tok), kernels="chunked", chunk_tokens=50)
    torch.testing.assert_close(chunked.loss(batch), auto.loss(batch), rtol=1e-5, atol=0)
    assert auto.resolved_kernels == "plain" and chunked.resolved_kernels == "chunked"
    with pytest.raises(ValueError, match="module.kernels='fused'"):
        NERModule(model, tok, opt, style=UniNER(tok), kernels="fused")
    with pytest.raises(ValueError, match="module.compile"):
        NERModule(model, tok, opt, style=UniNER(tok), compile="everything")


def test_fit_with_the_chunked_loss_logs_peak_memory(conversations, tmp_path):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    rows, pad_id = conversations
    model, tok = student("llama", "lora")
    module = NERModule(model, tok, partial(torch.optim.AdamW, lr=1e-2), kernels="chunked",
                       style=UniNER(tok))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    batches = list(layouts(rows, pad_id).values())[1:]  # packed, flat
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert module.resolved_kernels == "chunked"
    assert trainer.callback_metrics["train/peak_rss_gib"] > 0.1  # this process's peak, in GiB
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters()
               if p.requires_grad)


def test_kernels_resolve_per_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert kernels.resolve_kind("auto", cpu) == "plain"
    assert kernels.resolve_kind("chunked", cpu) == "chunked"
    with pytest.raises(ValueError, match="module.kernels=liger needs a CUDA device"):
        kernels.resolve_kind("liger", cpu)
    monkeypatch.setattr(kernels, "liger_available", lambda: False)
    assert kernels.resolve_kind("auto", cuda) == "chunked"
    with pytest.raises(ValueError, match=r'pip install -e "\.\[liger\]"'):
        kernels.resolve_kind("liger", cuda)
    monkeypatch.setattr(kernels, "liger_available", lambda: True)
    assert kernels.resolve_kind("auto", cuda) == "liger"
    # a sharded strategy: auto falls back to chunked, an explicit liger is refused
    model, tok = student("llama", "lora")
    opt = partial(torch.optim.AdamW, lr=1e-3)
    style = UniNER(tok)
    assert NERModule(model, tok, opt, style=style).setup_kernels(cuda, sharded=True) == "chunked"
    with pytest.raises(ValueError, match="sharded"):
        NERModule(model, tok, opt, style=style, kernels="liger").setup_kernels(cuda, sharded=True)


def test_uniner_train_refuses_liger_up_front(monkeypatch):
    """Before any model loads, as one line (a ConfigError): no GPU trainer, no liger-kernel."""
    import importlib.util

    from hydra import compose, initialize_config_dir

    from uniner.cli.checks import check_kernels
    from uniner.config import CONF_DIR
    from uniner.errors import ConfigError

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cpu = compose("train", overrides=["module.kernels=liger"])
        gpu = compose("train", overrides=["module.kernels=liger", "trainer=gpu"])
        check_kernels(compose("train", overrides=["module.kernels=chunked"]))
    with pytest.raises(ConfigError, match="needs a CUDA device.*trainer=gpu"):
        check_kernels(cpu)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[liger\]"'):
        check_kernels(gpu)


def test_unsupported_backbones_are_refused():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2, vocab_size=64)
    with pytest.raises(ValueError, match="module.kernels=plain"):
        kernels.chunked_loss(AutoModelForCausalLM.from_config(config),
                             {"input_ids": torch.ones(1, 4, dtype=torch.long),
                              "labels": torch.ones(1, 4, dtype=torch.long)})


@pytest.mark.slow  # compiling takes a minute or more on 2 busy CPU cores
@pytest.mark.parametrize("what", ["layers"])
def test_compiled_model_gives_the_same_loss(conversations, what, monkeypatch):
    import torch._inductor.config

    # compiled dropout draws from inductor's own generator: the eager one, for the same masks
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    rows, pad_id = conversations
    model, _ = student("llama", "lora")
    batch = layouts(rows, pad_id)["packed"]
    with torch.no_grad():
        ref_eval = kernels.chunked_loss(model.eval(), batch)
    model.train()
    ref_loss, ref_grads = loss_and_grads(model, partial(kernels.chunked_loss, model), batch)
    kernels.compile_model(model, what)
    model.train()
    loss, grads = loss_and_grads(model, partial(kernels.chunked_loss, model), batch)
    # inductor fuses and reorders the float sums: equal to rounding, not to the last bit
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=0)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
    model.eval()  # eval: the eager forward (generation never recompiles)
    with torch.no_grad():
        torch.testing.assert_close(kernels.chunked_loss(model, batch), ref_eval, rtol=0, atol=0)


# ------------------------------------------------------------------------------ GPU only

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_liger_loss_equals_plain_on_the_gpu(conversations, arch, adapter, monkeypatch):
    pytest.importorskip("liger_kernel", reason='pip install -e ".[liger]"')
    import importlib

    # liger patches RoPE/RMSNorm/MLP in transformers' modeling module: restore them afterwards
    modeling = importlib.import_module(f"transformers.models.{arch}.modeling_{arch}")
    for name in dir(modeling):
        if name == "apply_rotary_pos_emb" or name.endswith(("RMSNorm", "MLP")):
            monkeypatch.setattr(modeling, name, getattr(modeling, name))
    rows, pad_id = conversations
    model, _ = student(arch, adapter)
    model.cuda().train()
    batches = {layout: {k: v.cuda() for k, v in b.items()}
               for layout, b in layouts(rows, pad_id).items()}
    # every reference before liger patches anything
    refs = {layout: loss_and_grads(model, partial(plain, model), b)
            for layout, b in batches.items()}
    fused, _ = student(arch, adapter)
    fused.cuda().train()
    kernels.apply_liger_kernels(fused)
    for layout, batch in batches.items():
        ref_loss, ref_grads = refs[layout]
        loss, grads = loss_and_grads(fused, partial(kernels.liger_loss, fused), batch)
        assert abs(loss - ref_loss) / ref_loss < 1e-4, (layout, loss, ref_loss)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-5,
                                       msg=f"{layout}: {name}")
