"""`uniner-distill`: annotate raw text with a teacher LLM into Pile-NER-type training data.

    uniner-distill input=corpus/ teacher=vllm teacher.model=Qwen/Qwen2.5-72B-Instruct

Reads text files, a directory of them or JSONL (`{"text": ...}`), cuts the text into passages of
up to `chunk_tokens` tokens on sentence boundaries, drops exact duplicates, optionally samples N,
asks the teacher about each passage with the paper's prompt (see `uniner.distill.teacher`), and
writes, in the Hydra run directory:

- `conversations.json`: the released Pile-NER-type format with each passage's positive types
  (`uniner-train data=pile_ner data.source.path=.../conversations.json` trains on it; negatives
  are drawn at training time by `sampling`),
- `annotations.jsonl`: per passage, the teacher's raw answer and what was kept or dropped,
- `accounting.json`: passages sent, answered, from the cache, failed (with reasons), entities kept
  and dropped, tokens used,
- `stats.json`/`stats.md` (`uniner.data.stats`) and `type_frequency.png`.

A "token", for `chunk_tokens`, is a regex word piece (a run of letters/digits/underscore, or one
other non-space character) unless `tokenizer=` names a Hugging Face tokenizer (a local directory
or hub id), whose tokens are then counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from uniner.config import CONF_DIR
from uniner.data.prompts import to_conversation_item
from uniner.data.records import DataError, Passage
from uniner.data.stats import corpus_stats, stats_markdown
from uniner.distill.annotate import parse_answer, to_passage
from uniner.distill.teacher import Answer, AnswerCache, Teacher, cache_key

log = logging.getLogger(__name__)

WORD_PIECE = re.compile(r"\w+|[^\w\s]")
# A sentence ends at . ! ? (with any closing quotes/brackets) before white space and a word that
# does not start lower-case; a blank line always ends one.
_SENT_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s)|\n[ \t]*\n""")
_NEXT = re.compile(r"""\s*["'“‘(\[]*(\S)""")
_ABBREV = {"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "etc", "e.g", "i.e", "fig",
           "no", "vol", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
           "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "mt", "gen", "col", "lt", "approx"}


class TokenCounter:
    """Counts tokens: regex word pieces, or a Hugging Face (fast) tokenizer's tokens."""

    def __init__(self, tokenizer: str | None = None):
        self.name = tokenizer or "regex word pieces"
        self.tok = None
        if tokenizer:
            from transformers import AutoTokenizer  # only when asked: it is slow to import

            self.tok = AutoTokenizer.from_pretrained(tokenizer)
            if not self.tok.is_fast:
                raise ValueError(f"tokenizer={tokenizer!r}: need a fast tokenizer (offsets)")

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


def sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, white space trimmed."""
    spans, start = [], 0
    for m in _SENT_END.finditer(text):
        if not m.group().startswith("\n"):
            nxt = _NEXT.match(text, m.end())
            if nxt is None or nxt.group(1).islower():  # "e.g. this", "3 p.m. today"
                continue
            if m.group()[0] in ".…":
                word = text[start:m.start()].rsplit(None, 1)[-1:] or [""]
                w = word[0].lower().lstrip("(\"'“‘")
                if w in _ABBREV or (len(w) == 1 and w.isalpha()):  # "Dr. Smith", "J. Smith"
                    continue
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        piece = text[s:e]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((s + lead, s + len(piece.rstrip())))
    return out


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
        raise ValueError("chunk_tokens must be >= 1")
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


def type_frequency_plot(passages: list[Passage], path: Path) -> None:
    """Entity types ranked by mention count, log-log (the long tail the paper describes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = Counter(m.type for p in passages for m in p.mentions)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    if ranked:
        ax.loglog(range(1, len(ranked) + 1), [c for _, c in ranked], marker=".", lw=1)
        for rank, (name, c) in enumerate(ranked[:5], 1):
            ax.annotate(name, (rank, c), fontsize=7, xytext=(4, 2), textcoords="offset points")
    else:
        ax.text(0.5, 0.5, "no entities", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("type rank")
    ax.set_ylabel("mentions")
    ax.set_title(f"{len(ranked):,} entity types, "
                 f"{sum(counts.values()):,} mentions in {len(passages):,} passages")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Annotate `cfg.input` with `cfg.teacher`; write the outputs; return the accounting."""
    out = Path(out_dir or HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("httpx", "httpx2", "openai"):  # no per-request INFO lines in the run log
        logging.getLogger(name).setLevel(logging.WARNING)

    counts: Counter = Counter()
    inputs = OmegaConf.to_container(cfg.input) if OmegaConf.is_list(cfg.input) else cfg.input
    docs = read_documents(inputs, cfg.text_field, cfg.on_error, counts)
    counter = TokenCounter(cfg.tokenizer)
    chunks = build_passages(docs, cfg.chunk_tokens, counter, cfg.sample, cfg.seed, counts)
    log.info("%d documents -> %d chunks of <= %d tokens (%s) -> %d passages", len(docs),
             counts["chunks"], cfg.chunk_tokens, counter.name, len(chunks))
    acct = {"input": inputs, "teacher": {"base_url": cfg.teacher.base_url,
                                         "model": cfg.teacher.model},
            "documents": len(docs), "chunk_tokens": cfg.chunk_tokens, "token": counter.name,
            "chunks": counts["chunks"], "duplicates_dropped": counts["duplicates dropped"],
            "not_sampled": counts["not sampled"],
            "malformed_rows_skipped": counts["malformed rows skipped"], "passages": len(chunks)}
    if cfg.dry_run:
        t = cfg.teacher
        cache = AnswerCache(cfg.cache)
        keys = [cache_key(c.text, t.model, t.temperature, t.max_tokens) for c in chunks]
        acct |= {"dry_run": True, "from_cache": sum(cache.get(k) is not None for k in keys),
                 "prompt_tokens_estimate": sum(counter.count(c.text) for c in chunks)}
        acct["to_send"] = acct["passages"] - acct["from_cache"]
        (out / "accounting.json").write_text(json.dumps(acct, indent=2, ensure_ascii=False))
        return acct

    teacher: Teacher = instantiate(cfg.teacher, cache=cfg.cache)
    state = Counter()
    bar = tqdm(total=len(chunks), desc="teacher", unit="passage", file=sys.stderr,
               disable=not cfg.progress, dynamic_ncols=True)

    def on_answer(i: int, answer: Answer) -> None:
        state["cached" if answer.cached else "answered" if answer.ok else "failed"] += 1
        if not answer.ok:
            log.warning("passage %s (%s) failed after %d attempt(s): %s: %s", chunks[i].id,
                        chunks[i].source, answer.attempts, answer.error, answer.detail)
        bar.set_postfix(state, refresh=False)
        bar.update()

    try:
        answers = teacher.annotate([c.text for c in chunks], on_answer)
    except KeyboardInterrupt:
        log.warning("interrupted: %d answers of this run are in the cache %s; the same command "
                    "resumes from there", state["answered"], cfg.cache)
        raise
    finally:
        bar.close()

    passages, failures, notes, parse_status = [], [], Counter(), Counter()
    fail_reasons: Counter = Counter()
    tokens = {"prompt": 0, "completion": 0}
    with open(out / "annotations.jsonl", "w", encoding="utf-8") as ann:
        for c, a in zip(chunks, answers):
            row = {"id": c.id, "source": c.source, "cached": a.cached}
            if a.ok:
                tokens["prompt"] += a.prompt_tokens
                tokens["completion"] += a.completion_tokens
                parsed = parse_answer(a.content)
                parse_status[parsed.status] += 1
                notes["malformed items"] += parsed.malformed_items
                if a.finish_reason == "length":
                    notes["truncated answers"] += 1
                row |= {"answer": a.content, "finish_reason": a.finish_reason,
                        "parse": parsed.status}
                if parsed.status == "unparseable":
                    a = Answer(a.key, error="unparseable answer", attempts=a.attempts)
                else:
                    p, n = to_passage(c.id, c.text, parsed.pairs,
                                      keep_ungrounded=cfg.keep_ungrounded,
                                      type_case=cfg.type_case)
                    notes.update(n)
                    notes["entities parsed"] += len(parsed.pairs)
                    passages.append(p)
                    row["entities"] = [[m.text, m.type] for m in p.mentions]
            if not a.ok:
                fail_reasons[a.error] += 1
                failures.append({"id": c.id, "source": c.source, "reason": a.error,
                                 "detail": a.detail, "attempts": a.attempts})
                row |= {"error": a.error, "detail": a.detail}
            ann.write(json.dumps(row, ensure_ascii=False) + "\n")

    items = [to_conversation_item(p, p.types) for p in passages]
    with open(out / "conversations.json", "w", encoding="utf-8") as f:
        json.dump(items, f, ensure_ascii=False, indent=1)

    u = teacher.usage
    acct |= {
        "from_cache": sum(a.cached for a in answers),
        "sent": sum(not a.cached for a in answers),
        "answered": sum(a.ok for a in answers),
        "annotated": len(passages),
        "failed": len(failures),
        "failed_reasons": dict(fail_reasons),
        "failures": failures,
        "passages_without_entities": sum(not p.mentions for p in passages),
        "parse": dict(parse_status),
        "truncated_answers": notes["truncated answers"],
        "malformed_items": notes["malformed items"],
        "entities_parsed": notes["entities parsed"],
        "entities_kept": sum(len(p.mentions) for p in passages),
        "grounded_after_normalising": notes["grounded after normalising"],
        "dropped_ungrounded": notes["ungrounded"],
        "ungrounded_kept": notes["ungrounded kept"],
        "dropped_empty": notes["empty entity or type"],
        "duplicates_merged": notes["duplicates merged"],
        "requests": u.requests,
        "retries": u.retries,
        "retry_reasons": dict(u.waits),
        "tokens": {**tokens, "total": tokens["prompt"] + tokens["completion"]},
        "tokens_this_run": {"prompt": u.prompt_tokens, "completion": u.completion_tokens,
                            "total": u.prompt_tokens + u.completion_tokens},
        "cache": str(Path(cfg.cache).expanduser()) if cfg.cache else None,
        "cache_torn_lines": teacher.cache.torn_lines,
    }
    (out / "accounting.json").write_text(json.dumps(acct, indent=2, ensure_ascii=False))

    dropped = {"passages failed": len(failures), "entities not in the passage":
               notes["ungrounded"], "duplicate chunks": counts["duplicates dropped"]}
    stats = {"source": inputs, "teacher": cfg.teacher.model,
             **corpus_stats(passages, dropped={k: v for k, v in dropped.items() if v})}
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
    (out / "stats.md").write_text(stats_markdown(stats))
    type_frequency_plot(passages, out / "type_frequency.png")
    log.info("%d passages: %d annotated (%d from the cache), %d failed %s; %d entities kept, "
             "%d dropped ungrounded; %d tokens this run", len(chunks), len(passages),
             acct["from_cache"], len(failures), dict(fail_reasons) or "", acct["entities_kept"],
             acct["dropped_ungrounded"], acct["tokens_this_run"]["total"])
    return acct


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="distill")
def main(cfg: DictConfig) -> None:
    try:
        acct = run(cfg)
    except KeyboardInterrupt:
        sys.exit(130)  # the cache is complete up to here; no traceback for a Ctrl-C
    out = HydraConfig.get().runtime.output_dir
    print(f"{acct['passages']} passages: {acct.get('annotated', 0)} annotated, "
          f"{acct.get('failed', 0)} failed; wrote {out}")


if __name__ == "__main__":
    main()
