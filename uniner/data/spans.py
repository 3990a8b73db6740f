"""The one string-to-span matcher: where does a string (a mention, an answer item) occur in a text?

Every reader, the teacher-answer grounding, the strict metric and the extractor ask this question;
they all answer it here, with one preference order. An occurrence that does not cut through a word
("York" in "New York", not in "Yorkshire") beats one that does; an exact-case occurrence beats a
case-insensitive one. `occurrences` returns every non-overlapping occurrence at the best level that
has any; `first_occurrence` picks one of them.
"""

from __future__ import annotations

import re

_WORD_CHAR = re.compile(r"\w")


def _patterns(item: str, loose: bool) -> list[tuple[str, int]]:
    if loose:  # any run of white space between the item's words
        body = r"\s+".join(map(re.escape, item.split()))
        item = item.strip()
    else:
        body = re.escape(item)
    # word-aligned: no word character just outside an edge that is itself a word character
    head = r"(?<!\w)" if _WORD_CHAR.match(item[0]) else ""
    tail = r"(?!\w)" if _WORD_CHAR.match(item[-1]) else ""
    aligned = head + body + tail
    if not loose:
        return [(aligned, 0), (body, 0)]
    return [(aligned, 0), (aligned, re.IGNORECASE), (body, 0), (body, re.IGNORECASE)]


def occurrences(text: str, item: str, *, loose: bool = True) -> list[tuple[int, int]]:
    """Every non-overlapping occurrence of `item` in `text`, as (start, end) character spans.

    Levels, best first: exact case and word-aligned, then case-insensitive and word-aligned, then
    exact case anywhere, then case-insensitive anywhere; the spans of the first level that finds
    any are returned. `loose` (the default) also lets any run of white space in the text stand for
    the white space between the item's words, and ignores the item's outer white space. With
    `loose=False` the text must hold `item` verbatim (the two exact-case levels only), so that
    `text[start:end] == item`.

    Returns:
        The spans in text order; empty when the item is empty or found nowhere.
    """
    if not item.strip():
        return []
    for pattern, flags in _patterns(item, loose):
        found = [m.span() for m in re.finditer(pattern, text, flags)]
        if found:
            return found
    return []


def first_occurrence(text: str, item: str, *, loose: bool = True, near: int | None = None
                     ) -> tuple[int, int] | None:
    """The first of `occurrences(text, item, loose=loose)`, or with `near` the one starting
    nearest to that offset (the earlier one on a tie); None when there is none."""
    found = occurrences(text, item, loose=loose)
    if not found:
        return None
    if near is None:
        return found[0]
    return min(found, key=lambda span: abs(span[0] - near))
