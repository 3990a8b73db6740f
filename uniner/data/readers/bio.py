"""CoNLL-style token-per-line files: BIO, IOB1 and BIOES (BILOU) tags -> passages with spans."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

from uniner.data.readers.common import (
    ON_ERROR,
    RowError,
    check,
    load_label_map,
    read_rows,
    read_text,
)
from uniner.data.records import DataError, Mention, Passage, ReadReport

LAYOUTS = ("auto", "token_tag", "tag_token")
SCHEMES = ("auto", "bio", "iob1", "bioes")

_PREFIXES = {"bio": "BI", "iob1": "BI", "bioes": "BIESLU"}
_TAG = re.compile(r"O|[BIESLU]-.+")
_LAYOUT_SAMPLE = 200  # content lines looked at to tell the tag column


def _sentences(text: str) -> Iterator[list[tuple[int, str]]]:
    """Sentences as lists of (1-based line number, line); blank and -DOCSTART- lines split."""
    rows = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip(" \t\r") or line.startswith("-DOCSTART-"):
            if rows:
                yield rows
                rows = []
            continue
        rows.append((lineno, line[:-1] if line[-1] == "\r" else line))
    if rows:  # a file without a trailing blank line still ends a sentence
        yield rows


def _fields(line: str) -> list[str]:
    if "\t" not in line:
        return line.split()
    fields = line.split("\t")  # with tabs, tags may contain spaces (`B-programming language`)
    return [f.strip(" ") for f in fields] if " " in line else fields


def _detect_layout(text: str, path: str | Path) -> str:
    # The tag column is the one that looks like a tag in (nearly) every one of the first lines;
    # a majority rather than "every" so that one bad line gets its own error message later.
    tag_like, seen, first = [0, 0], 0, None
    for rows in _sentences(text):
        first = first or rows[0][0]
        for _, line in rows:
            fields = _fields(line)
            if len(fields) == 2:
                seen += 1
                tag_like[0] += _TAG.fullmatch(fields[0]) is not None
                tag_like[1] += _TAG.fullmatch(fields[1]) is not None
        if seen >= _LAYOUT_SAMPLE:
            break
    if first is None:  # nothing to read
        return "token_tag"
    if tag_like[1] and tag_like[1] >= tag_like[0]:
        return "token_tag"
    if tag_like[0]:
        return "tag_token"
    raise DataError("cannot tell the tag column (layout='auto'): no column looks like BIO tags; "
                    "pass layout='token_tag' or 'tag_token'", path, first)


def _bio_passage(tag_col: int, scheme: str, labels: dict[str, str | None] | None,
                 path: str | Path, pid: str, rows: list[tuple[int, str]], counts: ReadReport
                 ) -> Passage:
    """One sentence -> its passage; counts mentions, those the label map drops, opening I- tags."""
    prefixes = _PREFIXES[scheme]
    tokens, spans = [], []  # spans: (type, first token, end token, line of first token)
    ent = None  # the open entity: [type, first token, line]
    stray = 0
    for idx, (lineno, line) in enumerate(rows):
        fields = _fields(line)
        if len(fields) != 2:
            raise RowError("wrong number of columns",
                           f"expected 2 (token and tag), got {len(fields)}: {fields!r}",
                           path, lineno)
        tag, token = fields[tag_col], fields[1 - tag_col]
        if not token:
            raise RowError("empty token", f"tag {tag!r} has no token", path, lineno)
        tokens.append(token)
        if tag == "O":
            if ent:
                spans.append((ent[0], ent[1], idx, ent[2]))
                ent = None
            continue
        prefix, typ = tag[:1], tag[2:]
        if tag[1:2] != "-" or not typ or prefix not in prefixes:
            raise RowError("unknown tag prefix", f"{tag!r} is not a {scheme.upper()} tag",
                           path, lineno)
        if prefix in "BSU" or ent is None or ent[0] != typ:
            if ent:
                spans.append((ent[0], ent[1], idx, ent[2]))
            # conlleval: an I- without a B- of its type opens an entity (IOB1 by design)
            stray += prefix == "I" and scheme != "iob1"
            ent = [typ, idx, lineno]
        if prefix in "ELSU":
            spans.append((ent[0], ent[1], idx + 1, ent[2]))
            ent = None
    if ent:
        spans.append((ent[0], ent[1], len(tokens), ent[2]))  # a sentence-final entity is kept

    starts, at = [], 0
    for token in tokens:
        starts.append(at)
        at += len(token) + 1
    text = " ".join(tokens)
    mentions, dropped = [], 0
    for typ, first, end, lineno in spans:
        if labels is not None:
            if typ not in labels:
                raise RowError("type not in label map",
                               f"type {typ!r} of tag {_fields(rows[first][1])[tag_col]!r} is not "
                               "in the label map", path, lineno)
            if labels[typ] is None:
                dropped += 1
                continue
            typ = labels[typ]
        start, stop = starts[first], starts[end - 1] + len(tokens[end - 1])
        mentions.append(Mention(text[start:stop], typ, start, stop))
    counts.mentions += len(mentions)
    counts.dropped_mentions += dropped
    if stray:
        counts.count("I- tag opens an entity", stray)
    return Passage(pid, text, mentions)


def read_bio(path: str | Path, *, layout: str = "auto", scheme: str = "auto",
             label_map: str | os.PathLike | Mapping | None = None, on_error: str = "raise",
             report: ReadReport | None = None) -> list[Passage]:
    """Read a CoNLL-style file (one `token TAG` per line, a blank line between sentences).

    Tab- or space-separated; with tabs, tags may contain spaces. UTF-8 with or without BOM, LF
    or CRLF; `-DOCSTART-` lines are skipped and the last sentence is kept without a trailing blank
    line. An I- tag that opens an entity (no B- before it, or another type) starts a new entity,
    as conlleval does. Passage text is the tokens joined by single spaces; ids are
    `{file stem}_{i}` with i the 0-based sentence index in the file (skipped ones included).

    Args:
        path: the file.
        layout: `token_tag`, `tag_token` (label first, the MIT files) or `auto` (the column that
            looks like tags in the first lines).
        scheme: `bio`, `iob1`, `bioes` (BIOES or BILOU) or `auto` (`bioes` when any E-, S-, L-
            or U- tag occurs, else `bio`).
        label_map: raw type -> type name, None to drop the type (counted in
            `report.dropped_mentions`); a type missing from a given map is an error. None keeps
            the raw types. A dict or a YAML/JSON path (see `load_label_map`).
        on_error: `raise` a DataError naming file and line, or `skip` the whole sentence and
            count it in `report.skipped_rows` and `report.notes`.
        report: a ReadReport to fill with counts.

    Returns:
        The passages, one per sentence, never an empty one.
    """
    check("layout", layout, LAYOUTS)
    check("scheme", scheme, SCHEMES)
    check("on_error", on_error, ON_ERROR)
    report = report if report is not None else ReadReport(str(path))
    labels = load_label_map(label_map) if label_map is not None else None
    text = read_text(path)
    if layout == "auto":
        layout = _detect_layout(text, path)
    tag_col = 1 if layout == "token_tag" else 0
    if scheme == "auto":
        # any E-/S-/L-/U- in the tag column (one regex pass, far cheaper than a line loop)
        end_tag = r"^[ESLU]-" if tag_col == 0 else r"[\t ][ESLU]-[^\t\n]*$"
        scheme = "bioes" if re.search(end_tag, text, re.MULTILINE) else "bio"

    sentences = ((f"{Path(path).stem}_{i}", rows) for i, rows in enumerate(_sentences(text)))
    return read_rows(sentences, partial(_bio_passage, tag_col, scheme, labels, path),
                     on_error=on_error, report=report)
