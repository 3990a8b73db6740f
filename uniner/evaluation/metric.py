"""NER metrics: the official UniversalNER metric, the strict span metric and seqeval over BIO.

The official metric (`score_queries`) is the universal-ner `src/eval/utils.py` `NEREvaluator`
reproduced operation for operation, parser quirks included, so that published numbers come out
to the digit; it also counts what the quirks hide (malformed outputs) and the empty-query
false-positive rate. The strict metric (`strict_scores`) grounds predicted strings in the
sentence and scores exact (sentence, start, end, type) spans, as span-based peers (GLiNER,
InstructUIE) report. `bio_tags` + `seqeval_scores` rebuild token tags for seqeval.
"""

from __future__ import annotations

import json
import re
import string
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

# --------------------------------------------------------------------------- official metric

_LEADING_LIST = re.compile(r"\[(.*?)\]")  # re.match: at the start only; `.` stops at newlines
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_DROP_PUNCT = str.maketrans("", "", string.punctuation)  # ASCII punctuation only, as official
_GUARD = 1e-10


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the words a/an/the, collapse white space.

    Same order as the official code; a non-string raises (which the parser turns into `[]`).
    """
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_DROP_PUNCT)).split())


def _parse(text: str) -> tuple[tuple, bool]:
    """(normalised distinct items, malformed) with the official parser's semantics."""
    if text == "[]":  # by far the most common answer
        return (), False
    match = _LEADING_LIST.match(text)
    if match is None:
        return (), bool(text.strip())
    try:
        items = json.loads(match.group())
    except Exception:  # JSONDecodeError, RecursionError: the official bare `except Exception`
        return (), True
    out: dict = {}
    for item in items:
        if isinstance(item, str):
            out.setdefault(normalize_answer(item), None)
        elif isinstance(item, list) and all(isinstance(e, str) for e in item):
            # Official: list items become tuples of normalised elements. Unreachable through
            # the leading match (it ends at the first `]`), kept so the item rules are the same.
            out.setdefault(tuple(normalize_answer(e) for e in item), None)
        else:  # number, null, bool, object, non-string element: normalize_answer raises
            return (), True
    return tuple(out), False


def _parse_any(text) -> tuple[tuple, bool]:
    if not isinstance(text, str):  # official: re.match raises TypeError -> []
        return (), True
    return _parse(text)


def parse_answer(text: str) -> list:
    """The official parser: normalised distinct items of the leading `[...]`, else `[]`.

    Takes the text from its start up to the first `]` (no match, e.g. leading white space,
    means `[]`), `json.loads` it (any error means `[]`), normalises string items and
    (element-wise, into a tuple) list items; any other item makes the whole answer `[]`.
    """
    return list(_parse_any(text)[0])


def is_malformed(text: str) -> bool:
    """True when a non-empty output did not parse cleanly: no leading `[...]`, a JSON error,
    or an item that is not a string (so the official parser silently read it as `[]`)."""
    return _parse_any(text)[1]


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

    def add(self, pred: str, gold: str) -> None:
        """Score one query."""
        gold_items = _parse_any(gold)[0]
        pred_items, bad = _parse_any(pred)
        self.queries += 1
        self.malformed += bad
        self.n_correct += sum(1 for t in pred_items if t in gold_items)
        self.n_gold += len(gold_items)
        self.n_pred += len(pred_items)
        if not gold_items:
            self.empty_queries += 1
            self.empty_query_fp += bool(pred_items)

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

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                **asdict(self), "empty_query_fp_rate": self.empty_query_fp_rate}


