"""Readers: every source format -> `list[Passage]` with character spans where the source has them.

Formats: CoNLL-style BIO/IOB1/BIOES files (`read_bio`), the released Pile-NER-type conversation
JSON (`read_pile_ner`), the InstructUIE JSON layout (`read_instructuie`) and the official
UniversalNER evaluation files (`read_uniner_json`, one query per item). Bad input raises
`DataError` with file and line (or item), or with `on_error="skip"` is skipped and counted in the
`ReadReport` passed in.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from uniner.data.records import DataError, Mention, Passage, ReadReport
from uniner.data.spans import first_occurrence

ON_ERROR = ("raise", "skip")
LAYOUTS = ("auto", "token_tag", "tag_token")
SCHEMES = ("auto", "bio", "iob1", "bioes")

_PREFIXES = {"bio": "BI", "iob1": "BI", "bioes": "BIESLU"}
_TAG = re.compile(r"O|[BIESLU]-.+")
_QUESTION = re.compile(r"What describes (.+) in the text\?")
_LAYOUT_SAMPLE = 200  # content lines looked at to tell the tag column


class _RowError(DataError):
    """A DataError with a short `kind`, the key `on_error="skip"` counts it under."""

    def __init__(self, kind: str, message: str, path: str | Path | None, line: int | None):
        super().__init__(f"{kind}: {message}", path, line)
        self.kind = kind


def _check(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}: choose one of {', '.join(choices)}")


def _read_text(path: str | Path) -> str:
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")  # drops a leading BOM
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 ({err.reason})", path, raw[: err.start].count(b"\n") + 1
                        ) from None


def load_label_map(path_or_dict: str | os.PathLike | Mapping | None) -> dict[str, str | None]:
    """Read a label map: raw type -> natural-language type name, or None to drop the type.

    Args:
        path_or_dict: a mapping (a dict or an OmegaConf DictConfig), or the path of a YAML or
            JSON file holding one.

    Returns:
        A plain dict with string keys and string-or-None values.

    Raises:
        DataError: the file or mapping is not such a map (e.g. a YAML key read as a boolean).
    """
    where = None
    if isinstance(path_or_dict, str | os.PathLike):
        where = Path(path_or_dict)
        text = _read_text(where)
        if where.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    else:
        data = path_or_dict
    if not isinstance(data, Mapping):
        raise DataError(f"a label map must be a mapping, got {type(data).__name__}", where)
    out = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise DataError(f"label map key {key!r} is not a type name (quote it in YAML)", where)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise DataError(f"label map value of {key!r} must be a type name or null, got "
                            f"{value!r}", where)
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# BIO / IOB1 / BIOES


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


def _bio_passage(pid: str, rows: list[tuple[int, str]], tag_col: int, scheme: str,
                 labels: dict[str, str | None] | None, path: str | Path
                 ) -> tuple[Passage, int, int]:
    """One sentence -> (passage, mentions dropped by the label map, I- tags that open)."""
    prefixes = _PREFIXES[scheme]
    tokens, spans = [], []  # spans: (type, first token, end token, line of first token)
    ent = None  # the open entity: [type, first token, line]
    stray = 0
    for idx, (lineno, line) in enumerate(rows):
        fields = _fields(line)
        if len(fields) != 2:
            raise _RowError("wrong number of columns",
                            f"expected 2 (token and tag), got {len(fields)}: {fields!r}",
                            path, lineno)
        tag, token = fields[tag_col], fields[1 - tag_col]
        if not token:
            raise _RowError("empty token", f"tag {tag!r} has no token", path, lineno)
        tokens.append(token)
        if tag == "O":
            if ent:
                spans.append((ent[0], ent[1], idx, ent[2]))
                ent = None
            continue
        prefix, typ = tag[:1], tag[2:]
        if tag[1:2] != "-" or not typ or prefix not in prefixes:
            raise _RowError("unknown tag prefix", f"{tag!r} is not a {scheme.upper()} tag",
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
                raise _RowError("type not in label map",
                                f"type {typ!r} of tag {_fields(rows[first][1])[tag_col]!r} is not "
                                "in the label map", path, lineno)
            if labels[typ] is None:
                dropped += 1
                continue
            typ = labels[typ]
        start, stop = starts[first], starts[end - 1] + len(tokens[end - 1])
        mentions.append(Mention(text[start:stop], typ, start, stop))
    return Passage(pid, text, mentions), dropped, stray


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
    _check("layout", layout, LAYOUTS)
    _check("scheme", scheme, SCHEMES)
    _check("on_error", on_error, ON_ERROR)
    report = report if report is not None else ReadReport(str(path))
    labels = load_label_map(label_map) if label_map is not None else None
    text = _read_text(path)
    if layout == "auto":
        layout = _detect_layout(text, path)
    tag_col = 1 if layout == "token_tag" else 0
    if scheme == "auto":
        # any E-/S-/L-/U- in the tag column (one regex pass, far cheaper than a line loop)
        end_tag = r"^[ESLU]-" if tag_col == 0 else r"[\t ][ESLU]-[^\t\n]*$"
        scheme = "bioes" if re.search(end_tag, text, re.MULTILINE) else "bio"

    stem, passages, stray = Path(path).stem, [], 0
    for i, rows in enumerate(_sentences(text)):
        try:
            passage, dropped, opened = _bio_passage(f"{stem}_{i}", rows, tag_col, scheme, labels,
                                                    path)
        except _RowError as err:
            if on_error == "raise":
                raise
            report.skipped_rows += 1
            report.count(err.kind)
            continue
        passages.append(passage)
        report.mentions += len(passage.mentions)
        report.dropped_mentions += dropped
        stray += opened
    report.passages += len(passages)
    if stray:
        report.count("I- tag opens an entity", stray)
    return passages


# ---------------------------------------------------------------------------------------------
# Conversation JSON (Pile-NER-type, official evaluation files)


def json_lines(lines: Iterable[str], source) -> Iterator[tuple[int, object]]:
    """(line number, value) of every non-blank JSON line; a line that does not parse is a
    `DataError` naming `source` and the line."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"not valid JSON ({err.msg})", source, lineno) from None


