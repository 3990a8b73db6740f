import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real NER data (`UNINER_DATA`, else `../shared/data`). Absent data fails, never skips."""
    root = Path(os.environ.get("UNINER_DATA", REPO.parent / "shared" / "data"))
    if not (root / "README.md").is_file():
        pytest.fail(f"real NER data not found at {root}: set UNINER_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """`uniner-train` with no overrides but where to write, once a session (the tiny student
    learns the 48 sample passages by heart: ~2 min on 2 idle cores, more under load): the run
    directory and the finished process. W&B logs offline (no key). The demo's browser test
    serves its export."""
    import shutil
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("default_run")
    script = shutil.which("uniner-train")
    command = [script] if script else [sys.executable, "-m", "uniner.cli.train"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_API_KEY": ""})
    done = subprocess.run([*command, f"hydra.run.dir={tmp / 'run'}",
                           f"data.cache_dir={tmp / 'cache'}"], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return tmp / "run", done
