"""What every tool checks before anything heavy loads (a mistake found is a `ConfigError`, which
`entry.user_errors` prints in one line).

The checks (`check_train`, `check_eval`, ...) run on the composed config, in seconds: the type
of every knob (`schemas`), the mandatory values, the files and models the config names, and the
benchmark's dataset files (some missing: listed as missing in the results, as documented; all
missing: an error up front, since the data root is then almost surely wrong).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from collections.abc import Mapping
from enum import Enum
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from uniner.cli import schemas
from uniner.cli.entry import one_line
from uniner.config import group_args
from uniner.data.args import DataArgs
from uniner.data.readers import READERS, source_files
from uniner.errors import ConfigError
from uniner.evaluation.benchmark import BenchmarkArgs
from uniner.inference.args import GenerationArgs
from uniner.model.args import LAST, CheckpointArgs, ModuleArgs, check_liger, liger_available
from uniner.model.gguf import is_gguf, locate
from uniner.model.paths import check_model, hub_like

log = logging.getLogger(__name__)

DATA_HINT = "set UNINER_DATA=<your copy of the data> or paths.data_root=<dir>"
LIGHTNING_CKPT = ("last", "best", "hpc", "registry")  # ckpt_path names Lightning resolves


# ------------------------------------------------------------------------------ types


def check_types(cfg: DictConfig, schema: type) -> None:
    """Check `cfg`'s values against the dataclass `schema` (interpolations resolved) and that no
    mandatory value (`???`) is left unset.

    Raises:
        ConfigError: `key=value: expected <type>`, or `key: missing ...`.
    """
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing:
        raise ConfigError(f"{missing[0]} is missing: give it on the command line "
                          f"({missing[0]}=...)")
    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:  # an interpolation that does not resolve
        raise ConfigError(f"{err.full_key}: {one_line(err.msg)}") from None
    try:
        OmegaConf.merge(OmegaConf.structured(schema), _known(schema, values))
    except OmegaConfBaseException as err:
        key = err.full_key
        raise ConfigError(f"{key}={_show(err.value)}: expected {expected(schema, key)}") \
            from None


def _known(schema, values):
    """The part of `values` that `schema` types (dataclass fields, recursively)."""
    if not isinstance(values, Mapping):
        return values
    hints = typing.get_type_hints(schema)
    out = {}
    for f in dataclasses.fields(schema):
        if f.name in values:
            inner = _dataclass_of(hints[f.name])
            out[f.name] = _known(inner, values[f.name]) if inner else values[f.name]
    return out


def _dataclass_of(tp):
    """The dataclass in `tp` (`X` or `X | None`), else None."""
    for t in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(t):
            return t
    return None


def expected(schema, key: str) -> str:
    """`key`'s type in words, e.g. `an integer`, `one of longest, max_length`."""
    tp = schema
    for part in key.split("."):
        cls = _dataclass_of(tp)
        if cls is None:
            return "another type"
        tp = typing.get_type_hints(cls).get(part)
    args = typing.get_args(tp)
    optional = type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in words:
        text = words[tp]
    elif isinstance(tp, type) and issubclass(tp, Enum):
        text = "one of " + ", ".join(tp.__members__)
    elif typing.get_origin(tp) is list:
        text = "a list"
    else:
        text = "a mapping" if _dataclass_of(tp) else "another type"
    return text + (" or null" if optional else "")


