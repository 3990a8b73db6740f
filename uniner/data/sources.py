"""From a source config to passages: one reader per format, weighted mixes of sources, and a
benchmark's datasets read at a split (the `supervised` source). The data module and the
benchmark both read through `load_passages`.

A benchmark dataset (a node of `conf/benchmark/datasets/`) gives `domain`, `format`, `path` (and
`split`) of its test split, a `label_map`, and optionally `train`: the keys that differ for its
train split (`{path: ...}` or `{split: train}`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from uniner.data import readers
from uniner.data.records import Passage, ReadReport

log = logging.getLogger(__name__)

# dataset keys that are not reader arguments
META = ("name", "domain", "types", "queries", "train")
READERS = {
    "pile_ner": readers.read_pile_ner,
    "bio": readers.read_bio,
    "instructuie": readers.read_instructuie,
}


def load_passages(source: dict, report: ReadReport | None = None) -> list[Passage]:
    """Read the passages of a source config: `{"format": ..., <that reader's arguments>}`.

    Two formats combine other sources: `supervised` (a benchmark's datasets at their train split,
    `benchmark.supervised_passages`) and `mix` (weighted parts, `mix_passages`).
    """
    source = dict(source)
    fmt = source.pop("format", None)
    if fmt == "mix":
        return mix_passages(report=report, **source)
    if fmt == "supervised":
        return supervised_passages(report=report, **source)
    if fmt not in READERS:
        raise ValueError(f"data.source.format={fmt!r}: choose one of "
                         f"{sorted([*READERS, 'mix', 'supervised'])}")
    paths = source.pop("path")
    report = report if report is not None else ReadReport(str(paths))
    if fmt == "instructuie":
        return READERS[fmt](paths, report=report, **source)
    passages = []
    for path in [paths] if isinstance(paths, str | os.PathLike) else list(paths):
        passages += READERS[fmt](path, report=report, **source)
    return passages


def mix_passages(parts: dict, *, seed: int = 42, report: ReadReport | None = None
                 ) -> list[Passage]:
    """Passages of several sources, each part weighted: `{name: {weight, <source config>}}`.

    A weight is how many times each passage of the part is taken: 1 all once, 0 none (the part
    is not read), 0.5 a seeded random half, 2.5 all twice plus a random half. Ids become
    `{part}/{id}` (`#k` marks the k-th repeat).
    """
    out: list[Passage] = []
    for i, (name, part) in enumerate(parts.items()):
        part = dict(part)
        weight = float(part.pop("weight", 1.0))
        if weight < 0:
            raise ValueError(f"data.source.parts.{name}.weight={weight}: must be >= 0")
        if weight == 0:
            continue
        passages = load_passages(part, report)
        whole, frac = divmod(weight, 1.0)
        rng = np.random.default_rng([seed, i])
        extra = sorted(rng.choice(len(passages), int(round(frac * len(passages))), replace=False))
        for k, taken in enumerate([range(len(passages))] * int(whole) + [extra]):
            out += [Passage(f"{name}/{passages[j].id}" + (f"#{k}" if k else ""),
                            passages[j].text, passages[j].mentions, passages[j].negatives)
                    for j in taken]
    return out


def dataset_entries(datasets) -> list[dict]:
    """A benchmark's datasets as plain dicts with a `name`: from a mapping name -> dataset
    (a null dataset is left out, so `benchmark.datasets.<name>=null` drops one) or a list."""
    if isinstance(datasets, DictConfig | ListConfig):
        datasets = OmegaConf.to_container(datasets, resolve=True)
    if isinstance(datasets, Mapping):
        return [{"name": key, **node} for key, node in datasets.items() if node is not None]
    return [dict(ds) for ds in datasets or () if ds is not None]


def dataset_source(ds: Mapping, split: str = "test") -> dict:
    """The reader config (`load_passages`) of a dataset's test split, or of its train split
    (the dataset's `train` keys on top).

    An InstructUIE dataset without a label map asks its `labels.json` types but `else` (misc).
    """
    source = {k: v for k, v in ds.items() if k not in META}
    if split == "train":
        if not ds.get("train"):
            raise ValueError(f"dataset {ds.get('name')}: no train split configured (`train:`)")
        source.update(ds["train"])
    elif split != "test":
        raise ValueError(f"split={split!r}: choose test or train")
    if source.get("format") == "instructuie" and source.get("label_map") is None:
        labels = Path(source["path"]) / "labels.json"
        if labels.is_file():
            source["label_map"] = {t: None if t == "else" else t
                                   for t in json.loads(labels.read_text(encoding="utf-8"))}
    return source


def source_file(source: Mapping) -> Path:
    """The file a reader config reads (InstructUIE: `{split}.json` in its folder)."""
    path = Path(str(source["path"]))
    return path / f"{source.get('split', 'test')}.json" if source.get("format") == \
        "instructuie" else path


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
        source = dataset_source(ds, split)
        path = source_file(source)
        if not path.exists():
            if strict_files:
                raise FileNotFoundError(f"supervised dataset {ds['name']}: {path} not found")
            log.warning("supervised dataset %s: %s not found, skipped", ds["name"], path)
            if report is not None:
                report.count(f"dataset without a {split} file skipped")
            continue
        passages = load_passages(source, report)
        types = dataset_types(ds, source, passages)
        passages = passages[:max_sentences]
        out += [Passage(f"{ds['name']}/{p.id}", p.text, p.mentions,
                        [t for t in types if t not in set(p.types)]) for p in passages]
    return out
