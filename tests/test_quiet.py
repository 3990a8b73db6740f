"""Progress, place and noise: what a run prints when its output goes to files."""

import io
import os
import re
import subprocess
import sys

from uniner.progress import Lines, duration, shown_path

# third-party noise the entry points filter (uniner/cli/quiet.py) or no longer cause
NOISE = [
    r"gemm_4bit_forward", r"pip install kernels",
    r"is_gradient_checkpointing",
    r"litlogger", r"litmodels",
    r"LeafSpec",
    r"Writing model shards", r"^Filter:",
    r"transfer_batch_to_device",
    r"anonymous",
    r"Symlinked \d+ file",
]


def test_a_run_to_files_shows_progress_and_place_and_no_noise(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("UNINER_PROGRESS", None)
    run_dir = tmp_path / "run"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:  # files, not terminals
        subprocess.run([sys.executable, "-m", "uniner.cli.train", "debug=smoke", "logger=wandb",
                        "benchmark.max_sentences=2", f"data.cache_dir={tmp_path / 'cache'}",
                        f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, stdout=o, stderr=e,
                       check=True, timeout=900)
    text = out.read_text() + err.read_text()
    noise = [line for line in text.splitlines() if any(re.search(p, line) for p in NOISE)]
    assert not noise, "\n".join(noise)
    lines = err.read_text().splitlines()
    assert lines.count("run directory: run") == 2  # start and end, relative to the cwd
    assert lines[0] == "run directory: run" and lines[-1] == "run directory: run"
    # 48 conversations tokenize in well under the 2 s a tokenizing line waits for
    assert not any(ln.startswith("tokenizing: ") for ln in lines)
    train = [ln for ln in lines if ln.startswith("train: ")]
    assert train[-1].startswith("train: epoch 1/1 · step 4/4 (100%) · ")
    assert re.fullmatch(r"train: epoch 1/1 · step 1/4 \(25%\) · [\d.]+ (it/s|s/it) · ETA \d+s"
                        r" · loss [\d.]+", train[0])
    test = [ln for ln in lines if ln.startswith("test: ")]
    assert test and re.match(r"test: (\d+)/\1 queries \(100%\)", test[-1])
    assert not re.search(r"(Epoch \d+|Testing).*━", text)  # no live bar drawn into a file


def test_lines_wait_for_their_delay():
    """A step shorter than `delay` prints nothing; a longer one prints from then on."""
    t = [0.0]
    quick = Lines("tokenizing", 48, "conversations", delay=2.0, stream=io.StringIO(),
                  clock=lambda: t[0])
    t[0] = 0.1
    assert quick.update(48) is None and quick.stream.getvalue() == ""
    slow = Lines("tokenizing", 100, "conversations", delay=2.0, stream=io.StringIO(),
                 clock=lambda: t[0])
    t[0] = 1.0
    assert slow.update(10) is None
    t[0] = 3.0
    assert slow.update(10) == "tokenizing: 20/100 conversations (20%) · 6.9 conversations/s " \
                              "· ETA 12s"


def test_lines_every_few_percent_with_rate_and_eta():
    clock = iter(float(t) for t in range(0, 1000)).__next__
    stream = io.StringIO()
    lines = Lines("answer", 200, "queries", every=25, stream=stream, clock=clock)
    printed = [lines.update(10) for _ in range(20)]
    shown = [p for p in printed if p]
    assert len(shown) == 4  # 25, 50, 75, 100 %
    assert shown[0] == "answer: 50/200 queries (25%) · 10.0 queries/s · ETA 15s"
    assert shown[-1].startswith("answer: 200/200 queries (100%) · ") and "took" in shown[-1]
    assert stream.getvalue().splitlines() == shown


def test_lines_also_every_few_minutes_when_slow():
    t = [0.0]
    lines = Lines("teacher", 1000, "passages", stream=io.StringIO(), clock=lambda: t[0])
    t[0] = 400.0
    assert lines.update(1, answered=1) == ("teacher: 1/1000 passages (0%) · 400.0 s each · "
                                           "ETA 111h00m · answered 1")


def test_durations_and_paths(tmp_path, monkeypatch):
    assert [duration(s) for s in (0, 42, 63, 3600 + 5 * 60)] == ["0s", "42s", "1m03s", "1h05m"]
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "outputs" / "x") == os.path.join("outputs", "x")
    assert shown_path("/") == "/"
