"""A long text as passages that fit a token budget, and their entities' offsets mapped back onto
the whole text: `split_passages` cuts on sentence (else word, else character) boundaries,
`shift_entities` moves each passage's entity offsets to the text's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*\s+|\n\s*")
_WORD_END = re.compile(r"\s+")


def _units(text: str, start: int, end: int, level: int) -> list[tuple[int, int]]:
    """`text[start:end]` cut into sentences (level 0) or words (level 1), covering it all."""
    pattern = _SENTENCE_END if level == 0 else _WORD_END
    cuts = [start + m.end() for m in pattern.finditer(text[start:end])]
    bounds = [start] + [c for c in cuts if start < c < end] + [end]
    return list(zip(bounds, bounds[1:]))


def split_passages(text: str, count_tokens: Callable[[str], int], budget: int
                   ) -> list[tuple[int, int]]:
    """Cut `text` into passages of at most `budget` tokens (`count_tokens`), whole sentences when
    they fit, else whole words, else characters. Returns `(start, end)` character spans in
    order, without leading or trailing white space; `text[start:end]` is the passage."""
    if budget < 1:
        raise ValueError(f"budget={budget}: must be >= 1")
    spans: list[tuple[int, int]] = []
    _pack(text, 0, len(text), count_tokens, budget, 0, spans)
    out = []
    for s, e in spans:
        piece = text[s:e]
        s, e = s + len(piece) - len(piece.lstrip()), e - (len(piece) - len(piece.rstrip()))
        if e > s:
            out.append((s, e))
    return out


def _pack(text, start, end, count, budget, level, out) -> None:
    if count(text[start:end]) <= budget:
        out.append((start, end))
        return
    if level == 2:  # one word longer than a passage: the longest prefixes that fit
        while start < end:
            lo, hi = start + 1, end  # find the largest cut in [lo, hi] that fits (at least lo)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if count(text[start:mid]) <= budget else (lo, mid - 1)
            out.append((start, lo))
            start = lo
        return
    units = _units(text, start, end, level)
    if len(units) == 1:
        _pack(text, start, end, count, budget, level + 1, out)
        return
    cur = None  # start of the passage being filled
    for a, b in units:
        if cur is not None and count(text[cur:b]) <= budget:
            continue  # the unit joins the passage
        if cur is not None:
            out.append((cur, a))
            cur = None
        if count(text[a:b]) <= budget:
            cur = a
        else:
            _pack(text, a, b, count, budget, level + 1, out)
    if cur is not None:
        out.append((cur, end))


def shift_entities(text: str, spans: Sequence[tuple[int, int]],
                   found: Sequence[Sequence]) -> list[dict]:
    """Entities found in each passage (`found[i]` for `text[spans[i][0]:spans[i][1]]`, objects
    with text/type/start/end) as dicts with offsets into the whole `text`, sorted by position."""
    out = []
    for (s, _), ents in zip(spans, found):
        for e in ents:
            ent = {"text": e.text, "type": e.type, "start": e.start + s, "end": e.end + s}
            if text[ent["start"]: ent["end"]] != ent["text"]:
                raise AssertionError(f"offset mapping is off for {ent}")  # a bug, never input
            out.append(ent)
    out.sort(key=lambda d: (d["start"], d["end"], d["type"]))
    return out
