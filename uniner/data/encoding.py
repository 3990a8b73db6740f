"""Token ids and labels of conversations, turn by turn.

Each segment of a conversation is tokenized on its own (no special tokens, but special tokens
written in a segment's text, such as a chat template's, are read as such), the backbone's BOS goes
first where it uses one (unless the prompt style writes its own: `auto_bos=False`), and its EOS
closes every `eos` segment. Labels copy the ids of
unmasked turns (and their EOS) and are `ignore_index` elsewhere, so nothing is searched for after
the fact. Inference prompts go through the same function, so a query's ids are exactly the prefix
the model was trained on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from uniner.data.prompts import Message

IGNORE_INDEX = -100


def bos_id(tokenizer) -> int | None:
    """The BOS id if the tokenizer puts one in front of a text by itself (LLaMA yes, Qwen no)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return ids[0] if tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id] \
        else None


def token_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Ids of many texts without special tokens: the Rust tokenizer's `encode_batch_fast` where
    there is one (twice the speed: no offsets, no `BatchEncoding`), the same ids either way."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if tokenizer.is_fast else None
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return [e.ids for e in backend.encode_batch_fast(list(texts), add_special_tokens=False)]
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def assemble(messages: Sequence[Message], segment_ids: Sequence[list[int]], *, bos: int | None,
             eos: int, max_length: int | None, ignore_index: int = IGNORE_INDEX,
             dropped: Counter | None = None) -> dict | None:
    """Join tokenized segments into `input_ids` and `labels`, respecting `max_length`.

    The policy never cuts an answer in half: whole trailing question/answer turns are dropped to
    fit; a conversation that cannot keep even its passage and one question is dropped (None).
    Both are counted in `dropped`.
    """
    pieces: list[tuple[list[int], list[int]]] = []
    for msg, ids in zip(messages, segment_ids):
        ids = list(ids) + ([eos] if msg.eos else [])
        pieces.append((ids, [ignore_index] * len(ids) if msg.masked else ids))
    input_ids = [bos] if bos is not None else []
    labels = [ignore_index] * len(input_ids)
    # pieces: the passage prompt, the read reply, then (question, answer) pairs
    turns = [pieces[:2]] + [pieces[i: i + 2] for i in range(2, len(pieces), 2)]
    kept = 0
    for turn in turns:
        if max_length is not None and len(input_ids) + sum(len(i) for i, _ in turn) > max_length:
            break
        for ids, lab in turn:
            input_ids += ids
            labels += lab
        kept += 1
    if kept < 2 and len(turns) >= 2 or kept == 0:
        if dropped is not None:
            dropped["passage too long for one question"] += 1
        return None
    if kept < len(turns) and dropped is not None:
        dropped["trailing turns cut by max_length"] += len(turns) - kept
    return {"input_ids": input_ids, "labels": labels}


def encode_conversations(conversations: Sequence[Sequence[Message]], tokenizer, *,
                         max_length: int | None, ignore_index: int = IGNORE_INDEX,
                         dropped: Counter | None = None, auto_bos: bool = True
                         ) -> list[dict | None]:
    """Encode many conversations with one batched call of the (fast) tokenizer."""
    flat = [m.content for conv in conversations for m in conv]
    ids = token_ids(tokenizer, flat) if flat else []
    bos, eos = bos_id(tokenizer) if auto_bos else None, tokenizer.eos_token_id
    out, at = [], 0
    for conv in conversations:
        out.append(assemble(conv, ids[at: at + len(conv)], bos=bos, eos=eos,
                            max_length=max_length, ignore_index=ignore_index, dropped=dropped))
        at += len(conv)
    return out


def encode_prompts(prompts: Sequence[Sequence[Message]], tokenizer, *,
                   auto_bos: bool = True) -> list[list[int]]:
    """Ids of inference prompts (conversations ending with a user turn); each distinct segment
    (a passage's head, a type's question) is tokenized once, in one batched call."""
    segments = list(dict.fromkeys(m.content for msgs in prompts for m in msgs))
    ids = dict(zip(segments, token_ids(tokenizer, segments))) if segments else {}
    bos, eos = bos_id(tokenizer) if auto_bos else None, tokenizer.eos_token_id
    head = [bos] if bos is not None else []
    return [head + [i for m in msgs for i in ids[m.content] + ([eos] if m.eos else [])]
            for msgs in prompts]


def encode_prompt(messages: Sequence[Message], tokenizer, *, auto_bos: bool = True) -> list[int]:
    """Ids of one inference prompt (`encode_prompts` of one)."""
    return encode_prompts([messages], tokenizer, auto_bos=auto_bos)[0]
