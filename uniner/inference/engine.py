"""The extraction engine: many (text, type) prompts answered at once around a KV cache.

`Engine` answers prompts with greedy decoding written by hand:
- **shared prefixes**: the queries of one text share their prompt up to the type's name (the
  passage, the read reply, the question's head: `USER: What describes` in the `uniner` style, the
  template's user header and `What describes` in the `chat` style); that prefix is computed once
  per text and its cache is kept once per text: the rows attend to it in place
  (`shared_prefix_attention`, the scores over the text's prefix and over the row's own tokens
  softmaxed together), never copied per query; only each type's few suffix tokens are prefilled;
- **token-budget batches** (`plan_batches`): texts sorted by length, as many queries per batch as
  fit `batch_tokens` KV slots (each text's prefix once, suffix + new tokens per row) and
  `batch_rows` rows; prefixes and suffixes are left-padded, positions counted over real tokens
  only;
- a row stops at the prompt style's stop tokens (EOS; a chat template's end of turn) or at the
  first token holding `]` (the official parser reads up to the first `]`); a batch stops as soon
  as every row has; finished rows leave the (small, per-row) cache once they are a quarter of it.
Greedy answers are the same as one-query-at-a-time `model.generate` (tests/test_extract.py).
`decoding="constrained"` masks the logits with `grammar.SpanListGrammar`.
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

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
    `batch_tokens` KV slots and `batch_rows` rows. A batch's KV slots: each chunk's shared prefix
    once, and per row the widest suffix of the batch plus `max_new_tokens`. A group too big for
    one batch is split; the pieces each compute the shared prefix once."""
    by_group: dict = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    ordered = sorted(by_group.values(), key=lambda rows: (len(prompts[rows[0]]), rows[0]))
    batches: list[list[_Chunk]] = []
    current: list[_Chunk] = []
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
            current.append(_Chunk(piece, prefix))
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


class _BufferLayer(DynamicLayer):
    """A KV cache layer holding its keys and values in a buffer with room for the tokens still to
    come: `update` writes in place, where `DynamicLayer` concatenates (a copy of the whole cache
    at every token). The buffer is allocated at the first `update`."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def _view(self, n: int) -> None:
        self.keys, self.values = self._keys[..., :n, :], self._values[..., :n, :]

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            shape = (*key_states.shape[:-2], self.capacity, key_states.shape[-1])
            self._keys = key_states.new_empty(shape)
            self._values = value_states.new_empty((*shape[:-1], value_states.shape[-1]))
            self._view(0)
        n, m = self.keys.shape[-2], key_states.shape[-2]
        self._keys[..., n: n + m, :] = key_states
        self._values[..., n: n + m, :] = value_states
        self._view(n + m)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows `indices`: their used slots copied into a new buffer."""
        n = self.keys.shape[-2]
        keys = self._keys.new_empty((len(indices), *self._keys.shape[1:]))
        values = self._values.new_empty((len(indices), *self._values.shape[1:]))
        keys[..., :n, :], values[..., :n, :] = self.keys[indices], self.values[indices]
        self._keys, self._values = keys, values
        self._view(n)


def _buffer_cache(n_layers: int, capacity: int) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = [_BufferLayer(capacity) for _ in range(n_layers)]
    return cache


@dataclass
class SharedPrefix:
    """The prefixes of a batch's chunks, kept once per chunk, and where each row finds its own.

    `keys[l]`, `values[l]`: layer l's prefix cache, (chunks, kv heads, prefix width, head dim),
    left-padded; `mask`: (chunks, prefix width), True on real tokens; `row_chunk`: (rows,) the
    chunk of each row; `slot`: (rows,) each row's place in a chunk-major layout of `chunks x
    width` slots (its chunk x width + its rank in the chunk), where a chunk's rows are gathered to
    attend to its prefix as one matrix product."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    row_chunk: torch.Tensor
    slot: torch.Tensor
    width: int

    @classmethod
    def build(cls, keys: list[torch.Tensor], values: list[torch.Tensor], mask: torch.Tensor,
              chunks: Sequence[int]) -> SharedPrefix:
        """From the prefix caches and each row's chunk (`chunks`, a list: no device sync)."""
        rank, count = [], [0] * mask.shape[0]
        for k in chunks:
            rank.append(count[k])
            count[k] += 1
        width = max(count) if count else 1
        device = mask.device
        return cls(keys, values, mask.bool(), torch.tensor(list(chunks), device=device),
                   torch.tensor([k * width + r for k, r in zip(chunks, rank)], device=device),
                   width)

    def select(self, index: torch.Tensor) -> None:
        """Keep only the rows `index` (the prefixes stay; their slots of dropped rows idle)."""
        self.row_chunk, self.slot = self.row_chunk[index], self.slot[index]


