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

from uniner.data import readers
from uniner.data.datasets import dataset_entries, dataset_source, dataset_types
from uniner.data.prompts import PromptStyle, conversation_item
from uniner.data.records import Passage
from uniner.data.sources import load_passages
from uniner.errors import MissingFileError

log = logging.getLogger(__name__)

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


def build_queries(datasets, *, strict_files: bool = False, max_sentences: int | None = None
                  ) -> tuple[list[Query], list[str]]:
    """Queries of all datasets whose files exist, and the names of those that are missing.

    Raises:
        FileNotFoundError: a dataset file is missing and `strict_files`.
        ValueError: two queries share an id (predictions could not be matched to them).
    """
    queries, missing = [], []
    for ds in dataset_entries(datasets):
        _, path = dataset_source(ds)
        if not path.exists():
            if strict_files:
                raise MissingFileError(f"benchmark dataset {ds['name']}: {path} not found")
            log.warning("benchmark dataset %s: %s not found, listed as missing", ds["name"], path)
            missing.append(ds["name"])
            continue
        asked = dataset_queries(ds, max_sentences)
        if not ds.get("average", True):  # e.g. a held-out set beside the paper's 7-set Avg
            asked = [replace(q, in_average=False) for q in asked]
        queries += asked
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


def query_item(q: Query) -> dict:
    """A query in the official evaluation form: one question per item, the gold answer last."""
    return conversation_item(q.id, q.text, [(q.type, q.gold_text())])