def score_queries(preds: Sequence[str], golds: Sequence[str]) -> dict:
    """The official UniversalNER metric over the queries of one dataset.

    Returns precision, recall, f1 (micro over all queries) and the counts queries, n_pred,
    n_gold, n_correct, malformed, empty_queries, empty_query_fp, empty_query_fp_rate.
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


_AVERAGED = ("f1", "precision", "recall", "empty_query_fp_rate")


def benchmark_average(per_dataset: Mapping[str, Mapping]) -> dict:
    """Plain (unweighted) mean over datasets of f1, precision, recall and the empty-query
    false-positive rate, as the paper averages its benchmark; `datasets` is how many."""
    if not per_dataset:
        raise ValueError("no datasets to average")
    out: dict = {}
    for key in _AVERAGED:
        values = [m[key] for m in per_dataset.values() if key in m]
        if values:
            out[key] = sum(values) / len(values)
    out["datasets"] = len(per_dataset)
    return out


# --------------------------------------------------------------------------- strict span metric

_WORD_CHAR = re.compile(r"\w")


@dataclass(frozen=True)
class Grounding:
    """Character spans of predicted strings in a text, and the strings not found in it."""

    spans: list[tuple[int, int]]
    ungrounded: list[str]


def _aligned_pattern(item: str) -> str:
    # an occurrence may not cut through a word: no word character just outside a word-char edge
    head = r"(?<!\w)" if _WORD_CHAR.match(item[0]) else ""
    tail = r"(?!\w)" if _WORD_CHAR.match(item[-1]) else ""
    return head + re.escape(item) + tail


def _occurrences(text: str, item: str) -> list[tuple[int, int]]:
    aligned, anywhere = _aligned_pattern(item), re.escape(item)
    for pattern, flags in ((aligned, 0), (aligned, re.I), (anywhere, 0), (anywhere, re.I)):
        found = [m.span() for m in re.finditer(pattern, text, flags)]
        if found:
            return found
    return []


def ground_spans(text: str, items: Iterable[str]) -> Grounding:
    """Every non-overlapping occurrence of each predicted string in `text`.

    Per string (stripped of outer white space): case-sensitive matches first, case-insensitive
    ones as fallback; within each, occurrences that do not cut through a word are preferred
    ("York" in "New York" but not "ork" in "York"). Spans of different strings may overlap.
    Empty strings and strings found nowhere are returned in `ungrounded`.
    """
    spans: set[tuple[int, int]] = set()
    ungrounded: list[str] = []
    for item in dict.fromkeys(items):
        needle = item.strip()
        found = _occurrences(text, needle) if needle else []
        if found:
            spans.update(found)
        else:
            ungrounded.append(item)
    return Grounding(sorted(spans), ungrounded)


def ground(text: str, items: Iterable[str]) -> list[tuple[int, int]]:
    """Sorted distinct character spans of the predicted strings in `text` (see `ground_spans`)."""
    return ground_spans(text, items).spans


def parse_mentions(text: str) -> tuple[list, bool]:
    """Raw (un-normalised) distinct items of an output and whether it was malformed.

    Same leading-match and JSON rules as the official parser, so an output the official metric
    reads as `[]` has no mentions here either; items keep their case and punctuation.
    """
    if not isinstance(text, str):
        return [], True
    match = _LEADING_LIST.match(text)
    if match is None:
        return [], bool(text.strip())
    try:
        items = json.loads(match.group())
    except Exception:
        return [], True
    if not all(isinstance(i, str) or isinstance(i, list) and all(isinstance(e, str) for e in i)
               for i in items):
        return [], True
    out: list = []
    for item in items:
        if item not in out:
            out.append(item)
    return out, False


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


# --------------------------------------------------------------------------- BIO and seqeval


@dataclass(frozen=True)
class Tagging:
    """BIO tags over the space-separated tokens of a text, with what placing the spans cost."""

    tags: list[str]
    snapped: int
    """Spans not on token boundaries, widened to whole tokens."""
    conflicts: int
    """Spans dropped because a longer (or earlier equally long) span held one of their tokens."""
    unplaced: int
    """Spans that cover no token (empty, or white space only)."""


def tag_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> Tagging:
    """IOB2 tags for typed character spans over the tokens of `text` (tokens joined by single
    spaces, `text.split(" ")`). A span off token boundaries is snapped outward to whole tokens;
    among overlapping spans the longer (in tokens) wins, ties going to the earlier given."""
    if not text:
        return Tagging([], 0, 0, sum(1 for _ in spans))
    starts, ends, pos = [], [], 0
    for token in text.split(" "):
        starts.append(pos)
        ends.append(pos + len(token))
        pos += len(token) + 1
    tags = ["O"] * len(starts)
    placed: list[tuple[int, int, str]] = []
    snapped = unplaced = conflicts = 0
    for start, end, etype in dict.fromkeys((int(s), int(e), t) for s, e, t in spans):
        first, last = bisect_right(ends, start), bisect_left(starts, end) - 1
        # zero-length tokens (double spaces) touching the span's edges are not part of it
        while first <= last and starts[first] == ends[first] and starts[first] <= start:
            first += 1
        while first <= last and starts[last] == ends[last] and ends[last] >= end:
            last -= 1
        if start >= end or first > last:
            unplaced += 1
            continue
        snapped += starts[first] != start or ends[last] != end
        placed.append((first, last, etype))
    placed.sort(key=lambda s: s[0] - s[1])  # longest first; stable: ties keep the given order
    seen: set[tuple[int, int, str]] = set()
    for first, last, etype in placed:
        if (first, last, etype) in seen:  # two char spans snapped onto the same tokens
            continue
        seen.add((first, last, etype))
        if any(tags[k] != "O" for k in range(first, last + 1)):
            conflicts += 1
            continue
        tags[first] = f"B-{etype}"
        for k in range(first + 1, last + 1):
            tags[k] = f"I-{etype}"
    return Tagging(tags, snapped, conflicts, unplaced)


def bio_tags(text: str, spans_with_types: Iterable[tuple[int, int, str]]) -> list[str]:
    """IOB2 tags over the space-separated tokens of `text` (see `tag_spans`)."""
    return tag_spans(text, spans_with_types).tags


def seqeval_scores(gold_tag_seqs: Sequence[Sequence[str]], pred_tag_seqs: Sequence[Sequence[str]],
                   mode: str = "default") -> dict:
    """seqeval micro precision/recall/f1 and per-type scores of predicted against gold tags.

    `mode="default"` is seqeval's CoNLL-style reading (an `I-` after `O` opens an entity);
    `mode="strict"` is seqeval's strict IOB2 mode. Empty denominators score 0.0.
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    if mode not in ("default", "strict"):
        raise ValueError(f"mode must be 'default' or 'strict', not {mode!r}")
    kwargs = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
    gold = [list(s) for s in gold_tag_seqs]
    pred = [list(s) for s in pred_tag_seqs]
    with warnings.catch_warnings():  # seqeval/numpy warn about empty averages
        warnings.simplefilter("ignore")
        report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
    micro = report.pop("micro avg")
    for avg in ("macro avg", "weighted avg"):
        report.pop(avg, None)
    per_type = {t: {"precision": float(m["precision"]), "recall": float(m["recall"]),
                    "f1": float(m["f1-score"]), "support": int(m["support"])}
                for t, m in sorted(report.items())}
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]), "support": int(micro["support"]),
            "per_type": per_type}
