"""Raw text to teacher-sized passages: documents read from text or JSONL files, cut on sentence
boundaries into chunks of at most `chunk_tokens` tokens, exact duplicates dropped, optionally
sampled.

A "token" is a regex word piece (a run of letters/digits/underscore, or one other non-space
character) unless `TokenCounter` is given a Hugging Face tokenizer (a local directory or hub id),
whose tokens are then counted.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from uniner.data.pieces import sentences
from uniner.data.records import DataError
from uniner.errors import ConfigError

WORD_PIECE = re.compile(r"\w+|[^\w\s]")
class TokenCounter:
    """Counts tokens: regex word pieces, or a Hugging Face (fast) tokenizer's tokens."""

    def __init__(self, tokenizer: str | None = None):
        self.name = tokenizer or "regex word pieces"
        self.tok = None
        if tokenizer:
            from transformers import AutoTokenizer  # only when asked: it is slow to import

            self.tok = AutoTokenizer.from_pretrained(tokenizer)
            if not self.tok.is_fast:
                raise ConfigError(f"tokenizer={tokenizer!r}: need a fast tokenizer (offsets)")

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of `text`."""
        if self.tok is None:
            return [m.span() for m in WORD_PIECE.finditer(text)]
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]

    def count(self, text: str) -> int:
        if self.tok is None:
            return sum(1 for _ in WORD_PIECE.finditer(text))
        return len(self.tok(text, add_special_tokens=False)["input_ids"])


def _split_long(text: str, s: int, e: int, limit: int, counter: TokenCounter) -> list[tuple]:
    """Cut a sentence longer than `limit` into pieces of at most `limit` tokens, at white space
    where there is some in reach."""
    out, spans = [], [(a + s, b + s) for a, b in counter.spans(text[s:e])]
    i = 0
    while i < len(spans):
        j = min(i + limit, len(spans)) - 1
        if j < len(spans) - 1:  # prefer the last cut between two tokens with a space between
            # white space between the spans (word pieces) or opening the next (BPE offsets)
            j = next((k for k in range(j, i, -1) if spans[k][1] < spans[k + 1][0]
                      or text[spans[k + 1][0]:spans[k + 1][0] + 1].isspace()), j)
        a, b = spans[i][0], spans[j][1]
        while j > i and counter.count(text[a:b]) > limit:  # re-tokenizing may merge differently
            j -= 1
            b = spans[j][1]
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        out.append((a + lead, a + len(piece.rstrip())))
        i = j + 1
    return out


def chunk(text: str, limit: int, counter: TokenCounter) -> list[str]:
    """`text` cut into passages of at most `limit` tokens, whole sentences packed greedily.

    A sentence longer than `limit` is cut on its own, at white space where possible.
    """
    if limit < 1:
        raise ConfigError("chunk_tokens must be >= 1")
    units = []
    for s, e in sentences(text):
        units += [(s, e)] if counter.count(text[s:e]) <= limit else _split_long(
            text, s, e, limit, counter)
    chunks, cur = [], None
    for s, e in units:
        if cur is not None and counter.count(text[cur[0]:e]) <= limit:
            cur = (cur[0], e)
            continue
        if cur is not None:
            chunks.append(text[cur[0]:cur[1]])
        cur = (s, e)
    if cur is not None:
        chunks.append(text[cur[0]:cur[1]])
    return chunks


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")
                      and p.is_file())
    if not path.exists():
        raise DataError("no such file or directory", path)
    return [path]


def read_documents(inputs: str | list[str], text_field: str = "text",
                   on_error: str = "raise", counts: Counter | None = None) -> list[tuple[str, str]]:
    """(source, text) of every document: a `.txt` file is one document, a JSONL line another."""
    counts = counts if counts is not None else Counter()
    docs = []
    for path in [Path(p).expanduser() for p in ([inputs] if isinstance(inputs, str) else inputs)]:
        for f in _files(path):
            if f.suffix != ".jsonl":
                docs.append((str(f), f.read_text(encoding="utf-8")))
                continue
            with open(f, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        text = row[text_field]
                        if not isinstance(text, str):
                            raise TypeError
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        if on_error != "skip":
                            raise DataError(f"expected a JSON object with a string "
                                            f"{text_field!r} field", f, n) from e
                        counts["malformed rows skipped"] += 1
                        continue
                    docs.append((f"{f}:{n}", text))
    return docs


@dataclass
class Chunk:
    id: str
    text: str
    source: str


def build_passages(docs: list[tuple[str, str]], chunk_tokens: int, counter: TokenCounter,
                   sample: int | None = None, seed: int = 42,
                   counts: Counter | None = None) -> list[Chunk]:
    """Chunks of the documents, exact duplicates (after white-space normalisation) dropped, and
    a seeded random sample of `sample` of them if given (in corpus order)."""
    counts = counts if counts is not None else Counter()
    out, seen = [], set()
    for source, text in docs:
        for piece in chunk(text, chunk_tokens, counter):
            counts["chunks"] += 1
            norm = " ".join(piece.split())
            if norm in seen:
                counts["duplicates dropped"] += 1
                continue
            seen.add(norm)
            h = hashlib.sha256(norm.encode()).hexdigest()[:16]
            out.append(Chunk(f"distill_{h}", piece, source))
    if sample is not None and sample < len(out):
        keep = sorted(random.Random(seed).sample(range(len(out)), sample))
        counts["not sampled"] += len(out) - sample
        out = [out[i] for i in keep]
    return out
