"""Config helpers shared by the entry points: where the configs are, the `asset` and
`wandb_offline` resolvers, secret redaction, and a config group as its typed dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from uniner.errors import ConfigError

ASSETS = Path(__file__).resolve().parent / "assets"


def conf_dir() -> str:
    """The configs: `uniner/conf` in an installed wheel (conf/ shipped as the package
    `uniner.conf`), else the repository's top-level `conf/` (a checkout, `pip install -e .`).
    An absolute path, so that the console scripts find it from any working directory."""
    package = Path(__file__).resolve().parent
    for path in (package / "conf", package.parent / "conf"):
        if (path / "train.yaml").is_file():
            return str(path)
    raise FileNotFoundError(f"uniner's configs not found in {package / 'conf'} nor "
                            f"{package.parent / 'conf'}")


CONF_DIR = conf_dir()
SECRET_MARKERS = ("api_key", "apikey", "token", "secret", "password")


def asset(name: str) -> str:
    """Absolute path of a file shipped in `uniner/assets` (works from any cwd)."""
    path = ASSETS / name
    if not path.exists():
        raise FileNotFoundError(f"uniner asset {name!r} not found in {ASSETS}")
    return str(path)


if not OmegaConf.has_resolver("asset"):
    OmegaConf.register_new_resolver("asset", asset)


def redact(cfg) -> dict | list:
    """A plain container of `cfg` with secret-looking keys replaced by `<redacted>`."""
    if isinstance(cfg, DictConfig | ListConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, dict):
        return {k: "<redacted>" if isinstance(k, str) and _secret(k) and v is not None
                else redact(v) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [redact(v) for v in cfg]
    return cfg


def _secret(key: str) -> bool:
    k = key.lower()
    if k.endswith(("_env", "_tokens", "tokens")) or k.startswith("tokeniz"):
        return False  # a variable's name, token counts and tokenizer paths are not secrets
    return any(m in k for m in SECRET_MARKERS)


def wandb_offline() -> bool:
    """Offline unless an API key is available (env or `wandb login`), or WANDB_MODE says so."""
    import os

    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


if not OmegaConf.has_resolver("wandb_offline"):
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline)


def group_args(cls, group: str, cfg):
    """A config group (DictConfig, dict or `cls`) as its typed `cls` (Hydra's `_target_` aside);
    a `ConfigError` names `group`."""
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as e:  # full_key is the whole path when cfg has a parent
            key = e.full_key if e.full_key.startswith(f"{group}.") else f"{group}.{e.full_key}"
            raise ConfigError(f"{key} is missing: give it on the command line ({key}=...)"
                              ) from None
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{group}: expected a mapping, got {type(cfg).__name__}")
    cfg = {k: v for k, v in cfg.items() if k != "_target_"}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"{group}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    try:
        return cls(**cfg)
    except TypeError as e:  # a missing required key
        raise ConfigError(f"{group}: {e}") from None
