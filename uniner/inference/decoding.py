"""How the engine chooses each row's next token and where the row's answer ends.

`engine.Engine` schedules the rows (batches, refill, the KV cache); a `Decoder` chooses their
tokens from the logits and follows each answer: `Greedy` (the most likely token) or
`Constrained` (the most likely token that `grammar.SpanListGrammar` allows). `DECODERS` names
them for `Engine(decoding=...)`.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Protocol

import torch

from uniner.inference.args import DECODINGS
from uniner.inference.grammar import ConstrainedRow, SpanListGrammar, TokenTrie
from uniner.inference.planner import closing_token_ids

NO_TOKEN = -1  # `choose`'s id for a row that can take no token: its answer ends there


class Decoder(Protocol):
    """The choice of the next tokens for rows decoding together. A row is named by the index of
    the query it answers; the engine appends its tokens and ends it at `max_new_tokens`.

    Built once per engine as `Decoder(tokenizer, stops=..., early_stop=...)`: `stops` are the
    prompt style's stop tokens, `early_stop` False decodes `max_new_tokens` whatever comes."""

    def begin(self) -> None:
        """A new set of queries: the last set's rows are forgotten."""

    def start(self, query: int, text: str) -> None:
        """A row that answers a query about `text`."""

    def choose(self, logits: torch.Tensor, queries: list[int],
               running: list[bool]) -> torch.Tensor:
        """The next token of each row (`logits[r]` is row `queries[r]`'s); `NO_TOKEN` where a
        running row can take none; anything where a row is no longer running."""

    def advance(self, query: int, token: int) -> bool:
        """Follows the row's new `token`; True where it ends the answer."""

    def answer(self, query: int, tokens: list[int]) -> str:
        """The row's finished answer from its `tokens`; the row is forgotten."""


class Greedy:
    """The most likely token; with `early_stop`, a row ends at a stop token or at the first token
    holding `]` (the official parser reads up to it)."""

    def __init__(self, tokenizer, *, stops: Collection[int], early_stop: bool):
        self.tokenizer, self.stops = tokenizer, set(stops)
        self.ends = self.stops | set(closing_token_ids(tokenizer)) if early_stop else set()

    def begin(self) -> None:  # no state of its own: the engine keeps the tokens
        pass

    def start(self, query: int, text: str) -> None:
        pass

    def choose(self, logits: torch.Tensor, queries: list[int],
               running: list[bool]) -> torch.Tensor:
        return logits.argmax(-1)

    def advance(self, query: int, token: int) -> bool:
        return token in self.ends

    def answer(self, query: int, tokens: list[int]) -> str:
        if tokens and tokens[-1] in self.stops:
            tokens = tokens[:-1]
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()


class Constrained:
    """The most likely token that keeps the answer a JSON list of strings found in the text
    (`grammar.SpanListGrammar`); a row ends when its list closes or no token is allowed. `stops`
    and `early_stop` do not apply: the grammar allows no special token and ends every answer."""

    def __init__(self, tokenizer, *, stops: Collection[int] = (), early_stop: bool = True):
        self.tokenizer = tokenizer
        self._trie: TokenTrie | None = None  # at the first `begin`: it reads the whole vocabulary
        self._rows: dict[int, ConstrainedRow] = {}
        self._allowed: dict[str, dict] = {}  # text -> grammar state -> allowed ids

    def begin(self) -> None:
        if self._trie is None:
            self._trie = TokenTrie(self.tokenizer)
        self._rows.clear()
        self._allowed.clear()

    def start(self, query: int, text: str) -> None:
        self._rows[query] = ConstrainedRow(SpanListGrammar(text))

    def choose(self, logits: torch.Tensor, queries: list[int],
               running: list[bool]) -> torch.Tensor:
        allowed = torch.zeros(logits.shape, dtype=torch.bool)
        for r, q in enumerate(queries):
            if running[r]:
                ids = self._allowed_ids(self._rows[q])
                if ids:
                    allowed[r, ids] = True
        allowed = allowed.to(logits.device)
        best = logits.masked_fill(~allowed, -math.inf).argmax(-1)
        return torch.where(allowed.any(-1), best, torch.full_like(best, NO_TOKEN))

    def advance(self, query: int, token: int) -> bool:
        row = self._rows[query]
        row.advance(self._trie.strings[token])
        return row.done

    def answer(self, query: int, tokens: list[int]) -> str:
        return self._rows.pop(query).answer()

    def _allowed_ids(self, row: ConstrainedRow) -> list[int]:
        per_text = self._allowed.setdefault(row.grammar.text, {})
        if row.state not in per_text:
            per_text[row.state] = self._trie.allowed(row.grammar, row.state)
        return per_text[row.state]


DECODERS: dict[str, type[Decoder]] = dict(zip(DECODINGS, (Greedy, Constrained), strict=True))
