"""The reference the extraction engine is compared with (tests/test_extract.py and the
benchmarks in experiments/): plain batched `transformers.generate`, the path `engine.Engine`
replaced. Prompts sorted by length and left-padded; a row stops at EOS or as soon as it has
produced a `]` (the official parser reads up to the first `]`, so nothing after it can change a
score)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from uniner.inference.planner import closing_token_ids, left_pad


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
    """Greedy answers (decoded, stripped) for prompt id lists, in the order given; the model's
    train mode is restored, even on an error."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            ids, mask = left_pad([prompts[i] for i in rows], pad)
            width = ids.shape[1]
            stops = (StoppingCriteriaList([ListClosed(tokenizer, width)]) if stop_at_list_close
                     else None)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                                 stopping_criteria=stops)
            for r, i in enumerate(rows):
                answers[i] = tokenizer.decode(out[r, width:], skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return answers
