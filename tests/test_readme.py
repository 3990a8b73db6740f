"""Every `uniner-*` command in the README, as written, composes into a config whose every value
has its declared type (issue 18: "every command in it run by a test or a script in CI as
written"). The commands that run on a CPU are also run whole elsewhere: the default run
(`conftest.default_run`), the smoke sweep (`test_sweeps`), the install from another directory
with `--config-dir` (`test_install`); this test catches a README that names a key, a group
option or a value the configs no longer have, GPU commands included.

Placeholders a reader fills in (`DIR`, `<time>`, `/path/to/data`) are only file names, which
the composition does not open; `--config-dir ~/my_conf` needs the reader's own folder and is
covered by `test_install`.
"""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from uniner.cli import checks, schemas
from uniner.config import CONF_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
SCHEMAS = {"train": schemas.Train, "eval": schemas.Eval, "predict": schemas.Predict,
           "prepare": schemas.Prepare, "demo": schemas.Demo, "report": None, "distill": None}


def readme_commands() -> list[str]:
    """The `uniner-*` commands of the README's bash blocks, continuation lines joined, comments
    and shell glue (`&&`, `2>`, `;`) cut off."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"&&|;|\|", line):
                part = re.sub(r"\s2?>.*$", "", part.strip())
                if part.startswith("uniner-") or re.match(r"[A-Z_]+=\S+ uniner-", part):
                    commands.append(part)
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_its_commands():
    tools = {shlex.split(c)[0] for c in COMMANDS if c.startswith("uniner-")}
    assert {"uniner-train", "uniner-eval", "uniner-predict", "uniner-prepare", "uniner-report",
            "uniner-distill", "uniner-demo"} <= tools
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_composes_with_typed_values(command, monkeypatch, tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    words = shlex.split(re.sub(r"<[^>]+>", "PLACEHOLDER", command))
    while "=" in words[0] and not words[0].startswith("uniner-"):  # VAR=value before the tool
        name, value = words.pop(0).split("=", 1)
        monkeypatch.setenv(name, value)
    tool = words.pop(0).removeprefix("uniner-")
    if "--config-dir" in words or any(w.startswith("hydra.searchpath") for w in words):
        pytest.skip("needs the reader's own config folder: test_install runs it")
    overrides = [w for w in words if w not in ("-m", "--multirun")]
    monkeypatch.setenv("UNINER_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(tool, overrides, return_hydra_config=True)
    with open_dict(cfg):  # `${hydra:runtime.output_dir}` as in a run
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    if SCHEMAS[tool] is not None:
        checks.check_types(cfg, SCHEMAS[tool])
