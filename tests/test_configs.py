"""Every config composes, and what it names instantiates (LHT test_configs, litgpt config hub)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

import uniner.config  # noqa: F401  (resolvers)
from uniner.config import CONF_DIR

CONF = Path(CONF_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def compose_cfg(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides, return_hydra_config=True)


@pytest.fixture(autouse=True)
def _hydra_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def resolve(cfg):
    """Make `${hydra:...}` resolvable outside a Hydra run (output dir = the test's cwd)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path.cwd())
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("data", options("data"))
@pytest.mark.parametrize("sampling", options("sampling"))
def test_data_and_sampling_instantiate(data, sampling, data_root, monkeypatch):
    monkeypatch.setenv("UNINER_DATA", str(data_root))
    cfg = resolve(compose_cfg("train", [f"data={data}", f"sampling={sampling}"]))
    sampler = instantiate(cfg.sampling)
    dm = instantiate(cfg.data, _partial_=True)(sampler=sampler)
    assert dm.sampler.strategy == sampling


@pytest.mark.parametrize("group", ["experiment", "debug", "sweep"])
def test_every_global_config_composes(group):
    for name in options(group):
        cfg = resolve(compose_cfg("train", [f"{group}={name}"]))
        for key in cfg:
            if key != "hydra" and OmegaConf.is_config(cfg[key]):
                OmegaConf.to_container(cfg[key], resolve=True)
        instantiate(cfg.sampling)
        instantiate(cfg.data, _partial_=True)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainers_compose(trainer):
    cfg = resolve(compose_cfg("train", [f"trainer={trainer}"]))
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer == "cpu":
        instantiate(cfg.trainer, logger=False)


@pytest.mark.parametrize("logger", options("logger"))
def test_loggers_instantiate(logger, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = resolve(compose_cfg("train", [f"logger={logger}"]))
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    assert len(loggers) == (0 if logger == "none" else 1)


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("train", ["data.no_such_key=1"])
    cfg = compose_cfg("train", [])
    with pytest.raises(ConfigAttributeError):
        cfg.data.no_such_key  # noqa: B018  (struct mode)


def test_prepare_config_composes():
    cfg = resolve(compose_cfg("prepare", ["data=bio", "sampling=uniform"]))
    assert cfg.data.source.format == "bio"
