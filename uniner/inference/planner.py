"""The queries as prompt ids and their batch plan: queries grouped by text (they share a prompt
prefix), groups sorted by length and packed into token-budget batches (`plan_batches`: each
text's prefix once, suffix + new tokens per row, at most `batch_rows` rows), prompts left-padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from uniner.data.encoding import encode_prompts
from uniner.data.prompts import PromptStyle


def closing_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens that contain `]` (a JSON list closes in them)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [i for i, tok in enumerate(vocab) if tok and "]" in tok]


def encode_queries(queries: Sequence[tuple[str, str]], tokenizer,
                   style: PromptStyle) -> list[list[int]]:
    """`encoding.encode_prompts` of every (text, type) query in the prompt style the model was
    trained with."""
    return encode_prompts([style.query(text, type_) for text, type_ in queries], tokenizer,
                          auto_bos=style.auto_bos)


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix all `seqs` share."""
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs):
            return i
    return n


@dataclass
class Chunk:
    """Queries of one text in one batch: their prompts share `prefix_len` leading ids."""

    rows: list[int]
    prefix_len: int


def plan_batches(prompts: Sequence[list[int]], groups: Sequence, *, max_new_tokens: int,
                 batch_tokens: int, batch_rows: int) -> list[list[Chunk]]:
    """Group queries by `groups` (their text), sort the groups by length, and fill batches up to
    `batch_tokens` KV slots and `batch_rows` rows. A batch's KV slots: each chunk's shared prefix
    once, and per row the widest suffix of the batch plus `max_new_tokens`. A group too big for
    one batch is split; the pieces each compute the shared prefix once."""
    by_group: dict = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    ordered = sorted(by_group.values(), key=lambda rows: (len(prompts[rows[0]]), rows[0]))
    batches: list[list[Chunk]] = []
    current: list[Chunk] = []
    width = n_rows = prefix_slots = 0  # the batch's widest row (suffix + new), rows, prefix slots

    def cost(w: int, n: int, prefixes: int) -> int:
        return n * w + prefixes

    for rows in ordered:
        # at least one suffix token per row, so every row has logits of its own
        shared = min(common_prefix_length([prompts[i] for i in rows]),
                     min(len(prompts[i]) for i in rows) - 1)
        row_width = max(len(prompts[i]) for i in rows) - shared + max_new_tokens
        fit = max(1, min(batch_rows, (batch_tokens - shared) // row_width))
        for start in range(0, len(rows), fit):
            piece = rows[start: start + fit]
            prefix = min(common_prefix_length([prompts[i] for i in piece]),
                         min(len(prompts[i]) for i in piece) - 1)
            piece_width = max(len(prompts[i]) for i in piece) - prefix + max_new_tokens
            w = max(width, piece_width)
            if current and (cost(w, n_rows + len(piece), prefix_slots + prefix) > batch_tokens
                            or n_rows + len(piece) > batch_rows):
                batches.append(current)
                current, width, n_rows, prefix_slots = [], 0, 0, 0
                w = piece_width
            current.append(Chunk(piece, prefix))
            width, n_rows, prefix_slots = w, n_rows + len(piece), prefix_slots + prefix
    if current:
        batches.append(current)
    return batches


def left_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask of prompts left-padded to the longest (generation appends right)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        if s:
            ids[r, width - len(s):] = torch.as_tensor(s)
            mask[r, width - len(s):] = 1
    return ids, mask
