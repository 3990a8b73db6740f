"""Sentences of a text, and annotated passages cut into pieces of whole sentences.

`sentences` is the one sentence splitter (the teacher's chunking uses it too). `cut_passages` is
a source option (`pieces: {max_words: N}`, see `sources.load_passages`): each passage becomes
pieces of consecutive sentences of at most `max_words` words (a longer sentence cut between
words; only a mention longer than that makes a longer piece), each with the mentions inside it.
Sentence-sized pieces are what the zero-shot test sets ask (one sentence a query), and a small
student trained from scratch sees ten times the conversations in the same tokens.
"""

from __future__ import annotations

import re
from dataclasses import replace

from uniner.data.records import Mention, Passage, ReadReport
from uniner.data.spans import occurrences
from uniner.errors import ConfigError

# A sentence ends at . ! ? (with any closing quotes/brackets) before white space and a word that
# does not start lower-case; a blank line always ends one.
_SENT_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s)|\n[ \t]*\n""")
_NEXT = re.compile(r"""\s*["'“‘(\[]*(\S)""")
_ABBREV = {"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "etc", "e.g", "i.e", "fig",
           "no", "vol", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
           "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "mt", "gen", "col", "lt", "approx"}
_WORD = re.compile(r"\S+")


def sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, white space trimmed."""
    spans, start = [], 0
    for m in _SENT_END.finditer(text):
        if not m.group().startswith("\n"):
            nxt = _NEXT.match(text, m.end())
            if nxt is None or nxt.group(1).islower():  # "e.g. this", "3 p.m. today"
                continue
            if m.group()[0] in ".…":
                word = text[start:m.start()].rsplit(None, 1)[-1:] or [""]
                w = word[0].lower().lstrip("(\"'“‘")
                if w in _ABBREV or (len(w) == 1 and w.isalpha()):  # "Dr. Smith", "J. Smith"
                    continue
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        piece = text[s:e]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((s + lead, s + len(piece.rstrip())))
    return out


def _located(passage: Passage) -> list[tuple[int, int, Mention]]:
    """Every mention with its character span (a mention without offsets: each occurrence of
    its string, found by the one matcher)."""
    out = []
    for m in passage.mentions:
        if m.start is not None and m.end is not None:
            out.append((m.start, m.end, m))
        else:
            out += [(s, e, m) for s, e in occurrences(passage.text, m.text)]
    return out


def _cuts(text: str, spans: list[tuple[int, int]], max_words: int) -> list[tuple[int, int]]:
    """Runs of whole sentences of at most `max_words` words; a longer sentence (a list, a table
    row: text without sentence ends) is cut between words. Never through a mention."""
    def inside(at: int) -> bool:
        return any(a < at < b for a, b in spans)

    units: list[list[int]] = []  # sentences, and the parts of the long ones
    for s, e in sentences(text):
        words = [m.span() for m in _WORD.finditer(text, s, e)]
        start, n = s, 0
        for i, (_, we) in enumerate(words):
            n += 1
            if n >= max_words and i + 1 < len(words) and not inside(words[i + 1][0]):
                units.append([start, we])
                start, n = words[i + 1][0], 0
        units.append([start, e])
    # a sentence end inside a mention is no place to cut: merge it with the next unit
    merged: list[list[int]] = []
    for s, e in units:
        if merged and inside(merged[-1][1]):
            merged[-1][1] = e
        else:
            merged.append([s, e])
    pieces: list[list[int]] = []
    words = 0
    for s, e in merged:
        n = len(_WORD.findall(text, s, e))
        if pieces and words + n <= max_words:
            pieces[-1][1], words = e, words + n
        else:
            pieces.append([s, e])
            words = n
    return [(s, e) for s, e in pieces]


def cut_passage(passage: Passage, max_words: int) -> list[Passage]:
    """`passage` as pieces of whole sentences (`_cuts`), ids `{id}#{k}`, each with the mentions
    whose span lies inside it (offsets made relative to the piece) and the passage's own
    negatives (a type absent from the passage is absent from each piece)."""
    located = _located(passage)
    pieces = []
    for k, (s, e) in enumerate(_cuts(passage.text, [(a, b) for a, b, _ in located], max_words)):
        mentions, seen = [], set()
        for a, b, m in located:
            if s <= a and b <= e and (a, b, m.type) not in seen:
                seen.add((a, b, m.type))
                mentions.append(Mention(passage.text[a:b], m.type, a - s, b - s)
                                if m.start is not None else replace(m))
        pieces.append(Passage(f"{passage.id}#{k}", passage.text[s:e], mentions,
                              list(passage.negatives)))
    return pieces


def cut_passages(passages: list[Passage], pieces: dict, report: ReadReport | None = None
                 ) -> list[Passage]:
    """Every passage cut into pieces (`pieces: {max_words: N, keep_empty: false}`). A piece
    with no mention has nothing to ask but negatives; it is dropped unless `keep_empty`, and
    counted in `report` either way.

    Raises:
        ConfigError: an unknown key, or max_words < 1.
    """
    pieces = dict(pieces)
    unknown = sorted(set(pieces) - {"max_words", "keep_empty"})
    if unknown:
        raise ConfigError(f"pieces: unknown keys {unknown}; give max_words (and keep_empty)")
    max_words = int(pieces.get("max_words", 40))
    if max_words < 1:
        raise ConfigError(f"pieces.max_words={max_words}: must be >= 1")
    keep_empty = bool(pieces.get("keep_empty", False))
    out, empty = [], 0
    for passage in passages:
        for piece in cut_passage(passage, max_words):
            if piece.mentions or keep_empty:
                out.append(piece)
            empty += not piece.mentions
    if report is not None:
        report.count(f"passages cut into {len(out)} pieces of <= {max_words} words", len(passages))
        if empty:
            report.count("pieces without a mention" + (" (kept)" if keep_empty else " (dropped)"),
                         empty)
    return out