def _show(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


# ------------------------------------------------------------------------------ files, models


def check_exists(key: str, value, data_root: str | None = None, *, hub: bool = False) -> None:
    """The file or directory `value` of `key` exists (or is a hub id, with `hub`).

    Raises:
        ConfigError: naming `key`; naming `paths.data_root` and UNINER_DATA when `value` lies
            under a data root that does not exist.
    """
    if Path(str(value)).expanduser().exists() or (hub and hub_like(str(value))):
        return
    missing_root(data_root, value, key)
    raise ConfigError(f"{key}={value}: no such file or directory")


def missing_root(data_root: str | None, path, needed_by: str) -> None:
    """Raise the data-root error when `data_root` does not exist and `path` lies in it."""
    if data_root is None or Path(data_root).expanduser().is_dir():
        return
    root = Path(os.path.normpath(Path(data_root).expanduser()))
    if Path(os.path.normpath(Path(str(path)).expanduser())).is_relative_to(root):
        raise ConfigError(f"paths.data_root={data_root}: no such directory (needed by "
                          f"{needed_by}); {DATA_HINT}")


def check_source(source: Mapping, key: str, data_root: str | None) -> None:
    """The files a training source config (`data.source`) reads exist; a hub id may stand for
    a Pile-NER-type file (the readers name the files, `readers.source_files`). Unknown formats
    are left to the reader (which names the choices)."""
    fmt = source.get("format")
    if fmt == "mix":
        for name, part in (source.get("parts") or {}).items():
            if part is not None and float(part.get("weight", 1.0)) != 0:
                check_source(part, f"{key}.parts.{name}", data_root)
    elif fmt == "supervised":
        from uniner.data.datasets import dataset_entries, dataset_source

        split = source.get("split", "train")
        files = [dataset_source(ds, split) for ds in dataset_entries(source.get("datasets"))]
        missing = [file for _, file in files if not file.exists()]
        if missing:
            missing_root(data_root, missing[0], key)
        if missing and len(missing) == len(files):
            raise ConfigError(f"{key}: none of its {len(files)} datasets has a {split} file "
                              f"(first: {missing[0]}); is paths.data_root={data_root} right?")
        if missing and source.get("strict_files"):
            raise ConfigError(f"{key}: {missing[0]} not found ({key}.strict_files=true)")
    elif fmt in READERS:
        for file, hub in source_files(source):
            check_exists(f"{key}.path", file, data_root, hub=hub)


def check_benchmark(benchmark: Mapping, data_root: str | None) -> list[str]:
    """The datasets of `benchmark` without a file (listed as missing in the results).

    Raises:
        ConfigError: a bad key or value, or no dataset file exists; naming `paths.data_root`
            and UNINER_DATA when a file lies under a data root that does not exist.
        MissingFileError: a dataset file is absent and `benchmark.strict_files`.
    """
    args = group_args(BenchmarkArgs, "benchmark", benchmark)
    files = args.files()
    for _, file in files:
        missing_root(data_root, file, f"benchmark={args.name}")
    missing = args.missing()
    if len(missing) == len(files):
        raise ConfigError(f"benchmark={args.name}: none of its {len(files)} dataset files exists "
                          f"(first: {missing[0][1]}); is paths.data_root={data_root} right? "
                          f"{DATA_HINT}")
    if missing:
        log.warning("benchmark=%s: %d of %d datasets have no file and are listed as missing: "
                    "%s", args.name, len(missing), len(files), ", ".join(n for n, _ in missing))
    return [name for name, _ in missing]


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _backbone_files(backbone: Mapping) -> None:
    if backbone.get("path") is not None:  # a directory, a GGUF file or a hub id
        check_model("backbone.path", backbone["path"])
    tokenizer = backbone.get("tokenizer")
    if is_gguf(tokenizer) and tokenizer != backbone.get("path"):
        locate(tokenizer, "backbone.tokenizer")
    elif tokenizer is not None and tokenizer != backbone.get("path"):
        check_exists("backbone.tokenizer", tokenizer, hub=True)


# ------------------------------------------------------------------------------ the tools


def check_train(cfg: DictConfig) -> None:
    """uniner-train: types, backbone path, training data, benchmark files, `ckpt_path`."""
    check_types(cfg, schemas.Train)
    instantiate(cfg.sampling)  # the components validate their own values
    group_args(DataArgs, "data", cfg.data)
    group_args(ModuleArgs, "module", cfg.module)
    group_args(CheckpointArgs, "checkpoint", cfg.checkpoint)
    root = cfg.paths.data_root
    _backbone_files(_plain(cfg.backbone))
    check_source(_plain(cfg.data.source), "data.source", root)
    check_benchmark(_plain(cfg.benchmark), root)
    ckpt = cfg.get("ckpt_path")
    if ckpt == "last":
        check_resumable(last_checkpoint())
    elif ckpt is not None and str(ckpt) not in LIGHTNING_CKPT:
        check_exists("ckpt_path", ckpt)
    check_accelerator(cfg.trainer)
    check_kernels(cfg)


def last_checkpoint() -> Path:
    """`checkpoints/last.ckpt` of this run's directory (`hydra.run.dir`)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) / "checkpoints" / LAST


def check_resumable(last: Path) -> None:
    """`ckpt_path=last` has a checkpoint to resume: otherwise it would silently start over."""
    if not last.is_file():
        raise ConfigError(f"ckpt_path=last: no checkpoint to resume in {last.parent.parent} "
                          "(a new run directory); resume a run in its own directory, with the "
                          "command it printed: ... hydra.run.dir=<the run> ckpt_path=last")


def check_accelerator(trainer: Mapping) -> None:
    """`trainer.accelerator=gpu|cuda` has a CUDA device to run on (Lightning's own error is a
    traceback, after the model has loaded)."""
    if str(trainer.get("accelerator")) not in ("gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        build = "a CPU build of torch" if torch.version.cuda is None else \
            f"torch built for CUDA {torch.version.cuda}, but no device is visible"
        raise ConfigError(f"trainer.accelerator={trainer.get('accelerator')}: no CUDA GPU here "
                          f"({build}); run on a GPU machine, or trainer=cpu")


def check_kernels(cfg: DictConfig) -> None:
    """`module.kernels=liger` needs a GPU trainer and liger-kernel (`auto` falls back itself)."""
    if cfg.module.get("kernels") == "liger":
        check_liger(cuda=cfg.trainer.get("accelerator") != "cpu", installed=liger_available())


def check_prepare(cfg: DictConfig) -> None:
    """uniner-prepare: types, tokenizer, and the data (`mode=train`) or benchmark files."""
    check_types(cfg, schemas.Prepare)
    _backbone_files(_plain(cfg.backbone))
    if cfg.mode == "benchmark":
        check_benchmark(_plain(cfg.benchmark), cfg.paths.data_root)
    else:
        check_source(_plain(cfg.data.source), "data.source", cfg.paths.data_root)


def check_eval(cfg: DictConfig) -> None:
    """uniner-eval: types, exactly one of checkpoint/predictions, which exists, benchmark files."""
    check_types(cfg, schemas.Eval)
    GenerationArgs.of(cfg)
    if (cfg.checkpoint is None) == (cfg.predictions is None):
        raise ConfigError("give exactly one of checkpoint=DIR (generate) and predictions=FILE "
                          "(score JSON lines {\"id\", \"output\"})")
    if cfg.checkpoint is not None:
        check_model("checkpoint", cfg.checkpoint)
    else:
        check_exists("predictions", cfg.predictions)
    check_benchmark(_plain(cfg.benchmark), cfg.paths.data_root)


def check_predict(cfg: DictConfig) -> None:
    """uniner-predict: types and the checkpoint (the input is read, and checked, before the
    model loads)."""
    check_types(cfg, schemas.Predict)
    GenerationArgs.of(cfg)
    check_model("checkpoint", cfg.checkpoint)


def check_demo(cfg: DictConfig) -> None:
    """uniner-demo: types (the checkpoint is resolved by the demo: null means the newest)."""
    check_types(cfg, schemas.Demo)
    GenerationArgs.of(cfg)
    if cfg.checkpoint is not None and str(cfg.checkpoint).strip():
        path = Path(str(cfg.checkpoint)).expanduser()
        if not path.is_dir():  # a run directory or an export is the demo's to resolve
            check_model("checkpoint", cfg.checkpoint)