def _json_items(path: Path) -> Iterable[tuple[int, int | None, object]]:
    """(1-based item number, line or None, item) of a JSON list or a JSON-lines file; an item
    is a `_RowError` where a JSON line does not parse."""
    text = _read_text(path)
    if path.suffix == ".jsonl":
        k = 0
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            k += 1
            try:
                yield k, lineno, json.loads(line)
            except json.JSONDecodeError as err:  # one bad line: the caller raises or skips it
                yield k, lineno, _RowError("bad JSON", f"item {k}: {err.msg}", path, lineno)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg})", path, err.lineno) from None
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of items, got {type(data).__name__}", path)
    yield from ((k, None, item) for k, item in enumerate(data, 1))


def _fail(kind: str, message: str, k: int, item: object, path, line) -> _RowError:
    pid = item.get("id") if isinstance(item, Mapping) else None
    return _RowError(kind, f"item {k}{f' (id {pid!r})' if pid is not None else ''}: {message}",
                     path, line)


def _turns(item: object, k: int, path, line) -> tuple[str, list[tuple[str, str]]]:
    """The passage text and the (question, answer) pairs of a conversation item."""
    conv = item.get("conversations") if isinstance(item, Mapping) else None
    if not isinstance(conv, list) or not conv:
        raise _fail("malformed item", "no conversations list", k, item, path, line)
    if not all(isinstance(t, Mapping) and isinstance(t.get("value"), str) for t in conv):
        raise _fail("malformed item", "a turn without a string value", k, item, path, line)
    first = conv[0]["value"]
    if conv[0].get("from") != "human" or not first.startswith("Text:"):
        raise _fail("malformed item", f"first turn is not a human 'Text: ...': {first[:60]!r}", k,
                    item, path, line)
    text = first[6:] if first.startswith("Text: ") else first[5:]
    if not text.strip():
        raise _fail("empty text", "the passage text is empty", k, item, path, line)
    rest = conv[1:]
    if rest and rest[0].get("from") == "gpt":  # the "I've read this text." reply
        rest = rest[1:]
    if len(rest) % 2 or any(q.get("from") != "human" or a.get("from") != "gpt"
                            for q, a in zip(rest[::2], rest[1::2])):
        raise _fail("malformed item", "turns after the text are not (human, gpt) pairs", k, item,
                    path, line)
    return text, [(q["value"], a["value"]) for q, a in zip(rest[::2], rest[1::2])]


def _question_type(question: str, k: int, item, path, line) -> str:
    m = _QUESTION.fullmatch(question.strip())
    if not m or not m.group(1).strip():
        raise _fail("bad question", f"{question[:80]!r} is not 'What describes <type> in the "
                    "text?'", k, item, path, line)
    return m.group(1).strip()


