"""NER metrics: the official UniversalNER metric and the strict span metric (seqeval over BIO
tags is in `uniner.evaluation.tagging`).

The official metric (`score_queries`) is the universal-ner `src/eval/utils.py` `NEREvaluator`
reproduced operation for operation, parser quirks included, so that published numbers come out
to the digit; it also counts what the quirks hide (malformed outputs) and the empty-query
false-positive rate. The strict metric (`strict_scores`) grounds predicted strings in the
sentence and scores exact (sentence, start, end, type) spans, as span-based peers (GLiNER,
InstructUIE) report. Both read answers with the one parser, `uniner.data.answers.read_items`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

from uniner.data.answers import parse_mentions, read_items
from uniner.data.spans import occurrences

# --------------------------------------------------------------------------- official metric

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_DROP_PUNCT = str.maketrans("", "", string.punctuation)  # ASCII punctuation only, as official
_GUARD = 1e-10


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the words a/an/the, collapse white space.

    Same order as the official code; a non-string raises (which the parser turns into `[]`).
    """
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_DROP_PUNCT)).split())


def _parse(text) -> tuple[tuple, bool]:
    """(normalised distinct items, malformed) with the official parser's semantics."""
    items, bad = read_items(text)
    return tuple(dict.fromkeys(normalize_answer(i) if isinstance(i, str)
                               else tuple(normalize_answer(e) for e in i) for i in items)), bad


def parse_answer(text: str) -> list:
    """The official parser: normalised distinct items of the leading `[...]`, else `[]`.

    Takes the text from its start up to the first `]` (no match, e.g. leading white space,
    means `[]`), `json.loads` it (any error means `[]`), normalises string items and
    (element-wise, into a tuple) list items; any other item makes the whole answer `[]`.
    """
    return list(_parse(text)[0])


def is_malformed(text: str) -> bool:
    """True when a non-empty output did not parse cleanly: no leading `[...]`, a JSON error,
    or an item that is not a string (so the official parser silently read it as `[]`)."""
    return _parse(text)[1]


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


@dataclass
class QueryScore:
    """Counts of the official metric, accumulated over queries; `as_dict()` gives the metrics.

    precision, recall and f1 are the official formulas with their 1e-10 guards.
    """

    queries: int = 0
    n_pred: int = 0
    n_gold: int = 0
    n_correct: int = 0
    malformed: int = 0
    """Predictions that did not parse cleanly (see `is_malformed`)."""
    empty_queries: int = 0
    """Queries whose gold answer parses to `[]`."""
    empty_query_fp: int = 0
    """Empty queries whose prediction parses to a non-empty list."""
    empty_query_malformed: int = 0
    """Empty queries answered with no clean list: malformed (an unclosed list cut at the token
    limit, leading junk, a JSON error) or nothing. The official parser reads these as `[]`, so
    they are never false positives: a model that never closes its lists has an FP rate of 0."""

    def add(self, pred: str, gold: str) -> None:
        """Score one query."""
        gold_items = _parse(gold)[0]
        pred_items, bad = _parse(pred)
        self.queries += 1
        self.malformed += bad
        self.n_correct += sum(1 for t in pred_items if t in gold_items)
        self.n_gold += len(gold_items)
        self.n_pred += len(pred_items)
        if not gold_items:
            self.empty_queries += 1
            self.empty_query_fp += bool(pred_items)
            self.empty_query_malformed += bool(bad or not str(pred).strip())

    def update(self, preds: Sequence[str], golds: Sequence[str]) -> QueryScore:
        """Score paired predictions and gold answers; returns self."""
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} predictions for {len(golds)} gold answers")
        for pred, gold in zip(preds, golds):
            self.add(pred, gold)
        return self

    def __iadd__(self, other: QueryScore) -> QueryScore:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def precision(self) -> float:
        return self.n_correct / (self.n_pred + _GUARD)

    @property
    def recall(self) -> float:
        return self.n_correct / (self.n_gold + _GUARD)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r + _GUARD)

    @property
    def empty_query_fp_rate(self) -> float:
        return _ratio(self.empty_query_fp, self.empty_queries)

    @property
    def empty_query_malformed_rate(self) -> float:
        return _ratio(self.empty_query_malformed, self.empty_queries)

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                **asdict(self), "empty_query_fp_rate": self.empty_query_fp_rate,
                "empty_query_malformed_rate": self.empty_query_malformed_rate}


def score_queries(preds: Sequence[str], golds: Sequence[str]) -> dict:
    """The official UniversalNER metric over the queries of one dataset.

    Returns precision, recall, f1 (micro over all queries) and the counts queries, n_pred,
    n_gold, n_correct, malformed, empty_queries, empty_query_fp, empty_query_fp_rate,
    empty_query_malformed, empty_query_malformed_rate.
    Unlike the official `zip`, predictions and gold answers must pair up exactly.
    """
    return QueryScore().update(preds, golds).as_dict()


