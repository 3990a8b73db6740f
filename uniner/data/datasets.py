"""A benchmark dataset node read as a source at a split: its entries, reader config, file, types,
and the `supervised` source (a benchmark's datasets at their train split).

A benchmark dataset (a node of `conf/benchmark/datasets/`) gives `domain`, `format`, `path` (and
`split`) of its test split, a `label_map`, and optionally `train`: the keys that differ for its
train split (`{path: ...}` or `{split: train}`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from uniner.data import readers
from uniner.data.records import Passage, ReadReport
from uniner.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

# dataset keys that are not reader arguments
META = ("name", "domain", "types", "queries", "negatives", "negatives_seed", "train", "average")


def dataset_entries(datasets) -> list[dict]:
    """A benchmark's datasets as plain dicts with a `name`: from a mapping name -> dataset
    (a null dataset is left out, so `benchmark.datasets.<name>=null` drops one) or a list."""
    if isinstance(datasets, DictConfig | ListConfig):
        datasets = OmegaConf.to_container(datasets, resolve=True)
    if isinstance(datasets, Mapping):
        return [{"name": key, **node} for key, node in datasets.items() if node is not None]
    return [dict(ds) for ds in datasets or () if ds is not None]


def dataset_source(ds: Mapping, split: str = "test") -> tuple[dict, Path]:
    """The reader config (`readers.read_source`) of a dataset's test split, or of its train split
    (the dataset's `train` keys on top), and the file that config reads.

    An InstructUIE dataset is a folder: it reads `{split}.json` there, and without a label map
    asks the types of its `labels.json` but `else` (misc).
    """
    source = {k: v for k, v in ds.items() if k not in META}
    if split == "train":
        if not ds.get("train"):
            raise ConfigError(f"dataset {ds.get('name')}: no train split configured (`train:`)")
        source.update(ds["train"])
    elif split != "test":
        raise ConfigError(f"split={split!r}: choose test or train")
    if source.get("format") == "instructuie":
        labels = Path(str(source["path"])) / "labels.json"
        if source.get("label_map") is None and labels.is_file():
            source["label_map"] = {t: None if t == "else" else t
                                   for t in json.loads(labels.read_text(encoding="utf-8"))}
    (path, _), = readers.source_files(source)  # the file its reader opens
    return source, path


def dataset_types(ds: Mapping, source: Mapping, passages: Iterable[Passage]) -> list[str]:
    """The types a dataset is asked about: `types`, else the label map's names, else (no map)
    the types that occur, sorted."""
    label_map = source.get("label_map")
    if isinstance(label_map, str):
        label_map = readers.load_label_map(label_map)
    return list(ds.get("types") or dict.fromkeys(v for v in (label_map or {}).values() if v)
                or sorted({t for p in passages for t in p.types}))


def supervised_passages(datasets, *, split: str = "train", strict_files: bool = False,
                        max_sentences: int | None = None, name: str | None = None,
                        report: ReadReport | None = None) -> list[Passage]:
    """The `supervised` source: a benchmark's datasets read at their train split.

    Label maps are applied, and each passage's `negatives` are the other types of its dataset,
    so that with `sampling=none sampling.keep_source_negatives=true` every sentence is asked
    about every type of its dataset, as in the paper's supervised setting. Passage ids are
    `{dataset}/{id}`. A dataset without a file for the split is skipped with a warning and
    counted in `report.notes` (an error with `strict_files`). `name` (the benchmark's) is unused.
    """
    out: list[Passage] = []
    for ds in dataset_entries(datasets):
        source, path = dataset_source(ds, split)
        if not path.exists():
            if strict_files:
                raise MissingFileError(f"supervised dataset {ds['name']}: {path} not found")
            log.warning("supervised dataset %s: %s not found, skipped", ds["name"], path)
            if report is not None:
                report.count(f"dataset without a {split} file skipped")
            continue
        passages = readers.read_source(source, report)
        types = dataset_types(ds, source, passages)
        passages = passages[:max_sentences]
        out += [Passage(f"{ds['name']}/{p.id}", p.text, p.mentions,
                        [t for t in types if t not in set(p.types)]) for p in passages]
    return out
