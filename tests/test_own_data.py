"""Your own BIO data end to end, as the README says (issue 25): prepare it, train on its train
split, score on its test split (`benchmark=own`); and the warnings a run on other data than the
sample gives before hours go by (the tiny recipe's epochs, a test that asks the sample)."""

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from uniner.cli.train import size_warnings

LABELS = "{person: person, organisation: organization, country: country}"


def sentences(path, n: int) -> str:
    """The first `n` sentences of a BIO file, every tag outside LABELS turned into O."""
    keep = {"person", "organisation", "country"}
    out = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n")[:n]:
        rows = []
        for line in block.splitlines():
            token, tag = line.split("\t")
            rows.append(f"{token}\t{tag if tag[2:] in keep else 'O'}")
        out.append("\n".join(rows))
    return "\n\n".join(out) + "\n"


def tool(module: str, *overrides: str, cwd):
    done = subprocess.run([sys.executable, "-m", f"uniner.cli.{module}", *overrides], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_own_bio_data_prepares_trains_and_scores_on_its_test_split(data_root, tmp_path):
    (tmp_path / "train.txt").write_text(sentences(data_root / "crossner/ai/train.txt", 40))
    (tmp_path / "test.txt").write_text(sentences(data_root / "crossner/ai/test.txt", 6))
    own = ["data=bio", "data.source.path=train.txt", f"data.source.label_map={LABELS}"]
    bench = ["benchmark=own", "benchmark.datasets.own.path=test.txt",
             f"benchmark.datasets.own.label_map={LABELS}"]

    tool("prepare", *own, "hydra.run.dir=prepared", cwd=tmp_path)
    stats = json.loads((tmp_path / "prepared" / "stats.json").read_text())
    assert stats["passages"] == 40

    done = tool("train", *own, *bench, "logger=none", "trainer.max_epochs=2",
                "hydra.run.dir=run", cwd=tmp_path)
    assert "warning" not in done.stderr  # its own test split, a size the recipe does not doubt
    scores = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert scores["own"]["queries"] == 6 * 3  # 6 sentences x the 3 types of the label map

    done = tool("eval", "checkpoint=run/export", *bench, "hydra.run.dir=scored", cwd=tmp_path)
    assert json.loads((tmp_path / "scored" / "metrics.json").read_text())["own"]["queries"] == 18


@pytest.mark.parametrize("data, backbone, epochs, bench, says", [
    ("sample", "tiny", 150, "sample", []),
    ("bio", "tiny", 150, "own", ["5000 passages x 150 epochs = 93750 steps"]),
    ("bio", "tiny", 2, "own", []),
    ("bio", "smollm2-135m", 150, "sample", ["the test asks the shipped sample"]),
])
def test_a_run_on_other_data_says_what_does_not_fit(data, backbone, epochs, bench, says):
    cfg = OmegaConf.create({"data": {"name": data, "batch_size": 8},
                            "backbone": {"name": backbone}, "benchmark": {"name": bench},
                            "trainer": {"max_epochs": epochs, "max_steps": -1}})
    lines = size_warnings(cfg, 5000)
    assert len(lines) == len(says) and all(a.startswith(b) for a, b in zip(lines, says))
