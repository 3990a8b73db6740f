"""The JSON formats: Pile-NER-type conversations, the official UniversalNER evaluation files
(one query per item) and the InstructUIE layout (`{split}.json` with character offsets)."""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

from uniner.data.readers.common import (
    ON_ERROR,
    check,
    item_error,
    json_items,
    load_label_map,
    read_rows,
)
from uniner.data.records import DataError, Mention, Passage, ReadReport
from uniner.data.spans import first_occurrence

_QUESTION = re.compile(r"What describes (.+) in the text\?")


def _turns(item: object, k: int, path, line) -> tuple[str, list[tuple[str, str]]]:
    """The passage text and the (question, answer) pairs of a conversation item."""
    conv = item.get("conversations") if isinstance(item, Mapping) else None
    if not isinstance(conv, list) or not conv:
        raise item_error("malformed item", "no conversations list", k, item, path, line)
    if not all(isinstance(t, Mapping) and isinstance(t.get("value"), str) for t in conv):
        raise item_error("malformed item", "a turn without a string value", k, item, path, line)
    first = conv[0]["value"]
    if conv[0].get("from") != "human" or not first.startswith("Text:"):
        raise item_error("malformed item", f"first turn is not a human 'Text: ...': "
                         f"{first[:60]!r}", k, item, path, line)
    text = first[6:] if first.startswith("Text: ") else first[5:]
    if not text.strip():
        raise item_error("empty text", "the passage text is empty", k, item, path, line)
    rest = conv[1:]
    if rest and rest[0].get("from") == "gpt":  # the "I've read this text." reply
        rest = rest[1:]
    if len(rest) % 2 or any(q.get("from") != "human" or a.get("from") != "gpt"
                            for q, a in zip(rest[::2], rest[1::2])):
        raise item_error("malformed item", "turns after the text are not (human, gpt) pairs", k,
                         item, path, line)
    return text, [(q["value"], a["value"]) for q, a in zip(rest[::2], rest[1::2])]


def _question_type(question: str, k: int, item, path, line) -> str:
    m = _QUESTION.fullmatch(question.strip())
    if not m or not m.group(1).strip():
        raise item_error("bad question", f"{question[:80]!r} is not 'What describes <type> in the "
                         "text?'", k, item, path, line)
    return m.group(1).strip()


