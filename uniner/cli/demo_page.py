"""What the `uniner-demo` page answers and shows: the request's inputs (type names, presets from
the benchmark label maps, examples), the answer (`Demo`: passages answered in one engine call,
their entities mapped back onto the text) and its highlighted view (segments, colours)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from uniner.config import ASSETS, CONF_DIR
from uniner.errors import UserError
from uniner.inference.passages import shift_entities, split_passages

log = logging.getLogger(__name__)

SAMPLE = ASSETS / "sample.json"
DATASETS_DIR = Path(CONF_DIR) / "benchmark" / "datasets"
SAFETY_TOKENS = 8  # a passage may tokenize a little longer inside the prompt than alone
MIN_PASSAGE_TOKENS = 16
# Tableau 10: distinct; white labels read on them, black text on them at half opacity
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f", "#ff9da7",
           "#79706e", "#edc948", "#76b7b2")


class DemoError(UserError):
    """A problem the user can fix, said in one line (no traceback)."""


def error_summary(err: BaseException, limit: int = 300) -> str:
    """`err` as one line: its type and first line of message, cut at `limit` characters."""
    text = str(err).strip().splitlines()
    msg = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def parse_types(field_text: str | None) -> list[str]:
    """Entity type names from a comma (or newline or semicolon) separated field: stripped,
    blanks and repeats dropped, first-seen order kept."""
    parts = re.split(r"[,;\n]", field_text or "")
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def dataset_presets(names: Iterable[str], datasets_dir: str | Path = DATASETS_DIR
                    ) -> dict[str, list[str]]:
    """Type lists of benchmark datasets, read from their `label_map` in
    `conf/benchmark/datasets/<name>.yaml` (the official names; `null` ones, like misc, left out).
    A name without such a file or map is skipped with a warning."""
    out = {}
    for name in names:
        path = Path(datasets_dir) / f"{name}.yaml"
        node = OmegaConf.load(path) if path.is_file() else None
        label_map = node.get("label_map") if node is not None else None
        if not label_map:
            log.warning("preset %s: no label_map in %s; left out", name, path)
            continue
        out[name] = list(dict.fromkeys(v for v in label_map.values() if v))
    return out


def sample_examples(path: str | Path = SAMPLE, n: int = 5) -> list[tuple[str, list[str]]]:
    """The first `n` passages of a Pile-NER-type JSON file (the shipped sample by default), each
    with the types its conversation asks."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for row in rows[:n]:
        turns = [t["value"] for t in row["conversations"] if t["from"] == "human"]
        text = turns[0].removeprefix("Text: ")
        types = [m.group(1) for t in turns[1:]
                 if (m := re.fullmatch(r"What describes (.+) in the text\?", t))]
        out.append((text, list(dict.fromkeys(types))))
    return out


def read_examples(path: str | Path) -> list[tuple[str, list[str]]]:
    """Examples from JSON lines `{"text": ..., "types": [...]}` (uniner-predict's input)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((str(row["text"]), [str(t) for t in row["types"]]))
        except (ValueError, KeyError, TypeError) as err:
            raise DemoError(f"{path}:{lineno}: expected {{\"text\": ..., \"types\": [...]}} "
                            f"({error_summary(err)})") from None
    return out


# ------------------------------------------------------------------------------ highlighting


def highlight_segments(text: str, entities: Sequence[dict], type_order: Sequence[str] = ()
                       ) -> list[tuple[str, str | None]]:
    """The text as `(piece, label)` segments for a highlighted view, in order, covering it all.

    Segments are cut at every entity edge; a segment's label names every type covering it
    (`"city + location"` where entities overlap, in `type_order` then alphabetical order), None
    for plain text. Adjacent entities stay separate segments."""
    rank = {t: i for i, t in enumerate(type_order)}
    edges = sorted({0, len(text)} | {e["start"] for e in entities} | {e["end"] for e in entities})
    out: list[tuple[str, str | None]] = []
    for a, b in zip(edges, edges[1:]):
        if b <= a:
            continue
        types = {e["type"] for e in entities if e["start"] <= a and e["end"] >= b}
        label = " + ".join(sorted(types, key=lambda t: (rank.get(t, len(rank)), t))) or None
        if label is None and out and out[-1][1] is None:
            out[-1] = (out[-1][0] + text[a:b], None)
        else:
            out.append((text[a:b], label))
    return out


def color_map(labels: Iterable[str], types: Sequence[str]) -> dict[str, str]:
    """A colour per label: each type its palette colour (by its position in `types`), a
    combined label (`a + b`) the average of its types' colours."""
    def rgb(t: str) -> tuple[int, ...]:
        i = types.index(t) if t in types else sum(map(ord, t))
        c = PALETTE[i % len(PALETTE)]
        return tuple(int(c[k: k + 2], 16) for k in (1, 3, 5))

    out = {}
    for label in labels:
        parts = [rgb(t) for t in label.split(" + ")]
        out[label] = "#" + "".join(f"{sum(ch) // len(parts):02x}" for ch in zip(*parts))
    return out


