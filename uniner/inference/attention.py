"""The shared-prefix attention of the engine and its KV buffers: the queries of one text attend
to that text's prompt prefix in place (kept once per text, never copied per query), the scores
over the prefix and over the row's own tokens softmaxed together (`shared_prefix_attention`, a
registered `AttentionInterface`); the rows' own tokens are cached in buffers written in place
(`BufferLayer`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from uniner.errors import ConfigError


class BufferLayer(DynamicLayer):
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


def buffer_cache(n_layers: int, capacity: int) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = [BufferLayer(capacity) for _ in range(n_layers)]
    return cache


def join_buffer_caches(a: DynamicCache, b: DynamicCache, start: int, width: int,
                       capacity: int) -> DynamicCache:
    """The rows of `a` (from slot `start` on) then those of `b`, left-padded to `width` slots in
    a new buffer cache of `capacity`."""
    cache = buffer_cache(len(a.layers), capacity)
    for layer, la, lb in zip(cache.layers, a.layers, b.layers):
        ra, rows = la.keys.shape[0], la.keys.shape[0] + lb.keys.shape[0]
        wa, wb = la.keys.shape[2] - start, lb.keys.shape[2]
        layer.lazy_initialization(la.keys, la.values)
        shape = (rows, la.keys.shape[1], layer.capacity, la.keys.shape[-1])
        layer._keys, layer._values = la.keys.new_zeros(shape), la.values.new_zeros(shape)
        for buf, x, y in ((layer._keys, la.keys, lb.keys),
                          (layer._values, la.values, lb.values)):
            buf[:ra, :, width - wa: width] = x[:, :, start:]
            buf[ra:, :, width - wb: width] = y
        layer._view(width)
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

    @classmethod
    def join(cls, pa: SharedPrefix, pb: SharedPrefix, used: list[int],
             chunks: Sequence[int]) -> SharedPrefix:
        """The prefixes `used` of `pa` (those its rows still use), then all of `pb`'s, side by
        side and left-padded to one width; `chunks`: each row's chunk in the joined numbering."""
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
        return cls.build(keys, values, pmask, chunks)


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
    if shared_prefix is None:  # the engine's prefix passes, or another thread's forward
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask,
                                               scaling=scaling, dropout=dropout, **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        # answering with the plain attention here would silently ignore them: wrong answers
        raise ConfigError("the extraction engine attends over shared prefixes without logit "
                          "softcapping or attention sinks, which this model uses; answer it "
                          "with engine=vllm (uniner-eval) or a LLaMA/Mistral/Qwen2 backbone")
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



ATTENTION = "uniner_shared_prefix"
AttentionInterface.register(ATTENTION, shared_prefix_attention)
# a plain forward while the engine has the model switched builds SDPA's mask and runs SDPA
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
