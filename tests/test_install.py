"""A regular (non-editable) install works: the wheel ships the configs as `uniner.conf`, and the
console scripts find them from any directory; users add config folders with Hydra's search path."""

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from uniner.config import CONF_DIR

REPO = Path(__file__).resolve().parents[1]


def user_conf(root: Path, passages: Path) -> Path:
    """A user's own config folder with one `data` choice of their own."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "mine.yaml").write_text(
        f"defaults: [_base, _self_]\nname: mine\nsource:\n  format: pile_ner\n  path: {passages}\n")
    return root


def test_user_config_folder_on_the_search_path(tmp_path, monkeypatch):
    """`hydra.searchpath=[file://...]` adds a folder whose files join the shipped groups."""
    sample = Path(CONF_DIR).parent / "uniner" / "assets" / "sample.json"
    mine = user_conf(tmp_path / "my_conf", sample)
    monkeypatch.chdir(tmp_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("prepare", overrides=[f"hydra.searchpath=[file://{mine}]", "data=mine"])
    assert cfg.data.name == "mine" and cfg.data.source.path == str(sample)
    assert cfg.data.max_length == 1024  # from the shipped data/_base.yaml


def clean_env(**extra) -> dict:
    """No PYTHONPATH (a checkout on it would hide the installed wheel)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "WANDB_MODE": "disabled", **extra}


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_directory(tmp_path):
    """Build the wheel, install it without deps into a fresh venv that sees the system's torch &
    co., then run its `uniner-prepare` from a directory that is not the repository."""
    # built from a copy: setuptools leaves build/ in the source tree, and a stale build/lib
    # would put deleted modules in the next wheel
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src)
    for name in ("uniner", "conf"):
        shutil.copytree(REPO / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)]
    if int(version("setuptools").split(".")[0]) >= 68:
        build.insert(4, "--no-build-isolation")  # offline; else pip fetches setuptools
    subprocess.run(build, check=True, cwd=tmp_path, env=clean_env())
    (wheel,) = dist.glob("uniner-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True)
    python = venv / "bin" / "python"
    # the system's pip installs into the venv it runs in (sys.prefix)
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   cwd=tmp_path, env=clean_env())
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = tmp_path / "out"
    run = subprocess.run([venv / "bin" / "uniner-prepare", f"hydra.run.dir={out}",
                          "data.cache_dir=null"], cwd=work, env=clean_env(),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    items = json.loads((out / "conversations.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    assert len(items) == stats["passages"] == 48
    assert (out / "stats.md").read_text().startswith("| what | count |")
    where = subprocess.run([python, "-c", "import uniner.config as c; print(c.CONF_DIR)"],
                           check=True, cwd=work, env=clean_env(), capture_output=True, text=True)
    assert Path(where.stdout.strip()) == venv.resolve().joinpath(  # the wheel's, not a checkout's
        "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages",
        "uniner", "conf")
    # every module of the package is in the wheel
    every = ("import importlib, pkgutil, uniner; [importlib.import_module(m.name) for m in "
             "pkgutil.walk_packages(uniner.__path__, 'uniner.')]")
    subprocess.run([python, "-c", every], check=True, cwd=work, env=clean_env())

    # a user's config folder beside the shipped ones (`--config-dir`, or hydra.searchpath)
    passages = tmp_path / "mine.json"
    passages.write_text(json.dumps(items[:5]))
    mine = user_conf(tmp_path / "my_conf", passages)
    out = tmp_path / "out_mine"
    run = subprocess.run([venv / "bin" / "uniner-prepare", "--config-dir", str(mine), "data=mine",
                          f"hydra.run.dir={out}", "data.cache_dir=null"], cwd=work,
                         env=clean_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "stats.json").read_text())["passages"] == 5