def _answer_list(answer: str, k: int, item, path, line) -> list:
    try:
        value = json.loads(answer)
    except json.JSONDecodeError:
        try:  # some copies write Python reprs: ['a', 'b']
            value = ast.literal_eval(answer.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise _fail("bad answer", f"{answer[:80]!r} is not a JSON list", k, item, path,
                        line) from None
    if not isinstance(value, list):
        raise _fail("bad answer", f"{answer[:80]!r} is not a list", k, item, path, line)
    return value


def _pile_passage(item: object, k: int, default_id: str, path, line,
                  notes: dict[str, int]) -> Passage:
    text, pairs = _turns(item, k, path, line)
    answers: dict[str, list[str]] = {}
    for question, answer in pairs:
        typ = _question_type(question, k, item, path, line)
        values = _answer_list(answer, k, item, path, line)
        if typ in answers:
            notes["duplicate type question merged"] = notes.get(
                "duplicate type question merged", 0) + 1
        kept = answers.setdefault(typ, [])
        for v in values:
            if not isinstance(v, str) or not v.strip():
                notes["non-string or empty answer item"] = notes.get(
                    "non-string or empty answer item", 0) + 1
            elif v not in kept:
                kept.append(v)
    mentions, negatives = [], []
    for typ, values in answers.items():
        if not values:
            negatives.append(typ)
        for v in values:
            span = first_occurrence(text, v, loose=False)
            if span is None:
                notes["ungrounded mention"] = notes.get("ungrounded mention", 0) + 1
                mentions.append(Mention(v, typ))
            else:
                mentions.append(Mention(v, typ, *span))
    pid = item.get("id")
    return Passage(default_id if pid is None else str(pid), text, mentions, negatives)


def _hub_items(source: str, split: str) -> Iterable[tuple[int, int | None, object]]:
    try:
        import datasets

        ds = datasets.load_dataset(source, split=split)
    except Exception as err:  # any failure: offline, unknown id, bad split
        raise DataError(f"not an existing file, and loading it as a hub dataset (split "
                        f"{split!r}) failed: {type(err).__name__}: {err}", source) from err
    yield from ((k, None, item) for k, item in enumerate(ds, 1))


def read_pile_ner(source: str | Path, *, split: str = "train", on_error: str = "raise",
                  report: ReadReport | None = None) -> list[Passage]:
    """Read the released Pile-NER-type conversations (one item per passage).

    The text follows `Text: ` in the first human turn; each later (question, answer) pair asks
    `What describes {type} in the text?` and answers a JSON (or Python-literal) list. Non-empty
    answers become mentions, grounded to the first verbatim occurrence of the string in the text,
    a whole-word one first (`first_occurrence`; span None and counted when absent); `[]` answers
    become `passage.negatives`. A type asked twice is merged and counted; non-string answer items
    are skipped and counted.

    Args:
        source: a local `.json` (a JSON list) or `.jsonl` file, or else a hub dataset id loaded
            with `datasets.load_dataset(source, split=split)`.
        split: the split of a hub dataset.
        on_error: `raise` a DataError naming the file and item (1-based), or `skip` the item and
            count it in `report.skipped_rows` and `report.notes`.
        report: a ReadReport to fill with counts.

    Returns:
        One passage per item, ids from the items (`{stem}_{i}`, 0-based, where an item has
        none).
    """
    _check("on_error", on_error, ON_ERROR)
    report = report if report is not None else ReadReport(str(source))
    path = Path(source)
    if path.exists():
        items, stem = _json_items(path), path.stem
    elif path.suffix in (".json", ".jsonl"):
        raise FileNotFoundError(f"{source}: no such file")
    else:
        items, stem = _hub_items(str(source), split), str(source).rstrip("/").split("/")[-1]
    passages = []
    for k, line, item in items:
        notes: dict[str, int] = {}
        try:
            if isinstance(item, _RowError):
                raise item
            passage = _pile_passage(item, k, f"{stem}_{k - 1}", source, line, notes)
        except _RowError as err:
            if on_error == "raise":
                raise
            report.skipped_rows += 1
            report.count(err.kind)
            continue
        passages.append(passage)
        report.mentions += len(passage.mentions)
        for what, n in notes.items():
            report.count(what, n)
    report.passages += len(passages)
    return passages


def read_uniner_json(path: str | Path, *, on_error: str = "raise",
                     report: ReadReport | None = None) -> list[dict]:
    """Read an official UniversalNER evaluation file (e.g. `uniner_json/CrossNER_AI.json`).

    Each item is one query: the text, then the read reply, then a question and its gold answer
    (the last human and gpt turns).

    Args:
        path: the JSON file.
        on_error: `raise` a DataError naming the file and item, or `skip` and count the item.
        report: a ReadReport to fill (`passages` counts queries, `mentions` gold items).

    Returns:
        One dict per query: `{"id", "text", "type", "gold"}`, gold the parsed answer list.
    """
    _check("on_error", on_error, ON_ERROR)
    report = report if report is not None else ReadReport(str(path))
    path = Path(path)
    queries = []
    for k, line, item in _json_items(path):
        try:
            if isinstance(item, _RowError):
                raise item
            text, pairs = _turns(item, k, path, line)
            if not pairs:
                raise _fail("malformed item", "no question", k, item, path, line)
            question, answer = pairs[-1]
            typ = _question_type(question, k, item, path, line)
            gold = _answer_list(answer, k, item, path, line)
        except _RowError as err:
            if on_error == "raise":
                raise
            report.skipped_rows += 1
            report.count(err.kind)
            continue
        pid = item.get("id")
        queries.append({"id": f"{path.stem}_{k - 1}" if pid is None else str(pid), "text": text,
                        "type": typ, "gold": gold})
        report.mentions += len(gold)
    report.passages += len(queries)
    return queries


# ---------------------------------------------------------------------------------------------
# InstructUIE layout


def _instructuie_passage(item: object, k: int, pid: str, labels, path, notes: dict[str, int]
                         ) -> tuple[Passage, int]:
    sentence = item.get("sentence") if isinstance(item, Mapping) else None
    entities = item.get("entities", []) if isinstance(item, Mapping) else None
    if not isinstance(sentence, str) or not isinstance(entities, list):
        raise _fail("malformed item", "needs a 'sentence' string and an 'entities' list", k, item,
                    path, None)
    if not sentence.strip():
        raise _fail("empty text", "the sentence is empty", k, item, path, None)
    mentions, dropped = [], 0
    for e in entities:
        name, typ = (e.get("name"), e.get("type")) if isinstance(e, Mapping) else (None, None)
        pos = e.get("pos") if isinstance(e, Mapping) else None
        if not isinstance(name, str) or not name or not isinstance(typ, str):
            raise _fail("malformed entity", f"{e!r} needs 'name' and 'type' strings", k, item,
                        path, None)
        if labels is not None:
            if typ not in labels:
                raise _fail("type not in label map", f"type {typ!r} is not in the label map", k,
                            item, path, None)
            if labels[typ] is None:
                dropped += 1
                continue
            typ = labels[typ]
        ok_pos = (isinstance(pos, list | tuple) and len(pos) == 2
                  and all(isinstance(p, int) for p in pos))
        start = pos[0] if ok_pos else -1
        if not ok_pos or sentence[pos[0]:pos[1]] != name:
            # repair: the occurrence of the name nearest to the given start
            span = first_occurrence(sentence, name, loose=False, near=max(start, 0))
            if span is None:
                raise _fail("entity not in sentence", f"{name!r} (pos {pos!r}) is not in the "
                            "sentence", k, item, path, None)
            start = span[0]
            notes["entity span repaired"] = notes.get("entity span repaired", 0) + 1
        mentions.append(Mention(name, typ, start, start + len(name)))
    mentions.sort(key=lambda m: (m.start, m.end))
    return Passage(pid, sentence, mentions), dropped


def read_instructuie(directory: str | Path, *, split: str = "test",
                     label_map: str | os.PathLike | Mapping | None = None,
                     on_error: str = "raise", report: ReadReport | None = None) -> list[Passage]:
    """Read one split of the InstructUIE layout (`{split}.json` beside `labels.json`).

    Spans come from `pos` (character offsets); a `pos` that does not match `name` is repaired to
    the nearest verbatim occurrence of the name (a whole-word one first) and counted, a name absent
    from the sentence is an error. In this layout `else` stands for misc: a label map drops it
    like any other type.

    Args:
        directory: the dataset folder.
        split: `train`, `dev` or `test`.
        label_map: raw type -> type name, None drops the type; see `read_bio`.
        on_error: `raise` a DataError naming the file and item, or `skip` and count the item.
        report: a ReadReport to fill with counts.

    Returns:
        One passage per sentence, ids `{split}_{i}` (0-based).
    """
    _check("on_error", on_error, ON_ERROR)
    path = Path(directory) / f"{split}.json"
    report = report if report is not None else ReadReport(str(path))
    labels = load_label_map(label_map) if label_map is not None else None
    passages = []
    for k, _, item in _json_items(path):
        notes: dict[str, int] = {}
        try:
            if isinstance(item, _RowError):
                raise item
            passage, dropped = _instructuie_passage(item, k, f"{split}_{k - 1}", labels, path,
                                                    notes)
        except _RowError as err:
            if on_error == "raise":
                raise
            report.skipped_rows += 1
            report.count(err.kind)
            continue
        passages.append(passage)
        report.mentions += len(passage.mentions)
        report.dropped_mentions += dropped
        for what, n in notes.items():
            report.count(what, n)
    report.passages += len(passages)
    return passages