@dataclass
class Answer:
    """What the page shows: the highlighted segments, the entities (JSON) and a status line."""

    segments: list[tuple[str, str | None]] | None
    entities: list[dict] | None
    message: str
    ok: bool
    colors: dict[str, str] = field(default_factory=dict)


def error(message: str) -> Answer:
    return Answer(None, None, f"⚠️ {message}", False)


class Demo:
    """Answers the page's requests with an `Extractor`-like object (`extract(texts, types)`).

    Args:
        extractor: the model; `extract(list_of_texts, types)` returns entities per text.
        count_tokens: tokens of a passage alone.
        prompt_tokens: tokens of the prompt around an empty passage for a type.
        context: tokens a prompt and its answer may take.
        max_new_tokens: tokens an answer may take.
        max_chars: longest text accepted.
    """

    def __init__(self, extractor, *, count_tokens: Callable[[str], int],
                 prompt_tokens: Callable[[str], int], context: int, max_new_tokens: int,
                 max_chars: int = 100_000):
        self.extractor, self.count_tokens, self.prompt_tokens = extractor, count_tokens, \
            prompt_tokens
        self.context, self.max_new_tokens, self.max_chars = context, max_new_tokens, max_chars

    def budget(self, types: Sequence[str]) -> int:
        """Tokens a passage may take so that every type's prompt and answer fit the context."""
        overhead = max(self.prompt_tokens(t) for t in types)
        return self.context - self.max_new_tokens - overhead - SAFETY_TOKENS

    def answer(self, text: str | None, types_field: str | None) -> Answer:
        text = text or ""
        types = parse_types(types_field)
        if not text.strip():
            return error("**No text**: paste or type a text in the box, or click an example.")
        if not types:
            return error("**No entity types**: name at least one, comma separated (e.g. "
                         "`person, location`), or choose a preset.")
        if len(text) > self.max_chars:
            return error(f"**Text too long**: {len(text):,} characters; this page takes at most "
                         f"{self.max_chars:,} (`max_chars=`). Use `uniner-predict` for files.")
        budget = self.budget(types)
        if budget < MIN_PASSAGE_TOKENS:
            return error(f"**Type names too long**: with them the model's context "
                         f"({self.context} tokens, {self.max_new_tokens} kept for the answer) "
                         "leaves no room for the text. Use shorter type names.")
        started = time.perf_counter()
        try:
            spans = split_passages(text, self.count_tokens, budget)
            found = self.extractor.extract([text[s:e] for s, e in spans], types)
            entities = shift_entities(text, spans, found)
        except Exception as err:  # the page shows one line; the terminal the traceback
            log.exception("extraction failed")
            return error(f"**Extraction failed**: {error_summary(err)} (the traceback is in the "
                         "terminal).")
        seconds = time.perf_counter() - started
        segments = highlight_segments(text, entities, types)
        colors = color_map(dict.fromkeys(lab for _, lab in segments if lab), types)
        n_types = len({e["type"] for e in entities})
        message = (f"{len(entities)} entit{'y' if len(entities) == 1 else 'ies'} of {n_types} "
                   f"type{'' if n_types == 1 else 's'} ({len(types)} asked, "
                   f"{len(types) * len(spans)} queries) in {seconds:.2f} s.")
        if len(spans) > 1:
            message += (f" The text is longer than the model's context ({budget} tokens of text "
                        f"a query): it was read as {len(spans)} passages, cut between sentences; "
                        "an entity across a cut can be missed.")
        return Answer(segments, entities, message, True, colors)