def _left_pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros before dim -2 up to `width` (finite: masked keys still enter the products)."""
    return torch.nn.functional.pad(x, (0, 0, width - x.shape[-2], 0))


def _to_chunks(x: torch.Tensor, prefix: SharedPrefix) -> torch.Tensor:
    """(rows, kv heads, n, d) -> (chunks, kv heads, width x n, d): each chunk's rows side by side
    (empty slots zero)."""
    rows, heads, n, d = x.shape
    chunks = prefix.mask.shape[0]
    out = x.new_zeros((chunks * prefix.width, heads, n, d))
    out[prefix.slot] = x
    return out.view(chunks, prefix.width, heads, n, d).transpose(1, 2).reshape(
        chunks, heads, prefix.width * n, d)


def _from_chunks(x: torch.Tensor, prefix: SharedPrefix) -> torch.Tensor:
    """The inverse of `_to_chunks`: (chunks, kv heads, width x n, d) -> (rows, kv heads, n, d)."""
    chunks, heads, wn, d = x.shape
    n = wn // prefix.width
    return x.view(chunks, heads, prefix.width, n, d).transpose(1, 2).reshape(
        chunks * prefix.width, heads, n, d)[prefix.slot]


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None,
                            dropout: float = 0.0, shared_prefix: SharedPrefix | None = None,
                            **kwargs):
    """Attention of each row over its chunk's shared prefix (read in place, once per chunk) and
    over its own tokens, softmaxed together (an `AttentionInterface` function).

    query (rows, heads, T, d); key, value (rows, kv heads, S, d): the rows' own tokens;
    attention_mask (rows, 1, T, S) bool, True where a query may attend. Scores and softmax in
    fp32, the products in the model's dtype. Returns (rows, T, heads, d). No sliding window (a
    prompt is far shorter than any window) and no softcapping or sinks."""
    if shared_prefix is None:  # a forward outside the engine's passes (another thread's)
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask,
                                               scaling=scaling, dropout=dropout, **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError("shared_prefix_attention: no logit softcapping or attention "
                                  "sinks (LLaMA-family models only)")
    prefix = shared_prefix
    rows, heads, t, d = query.shape
    kv_heads, s = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scaling = d ** -0.5 if scaling is None else scaling
    # GQA: a kv head's query heads fold into the query length, (rows, kv heads, group x T, d)
    q = query.reshape(rows, kv_heads, group * t, d)
    own = torch.matmul(q, key.transpose(-1, -2)).float() * scaling
    own = own.view(rows, kv_heads, group, t, s).masked_fill(
        ~attention_mask[:, :, None], -math.inf).view(rows, kv_heads, group * t, s)
    if not prefix.keys:  # one-token prompts only: nothing shared
        out = torch.matmul(torch.softmax(own, dim=-1).to(value.dtype), value)
    else:
        pk, pv = prefix.keys[module.layer_idx], prefix.values[module.layer_idx]
        width = pk.shape[2]
        shared = torch.matmul(_to_chunks(q, prefix), pk.transpose(-1, -2)).float() * scaling
        shared = _from_chunks(shared, prefix).masked_fill(
            ~prefix.mask[prefix.row_chunk][:, None, None, :], -math.inf)
        weights = torch.softmax(torch.cat([shared, own], dim=-1), dim=-1).to(value.dtype)
        w_shared, w_own = weights.split([width, s], dim=-1)
        out = _from_chunks(torch.matmul(_to_chunks(w_shared, prefix), pv), prefix).float() \
            + torch.matmul(w_own, value).float()
    out = out.to(query.dtype).view(rows, kv_heads, group, t, d).reshape(rows, heads, t, d)
    return out.transpose(1, 2).contiguous(), None


@dataclass
class _Active:
    """Rows decoding together: their last logits, own-token cache (`_BufferLayer`s), shared
    prefixes, own-token mask (rows, width), next positions, query ids and prefix chunks."""

    logits: torch.Tensor
    cache: DynamicCache
    prefix: SharedPrefix
    mask: torch.Tensor
    position: torch.Tensor
    queries: list[int]
    chunks: list[int]


ATTENTION = "uniner_shared_prefix"
AttentionInterface.register(ATTENTION, shared_prefix_attention)
# a plain forward while the engine has the model switched builds SDPA's mask and runs SDPA
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


STATS = ("batches", "refills", "prefix_tokens", "prefix_slots", "suffix_tokens", "suffix_slots",
         "decode_tokens", "steps")


class Engine:
    """Greedy (or constrained) answers to many prompts, sharing each text's prompt prefix.

    Args:
        model: a causal LM (transformers, or a PEFT model around one).
        tokenizer: its tokenizer.
        max_new_tokens: answer length limit (256 as the official protocol).
        batch_tokens: KV slots per batch (each text's prefix once, rows x (suffix + new
            tokens)); bounds cache memory.
        batch_rows: queries per batch at most.
        decoding: `greedy`, or `constrained` (only JSON lists of strings found in the text).
        early_stop: stop a row at a stop token or `]`; False decodes exactly `max_new_tokens`
            (benchmarks of random-init models, which never stop on their own).
        style: the prompt style the model was trained with (default `UniNER`); renders the
            queries of `answer` and gives the stop tokens.
        refill: rows that finish make room for the plan's next texts while the others decode;
            False: a batch of the plan runs until its last row ends (finished rows still leave
            it). None (default): on an accelerator, where a decode step of few rows costs about
            as much as one of many, not on the CPU, where a step's cost follows its rows and the
            merges cost more than they save (experiments/RESULTS.md). Answers are the same.

    After `answer_prompts`, `stats` counts what its forward passes computed: `batches`
    (prefills), `refills` (prefills that joined rows still decoding);
    `prefix_tokens` / `prefix_slots` (real / with left padding), `suffix_tokens` / `suffix_slots`,
    `decode_tokens` (one per live row and step), `steps` (decode forward passes).
    """

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 256,
                 batch_tokens: int = BATCH_TOKENS, batch_rows: int = BATCH_ROWS,
                 decoding: str = "greedy", early_stop: bool = True,
                 style: PromptStyle | None = None, refill: bool | None = None):
        if decoding not in DECODINGS:
            raise ConfigError(f"decoding={decoding!r}: choose one of {', '.join(DECODINGS)}")
        if max_new_tokens < 1 or batch_tokens < 1 or batch_rows < 1:
            raise ConfigError(f"max_new_tokens={max_new_tokens}, batch_tokens={batch_tokens}, "
                              f"batch_rows={batch_rows}: each must be >= 1")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_tokens, self.batch_rows = (max_new_tokens, batch_tokens,
                                                                   batch_rows)
        self.decoding, self.early_stop = decoding, early_stop
        self.refill = refill
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        self.style = style or UniNER()
        self.stops = set(self.style.stop_ids(tokenizer))
        self.closing = set(closing_token_ids(tokenizer))
        self._trie: TokenTrie | None = None
        self._allowed_cache: dict[str, dict] = {}  # text -> grammar state -> allowed ids
        self.stats = dict.fromkeys(STATS, 0)
        # transformers 5.x renamed `past_key_values` to `cache` (the old name warns)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters \
            else "past_key_values"
        self._config = base.config
        self._n_layers = base.config.get_text_config(decoder=True).num_hidden_layers

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
        called with the number of queries answered as they finish."""
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("an empty prompt: nothing to condition the answer on")
        if self.decoding == "constrained" and self._trie is None:
            self._trie = TokenTrie(self.tokenizer)
        self._allowed_cache.clear()
        self.stats = dict.fromkeys(STATS, 0)
        answers = [""] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            plan = plan_batches(prompts, texts, max_new_tokens=self.max_new_tokens,
                                batch_tokens=self.batch_tokens, batch_rows=self.batch_rows)
            self._decode(plan, prompts, texts, answers, progress)
        finally:
            self.model.train(was_training)
        return answers

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, ids, mask, positions, cache, prefix: SharedPrefix | None = None):
        """One forward pass; with `prefix`, attention goes through `shared_prefix_attention` and
        `mask` is its (rows, 1, T, S) bool mask over the rows' own tokens."""
        kwargs = {self._cache_arg: cache}
        config, before = self._config, self._config._attn_implementation_internal
        if prefix is not None:
            kwargs["shared_prefix"] = prefix
            config._attn_implementation_internal = ATTENTION
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             use_cache=True, logits_to_keep=1, **kwargs)
        finally:
            config._attn_implementation_internal = before
        return out.logits[:, -1, :].float(), getattr(out, self._cache_arg)

    def _prefixes(self, prefixes: list[list[int]]):
        """The chunks' prefixes computed once each, in runs of similar length (left padding at
        most ~1/8 of a run's slots: texts differ in length even within a sorted batch), then
        left-padded into one cache of (chunks, kv heads, longest, head dim) per layer.
        Returns (keys per layer, values per layer, mask (chunks, longest))."""
        device = self._device()
        width = max(map(len, prefixes))
        mask = torch.zeros((len(prefixes), width), dtype=torch.bool, device=device)
        if width == 0:  # one-token prompts only: nothing shared
            return [], [], mask
        order = sorted(range(len(prefixes)), key=lambda k: len(prefixes[k]))
        empty = [k for k in order if not prefixes[k]]  # one-token prompts: zeros, all masked
        runs, run = [], []
        for k in order[len(empty):]:
            longest = len(prefixes[k])
            if run and 8 * longest * (len(run) + 1) > 9 * (
                    sum(len(prefixes[j]) for j in run) + longest):
                runs.append(run)
                run = []
            run.append(k)
        runs.append(run)
        keys: list[list[torch.Tensor]] = [[] for _ in range(self._n_layers)]
        values: list[list[torch.Tensor]] = [[] for _ in range(self._n_layers)]
        for run in runs:
            pids, pmask = (t.to(device) for t in left_pad([prefixes[k] for k in run], self.pad))
            positions = (pmask.cumsum(-1) - 1).masked_fill(pmask == 0, 1)
            _, cache = self._forward(pids, pmask, positions, None)
            pad = width - pids.shape[1]
            for layer, (ks, vs) in enumerate(zip(keys, values)):
                k, v = cache.layers[layer].keys, cache.layers[layer].values
                ks.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
                vs.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
            mask[run, pad:] = pmask.bool()
            self.stats["prefix_slots"] += pids.numel()
        if empty:
            for ks, vs in zip(keys, values):
                ks.append(ks[0].new_zeros((len(empty), *ks[0].shape[1:])))
                vs.append(vs[0].new_zeros((len(empty), *vs[0].shape[1:])))
            runs.append(empty)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor([k for run in runs for k in run])] = torch.arange(len(order))
        inverse = inverse.to(device)
        return ([torch.cat(ks)[inverse] for ks in keys], [torch.cat(vs)[inverse] for vs in values],
                mask)

    def _prefill(self, batch: list[_Chunk], prompts: Sequence[list[int]]) -> _Active:
        """Each chunk's shared prefix once (kept once per chunk), then every row's own suffix
        attending to its chunk's prefix in place: the rows ready for their first token."""
        device = self._device()
        prefixes = [prompts[c.rows[0]][: c.prefix_len] for c in batch]
        suffixes = [prompts[i][c.prefix_len:] for c in batch for i in c.rows]
        prefix_lens = torch.tensor([c.prefix_len for c in batch for _ in c.rows], device=device)

        ids, smask = (t.to(device) for t in left_pad(suffixes, self.pad))
        capacity = ids.shape[1] + self.max_new_tokens
        chunks = [k for k, c in enumerate(batch) for _ in c.rows]
        prefix = SharedPrefix.build(*self._prefixes(prefixes), chunks)
        positions = (prefix_lens[:, None] + smask.cumsum(-1) - 1).masked_fill(smask == 0, 1)
        width = ids.shape[1]
        causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
        # a real key at or before the query, and every query its own key (a padding query
        # attends to itself: no empty softmax whose NaN would reach the values)
        mask4 = (smask.bool()[:, None, None, :] & causal) \
            | torch.eye(width, dtype=torch.bool, device=device)
        logits, cache = self._forward(ids, mask4, positions,
                                      _buffer_cache(self._n_layers, capacity), prefix)
        st = self.stats
        st["batches"] += 1
        st["prefix_tokens"] += sum(map(len, prefixes))
        st["suffix_tokens"] += sum(map(len, suffixes))
        st["suffix_slots"] += ids.numel()
        return _Active(logits, cache, prefix, smask.bool(), positions[:, -1] + 1,
                       [i for c in batch for i in c.rows], chunks)

    def _take(self, queue: deque, prompts, active: _Active | None,
              live: int) -> list[_Chunk]:
        """The next chunks of the plan that fit beside the `live` rows of `active`: `batch_rows`
        rows and `batch_tokens` KV slots (each prefix once; every row as wide as the widest).
        None unless they are at least a quarter of `batch_rows` or the rest of the plan: a
        prefill of a few rows would cost more than it fills."""
        rows = live
        width = active.mask.shape[1] if active else 0
        prefix_slots = active.prefix.mask.numel() if active else 0
        taken: list[_Chunk] = []
        n_taken = 0
        for chunk in queue:
            w = max(width, max(len(prompts[i]) for i in chunk.rows) - chunk.prefix_len)
            n = rows + len(chunk.rows)
            if (taken or rows) and (n > self.batch_rows or n * (w + self.max_new_tokens)
                                    + prefix_slots + chunk.prefix_len > self.batch_tokens):
                break
            taken.append(chunk)
            n_taken += len(chunk.rows)
            rows, width, prefix_slots = n, w, prefix_slots + chunk.prefix_len
        if rows and live and len(taken) < len(queue) and 4 * n_taken < self.batch_rows:
            return []
        for _ in taken:
            queue.popleft()
        return taken

    def _merge(self, a: _Active | None, b: _Active) -> _Active:
        """The rows of `a` and `b` as one batch: their own caches left-padded to one width in a
        new buffer (leading slots no row uses dropped), their prefixes side by side (those no
        row of `a` uses any more dropped)."""
        if a is None:
            return b
        self.stats["refills"] += 1
        wa = a.mask.shape[1]
        start = int(a.mask.any(0).int().argmax())  # the first slot a live row uses
        wa -= start
        wb = b.mask.shape[1]
        width = max(wa, wb)
        ra, rows = len(a.queries), len(a.queries) + len(b.queries)
        cache = _buffer_cache(self._n_layers, width + self.max_new_tokens)
        for layer, la, lb in zip(cache.layers, a.cache.layers, b.cache.layers):
            layer.lazy_initialization(la.keys, la.values)
            shape = (rows, la.keys.shape[1], layer.capacity, la.keys.shape[-1])
            layer._keys, layer._values = la.keys.new_zeros(shape), la.values.new_zeros(shape)
            for buf, x, y in ((layer._keys, la.keys, lb.keys),
                              (layer._values, la.values, lb.values)):
                buf[:ra, :, width - wa: width] = x[:, :, start:]
                buf[ra:, :, width - wb: width] = y
            layer._view(width)
        mask = torch.zeros((rows, width), dtype=torch.bool, device=a.mask.device)
        mask[:ra, width - wa:] = a.mask[:, start:]
        mask[ra:, width - wb:] = b.mask
        # prefixes: the chunks a's rows still use, then b's
        used = sorted(set(a.chunks))
        renumber = {k: n for n, k in enumerate(used)}
        pa, pb = a.prefix, b.prefix
        if pa.keys and pb.keys:
            pw = max(pa.mask.shape[1], pb.mask.shape[1])
            index = torch.tensor(used, device=pa.mask.device)
            keys = [torch.cat([_left_pad_to(x[index], pw), _left_pad_to(y, pw)])
                    for x, y in zip(pa.keys, pb.keys)]
            values = [torch.cat([_left_pad_to(x[index], pw), _left_pad_to(y, pw)])
                      for x, y in zip(pa.values, pb.values)]
            pmask = torch.cat([torch.nn.functional.pad(pa.mask[index], (pw - pa.mask.shape[1], 0)),
                               torch.nn.functional.pad(pb.mask, (pw - pb.mask.shape[1], 0))])
        else:  # an empty prefix on one side (one-token prompts): rare, pad the other
            index = torch.tensor(used, device=pa.mask.device)
            src = pa.keys or pb.keys
            pw = src[0].shape[2] if src else 0

            def side(p: SharedPrefix, n: int, sel=None):
                if p.keys:
                    return ([x if sel is None else x[sel] for x in p.keys],
                            [x if sel is None else x[sel] for x in p.values])
                z = [x.new_zeros((n, *x.shape[1:])) for x in src]
                return z, z

            ka, va = side(pa, len(used), index)
            kb, vb = side(pb, pb.mask.shape[0])
            keys = [torch.cat([x, y]) for x, y in zip(ka, kb)]
            values = [torch.cat([x, y]) for x, y in zip(va, vb)]
            pmask = torch.zeros((len(used) + pb.mask.shape[0], pw), dtype=torch.bool,
                                device=pa.mask.device)
            if pa.keys:
                pmask[: len(used)] = pa.mask[index]
            if pb.keys:
                pmask[len(used):] = pb.mask
        chunks = [renumber[k] for k in a.chunks] + [len(used) + k for k in b.chunks]
        return _Active(torch.cat([a.logits, b.logits]), cache,
                       SharedPrefix.build(keys, values, pmask, chunks), mask,
                       torch.cat([a.position, b.position]), a.queries + b.queries, chunks)

    def _decode(self, plan: list[list[_Chunk]], prompts, texts, answers: list[str],
                progress: Callable[[int], None] | None) -> None:
        """Greedy decoding of the plan's queries. Finished rows leave the batch once they are a
        quarter of it; with refill, when a quarter of `batch_rows` is free, the plan's next
        chunks are prefilled and join the rows still decoding (a batch is never held by its
        slowest row)."""
        device = self._device()
        refill = device.type != "cpu" if self.refill is None else self.refill
        queue = deque(chunk for batch in plan for chunk in batch)
        tokens: dict[int, list[int]] = {}
        constrained: dict[int, ConstrainedRow] = {}
        active: _Active | None = None
        # bookkeeping in Python lists, one transfer a step: indexing a CUDA tensor row by row
        # would wait for the device at every row
        running: list[bool] = []
        while queue or active is not None:
            live = sum(running)
            if queue and (active is None or refill
                          and 4 * (self.batch_rows - live) >= self.batch_rows):
                chunks = self._take(queue, prompts, active, live)
                if chunks:
                    if active is not None and live < len(running):
                        active = self._select(active, running)
                    new = self._prefill(chunks, prompts)
                    for q in new.queries:
                        tokens[q] = []
                        if self.decoding == "constrained":
                            constrained[q] = ConstrainedRow(SpanListGrammar(texts[q]))
                    active = self._merge(active, new)
                    running = [True] * len(active.queries)
            if self.decoding == "constrained":
                next_ids = self._constrained_choice(active.logits, active.queries, running,
                                                    constrained)
            else:
                next_ids = active.logits.argmax(-1)
            done = 0
            for r, (q, token) in enumerate(zip(active.queries, next_ids.tolist())):
                if not running[r]:
                    continue
                if token < 0:  # the grammar allows no token: the answer ends here
                    running[r] = False
                else:
                    tokens[q].append(token)
                    if self.decoding == "constrained":
                        constrained[q].advance(self._trie.strings[token])
                        running[r] = not constrained[q].done
                    elif self.early_stop and (token in self.stops or token in self.closing):
                        running[r] = False
                    if len(tokens[q]) == self.max_new_tokens:
                        running[r] = False
                if not running[r]:
                    answers[q] = self._answer(tokens.pop(q), constrained.pop(q, None))
                    done += 1
            if progress is not None and done:
                progress(done)
            live = sum(running)
            if not live:
                active = None
                continue
            if 4 * live <= 3 * len(running):  # drop finished rows from the cache
                keep = torch.tensor([r for r, alive in enumerate(running) if alive],
                                    device=device)
                next_ids = next_ids[keep]
                active = self._select(active, running)
                running = [True] * live
            self.stats["steps"] += 1
            self.stats["decode_tokens"] += len(running)
            a = active
            a.mask = torch.cat([a.mask, a.mask.new_ones((len(running), 1))], dim=1)
            a.logits, a.cache = self._forward(next_ids.clamp(min=0)[:, None],
                                              a.mask[:, None, None, :], a.position[:, None],
                                              a.cache, a.prefix)
            a.position = a.position + 1

    def _select(self, a: _Active, running: list[bool]) -> _Active:
        """`a` with only its running rows (their cache compacted; the prefixes stay)."""
        keep = [r for r, alive in enumerate(running) if alive]
        index = torch.tensor(keep, device=a.mask.device)
        a.cache.batch_select_indices(index)
        a.prefix.select(index)
        return _Active(a.logits[index], a.cache, a.prefix, a.mask[index], a.position[index],
                       [a.queries[r] for r in keep], [a.chunks[r] for r in keep])

    def _answer(self, tokens: list[int], constrained: ConstrainedRow | None) -> str:
        if constrained is not None:
            return constrained.answer()
        return self.tokenizer.decode(tokens[:-1] if tokens and tokens[-1] in self.stops
                                     else tokens, skip_special_tokens=True).strip()

    def _constrained_choice(self, logits, live: list[int], running: list[bool],
                            rows: dict[int, ConstrainedRow]) -> torch.Tensor:
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
