"""Fast extraction: many (text, type) queries answered at once, and entities with character spans.

`Engine` answers prompts with greedy decoding written by hand around a KV cache:
- **shared prefixes**: the queries of one text share their prompt up to the type's name (the
  passage, the read reply, `USER: What describes`); that prefix is computed once per text, its
  cache copied to every query of the text, and only each type's few suffix tokens are prefilled;
- **token-budget batches**: texts sorted by length, as many queries per batch as fit
  `batch_tokens` KV slots (prefix + suffix + new tokens per row) and `batch_rows` rows; prefixes
  and suffixes are left-padded, positions counted over real tokens only;
- a row stops at EOS or at the first token holding `]` (the official parser reads up to the first
  `]`); finished rows are dropped from the cache once they are half of the batch.
Greedy answers are the same as one-query-at-a-time `model.generate` (tests/test_extract.py).

`decoding="constrained"` masks the logits so an answer can only be a JSON list of strings that
occur in the text (`SpanListGrammar`). `Extractor` wraps the engine: texts and types in, grounded
entities out.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers.cache_utils import DynamicLayer

from uniner.data.encoding import encode_prompt, encode_prompts
from uniner.data.prompts import UniNER
from uniner.evaluation.metric import ground_spans, parse_mentions

DECODINGS = ("greedy", "constrained")
BATCH_TOKENS = 65536  # KV slots per batch: 32 GiB of bf16 cache for LLaMA-7B
BATCH_ROWS = 512


def closing_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens that contain `]` (a JSON list closes in them)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [i for i, tok in enumerate(vocab) if tok and "]" in tok]


def encode_queries(queries: Sequence[tuple[str, str]], tokenizer) -> list[list[int]]:
    """`encoding.encode_prompts` of every (text, type) query in the training template."""
    style = UniNER()
    return encode_prompts([style.query(text, type_) for text, type_ in queries], tokenizer)


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


# ------------------------------------------------------------------------------ constrained


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


class _TokenTrie:
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
class _ConstrainedRow:
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
        return UniNER.answer(dict.fromkeys(self.items or []))


# ------------------------------------------------------------------------------ the engine


class Engine:
    """Greedy (or constrained) answers to many prompts, sharing each text's prompt prefix.

    Args:
        model: a causal LM (transformers, or a PEFT model around one).
        tokenizer: its tokenizer.
        max_new_tokens: answer length limit (256 as the official protocol).
        batch_tokens: KV slots per batch (rows x (prompt + new tokens)); bounds cache memory.
        batch_rows: queries per batch at most.
        decoding: `greedy`, or `constrained` (only JSON lists of strings found in the text).
        early_stop: stop a row at EOS or `]`; False decodes exactly `max_new_tokens` (benchmarks
            of random-init models, which never stop on their own).
    """

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 256,
                 batch_tokens: int = BATCH_TOKENS, batch_rows: int = BATCH_ROWS,
                 decoding: str = "greedy", early_stop: bool = True):
        if decoding not in DECODINGS:
            raise ValueError(f"decoding={decoding!r}: choose one of {', '.join(DECODINGS)}")
        if max_new_tokens < 1 or batch_tokens < 1 or batch_rows < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}, batch_tokens={batch_tokens}, "
                             f"batch_rows={batch_rows}: each must be >= 1")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_tokens, self.batch_rows = (max_new_tokens, batch_tokens,
                                                                   batch_rows)
        self.decoding, self.early_stop = decoding, early_stop
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        self.eos = tokenizer.eos_token_id
        self.closing = set(closing_token_ids(tokenizer))
        self._trie: _TokenTrie | None = None
        self._allowed_cache: dict[str, dict] = {}  # text -> grammar state -> allowed ids
        self._style = UniNER()
        # transformers 5.x renamed `past_key_values` to `cache` (the old name warns)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters \
            else "past_key_values"

    def prompt(self, text: str, type_: str) -> list[int]:
        """The ids of a (text, type) query, as training renders it up to `ASSISTANT:`."""
        return encode_prompt(self._style.query(text, type_), self.tokenizer)

    def answer(self, queries: Sequence[tuple[str, str]],
               progress: Callable[[int], None] | None = None) -> list[str]:
        """Answers (stripped text) to (text, type) queries, in the order given."""
        prompts = encode_queries(queries, self.tokenizer)
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
            self._trie = _TokenTrie(self.tokenizer)
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
        constrained = [_ConstrainedRow(SpanListGrammar(texts[i])) for i in rows] \
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
                elif self.early_stop and (token == self.eos or token in self.closing):
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
        return [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]

    def _constrained_choice(self, logits, live: list[int], running: list[bool],
                            rows: list[_ConstrainedRow]) -> torch.Tensor:
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

    def _allowed(self, row: _ConstrainedRow) -> list[int]:
        per_text = self._allowed_cache.setdefault(row.grammar.text, {})
        if row.state not in per_text:
            per_text[row.state] = self._trie.allowed(row.grammar, row.state)
        return per_text[row.state]


# ------------------------------------------------------------------------------ extractor


@dataclass(frozen=True)
class Entity:
    """One grounded mention: `text[start:end]` of the input text, of type `type`."""

    text: str
    type: str
    start: int
    end: int

    def to_dict(self) -> dict:
        return asdict(self)


def ground_entities(text: str, type_: str, answer: str) -> list[Entity]:
    """Every occurrence in `text` of every item of an answer (official parser), as entities.

    Items not found in the text are dropped; the entity's `text` is the text's own characters
    (a case-insensitive match keeps the text's case).
    """
    items = [i for i in parse_mentions(answer)[0] if isinstance(i, str)]
    return [Entity(text[s:e], type_, s, e) for item in items
            for s, e in ground_spans(text, [item]).spans]


def _types_per_text(texts: list[str], types) -> list[list[str]]:
    """`types` for every text, or one list per text; duplicates and blank names removed."""
    types = list(types)
    if types and all(isinstance(t, list | tuple) for t in types):
        if len(types) != len(texts):
            raise ValueError(f"{len(types)} type lists for {len(texts)} texts")
        per_text = [list(t) for t in types]
    else:
        per_text = [types] * len(texts)
    for lst in per_text:
        bad = [t for t in lst if not isinstance(t, str)]
        if bad:
            raise ValueError(f"entity types must be strings, got {bad[:3]}")
    return [list(dict.fromkeys(t.strip() for t in lst if t.strip())) for lst in per_text]


class Extractor:
    """Entities of any types in any texts, with character offsets.

        from uniner import Extractor
        ex = Extractor.from_pretrained("outputs/train/<run>/export")
        ex.extract(["Ada Lovelace met Charles Babbage in London."], ["person", "location"])
        # [[Entity(text='Ada Lovelace', type='person', start=0, end=12), ...]]

    Args:
        model: a causal LM trained with the UniNER template.
        tokenizer: its tokenizer.
        **engine: `Engine` options (max_new_tokens, batch_tokens, batch_rows, decoding).
    """

    def __init__(self, model, tokenizer, **engine):
        self.engine = Engine(model, tokenizer, **engine)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | None = None,
                        dtype: str | None = None, quant=None, max_new_tokens: int = 256,
                        batch_tokens: int = BATCH_TOKENS, batch_rows: int = BATCH_ROWS,
                        decoding: str = "greedy") -> Extractor:
        """Load an export of `uniner-train` (adapter, merged or full model) or any HF causal LM
        directory or hub id (e.g. a released UniNER model).

        Args:
            path: the directory or hub id.
            device: where the weights go; None = CUDA when present, else the CPU.
            dtype: auto | bf16 | fp16 | fp32; None = as trained (see `backbone.load_trained`).
            quant: a `quant` group (`{"name": "nf4", "bits": 4}`) to load the base in; None = as
                trained.
            max_new_tokens, batch_tokens, batch_rows, decoding: see `Engine`.
        """
        from uniner.model.backbone import load_trained

        model, tokenizer = load_trained(path, quant=quant, device=device, dtype=dtype)
        return cls(model, tokenizer, max_new_tokens=max_new_tokens, batch_tokens=batch_tokens,
                   batch_rows=batch_rows, decoding=decoding)

    def extract(self, texts: str | Sequence[str], types: Sequence[str] | Sequence[Sequence[str]],
                progress: Callable[[int], None] | None = None
                ) -> list[Entity] | list[list[Entity]]:
        """Entities of `types` in each text, sorted by position.

        Args:
            texts: the texts; a single string gives the list of its entities directly.
            types: entity type names asked of every text, or one list of names per text.
            progress: called with the number of (text, type) queries answered after each batch.

        Returns:
            Per text, every occurrence of every predicted mention: `Entity(text, type, start,
            end)` with `text[start:end] == entity.text`. An empty text or type list gives [].
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts must be strings, got {type(bad[0]).__name__}")
        per_text = _types_per_text(texts, types)
        queries = [(k, t) for k, text in enumerate(texts) if text.strip() for t in per_text[k]]
        answers = self.engine.answer([(texts[k], t) for k, t in queries], progress) \
            if queries else []
        out: list[list[Entity]] = [[] for _ in texts]
        for (k, t), answer in zip(queries, answers):
            out[k] += ground_entities(texts[k], t, answer)
        for ents in out:
            ents.sort(key=lambda e: (e.start, e.end, e.type))
        return out[0] if single else out



# ------------------------------------------------------------------------------ serving


def vllm_answers(checkpoint: str | Path, queries: Sequence[tuple[str, str]], *,
                 max_new_tokens: int = 256, dtype: str | None = None) -> list[str]:
    """Greedy answers to (text, type) queries from vLLM: the same prompt ids (`encode_queries`
    with the checkpoint's tokenizer), a stop at EOS or after the first `]`, stripped text.

    Raises:
        ImportError: vLLM is not installed (`pip install 'uniner[vllm]'`).
        ValueError: an adapter export (vLLM needs a full or merged model).
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise ImportError("engine=vllm needs vLLM, which is not installed: pip install "
                          "'uniner[vllm]' (Linux with CUDA); engine=hf, the default, runs "
                          "without it") from None
    from transformers import AutoTokenizer

    if (Path(checkpoint) / "adapter_config.json").is_file():
        raise ValueError(f"engine=vllm: {checkpoint} is a LoRA adapter export; vLLM needs a full "
                         "model: export with merge_lora=true, or use engine=hf")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    prompts = encode_queries(queries, tokenizer)
    dtypes = {None: "auto", "auto": "auto", "bf16": "bfloat16", "fp16": "float16",
              "fp32": "float32"}
    llm = LLM(model=str(checkpoint), dtype=dtypes[dtype], enable_prefix_caching=True)
    # the official parser reads up to the first `]`: stop there, keeping the `]`
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=["]"],
                            include_stop_str_in_output=True)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    return [o.outputs[0].text.strip() for o in outputs]
