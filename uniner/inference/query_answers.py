"""Greedy answers to benchmark queries.

`answer_queries` (used by `uniner-eval` and the LightningModule's val/test) goes through the
extraction engine (`engine.Engine`: shared passage prefixes, token-budget batches).
`generate_answers` is the plain batched `transformers.generate` path it replaced, kept as the
reference the engine is compared with (tests, `experiments/bench_extract.py`): prompts sorted by
length and left-padded; a row stops at EOS or as soon as it has produced a `]` (the official
parser reads up to the first `]`, so nothing after it can change a score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from uniner.data.prompts import PromptStyle
from uniner.inference.engine import BATCH_TOKENS, Engine
from uniner.inference.planner import closing_token_ids, encode_queries, left_pad


class ListClosed(StoppingCriteria):
    """Per row: stop once a generated token contains `]`."""

    def __init__(self, tokenizer, prompt_width: int):
        self.closing = torch.tensor(closing_token_ids(tokenizer), dtype=torch.long)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_width:]
        return torch.isin(new, self.closing.to(new.device)).any(dim=1)


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: Sequence[list[int]], *, max_new_tokens: int = 256,
                     batch_size: int = 32, stop_at_list_close: bool = True) -> list[str]:
    """Greedy answers (decoded, stripped) for prompt id lists, in the order given."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        ids, mask = left_pad([prompts[i] for i in rows], pad)
        width = ids.shape[1]
        stops = StoppingCriteriaList([ListClosed(tokenizer, width)]) if stop_at_list_close else None
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                             stopping_criteria=stops)
        for r, i in enumerate(rows):
            answers[i] = tokenizer.decode(out[r, width:], skip_special_tokens=True).strip()
    model.train(was_training)
    return answers


def answer_queries(model, tokenizer, queries: Sequence, *, max_new_tokens: int = 256,
                   batch_size: int = 32, prompt_cache: dict | None = None,
                   batch_tokens: int = BATCH_TOKENS, decoding: str = "greedy",
                   style: PromptStyle | None = None,
                   progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answers to (text, type) queries (objects with `.text` and `.type`, such as
    `benchmark.Query`), each rendered in the prompt style the model was trained with (default
    `UniNER`) up to where the answer starts.

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
