"""A run stopped by Ctrl-C resumes (issue 25): a real SIGINT to a real `uniner-train` leaves a
current `last.ckpt` and prints the command that resumes it; that command, run as printed,
continues from the saved step to the end. `ckpt_path=last` with nothing to resume is one line."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

TRAIN = [sys.executable, "-m", "uniner.cli.train"]
# the tiny student on the sample, 20 epochs of 6 steps: long enough to be interrupted
RUN = ["logger=none", "export=false", "trainer.max_epochs=20", "benchmark.max_sentences=2"]
ENV = {**os.environ, "UNINER_PROGRESS": "lines", "HF_HUB_OFFLINE": "1"}


def steps(stderr: str) -> list[int]:
    return [int(s) for s in re.findall(r"^train: .*step (\d+)/", stderr, re.M)]


def saved_step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
def test_ctrl_c_saves_last_and_the_printed_command_resumes(tmp_path):
    run = tmp_path / "run"
    # Ctrl-C's default action in the child, even where the suite itself runs in the background
    # (a shell's background job inherits SIGINT ignored)
    proc = subprocess.Popen([*TRAIN, *RUN, f"hydra.run.dir={run}"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = ""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # until training is past its first steps
        line = proc.stderr.readline()
        err += line
        if not line or (steps(line) and steps(line)[0] >= 12):
            break
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=300)
    err += rest
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = run / "checkpoints" / "last.ckpt"
    at = saved_step(last)
    assert at >= 12
    said = re.search(rf"^interrupted at step {at}: saved {re.escape(str(last))}; resume with:\n"
                     r"  (uniner-train .*)$", err, re.M)
    assert said, err[-2000:]
    command = shlex.split(said.group(1))
    assert command[1:] == [*RUN, f"hydra.run.dir={run}", "ckpt_path=last"]

    done = subprocess.run([*TRAIN, *command[1:]], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = steps(done.stderr)
    assert resumed and resumed[0] > at and resumed[-1] == 120  # on from the saved step, no rerun
    assert saved_step(last) == 120


def test_resume_without_a_checkpoint_is_one_line(tmp_path):
    done = subprocess.run([*TRAIN, "ckpt_path=last", f"hydra.run.dir={tmp_path / 'new'}"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"uniner-train: error: ckpt_path=last: no checkpoint to resume in {tmp_path / 'new'} (a "
        "new run directory); resume a run in its own directory, with the command it printed: ... "
        "hydra.run.dir=<the run> ckpt_path=last"]


def test_last_is_rewritten_while_training(tmp_path):
    from uniner.model.keep_last import KeepLast

    class Trainer:
        global_step = 3

        def save_checkpoint(self, path):
            saves.append(path)

    saves, now = [], [0.0]
    keep = KeepLast(tmp_path / "last.ckpt", every_minutes=10, resume="x", clock=lambda: now[0])
    keep.on_train_start(Trainer(), None)
    for t in (60, 599, 600, 900, 1201):
        now[0] = t
        keep.on_train_batch_end(Trainer(), None, None, None, 0)
    assert saves == [tmp_path / "last.ckpt"] * 2  # at 10 and 20 minutes
