"""What a model argument names (`backbone.path`, `checkpoint=`): a model directory (an export
of uniner-train, any Hugging Face causal LM), a GGUF file (`uniner.model.gguf`) or a hub id,
told apart and checked without loading anything (no torch import: the tools check a config in
a second).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from uniner.errors import ConfigError
from uniner.model.gguf import is_gguf, locate

MODEL_FILES = ("config.json", "adapter_config.json")  # a full model's, a LoRA adapter's
# a Hugging Face hub id: `name` or `org/name` (letters, digits, - _ .)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding a model (full weights or a LoRA adapter)."""
    return any((Path(path) / f).is_file() for f in MODEL_FILES)


def hub_like(value: str) -> bool:
    """Whether `value` can be a Hugging Face hub id rather than a local path: `org/name` or
    `name`, not absolute, not `./` or `~`, one slash at most, and no local folder `org`."""
    if not HUB_ID.fullmatch(value) or ".." in value or "--" in value:
        return False
    return "/" not in value or not Path(value.split("/")[0]).is_dir()


def check_model(key: str, value) -> None:
    """`value` is a model directory (an export of uniner-train, any HF causal LM), a GGUF file
    (`uniner.model.gguf`) or a hub id.

    Raises:
        ConfigError: `key=value: no such directory`, or a directory without a model.
    """
    if is_gguf(value):
        locate(value, key)
        return
    path = Path(str(value)).expanduser()
    if path.is_dir():
        if not is_model_dir(path):
            hint = f"; its model is in {path / 'export'}" if (path / "export").is_dir() else ""
            raise ConfigError(f"{key}={value}: not a model directory (no config.json nor "
                              f"adapter_config.json){hint}")
        return
    if path.exists():
        raise ConfigError(f"{key}={value}: a file, not a model directory")
    if not hub_like(str(value)):
        raise ConfigError(f"{key}={value}: no such directory")
    check_hub(key, str(value))


def check_hub(key: str, repo_id: str, timeout: float = 3.0) -> None:
    """A hub id loads: it is in the local Hugging Face cache, or huggingface.co answers (within
    `timeout` seconds) and the hub is not switched off (`HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE`).

    Raises:
        ConfigError: one line saying how to get the model, before anything waits on the network.
    """
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in MODEL_FILES):
        return
    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
               if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")]
    if not offline:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            return
        except OSError:
            pass
    why = f"{offline[0]}=1" if offline else "huggingface.co cannot be reached"
    raise ConfigError(f"{key}={repo_id}: no such directory, and as a hub id it is not in the local "
                      f"cache ({why}); give a local model directory, or fetch it where there is "
                      f"a network: hf download {repo_id}")
