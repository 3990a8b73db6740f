"""Greedy answers to benchmark queries.

`answer_queries` (used by `uniner-eval` and the LightningModule's val/test) goes through the
extraction engine (`engine.Engine`: shared passage prefixes, token-budget batches). The plain
batched `transformers.generate` path it replaced is kept as the reference the engine is compared
with, outside the package: `tests/reference_generate.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from uniner.data.prompts import PromptStyle
from uniner.inference.args import BATCH_TOKENS
from uniner.inference.engine import Engine
from uniner.inference.planner import encode_queries


def answer_queries(model, tokenizer, queries: Sequence, *, max_new_tokens: int = 256,
                   batch_size: int = 32, prompt_cache: dict | None = None,
                   batch_tokens: int = BATCH_TOKENS, decoding: str = "greedy",
                   style: PromptStyle,
                   progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answers to (text, type) queries (objects with `.text` and `.type`, such as
    `benchmark.Query`), each rendered in the prompt style the model was trained with up to
    where the answer starts.

    Answered by `engine.Engine` with at most `batch_size` queries and `batch_tokens` KV slots a
    batch. `prompt_cache` maps (text, type) to prompt ids and is filled as queries are encoded,
    so a caller that answers the same queries again (validation each epoch) tokenizes them once.
    `progress` is called with the number of queries answered after each batch.
    """
    cache = {} if prompt_cache is None else prompt_cache
    new = list(dict.fromkeys((q.text, q.type) for q in queries if (q.text, q.type) not in cache))
    engine = Engine(model, tokenizer, max_new_tokens=max_new_tokens, batch_tokens=batch_tokens,
                    batch_rows=batch_size, decoding=decoding, style=style)
    cache.update(zip(new, encode_queries(new, tokenizer, engine.style)))
    return engine.answer_prompts([cache[(q.text, q.type)] for q in queries],
                                 [q.text for q in queries], progress)
