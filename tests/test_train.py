"""`uniner-train` end to end on the CPU: the default run, learning by heart, resume, W&B offline."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from wandb_offline import read_wandb_run


def train(*overrides: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `uniner-train` (the installed console script) with Hydra overrides."""
    script = shutil.which("uniner-train")
    command = [script] if script else [sys.executable, "-m", "uniner.cli.train"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})})
    done = subprocess.run([*command, *overrides], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def test_default_run_prints_the_table_and_logs_to_wandb_offline(tmp_path):
    """No overrides but where to write: trains, tests on the sample, exports, prints the table;
    with no W&B key the run is logged offline, config and metrics readable from its files."""
    run = tmp_path / "run"
    done = train(f"hydra.run.dir={run}", f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path,
                 env={"WANDB_API_KEY": ""})
    assert re.search(r"^\| dataset \| queries \| precision \| recall \| F1 ", done.stdout, re.M)
    assert re.search(r"^\| sample \| 2832 \|", done.stdout, re.M)
    assert re.search(r"^\| \*\*average\*\* \| 2832 \|", done.stdout, re.M)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "export" / "adapter_model.safetensors").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["sample"]["queries"] == 2832

    (offline,) = (run / "wandb").glob("offline-run-*")
    logged = read_wandb_run(offline)
    assert logged["config"]["backbone"]["name"] == "tiny"
    assert logged["config"]["sampling"]["strategy"] == "frequency"
    assert logged["config"]["adapter"]["r"] == 8
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/peak_rss_gib", "test/avg/f1",
            "test/sample/f1"} <= set(logged["summary"])
    assert logged["summary"]["test/avg/f1"] == pytest.approx(metrics["test"]["average"]["f1"])


@pytest.mark.slow
def test_it_learns_the_sample_by_heart(tmp_path):
    """The tiny backbone, trained on the 48 sample passages, answers their questions back with
    F1 >= 0.9 under greedy generation: template, loss mask, generation and parsing line up."""
    run = tmp_path / "run"
    train("experiment=overfit", "logger=none", "export=false", f"hydra.run.dir={run}",
          f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    results = json.loads((run / "metrics.json").read_text())["test"]
    assert results["sample"]["queries"] == 248
    assert results["average"]["f1"] >= 0.9, results["average"]
    assert results["average"]["malformed"] == 0


def _trained_state(path: Path) -> tuple[dict, int]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["state_dict"], ckpt["global_step"]


def test_resume_from_last_gives_the_same_weights(tmp_path):
    """An uninterrupted 2-epoch run and one resumed with `ckpt_path=last` from the first run's
    epoch-0 checkpoint end with the same weights (optimizer, schedule and data state restored)."""
    common = ["debug=smoke", "trainer.max_steps=-1", "trainer.max_epochs=2", "logger=none",
              "export=false", "benchmark.max_sentences=1", "module.max_new_tokens=2",
              f"data.cache_dir={tmp_path / 'cache'}"]
    whole = tmp_path / "whole"
    common.append("checkpoint.every_epoch=true")
    train(*common, f"hydra.run.dir={whole}", cwd=tmp_path)
    assert (whole / "checkpoints" / "epoch=0.ckpt").is_file()

    resumed = tmp_path / "resumed"  # an interrupted run: only its epoch-0 `last` on disk
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(whole / "checkpoints" / "epoch=0.ckpt", resumed / "checkpoints" / "last.ckpt")
    train(*common, "ckpt_path=last", f"hydra.run.dir={resumed}", cwd=tmp_path)

    expected, expected_step = _trained_state(whole / "checkpoints" / "last.ckpt")
    got, got_step = _trained_state(resumed / "checkpoints" / "last.ckpt")
    _, first_epoch_step = _trained_state(whole / "checkpoints" / "epoch=0.ckpt")
    assert got_step == expected_step == 2 * first_epoch_step
    assert expected.keys() == got.keys() and expected
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
