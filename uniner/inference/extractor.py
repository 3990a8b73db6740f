"""The public extraction API: `Extractor` takes texts and types, gives grounded `Entity`s."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from uniner.data.answers import parse_mentions
from uniner.data.prompts import PromptStyle, load_prompt_style, prompt_style
from uniner.data.spans import occurrences
from uniner.inference.args import BATCH_ROWS, BATCH_TOKENS
from uniner.inference.engine import Engine


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
    return [Entity(text[s:e], type_, s, e) for item in items for s, e in occurrences(text, item)]


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
        model: a causal LM trained on UniNER conversations.
        tokenizer: its tokenizer.
        style: the prompt style it was trained with (default `UniNER`; `from_pretrained` reads
            an export's).
        **engine: `Engine` options (max_new_tokens, batch_tokens, batch_rows, decoding).
    """

    def __init__(self, model, tokenizer, *, style: PromptStyle | None = None, **engine):
        # the public entry point: the recipe's template unless told (as `from_pretrained` is)
        self.engine = Engine(model, tokenizer, style=style or prompt_style("uniner", tokenizer),
                             **engine)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | None = None,
                        dtype: str | None = None, quant=None, max_new_tokens: int = 256,
                        batch_tokens: int = BATCH_TOKENS, batch_rows: int = BATCH_ROWS,
                        decoding: str = "greedy", prompt: str | None = None) -> Extractor:
        """Load an export of `uniner-train` (adapter, merged or full model) or any HF causal LM
        directory or hub id (e.g. a released UniNER model).

        Args:
            path: the directory or hub id.
            device: where the weights go; None = CUDA when present, else the CPU.
            dtype: auto | bf16 | fp16 | fp32; None = as trained (see `export.load_trained`).
            quant: a `quant` group (`{"name": "nf4", "bits": 4}`) to load the base in; None = as
                trained.
            max_new_tokens, batch_tokens, batch_rows, decoding: see `Engine`.
            prompt: the prompt style (`uniner`, `chat`); None = as trained (the export records
                it; `uniner` for other model directories).
        """
        from uniner.model.export import load_trained

        model, tokenizer = load_trained(path, quant=quant, device=device, dtype=dtype)
        return cls(model, tokenizer, style=load_prompt_style(path, tokenizer, prompt),
                   max_new_tokens=max_new_tokens, batch_tokens=batch_tokens,
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
