"""From a teacher's answer to a `Passage`: parse the `[("entity", "type"), ...]` list, ground it.

Teachers rarely answer in clean syntax. `parse_answer` first reads the whole list (JSON or a Python
literal: single quotes, tuples, trailing commas are fine), and when that fails scans the text for
complete `("entity", "type")` pairs, which salvages prose around the list, truncated output and
stray syntax errors. `ground` keeps the entities the passage contains, at their first occurrence
(`uniner.data.spans.first_occurrence`: a whole-word one first, exact case first), in the passage's
own spelling.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass, field

from uniner.data.records import Mention, Passage
from uniner.data.spans import first_occurrence
from uniner.errors import ConfigError

# A quoted string: escapes allowed; a single-quoted one may hold apostrophes inside words
# (`'McDonald's'`), which is how teachers write Python-ish lists by hand.
_DQ = r'"(?:[^"\\\n]|\\.)*"'
_SQ = r"'(?:[^'\\\n]|\\.|'(?=\w))*'"
_STR = f"(?:{_DQ}|{_SQ})"
# One complete pair, as a tuple or a list, with an optional trailing comma.
PAIR = re.compile(rf"[(\[]\s*({_STR})\s*,\s*({_STR})\s*,?\s*[)\]]")
_EMPTY = re.compile(r"^\W*(\[\s*\]|none|no entities?\b.*|there are no entities\b.*)\W*$",
                    re.IGNORECASE | re.DOTALL)
_ENTITY_KEYS = ("entity", "name", "text", "span", "mention")
_TYPE_KEYS = ("type", "entity_type", "label", "category")


@dataclass
class Parsed:
    """The pairs read from one answer and how they were read.

    `status`: `ok` (the whole list parsed), `salvaged` (pairs scanned out of broken syntax),
    `empty` (a well-formed answer with no entity) or `unparseable` (nothing usable).
    """

    pairs: list[tuple[str, str]]
    status: str
    malformed_items: int = 0


def _unquote(s: str) -> str:
    if s.startswith('"'):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            pass
    try:
        value = ast.literal_eval(s)
        if isinstance(value, str):
            return value
    except (ValueError, SyntaxError):
        pass
    return s[1:-1]  # an escape neither JSON nor Python knows: keep the raw inside


def _pair(item) -> tuple[str, str] | None:
    if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return item[0], item[1]
    if isinstance(item, dict):  # {"entity": ..., "type": ...}, which some teachers prefer
        ent = next((item[k] for k in _ENTITY_KEYS if isinstance(item.get(k), str)), None)
        typ = next((item[k] for k in _TYPE_KEYS if isinstance(item.get(k), str)), None)
        if ent is not None and typ is not None:
            return ent, typ
    return None


def _literal(text: str):
    """The outermost `[...]` of `text` read as JSON or a Python literal, else None."""
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end < start:
        return None
    body = text[start:end + 1]
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def parse_answer(text: str) -> Parsed:
    """The (entity, type) pairs of a teacher's answer, in the order written."""
    value = _literal(text)
    if isinstance(value, list | tuple):
        # a single bare pair `["Paris", "location"]` is a list of strings, not of pairs
        items = [value] if _pair(value) and not any(isinstance(x, list | tuple | dict)
                                                    for x in value) else list(value)
        pairs = [p for p in map(_pair, items) if p is not None]
        if pairs or not items:
            return Parsed(pairs, "ok" if pairs else "empty", len(items) - len(pairs))
    pairs = [(_unquote(a), _unquote(b)) for a, b in PAIR.findall(text)]
    if pairs:
        return Parsed(pairs, "salvaged")
    if _EMPTY.match(text.strip()):
        return Parsed([], "empty")
    return Parsed([], "unparseable")


def normalize_type(type_: str, case: str = "lower") -> str:
    """Collapse white space and apply the case policy (`lower` or `keep`)."""
    if case not in ("lower", "keep"):
        raise ConfigError(f"type_case={case!r}: choose lower or keep")
    type_ = " ".join(type_.split())
    return type_.lower() if case == "lower" else type_


@dataclass
class Grounded:
    """Mentions kept, and the counts of what was dropped or merged on the way."""

    mentions: list[Mention]
    counts: Counter = field(default_factory=Counter)


def ground(text: str, pairs: list[tuple[str, str]], *, keep_ungrounded: bool = False,
           type_case: str = "lower") -> Grounded:
    """Mentions of `pairs` in `text`, at the first occurrence (see `first_occurrence`), in text
    order.

    A mention takes the passage's own spelling of the entity (so answers copy from the text).
    Pairs whose entity the text lacks are dropped and counted, unless `keep_ungrounded` (then
    they are kept without offsets, after the grounded ones). Duplicates are merged.
    """
    counts: Counter = Counter()
    grounded, ungrounded, seen = [], [], set()
    for entity, type_ in pairs:
        entity, type_ = entity.strip(), normalize_type(type_, type_case)
        if not entity or not type_:
            counts["empty entity or type"] += 1
            continue
        span = first_occurrence(text, entity)
        if span is None and not keep_ungrounded:
            counts["ungrounded"] += 1
            continue
        surface = text[span[0]:span[1]] if span else entity
        if (surface, type_) in seen:
            counts["duplicates merged"] += 1
            continue
        seen.add((surface, type_))
        if span is None:
            counts["ungrounded kept"] += 1
            ungrounded.append(Mention(surface, type_))
        else:
            counts["grounded" if surface == entity else "grounded after normalising"] += 1
            grounded.append(Mention(surface, type_, *span))
    grounded.sort(key=lambda m: (m.start, m.end))  # stable: the teacher's order breaks ties
    return Grounded(grounded + ungrounded, counts)


def to_passage(id_: str, text: str, pairs: list[tuple[str, str]], **kwargs) -> tuple[Passage,
                                                                                     Counter]:
    """A `Passage` of `text` with the grounded mentions of `pairs` (see `ground`)."""
    g = ground(text, pairs, **kwargs)
    return Passage(id=id_, text=text, mentions=g.mentions), g.counts
