"""Constrained decoding: an answer can only be a JSON list of strings that occur in the text.

`SpanListGrammar` accepts the answer's characters one by one, `TokenTrie` turns a grammar state
into the vocabulary ids allowed next, and `ConstrainedRow` follows one answer as it is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from uniner.data.prompts import PromptStyle


class SpanListGrammar:
    """Prefixes of ` ["item", "item", ...]`: a JSON list (as `json.dumps(..., ensure_ascii=False)`
    writes it, one optional leading space) of non-empty strings that occur in `text`.

    Items neither start nor end with white space and hold no `"`, backslash or control character,
    so they are written without escapes and the answer's items are exactly substrings of `text`.
    A state is `(phase, item)`: `item` is the open item's characters so far.
    """

    START, LEAD, OPEN, ITEM, AFTER, COMMA, SEP, DONE = range(8)

    def __init__(self, text: str):
        self.text = text

    def step(self, state: tuple[int, str], ch: str) -> tuple[int, str] | None:
        """The state after `ch`, or None where `ch` cannot continue a valid answer."""
        phase, item = state
        if phase == self.START:
            return (self.LEAD, "") if ch == " " else (self.OPEN, "") if ch == "[" else None
        if phase == self.LEAD:
            return (self.OPEN, "") if ch == "[" else None
        if phase == self.OPEN:
            return (self.ITEM, "") if ch == '"' else (self.DONE, "") if ch == "]" else None
        if phase == self.ITEM:
            if ch == '"':
                return (self.AFTER, item) if item and not item[-1].isspace() else None
            if ch == "\\" or ord(ch) < 0x20 or not item and ch.isspace():
                return None
            return (self.ITEM, item + ch) if item + ch in self.text else None
        if phase == self.AFTER:
            return (self.COMMA, "") if ch == "," else (self.DONE, "") if ch == "]" else None
        if phase == self.COMMA:
            return (self.SEP, "") if ch == " " else None
        if phase == self.SEP:
            return (self.ITEM, "") if ch == '"' else None
        return None  # DONE: nothing may follow


class TokenTrie:
    """The vocabulary's token strings as a character trie: `(children, ids ending here)`."""

    def __init__(self, tokenizer):
        self.root: tuple[dict, list[int]] = ({}, [])
        special = set(tokenizer.all_special_ids)
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
        head = tokenizer.decode([anchor])
        # decoded after an anchor token, so that a SentencePiece word start keeps its space
        for i in range(len(tokenizer)):
            if i in special:
                continue
            s = tokenizer.decode([anchor, i])[len(head):]
            if not s or "\ufffd" in s:  # empty, or a byte piece of a multi-byte character
                continue
            node = self.root
            for ch in s:
                node = node[0].setdefault(ch, ({}, []))
            node[1].append(i)
        self.strings: dict[int, str] = {}
        self._collect(self.root, "")

    def _collect(self, node, prefix: str) -> None:
        for i in node[1]:
            self.strings[i] = prefix
        for ch, child in node[0].items():
            self._collect(child, prefix + ch)

    def allowed(self, grammar: SpanListGrammar, state: tuple[int, str]) -> list[int]:
        """Ids of the tokens whose whole string keeps `state` a valid answer prefix."""
        out, stack = [], [(self.root, state)]
        while stack:
            (children, _), st = stack.pop()
            for ch, child in children.items():
                nxt = grammar.step(st, ch)
                if nxt is not None:
                    out += child[1]
                    stack.append((child, nxt))
        return out


@dataclass
class ConstrainedRow:
    """One answer under constrained decoding: its grammar state and the items closed so far."""

    grammar: SpanListGrammar
    state: tuple[int, str] = (SpanListGrammar.START, "")
    items: list[str] | None = None

    def advance(self, token: str) -> None:
        for ch in token:
            self.state = self.grammar.step(self.state, ch)
            if self.state[0] == SpanListGrammar.AFTER:
                self.items = (self.items or []) + [self.state[1]]
                self.state = (SpanListGrammar.AFTER, "")

    @property
    def done(self) -> bool:
        return self.state[0] == SpanListGrammar.DONE

    def answer(self) -> str:
        # an answer cut off by max_new_tokens closes after its last complete item; a repeated
        # item is listed once, as the official parser reads it
        return PromptStyle.answer(dict.fromkeys(self.items or []))
