"""Benchmark queries: every sentence of a dataset x every type of that dataset, with gold answers.

A benchmark config is a list of datasets (name, domain, format, path, split, label map). Queries
render with the same template as training (`prompts.UniNER.query`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from uniner import readers
from uniner.data import load_passages
from uniner.prompts import UniNER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    """One (text, type) question with its gold answer (distinct mention strings)."""

    id: str
    dataset: str
    domain: str
    text: str
    type: str
    gold: tuple[str, ...]

    def gold_text(self) -> str:
        return UniNER.answer(self.gold)


def dataset_queries(ds: dict) -> list[Query]:
    """The queries of one benchmark dataset config."""
    name, domain, fmt = ds["name"], ds.get("domain", "general"), ds["format"]
    if fmt == "uniner_json":
        return [Query(item["id"], name, domain, item["text"], item["type"], tuple(item["gold"]))
                for item in readers.read_uniner_json(ds["path"])]
    source = {k: v for k, v in ds.items() if k not in ("name", "domain", "types", "queries")}
    passages = load_passages(source)
    if ds.get("queries", "all_types") == "file":  # only what the file itself asks
        per_passage = [p.types + [t for t in p.negatives if t not in p.types] for p in passages]
    else:
        label_map = ds.get("label_map") or {}
        types = (ds.get("types") or list(dict.fromkeys(v for v in label_map.values() if v))
                 or sorted({t for p in passages for t in p.types}))
        per_passage = [list(types)] * len(passages)
    return passage_queries(passages, per_passage, name, domain)


def passage_queries(passages, types_per_passage, dataset: str, domain: str = "general"
                    ) -> list[Query]:
    """One query per (passage, type), gold from the passage's mentions."""
    return [Query(f"{dataset}_{p.id}_{j}", dataset, domain, p.text, t, tuple(p.answer(t)))
            for p, types in zip(passages, types_per_passage) for j, t in enumerate(types)]


def build_queries(datasets: Iterable[dict], *, strict_files: bool = False) -> tuple[list[Query],
                                                                                   list[str]]:
    """Queries of all datasets whose files exist, and the names of those that are missing."""
    queries, missing = [], []
    for ds in datasets:
        ds = dict(ds)
        if not Path(ds["path"]).exists():
            if strict_files:
                raise FileNotFoundError(f"benchmark dataset {ds['name']}: {ds['path']} not found")
            log.warning("benchmark dataset %s: %s not found, listed as missing", ds["name"],
                        ds["path"])
            missing.append(ds["name"])
            continue
        queries += dataset_queries(ds)
    return queries, missing
