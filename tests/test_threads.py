"""torch's CPU threads at the cores other work leaves free, at a tool's start and while it
trains, unless the user set OMP_NUM_THREADS (issue 18: 2 OpenMP threads beside a busy process
were 2x slower than 1 on 2 cores)."""

import os
import subprocess
import sys
import time

import pytest
import torch

from uniner import threads
from uniner.model.free_cores import FreeCores, free_core_callbacks


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("busy, threads_set", [(0, None), (None, None), (1, 1), (4, 1)])
def test_a_tool_starts_with_the_cores_left_free(two_cores, monkeypatch, capsys, busy,
                                                threads_set):
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    assert threads.fit_threads("uniner-train") == threads_set
    assert torch.get_num_threads() == (threads_set or 2)
    assert capsys.readouterr().err == ""  # not yet: a config error after it stays one line
    threads.say_notice()
    threads.say_notice()  # once
    said = capsys.readouterr().err
    if threads_set:
        assert said == (f"uniner-train: 1 of 2 CPU threads ({busy} other tasks running at the "
                        "start; OMP_NUM_THREADS=2 uses every core)\n")
    else:
        assert said == ""


def test_the_users_omp_num_threads_wins(two_cores, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(threads, "busy_cores", lambda: 4)
    assert threads.fit_threads("uniner-train") is None
    assert torch.get_num_threads() == 2 and capsys.readouterr().err == ""
    assert free_core_callbacks("cpu") == []


def test_training_follows_the_other_work_after_two_looks_in_a_row(two_cores):
    t, busy = [0.0], [1]
    cb = FreeCores(every_seconds=60, clock=lambda: t[0], busy=lambda: busy[0])

    def step(at: float) -> int:
        t[0] = at
        cb.on_train_batch_end(None, None, None, None, 0)
        return torch.get_num_threads()

    assert step(30) == 2  # not a minute yet: no look
    assert step(61) == 2  # one look says 1: not yet
    assert step(122) == 1  # the second agrees
    busy[0] = 0
    assert step(183) == 1
    busy[0] = 1  # a passing burst: the look that said 2 is forgotten
    assert step(244) == 1
    busy[0] = 0
    assert step(305) == 1 and step(366) == 2  # the other work ended
    assert [type(c) for c in free_core_callbacks("cpu")] == [FreeCores]
    assert free_core_callbacks("gpu") == []


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc")
def test_busy_cores_reads_the_running_tasks():
    assert threads.busy_cores(samples=3, interval=0.0) >= 0
    assert threads.free_threads(None, 2) == 2 and threads.free_threads(5, 2) == 1


@pytest.fixture
def busy_machine():
    """As many spinning processes as cores, so every tool sees busy cores at its start."""
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(threads.cores())]
    time.sleep(0.3)
    yield
    for p in spin:
        p.kill()
        p.wait()


@pytest.mark.parametrize("tool, overrides, error", [
    ("uniner.cli.eval", ["checkpoint=outputs/nope"],
     "uniner-eval: error: checkpoint=outputs/nope: no such directory"),
    ("uniner.cli.demo", ["checkpoint=outputs/nope"], "uniner-demo: error: checkpoint=outputs/nope"),
    ("uniner.cli.train", ["data.batch_size=abc"],
     "uniner-train: error: data.batch_size=abc: expected an integer"),
], ids=["eval", "demo", "train"])
def test_a_mistake_is_one_line_on_a_busy_machine(busy_machine, tmp_path, tool, overrides, error):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-m", tool, *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(error), done.stderr
