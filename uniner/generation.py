"""Batched greedy answers for many prompts with plain `transformers.generate`.

Prompts are sorted by length and left-padded; a row stops at EOS or as soon as it has produced a
`]` (the official parser reads up to the first `]`, so nothing after it can change a score).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from uniner.encoding import encode_prompt
from uniner.prompts import UniNER


class ListClosed(StoppingCriteria):
    """Per row: stop once a generated token contains `]`."""

    def __init__(self, tokenizer, prompt_width: int):
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        closing = [i for i, tok in enumerate(vocab) if tok and "]" in tok]
        self.closing = torch.tensor(closing, dtype=torch.long)
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
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            p = prompts[i]
            ids[r, width - len(p):] = torch.as_tensor(p)
            mask[r, width - len(p):] = 1
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
                   batch_size: int = 32, prompt_cache: dict | None = None) -> list[str]:
    """Greedy answers to (text, type) queries (objects with `.text` and `.type`, such as
    `benchmark.Query`), each rendered with the training template up to `ASSISTANT:`.

    `prompt_cache` maps (text, type) to prompt ids and is filled as queries are encoded, so a
    caller that answers the same queries again (validation each epoch) tokenizes them once.
    """
    style, cache = UniNER(), {} if prompt_cache is None else prompt_cache
    prompts = []
    for q in queries:
        key = (q.text, q.type)
        if key not in cache:
            cache[key] = encode_prompt(style.query(q.text, q.type), tokenizer)
        prompts.append(cache[key])
    return generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                            batch_size=batch_size)
