"""The extraction engine: many (text, type) prompts answered at once around a KV cache.

`Engine` decodes by hand: each text's prompt prefix once (`attention`), token-budget batches
(`planner`); a `decoding.Decoder` chooses each row's next token and says where its answer ends
(greedy: at the style's stop tokens or the first token holding `]`, as the official parser reads
up to it; constrained: where `grammar.SpanListGrammar`'s list closes); finished rows leave the
cache, and (refill) the plan's next texts join the rows still decoding. Greedy answers equal
one-query `model.generate` (tests/test_extract.py).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from uniner.data.encoding import encode_prompt
from uniner.data.prompts import PromptStyle
from uniner.errors import ConfigError
from uniner.inference.args import BATCH_ROWS, BATCH_TOKENS, DECODINGS
from uniner.inference.attention import ATTENTION, SharedPrefix, buffer_cache, join_buffer_caches
from uniner.inference.decoding import DECODERS, NO_TOKEN
from uniner.inference.planner import Chunk, encode_queries, left_pad, plan_batches
from uniner.model.backbone import attention_of

MIN_REFILL_SHARE = 1 / 4  # of batch_rows: a prefill of fewer rows costs more than it fills
COMPACT_SHARE = 1 / 4  # finished rows leave the batch at this share of it: leaving copies caches
MAX_PREFIX_PADDING = 1 / 8  # per real token of a prefix run: past it, another pass costs less


@dataclass
class _Active:
    """Rows decoding together: their last logits, own-token cache (`attention.BufferLayer`s),
    shared prefixes, own-token mask (rows, width), next positions, query ids and prefix chunks."""

    logits: torch.Tensor
    cache: DynamicCache
    prefix: SharedPrefix
    mask: torch.Tensor
    position: torch.Tensor
    queries: list[int]
    chunks: list[int]


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
        style: the prompt style the model was trained with; renders the
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
                 style: PromptStyle, refill: bool | None = None):
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
        self.style = style
        self.stops = set(style.stop_ids())
        self._decoder = DECODERS[decoding](tokenizer, stops=self.stops, early_stop=early_stop)
        self.stats = dict.fromkeys(STATS, 0)
        # transformers 5.x renamed `past_key_values` to `cache` (the old name warns)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters \
            else "past_key_values"
        self._base = base
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
        self._decoder.begin()
        self.stats = dict.fromkeys(STATS, 0)
        answers = [""] * len(prompts)
        was_training = self.model.training
        attention = attention_of(self._base)
        self.model.eval()
        # the shared-prefix attention for the whole call (forwards without a prefix fall back
        # to SDPA in it), the model's own again after
        self._base.set_attn_implementation(ATTENTION)
        try:
            plan = plan_batches(prompts, texts, max_new_tokens=self.max_new_tokens,
                                batch_tokens=self.batch_tokens, batch_rows=self.batch_rows)
            self._decode(plan, prompts, texts, answers, progress)
        finally:
            self._base.set_attn_implementation(attention)
            self.model.train(was_training)
        return answers

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, ids, mask, positions, cache, prefix: SharedPrefix | None = None):
        """One forward pass; with `prefix`, attention goes through `shared_prefix_attention` and
        `mask` is its (rows, 1, T, S) bool mask over the rows' own tokens."""
        kwargs = {self._cache_arg: cache}
        if prefix is not None:
            kwargs["shared_prefix"] = prefix
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **kwargs)
        return out.logits[:, -1, :].float(), getattr(out, self._cache_arg)

    def _prefixes(self, prefixes: list[list[int]]):
        """The chunks' prefixes computed once each, in runs of similar length (left padding at
        most `MAX_PREFIX_PADDING` of a run's tokens: texts differ in length even within a sorted
        batch), then left-padded into one cache of (chunks, kv heads, longest, head dim) per layer.
        Returns (keys per layer, values per layer, mask (chunks, longest))."""
        device = self._device()
        width = max(map(len, prefixes))
        mask = torch.zeros((len(prefixes), width), dtype=torch.bool, device=device)
        if width == 0:  # one-token prompts only: nothing shared
            return [], [], mask
        order = sorted(range(len(prefixes)), key=lambda k: len(prefixes[k]))
        empty = [k for k in order if not prefixes[k]]  # one-token prompts: zeros, all masked
        runs, run, run_tokens = [], [], 0
        for k in order[len(empty):]:
            longest = len(prefixes[k])  # in length order: the run's longest if k joins it
            padding = longest * (len(run) + 1) - (run_tokens + longest)
            if run and padding > MAX_PREFIX_PADDING * (run_tokens + longest):
                runs.append(run)
                run, run_tokens = [], 0
            run.append(k)
            run_tokens += longest
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

    def _prefill(self, batch: list[Chunk], prompts: Sequence[list[int]]) -> _Active:
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
                                      buffer_cache(self._n_layers, capacity), prefix)
        st = self.stats
        st["batches"] += 1
        st["prefix_tokens"] += sum(map(len, prefixes))
        st["suffix_tokens"] += sum(map(len, suffixes))
        st["suffix_slots"] += ids.numel()
        return _Active(logits, cache, prefix, smask.bool(), positions[:, -1] + 1,
                       [i for c in batch for i in c.rows], chunks)

    def _take(self, queue: deque, prompts, active: _Active | None,
              live: int) -> list[Chunk]:
        """The next chunks of the plan that fit beside the `live` rows of `active`: `batch_rows`
        rows and `batch_tokens` KV slots (each prefix once; every row as wide as the widest).
        None beside live rows unless they are at least `MIN_REFILL_SHARE` of `batch_rows` or the
        rest of the plan."""
        rows = live
        width = active.mask.shape[1] if active else 0
        prefix_slots = active.prefix.mask.numel() if active else 0
        taken: list[Chunk] = []
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
        if (rows and live and len(taken) < len(queue)
                and n_taken < MIN_REFILL_SHARE * self.batch_rows):
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
        cache = join_buffer_caches(a.cache, b.cache, start, width,
                                   width + self.max_new_tokens)
        mask = torch.zeros((rows, width), dtype=torch.bool, device=a.mask.device)
        mask[:ra, width - wa:] = a.mask[:, start:]
        mask[ra:, width - wb:] = b.mask
        # prefixes: the chunks a's rows still use, then b's
        used = sorted(set(a.chunks))
        renumber = {k: n for n, k in enumerate(used)}
        chunks = [renumber[k] for k in a.chunks] + [len(used) + k for k in b.chunks]
        return _Active(torch.cat([a.logits, b.logits]), cache,
                       SharedPrefix.join(a.prefix, b.prefix, used, chunks), mask,
                       torch.cat([a.position, b.position]), a.queries + b.queries, chunks)

    def _decode(self, plan: list[list[Chunk]], prompts, texts, answers: list[str],
                progress: Callable[[int], None] | None) -> None:
        """The plan's queries decoded: the decoder chooses each row's next token and says where
        its answer ends (else `max_new_tokens` does). Finished rows leave the batch once they
        are `COMPACT_SHARE` of it; with refill, when `MIN_REFILL_SHARE` of `batch_rows` is free,
        the plan's next chunks are prefilled and join the rows still decoding (a batch is never
        held by its slowest row)."""
        device = self._device()
        refill = device.type != "cpu" if self.refill is None else self.refill
        queue = deque(chunk for batch in plan for chunk in batch)
        decoder = self._decoder
        tokens: dict[int, list[int]] = {}  # each unfinished query's answer tokens so far
        active: _Active | None = None
        # bookkeeping in Python lists, one transfer a step: indexing a CUDA tensor row by row
        # would wait for the device at every row
        running: list[bool] = []
        while queue or active is not None:
            live = sum(running)
            if queue and (active is None or refill and self.batch_rows - live
                          >= MIN_REFILL_SHARE * self.batch_rows):
                chunks = self._take(queue, prompts, active, live)
                if chunks:
                    if active is not None and live < len(running):
                        active = self._select(active, running)
                    new = self._prefill(chunks, prompts)
                    for q in new.queries:
                        tokens[q] = []
                        decoder.start(q, texts[q])
                    active = self._merge(active, new)
                    running = [True] * len(active.queries)
            next_ids = decoder.choose(active.logits, active.queries, running)
            done = 0
            for r, (q, token) in enumerate(zip(active.queries, next_ids.tolist())):
                if not running[r]:
                    continue
                ended = token == NO_TOKEN  # no token allowed: the answer ends here
                if not ended:
                    tokens[q].append(token)
                    ended = decoder.advance(q, token) or len(tokens[q]) == self.max_new_tokens
                if ended:
                    running[r] = False
                    answers[q] = decoder.answer(q, tokens.pop(q))
                    done += 1
            if progress is not None and done:
                progress(done)
            live = sum(running)
            if not live:
                active = None
                continue
            if len(running) - live >= COMPACT_SHARE * len(running):
                keep = torch.tensor([r for r, alive in enumerate(running) if alive],
                                    device=device)
                next_ids = next_ids[keep]
                active = self._select(active, running)
                running = [True] * live
            self._step(active, next_ids)

    def _step(self, a: _Active, next_ids: torch.Tensor) -> None:
        """One decode pass: each row of `a` takes its token of `next_ids` (a finished row's,
        maybe `NO_TOKEN`, is any valid id: its answer is already read)."""
        rows = len(a.queries)
        self.stats["steps"] += 1
        self.stats["decode_tokens"] += rows
        a.mask = torch.cat([a.mask, a.mask.new_ones((rows, 1))], dim=1)
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
