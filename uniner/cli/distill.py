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

A "token", for `chunk_tokens`, is a regex word piece unless `tokenizer=` names a Hugging Face
tokenizer (`uniner.distill.chunking`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from uniner.cli.entry import tool, user_errors
from uniner.config import CONF_DIR
from uniner.data.prompts import to_conversation_item
from uniner.data.stats import corpus_stats, stats_markdown, type_frequency_plot
from uniner.distill.annotate import parse_answer, to_passage
from uniner.distill.chunking import TokenCounter, build_passages, read_documents
from uniner.distill.teacher import Answer, AnswerCache, Teacher, cache_key
from uniner.progress import progress, run_directory

log = logging.getLogger(__name__)

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
    bar = progress("teacher", len(chunks), "passages", enabled=cfg.progress)

    def on_answer(i: int, answer: Answer) -> None:
        state["cached" if answer.cached else "answered" if answer.ok else "failed"] += 1
        if not answer.ok:
            log.warning("passage %s (%s) failed after %d attempt(s): %s: %s", chunks[i].id,
                        chunks[i].source, answer.attempts, answer.error, answer.detail)
        bar.update(1, **state)

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


@tool("uniner-distill", torch_threads=False)
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="distill")
def main(cfg: DictConfig) -> None:
    out = HydraConfig.get().runtime.output_dir
    run_directory(out)
    try:
        with user_errors("uniner-distill"):
            try:
                acct = run(cfg)
            finally:
                run_directory(out)
    except KeyboardInterrupt:
        sys.exit(130)  # the cache is complete up to here; no traceback for a Ctrl-C
    print(f"{acct['passages']} passages: {acct.get('annotated', 0)} annotated, "
          f"{acct.get('failed', 0)} failed; wrote {out}")


if __name__ == "__main__":
    main()
