"""BIO tags rebuilt from typed character spans (`tag_spans`, `bio_tags`) and seqeval's
entity-level scores over them (`seqeval_scores`), reported beside the strict span metric."""

from __future__ import annotations

import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


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
