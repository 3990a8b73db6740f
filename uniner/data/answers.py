"""Reading an answer back: the official parser's rule for the JSON list a model writes.

The one parser of the answer format (`prompts` writes it): the official metric normalises what
`read_items` returns, and the extractor grounds the raw items of `parse_mentions`.
"""

from __future__ import annotations

import json
import re

_LEADING_LIST = re.compile(r"\[(.*?)\]")  # re.match: at the start only; `.` stops at newlines


def read_items(text) -> tuple[list, bool]:
    """The official parser's reading of an output: (raw items, malformed).

    The leading `[...]` (from the text's start up to the first `]`), `json.loads`-ed; a
    non-string text, no leading list, a JSON error or an item that is neither a string nor a
    list of strings gives no items (official: `[]`), malformed unless the text is blank.
    """
    if not isinstance(text, str):  # official: re.match raises TypeError -> []
        return [], True
    if text == "[]":  # by far the most common answer
        return [], False
    match = _LEADING_LIST.match(text)
    if match is None:
        return [], bool(text.strip())
    try:
        items = json.loads(match.group())
    except Exception:  # JSONDecodeError, RecursionError: the official bare `except Exception`
        return [], True
    for item in items:
        # Official: list items become tuples of normalised elements (unreachable through the
        # leading match, which ends at the first `]`; kept so the item rules are the same).
        # A number, null, bool, object or non-string element: normalize_answer raises -> [].
        if not (isinstance(item, str)
                or isinstance(item, list) and all(isinstance(e, str) for e in item)):
            return [], True
    return items, False


def parse_mentions(text: str) -> tuple[list, bool]:
    """Raw (un-normalised) distinct items of an output and whether it was malformed.

    The official parser's reading (`read_items`), so an output the official metric reads as `[]`
    has no mentions here either; items keep their case and punctuation.
    """
    items, bad = read_items(text)
    out: list = []
    for item in items:
        if item not in out:  # list items are unhashable
            out.append(item)
    return out, bad
