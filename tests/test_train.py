"""`uniner-train` end to end on the CPU: the default run learns the sample by heart (W&B offline),
`max_new_tokens: auto` caps a random model's answers, resume."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from wandb_offline import read_wandb_run

from uniner.cli.train import LEARNED_BY_HEART, REAL_STUDENT, closing_lines
from uniner.model.module import auto_max_new_tokens

ASSETS = Path(__file__).resolve().parents[1] / "uniner" / "assets"


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


@pytest.mark.slow
def test_default_run_learns_the_sample_and_logs_to_wandb_offline(default_run):
    """No overrides but where to write: the tiny student learns the 48 sample passages (with
    frequency negatives) and answers the sample's own 248 questions and 144 absent types back
    (F1 >= 0.9, empty-query FP rate <= 5%); the table is labelled as learned by heart and
    followed by the empty-query count and the command for a real student; the full model is
    exported; with no W&B key the run is logged offline, config and metrics readable."""
    run, done = default_run
    assert re.search(r"^\| dataset \| queries \| precision \| recall \| F1 ", done.stdout, re.M)
    assert re.search(r"^\| sample \| 392 \|", done.stdout, re.M)
    assert re.search(r"^\| \*\*average\*\* \| 392 \|", done.stdout, re.M)
    metrics = json.loads((run / "metrics.json").read_text())
    sample = metrics["test"]["sample"]
    assert sample["queries"] == 392 and sample["empty_queries"] == 144
    assert sample["f1"] >= 0.9, sample
    assert sample["empty_query_fp_rate"] <= 0.05 and sample["malformed"] == 0, sample
    lines = done.stdout.splitlines()
    assert "empty queries: 144 of 392 (the empty-query FP rate's base)" in lines
    by_heart = LEARNED_BY_HEART.format(f1=100 * sample["f1"])
    assert by_heart in lines and REAL_STUDENT in lines
    assert lines.index(by_heart) > max(i for i, x in enumerate(lines)
                                       if x.startswith("| **average**"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "export" / "model.safetensors").is_file()  # a full finetune

    (offline,) = (run / "wandb").glob("offline-run-*")
    logged = read_wandb_run(offline)
    assert logged["config"]["backbone"]["name"] == "tiny"
    assert logged["config"]["sampling"]["strategy"] == "frequency"
    assert logged["config"]["adapter"]["name"] == "none"
    assert logged["config"]["module"]["max_new_tokens"] == "auto"
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/peak_rss_gib", "test/avg/f1",
            "test/sample/f1"} <= set(logged["summary"])
    assert logged["summary"]["test/avg/f1"] == pytest.approx(sample["f1"])


@pytest.mark.parametrize("f1, malformed, said", [
    (0.986, 0.0, "learned by heart on the 48 sample passages (F1 98.60)"),
    (0.0, 1.0, "the 48 sample passages are not learned (F1 0.00, answers malformed on 100% of "
               "the empty queries)"),
    (0.42, 0.1, "the 48 sample passages are not learned (F1 42.00, answers malformed on 10%"),
])
def test_what_the_default_run_says_follows_its_score(f1, malformed, said):
    cfg = OmegaConf.create({"data": {"name": "sample"}, "benchmark": {"name": "sample"}})
    scores = {"f1": f1, "queries": 392, "empty_queries": 144,
              "empty_query_malformed_rate": malformed}
    lines = closing_lines(cfg, {"sample": scores, "average": scores})
    assert lines[1].startswith(said) and lines[2] == REAL_STUDENT
    assert all("learned by heart" not in line for line in lines) or f1 >= 0.9
    other = OmegaConf.create({"data": {"name": "pile_ner_bio"}, "benchmark": {"name": "sample"}})
    assert closing_lines(other, {"sample": scores, "average": scores}) == lines[:1]
    untuned = OmegaConf.merge(cfg, {"trainer": {"max_steps": 0}, "backbone": {"name": "tiny"}})
    assert closing_lines(untuned, {"sample": scores, "average": scores})[1].startswith(
        "trainer.max_steps=0: tiny as it came, untuned")


@pytest.mark.parametrize("longest, limit", [(0, 256), (1, 9), (24, 32), (248, 256), (900, 256)])
def test_auto_max_new_tokens_is_the_longest_trained_answer_plus_8_at_most_256(longest, limit):
    assert auto_max_new_tokens(longest) == limit


def test_a_random_models_test_phase_is_capped_by_the_longest_answer(tmp_path):
    """`module.max_new_tokens: auto` on a model that learned nothing (lr 1e-9): its 392 answers
    stop at the sample's longest trained answer (23 tokens + end token) + 8 = 32 new tokens,
    not the official 256, so babble cannot stall the test phase. Also one run of
    `experiment=overfit`."""
    from transformers import AutoTokenizer

    run = tmp_path / "run"
    done = train("experiment=overfit", "trainer.max_epochs=1", "optimizer.lr=1e-9",
                 "logger=none", "export=false", f"hydra.run.dir={run}",
                 f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    logged = done.stdout + done.stderr + "".join(p.read_text() for p in run.glob("*.log"))
    assert "module.max_new_tokens=auto: 32 (longest trained answer 24 tokens + 8)" in logged
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    rows = [json.loads(line) for line in (run / "predictions.jsonl").open()]
    assert len(rows) == 392
    lengths = sorted(len(tok(r["output"], add_special_tokens=False).input_ids) for r in rows)
    # decoded junk re-tokenizes into somewhat more pieces than were generated (up to ~2x here):
    # most answers are the 32 generated tokens, none near the 256 of the official limit
    assert lengths[len(lengths) // 2] == 32 and lengths[-1] < 100, lengths[-10:]


def test_held_out_passages_are_validated_by_f1(tmp_path):
    """`data.val_fraction`: the module asks the data module's held-out passages (their sampled
    types) after each validation, logs val/loss and val/f1, and the best val/f1 is kept."""
    import csv

    run = tmp_path / "run"
    common = ["debug=smoke", "data.val_fraction=0.25", "logger=csv", "export=false",
              f"data.cache_dir={tmp_path / 'cache'}"]
    train(*common, "trainer.max_steps=-1", f"hydra.run.dir={run}", cwd=tmp_path)  # 1 epoch
    (metrics,) = run.glob("csv/*/metrics.csv")
    logged = [row for row in csv.DictReader(metrics.open()) if row.get("val/f1")]
    assert logged and all(0.0 <= float(row["val/f1"]) <= 1.0 for row in logged)
    assert logged[0]["val/loss"]
    assert (run / "checkpoints" / "epoch=0.ckpt").is_file()  # the monitored best
    # max_steps ends the epoch before its validation: no best to test, the last weights are
    done = train(*common, "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'short'}",
                 cwd=tmp_path)
    assert "no validation ran (trainer.max_steps ended the epoch first)" in done.stderr + \
        done.stdout + (tmp_path / "short" / "train.log").read_text()
    assert (tmp_path / "short" / "metrics.json").is_file()


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
