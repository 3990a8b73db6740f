"""The extraction engine: many (text, type) prompts answered at once around a KV cache.

`Engine` answers prompts with greedy decoding written by hand:
- **shared prefixes**: the queries of one text share their prompt up to the type's name (the
  passage, the read reply, the question's head: `USER: What describes` in the `uniner` style, the
  template's user header and `What describes` in the `chat` style); that prefix is computed once
  per text, its
  cache copied to every query of the text, and only each type's few suffix tokens are prefilled;
- **token-budget batches** (`plan_batches`): texts sorted by length, as many queries per batch as
  fit `batch_tokens` KV slots (prefix + suffix + new tokens per row) and `batch_rows` rows;
  prefixes and suffixes are left-padded, positions counted over real tokens only;
- a row stops at the prompt style's stop tokens (EOS; a chat template's end of turn) or at the
  first token holding `]` (the official parser reads up to the first
  `]`); finished rows are dropped from the cache once they are half of the batch.
Greedy answers are the same as one-query-at-a-time `model.generate` (tests/test_extract.py).
`decoding="constrained"` masks the logits with `grammar.SpanListGrammar`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicLayer

from uniner.data.encoding import encode_prompt, encode_prompts
from uniner.data.prompts import PromptStyle, UniNER
from uniner.errors import ConfigError
from uniner.inference.grammar import ConstrainedRow, SpanListGrammar, TokenTrie

DECODINGS = ("greedy", "constrained")
BATCH_TOKENS = 65536  # KV slots per batch: 32 GiB of bf16 cache for LLaMA-7B
BATCH_ROWS = 512


def closing_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens that contain `]` (a JSON list closes in them)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [i for i, tok in enumerate(vocab) if tok and "]" in tok]


def encode_queries(queries: Sequence[tuple[str, str]], tokenizer,
                   style: PromptStyle | None = None) -> list[list[int]]:
    """`encoding.encode_prompts` of every (text, type) query in the prompt style the model was
    trained with (default `UniNER`, the recipe's)."""
    style = style or UniNER()
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
class _Chunk:
    """Queries of one text in one batch: their prompts share `prefix_len` leading ids."""

    rows: list[int]
    prefix_len: int


def plan_batches(prompts: Sequence[list[int]], groups: Sequence, *, max_new_tokens: int,
                 batch_tokens: int, batch_rows: int) -> list[list[_Chunk]]:
    """Group queries by `groups` (their text), sort the groups by length, and fill batches up to
    `batch_tokens` KV slots and `batch_rows` rows. A group too big for one batch is split; the
    pieces each compute the shared prefix once."""
    by_group: dict = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    ordered = sorted(by_group.values(), key=lambda rows: (len(prompts[rows[0]]), rows[0]))
    batches: list[list[_Chunk]] = []
    current: list[_Chunk] = []
    width = n_rows = 0  # the current batch's widest row (KV slots) and its rows
    for rows in ordered:
        row_width = max(len(prompts[i]) for i in rows) + max_new_tokens
        fit = max(1, min(batch_rows, batch_tokens // row_width))
        for start in range(0, len(rows), fit):
            piece = rows[start: start + fit]
            w = max(width, row_width)
            if current and ((n_rows + len(piece)) * w > batch_tokens
                            or n_rows + len(piece) > batch_rows):
                batches.append(current)
                current, width, n_rows = [], 0, 0
                w = row_width
            # at least one suffix token per row, so every row has logits of its own
            shared = min(common_prefix_length([prompts[i] for i in piece]),
                         min(len(prompts[i]) for i in piece) - 1)
            current.append(_Chunk(piece, shared))
            width, n_rows = w, n_rows + len(piece)
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


class _BufferLayer(DynamicLayer):
    """A KV cache layer holding its keys and values in a buffer with room for the tokens still to
    come: `update` writes in place, where `DynamicLayer` concatenates (a copy of the whole cache
    at every token: for LLaMA-7B at 512 rows, tens of GB per step)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        n = keys.shape[-2]
        self._keys = keys.new_empty((*keys.shape[:-2], capacity, keys.shape[-1]))
        self._values = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
        self._keys[..., :n, :], self._values[..., :n, :] = keys, values
        self._view(n)

    def _view(self, n: int) -> None:
        self.keys, self.values = self._keys[..., :n, :], self._values[..., :n, :]

    def update(self, key_states, value_states, *args, **kwargs):
        n, m = self.keys.shape[-2], key_states.shape[-2]
        self._keys[..., n: n + m, :] = key_states
        self._values[..., n: n + m, :] = value_states
        self._view(n + m)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = self.keys.shape[-2]
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._view(n)


def _into_buffers(cache, rows: torch.Tensor, capacity: int):
    """`cache` with its batch rows `rows` (repeats allowed) copied into `_BufferLayer`s."""
    cache.layers = [_BufferLayer(layer.keys[rows], layer.values[rows], capacity)
                    for layer in cache.layers]
    return cache


class Engine:
    """Greedy (or constrained) answers to many prompts, sharing each text's prompt prefix.

    Args:
        model: a causal LM (transformers, or a PEFT model around one).
        tokenizer: its tokenizer.
        max_new_tokens: answer length limit (256 as the official protocol).
        batch_tokens: KV slots per batch (rows x (prompt + new tokens)); bounds cache memory.
        batch_rows: queries per batch at most.
        decoding: `greedy`, or `constrained` (only JSON lists of strings found in the text).
        early_stop: stop a row at a stop token or `]`; False decodes exactly `max_new_tokens`
            (benchmarks of random-init models, which never stop on their own).
        style: the prompt style the model was trained with (default `UniNER`); renders the
            queries of `answer` and gives the stop tokens.
    """

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 256,
                 batch_tokens: int = BATCH_TOKENS, batch_rows: int = BATCH_ROWS,
                 decoding: str = "greedy", early_stop: bool = True,
                 style: PromptStyle | None = None):
        if decoding not in DECODINGS:
            raise ConfigError(f"decoding={decoding!r}: choose one of {', '.join(DECODINGS)}")
        if max_new_tokens < 1 or batch_tokens < 1 or batch_rows < 1:
            raise ConfigError(f"max_new_tokens={max_new_tokens}, batch_tokens={batch_tokens}, "
                              f"batch_rows={batch_rows}: each must be >= 1")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_tokens, self.batch_rows = (max_new_tokens, batch_tokens,
                                                                   batch_rows)
        self.decoding, self.early_stop = decoding, early_stop
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        self.style = style or UniNER()
        self.stops = set(self.style.stop_ids(tokenizer))
        self.closing = set(closing_token_ids(tokenizer))
        self._trie: TokenTrie | None = None
        self._allowed_cache: dict[str, dict] = {}  # text -> grammar state -> allowed ids
        # transformers 5.x renamed `past_key_values` to `cache` (the old name warns)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters \
            else "past_key_values"

    def prompt(self, text: str, type_: str) -> list[int]:
        """The ids of a (text, type) query, as training renders it up to the answer."""
        return encode_prompt(self.style.query(text, type_), self.tokenizer,
                             auto_bos=self.style.auto_bos)

    def answer(self, queries: Sequence[tuple[str, str]],
               progress: Callable[[int], None] | None = None) -> list[str]:
        """Answers (stripped text) to (text, type) queries, in the order given."""
        prompts = encode_queries(queries, self.tokenizer, self.style)
        return self.answer_prompts(prompts, [text for text, _ in queries], progress)

    @torch.inference_mode()
    def answer_prompts(self, prompts: Sequence[list[int]], texts: Sequence[str],
                       progress: Callable[[int], None] | None = None) -> list[str]:
        """Answers to prompt ids; `texts[i]` is the text prompt i asks about (queries of the same
        text share their prompt prefix; constrained decoding grounds items in it). `progress` is
        called with the number of queries answered after each batch."""
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("an empty prompt: nothing to condition the answer on")
        if self.decoding == "constrained" and self._trie is None:
            self._trie = TokenTrie(self.tokenizer)
        self._allowed_cache.clear()
        answers = [""] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in plan_batches(prompts, texts, max_new_tokens=self.max_new_tokens,
                                      batch_tokens=self.batch_tokens,
                                      batch_rows=self.batch_rows):
                rows = [i for chunk in batch for i in chunk.rows]
                for i, a in zip(rows, self._run_batch(batch, prompts, texts)):
                    answers[i] = a
                if progress is not None:
                    progress(len(rows))
        finally:
            self.model.train(was_training)
        return answers

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, ids, mask, positions, cache):
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
        return out.logits[:, -1, :].float(), getattr(out, self._cache_arg)

    def _prefill(self, batch: list[_Chunk], prompts: Sequence[list[int]]):
        """Each chunk's shared prefix once, its cache copied to the chunk's rows, then every row's
        own suffix. Returns (last logits, cache, attention mask, next position) per row."""
        device = self._device()
        prefixes = [prompts[c.rows[0]][: c.prefix_len] for c in batch]
        chunk_of_row = torch.tensor([k for k, c in enumerate(batch) for _ in c.rows],
                                    device=device)
        suffixes = [prompts[i][c.prefix_len:] for c in batch for i in c.rows]
        prefix_lens = torch.tensor([c.prefix_len for c in batch for _ in c.rows], device=device)

        ids, smask = (t.to(device) for t in left_pad(suffixes, self.pad))
        capacity = max(len(p) for p in prefixes) + ids.shape[1] + self.max_new_tokens
        cache, mask = None, torch.zeros((len(suffixes), 0), dtype=torch.long, device=device)
        if max(len(p) for p in prefixes) > 0:
            pids, pmask = (t.to(device) for t in left_pad(prefixes, self.pad))
            positions = (pmask.cumsum(-1) - 1).masked_fill(pmask == 0, 1)
            _, cache = self._forward(pids, pmask, positions, None)
            cache = _into_buffers(cache, chunk_of_row, capacity)  # a prefix copy per query
            mask = pmask[chunk_of_row]
        positions = (prefix_lens[:, None] + smask.cumsum(-1) - 1).masked_fill(smask == 0, 1)
        mask = torch.cat([mask, smask], dim=1)
        logits, cache = self._forward(ids, mask, positions, cache)
        if not isinstance(cache.layers[0], _BufferLayer):  # no shared prefix: buffers now
            cache = _into_buffers(cache, torch.arange(len(suffixes), device=device), capacity)
        return logits, cache, mask, positions[:, -1] + 1

    def _run_batch(self, batch: list[_Chunk], prompts, texts) -> list[str]:
        logits, cache, mask, position = self._prefill(batch, prompts)
        device = logits.device
        rows = [i for chunk in batch for i in chunk.rows]
        tokens: list[list[int]] = [[] for _ in rows]
        constrained = [ConstrainedRow(SpanListGrammar(texts[i])) for i in rows] \
            if self.decoding == "constrained" else None
        # bookkeeping in Python lists, one transfer a step: indexing a CUDA tensor row by row
        # would wait for the device at every row
        live = list(range(len(rows)))  # cache row -> batch row
        running = [True] * len(rows)  # per cache row
        mask = torch.cat([mask, mask.new_ones((len(rows), self.max_new_tokens))], dim=1)
        width = mask.shape[1] - self.max_new_tokens
        for step in range(self.max_new_tokens):
            if constrained is None:
                next_ids = logits.argmax(-1)
            else:
                next_ids = self._constrained_choice(logits, live, running, constrained)
            for r, (q, token) in enumerate(zip(live, next_ids.tolist())):
                if not running[r]:
                    continue
                if token < 0:  # the grammar allows no token: the answer ends here
                    running[r] = False
                    continue
                tokens[q].append(token)
                if constrained is not None:
                    constrained[q].advance(self._trie.strings[token])
                    running[r] = not constrained[q].done
                elif self.early_stop and (token in self.stops or token in self.closing):
                    running[r] = False
            if not any(running) or step == self.max_new_tokens - 1:
                break
            if 2 * sum(running) <= len(running):  # drop finished rows from the cache
                keep = [r for r, alive in enumerate(running) if alive]
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, position, next_ids = mask[index], position[index], next_ids[index]
                live, running = [live[r] for r in keep], [True] * len(keep)
            width += 1
            logits, cache = self._forward(next_ids.clamp(min=0)[:, None], mask[:, :width],
                                          position[:, None], cache)
            position = position + 1
        if constrained is not None:
            return [c.answer() for c in constrained]
        return [self.tokenizer.decode(t[:-1] if t and t[-1] in self.stops else t,
                                      skip_special_tokens=True).strip() for t in tokens]

    def _constrained_choice(self, logits, live: list[int], running: list[bool],
                            rows: list[ConstrainedRow]) -> torch.Tensor:
        """The best token each running row's grammar allows; -1 where none is allowed."""
        allowed = torch.zeros(logits.shape, dtype=torch.bool)
        for r, q in enumerate(live):
            if running[r]:
                ids = self._allowed(rows[q])
                if ids:
                    allowed[r, ids] = True
        allowed = allowed.to(logits.device)
        best = logits.masked_fill(~allowed, -math.inf).argmax(-1)
        return torch.where(allowed.any(-1), best, torch.full_like(best, -1))

    def _allowed(self, row: ConstrainedRow) -> list[int]:
        per_text = self._allowed_cache.setdefault(row.grammar.text, {})
        if row.state not in per_text:
            per_text[row.state] = self._trie.allowed(row.grammar, row.state)
        return per_text[row.state]
