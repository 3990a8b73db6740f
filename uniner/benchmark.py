"""Benchmark queries: every sentence of a dataset x every type of that dataset, with gold answers.

A benchmark config holds its datasets as a mapping name -> dataset (composed from the nodes in
`conf/benchmark/datasets/`; a list of dicts with `name` works too). A dataset gives `domain`,
`format` (`bio`, `instructuie`, `uniner_json`, `pile_ner`), `path` (and `split`) of its test split,
a `label_map` (raw type -> natural-language name, null = never asked), and optionally `train`: the
keys that differ for its train split (`{path: ...}` or `{split: train}`), which `data=supervised`
reads. Queries render with the same template as training (`prompts.UniNER.query`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from uniner import readers
from uniner.data import load_passages
from uniner.prompts import UniNER
from uniner.records import Passage, ReadReport

log = logging.getLogger(__name__)

# dataset keys that are not reader arguments
META = ("name", "domain", "types", "queries", "train")
# formats whose gold mentions carry character spans given by the source (the strict metric)
SPAN_FORMATS = ("bio", "instructuie")


@dataclass(frozen=True)
class Query:
    """One (text, type) question with its gold answer (distinct mention strings).

    `spans` holds the character spans of the gold mentions of `type` where the source gives them
    (None: unknown, so the strict metric does not apply); `sentence` names the text (the queries
    of one sentence share it).
    """

    id: str
    dataset: str
    domain: str
    text: str
    type: str
    gold: tuple[str, ...]
    spans: tuple[tuple[int, int], ...] | None = None
    sentence: str = ""

    def gold_text(self) -> str:
        return UniNER.answer(self.gold)


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


def dataset_queries(ds: Mapping, max_sentences: int | None = None) -> list[Query]:
    """The queries of one benchmark dataset; `max_sentences` keeps the first sentences only."""
    name, domain = ds["name"], ds.get("domain", "general")
    source = dataset_source(ds)
    if source["format"] == "uniner_json":
        items = readers.read_uniner_json(source["path"])
        sentence, previous, out = -1, None, []
        for item in items:  # one item per query; a new text starts a new sentence
            if item["text"] != previous:
                sentence, previous = sentence + 1, item["text"]
            if max_sentences is not None and sentence >= max_sentences:
                break
            out.append(Query(item["id"], name, domain, item["text"], item["type"],
                             tuple(item["gold"]), sentence=f"{name}_{sentence}"))
        return out
    passages = load_passages(source)
    types = dataset_types(ds, source, passages)  # of the whole dataset, also with max_sentences
    passages = passages[:max_sentences]
    if ds.get("queries", "all_types") == "file":  # only what the file itself asks
        per_passage = [p.types + [t for t in p.negatives if t not in p.types] for p in passages]
    else:
        per_passage = [types] * len(passages)
    return passage_queries(passages, per_passage, name, domain,
                           spans=source["format"] in SPAN_FORMATS)


def passage_queries(passages, types_per_passage, dataset: str, domain: str = "general", *,
                    spans: bool = False) -> list[Query]:
    """One query per (passage, type), gold from the passage's mentions (with their spans when
    `spans`)."""
    def gold_spans(p: Passage, t: str):
        return tuple(sorted({(m.start, m.end) for m in p.mentions if m.type == t})) if spans \
            else None
    return [Query(f"{dataset}_{p.id}_{j}", dataset, domain, p.text, t, tuple(p.answer(t)),
                  gold_spans(p, t), f"{dataset}_{p.id}")
            for p, types in zip(passages, types_per_passage) for j, t in enumerate(types)]


def build_queries(datasets, *, strict_files: bool = False, max_sentences: int | None = None
                  ) -> tuple[list[Query], list[str]]:
    """Queries of all datasets whose files exist, and the names of those that are missing.

    Raises:
        FileNotFoundError: a dataset file is missing and `strict_files`.
        ValueError: two queries share an id (predictions could not be matched to them).
    """
    queries, missing = [], []
    for ds in dataset_entries(datasets):
        path = source_file(dataset_source(ds))
        if not path.exists():
            if strict_files:
                raise FileNotFoundError(f"benchmark dataset {ds['name']}: {path} not found")
            log.warning("benchmark dataset %s: %s not found, listed as missing", ds["name"], path)
            missing.append(ds["name"])
            continue
        queries += dataset_queries(ds, max_sentences)
    ids: set[str] = set()
    for q in queries:
        if q.id in ids:
            raise ValueError(f"benchmark query id {q.id!r} occurs twice (dataset {q.dataset})")
        ids.add(q.id)
    return queries, missing


def load_benchmark(benchmark) -> tuple[list[Query], list[str]]:
    """`build_queries` of a `benchmark` config node (datasets, strict_files, max_sentences)."""
    return build_queries(benchmark.datasets, strict_files=benchmark.get("strict_files", False),
                         max_sentences=benchmark.get("max_sentences"))


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


def query_item(q: Query) -> dict:
    """A query in the official evaluation form: one question per item, the gold answer last."""
    style = UniNER()
    return {"id": q.id, "conversations": [
        {"from": "human", "value": f"Text: {q.text}"},
        {"from": "gpt", "value": style.read_reply},
        {"from": "human", "value": style.question(q.type)},
        {"from": "gpt", "value": q.gold_text()}]}
