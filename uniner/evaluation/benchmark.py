"""Benchmark queries: every sentence of a dataset x every type of that dataset, with gold answers.

A benchmark config holds its datasets as a mapping name -> dataset (composed from the nodes in
`conf/benchmark/datasets/`; a list of dicts with `name` works too). A dataset gives `domain`,
`format` (`bio`, `instructuie`, `uniner_json`, `pile_ner`), `path` (and `split`) of its test split,
a `label_map` (raw type -> natural-language name, null = never asked), and optionally `train`: the
keys that differ for its train split (`{path: ...}` or `{split: train}`), which `data=supervised`
reads. Queries render in the prompt style the model was trained with (`prompts.PromptStyle`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uniner.config import group_args
from uniner.data import readers
from uniner.data.datasets import dataset_entries, dataset_source, dataset_types
from uniner.data.prompts import PromptStyle, conversation_item
from uniner.data.records import Passage
from uniner.data.sources import load_passages
from uniner.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

# formats whose gold mentions carry character spans given by the source (the strict metric)
SPAN_FORMATS = ("bio", "instructuie")


@dataclass
class BenchmarkArgs:
    """The `benchmark` group (conf/benchmark/): the one owner of its keys, their checks and the
    rule for a dataset whose file is absent. The tools check it before a model loads
    (`checks.check_benchmark`), `load_benchmark` when it reads the queries."""

    name: str = ""
    strict_files: bool = False
    """True: a dataset without its file is an error; false: it is a "missing" row of the results."""
    max_sentences: int | None = None
    """Ask only the first sentences of each dataset (null: all of them)."""
    datasets: Any = None
    """name -> dataset node (`conf/benchmark/datasets/`; null drops one), or a list of them."""

    def __post_init__(self):
        if self.max_sentences is not None and self.max_sentences < 1:
            raise ConfigError(f"benchmark.max_sentences={self.max_sentences}: must be >= 1 "
                              "(or null: every sentence)")

    def entries(self) -> list[dict]:
        """The datasets as plain dicts with a `name`.

        Raises:
            ConfigError: there are none.
        """
        entries = dataset_entries(self.datasets)
        if not entries:
            raise ConfigError(f"benchmark={self.name}: no datasets")
        return entries

    def files(self) -> list[tuple[str, Path]]:
        """Each dataset's name and the test file its reader opens."""
        return [(ds["name"], dataset_source(ds)[1]) for ds in self.entries()]

    def missing(self) -> list[tuple[str, Path]]:
        """The datasets (name, file) whose test file does not exist.

        Raises:
            MissingFileError: one is absent and `strict_files`.
        """
        missing = [(name, file) for name, file in self.files() if not file.exists()]
        if missing and self.strict_files:
            name, file = missing[0]
            raise MissingFileError(f"benchmark.datasets.{name}: {file} not found "
                                   "(benchmark.strict_files=true)")
        return missing


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
    in_average: bool = True  # False: the dataset is scored beside the average, not in it

    def gold_text(self) -> str:
        return PromptStyle.answer(self.gold)


def dataset_queries(ds: Mapping, max_sentences: int | None = None) -> list[Query]:
    """The queries of one benchmark dataset; `max_sentences` keeps the first sentences only."""
    name, domain = ds["name"], ds.get("domain", "general")
    source, _ = dataset_source(ds)
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
    passages = load_passages(source)  # a `holdout` + `part` source too
    types = dataset_types(ds, source, passages)  # of the whole dataset, also with max_sentences
    if ds.get("queries", "all_types") == "file":  # only what the file itself asks
        per_passage = [p.types + [t for t in p.negatives if t not in p.types] for p in passages]
        if ds.get("negatives"):  # and k absent types a passage, drawn as frequency sampling
            from uniner.data.sampling import NegativeSampler

            drawn = NegativeSampler(strategy="frequency", k=int(ds["negatives"]),
                                    seed=int(ds.get("negatives_seed", 0))).draw(passages)
            per_passage = [asked + [t for t in neg if t not in asked]
                           for asked, neg in zip(per_passage, drawn)]
        per_passage = per_passage[:max_sentences]
        passages = passages[:max_sentences]
    else:
        passages = passages[:max_sentences]
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


def load_benchmark(benchmark) -> tuple[list[Query], list[str]]:
    """The queries of every dataset of `benchmark` (its config node, or `BenchmarkArgs`) whose
    file exists, and the names of those that are missing.

    Raises:
        ConfigError: a bad `benchmark` key or value.
        MissingFileError: a dataset file is absent and `strict_files`.
        ValueError: two queries share an id (predictions could not be matched to them).
    """
    args = group_args(BenchmarkArgs, "benchmark", benchmark)
    missing = dict(args.missing())
    queries = []
    for ds in args.entries():
        if ds["name"] in missing:
            log.warning("benchmark dataset %s: %s not found, listed as missing", ds["name"],
                        missing[ds["name"]])
            continue
        asked = dataset_queries(ds, args.max_sentences)
        if not ds.get("average", True):  # e.g. a held-out set beside the paper's 7-set Avg
            asked = [replace(q, in_average=False) for q in asked]
        queries += asked
    ids: set[str] = set()
    for q in queries:
        if q.id in ids:
            raise ValueError(f"benchmark query id {q.id!r} occurs twice (dataset {q.dataset})")
        ids.add(q.id)
    return queries, list(missing)


def query_item(q: Query) -> dict:
    """A query in the official evaluation form: one question per item, the gold answer last."""
    return conversation_item(q.id, q.text, [(q.type, q.gold_text())])