def _answer_list(answer: str, k: int, item, path, line) -> list:
    try:
        value = json.loads(answer)
    except json.JSONDecodeError:
        try:  # some copies write Python reprs: ['a', 'b']
            value = ast.literal_eval(answer.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise item_error("bad answer", f"{answer[:80]!r} is not a JSON list", k, item, path,
                             line) from None
    if not isinstance(value, list):
        raise item_error("bad answer", f"{answer[:80]!r} is not a list", k, item, path, line)
    return value


def _pile_passage(stem: str, path, k: int, line: int | None, item: object, counts: ReadReport
                  ) -> Passage:
    text, pairs = _turns(item, k, path, line)
    answers: dict[str, list[str]] = {}
    for question, answer in pairs:
        typ = _question_type(question, k, item, path, line)
        values = _answer_list(answer, k, item, path, line)
        if typ in answers:
            counts.count("duplicate type question merged")
        kept = answers.setdefault(typ, [])
        for v in values:
            if not isinstance(v, str) or not v.strip():
                counts.count("non-string or empty answer item")
            elif v not in kept:
                kept.append(v)
    mentions, negatives = [], []
    for typ, values in answers.items():
        if not values:
            negatives.append(typ)
        for v in values:
            span = first_occurrence(text, v, loose=False)
            if span is None:
                counts.count("ungrounded mention")
                mentions.append(Mention(v, typ))
            else:
                mentions.append(Mention(v, typ, *span))
    counts.mentions += len(mentions)
    pid = item.get("id")
    return Passage(f"{stem}_{k - 1}" if pid is None else str(pid), text, mentions, negatives)


def _hub_items(source: str, split: str) -> Iterator[tuple[int, int | None, object]]:
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
    check("on_error", on_error, ON_ERROR)
    report = report if report is not None else ReadReport(str(source))
    path = Path(source)
    if path.exists():
        items, stem = json_items(path), path.stem
    elif not may_be_hub_dataset(path):
        raise FileNotFoundError(f"{source}: no such file")
    else:
        items, stem = _hub_items(str(source), split), str(source).rstrip("/").split("/")[-1]
    return read_rows(items, partial(_pile_passage, stem, source), on_error=on_error,
                     report=report)


def _uniner_query(path: Path, k: int, line: int | None, item: object, counts: ReadReport
                  ) -> dict:
    text, pairs = _turns(item, k, path, line)
    if not pairs:
        raise item_error("malformed item", "no question", k, item, path, line)
    question, answer = pairs[-1]
    typ = _question_type(question, k, item, path, line)
    gold = _answer_list(answer, k, item, path, line)
    counts.mentions += len(gold)
    pid = item.get("id")
    return {"id": f"{path.stem}_{k - 1}" if pid is None else str(pid), "text": text, "type": typ,
            "gold": gold}


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
    check("on_error", on_error, ON_ERROR)
    report = report if report is not None else ReadReport(str(path))
    path = Path(path)
    return read_rows(json_items(path), partial(_uniner_query, path), on_error=on_error,
                     report=report)


# ---------------------------------------------------------------------------------------------
# InstructUIE layout


def _instructuie_passage(split: str, labels: dict[str, str | None] | None, path: Path, k: int,
                         line: int | None, item: object, counts: ReadReport) -> Passage:
    sentence = item.get("sentence") if isinstance(item, Mapping) else None
    entities = item.get("entities", []) if isinstance(item, Mapping) else None
    if not isinstance(sentence, str) or not isinstance(entities, list):
        raise item_error("malformed item", "needs a 'sentence' string and an 'entities' list", k,
                         item, path, line)
    if not sentence.strip():
        raise item_error("empty text", "the sentence is empty", k, item, path, line)
    mentions, dropped = [], 0
    for e in entities:
        name, typ = (e.get("name"), e.get("type")) if isinstance(e, Mapping) else (None, None)
        pos = e.get("pos") if isinstance(e, Mapping) else None
        if not isinstance(name, str) or not name or not isinstance(typ, str):
            raise item_error("malformed entity", f"{e!r} needs 'name' and 'type' strings", k,
                             item, path, line)
        if labels is not None:
            if typ not in labels:
                raise item_error("type not in label map", f"type {typ!r} is not in the label map",
                                 k, item, path, line)
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
                raise item_error("entity not in sentence", f"{name!r} (pos {pos!r}) is not in the "
                                 "sentence", k, item, path, line)
            start = span[0]
            counts.count("entity span repaired")
        mentions.append(Mention(name, typ, start, start + len(name)))
    mentions.sort(key=lambda m: (m.start, m.end))
    counts.mentions += len(mentions)
    counts.dropped_mentions += dropped
    return Passage(f"{split}_{k - 1}", sentence, mentions)


def instructuie_file(directory: str | os.PathLike, split: str = "test") -> Path:
    """The file of one split of the InstructUIE layout (the test split unless told)."""
    return Path(directory) / f"{split}.json"


def may_be_hub_dataset(source: str | os.PathLike) -> bool:
    """Whether `read_pile_ner` would load `source` from the hub: not a local path, and not named
    as a local file (`.json`, `.jsonl`)."""
    path = Path(source)
    return not path.exists() and path.suffix not in (".json", ".jsonl")


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
    check("on_error", on_error, ON_ERROR)
    path = instructuie_file(directory, split)
    report = report if report is not None else ReadReport(str(path))
    labels = load_label_map(label_map) if label_map is not None else None
    return read_rows(json_items(path), partial(_instructuie_passage, split, labels, path),
                     on_error=on_error, report=report)
