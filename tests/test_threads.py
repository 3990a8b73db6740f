"""torch's CPU threads at a tool's start: the cores no other task uses, unless the user set
OMP_NUM_THREADS (issue 18: 2 OpenMP threads beside busy processes were several times slower
than 1)."""

import os

import pytest
import torch

from uniner.cli import entry


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("busy, threads", [(0, None), (1, 1), (4, 1)])
def test_threads_are_the_cores_left_free(two_cores, monkeypatch, capsys, busy, threads):
    monkeypatch.setattr(entry, "busy_cores", lambda: busy)
    torch.set_num_threads(2)
    assert entry.cpu_threads("uniner-train") == threads
    assert torch.get_num_threads() == (threads or 2)
    said = capsys.readouterr().err
    if threads:
        assert said == (f"uniner-train: 1 of 2 CPU threads ({busy} other tasks running at the "
                        "start; OMP_NUM_THREADS=2 uses every core)\n")
    else:
        assert said == ""


def test_the_users_omp_num_threads_wins(two_cores, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(entry, "busy_cores", lambda: 4)
    torch.set_num_threads(2)
    assert entry.cpu_threads("uniner-train") is None
    assert torch.get_num_threads() == 2 and capsys.readouterr().err == ""


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc")
def test_busy_cores_counts_other_running_tasks(tmp_path):
    """Read from /proc/stat: at least 0 (this process itself is not counted)."""
    assert entry.busy_cores(samples=3, interval=0.0) >= 0