def score_by(preds: Sequence[str], golds: Sequence[str], keys: Sequence[Hashable]) -> dict:
    """`score_queries` per group of queries (entity type, domain ...), in first-seen key order."""
    if not len(preds) == len(golds) == len(keys):
        raise ValueError(f"{len(preds)} predictions, {len(golds)} gold answers, {len(keys)} keys")
    groups: dict[Hashable, QueryScore] = {}
    for pred, gold, key in zip(preds, golds, keys):
        score = groups.get(key)
        if score is None:
            score = groups[key] = QueryScore()
        score.add(pred, gold)
    return {key: score.as_dict() for key, score in groups.items()}


# --------------------------------------------------------------------------- strict span metric

@dataclass(frozen=True)
class Grounding:
    """Character spans of predicted strings in a text, and the strings not found in it."""

    spans: list[tuple[int, int]]
    ungrounded: list[str]


def ground_spans(text: str, items: Iterable[str]) -> Grounding:
    """Every non-overlapping occurrence of each predicted string in `text`.

    Each string is matched by `uniner.data.spans.occurrences` (word-aligned before anywhere,
    exact case before ignoring it, any white space between words). Spans of different strings
    may overlap. Empty strings and strings found nowhere are returned in `ungrounded`.
    """
    spans: set[tuple[int, int]] = set()
    ungrounded: list[str] = []
    for item in dict.fromkeys(items):
        found = occurrences(text, item)
        if found:
            spans.update(found)
        else:
            ungrounded.append(item)
    return Grounding(sorted(spans), ungrounded)


def ground(text: str, items: Iterable[str]) -> list[tuple[int, int]]:
    """Sorted distinct character spans of the predicted strings in `text` (see `ground_spans`)."""
    return ground_spans(text, items).spans


@dataclass(frozen=True)
class SpanQuery:
    """One (sentence, type) query for the strict metric.

    `gold` holds character spans (end exclusive) of the gold mentions of `type`; `id` names the
    sentence (queries of one sentence share it); None means the query's position.
    """

    text: str
    type: str
    pred: str
    gold: Sequence[tuple[int, int]] = ()
    id: Hashable | None = None


def _field(query, name: str, default=None):
    if isinstance(query, Mapping):
        return query.get(name, default)
    return getattr(query, name, default)


def _prf(correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p, r = _ratio(correct, n_pred), _ratio(correct, n_gold)
    return p, r, _ratio(2 * p * r, p + r)


def strict_scores(queries: Iterable[SpanQuery | Mapping]) -> dict:
    """Micro P/R/F1 over exact (sentence id, start, end, type) spans, as span-based peers report.

    Each query (a `SpanQuery` or a mapping with the same keys) gives the sentence text, the type
    asked, the raw model output and the gold character spans. Predicted strings are grounded in
    the text (`ground_spans`); one string may yield several spans (repeated mentions).
    Precision, recall and F1 are plain ratios (0.0 on an empty denominator), as seqeval's.
    Returns them with n_pred, n_gold, n_correct, queries, malformed, ungroundable (predicted
    items with no span: strings not in the text, empty strings, list items) and per_type.
    """
    pred: set[tuple] = set()
    gold: set[tuple] = set()
    queries_n = malformed = ungroundable = 0
    for i, q in enumerate(queries):
        qid = _field(q, "id")
        qid = i if qid is None else qid
        text, etype = _field(q, "text"), _field(q, "type")
        items, bad = parse_mentions(_field(q, "pred", ""))
        strings = [x for x in items if isinstance(x, str)]
        grounding = ground_spans(text, strings)
        queries_n += 1
        malformed += bad
        ungroundable += len(grounding.ungrounded) + len(items) - len(strings)
        pred.update((qid, s, e, etype) for s, e in grounding.spans)
        gold.update((qid, int(s), int(e), etype) for s, e in _field(q, "gold", ()) or ())
    correct = pred & gold
    p, r, f = _prf(len(correct), len(pred), len(gold))
    per_type = {}
    for etype in sorted({k[3] for k in pred | gold}, key=str):
        c = sum(1 for k in correct if k[3] == etype)
        n_p = sum(1 for k in pred if k[3] == etype)
        n_g = sum(1 for k in gold if k[3] == etype)
        tp, tr, tf = _prf(c, n_p, n_g)
        per_type[etype] = {"precision": tp, "recall": tr, "f1": tf, "support": n_g}
    return {"precision": p, "recall": r, "f1": f, "n_pred": len(pred), "n_gold": len(gold),
            "n_correct": len(correct), "queries": queries_n, "malformed": malformed,
            "ungroundable": ungroundable, "per_type": per_type}
