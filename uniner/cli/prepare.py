"""`uniner-prepare`: write the training conversations of a `data` + `sampling` choice, and stats.

    uniner-prepare data=bio data.source.path=train.txt sampling=uniform
    uniner-prepare mode=benchmark benchmark=zero_shot

Writes, in the Hydra run directory, `conversations.json` (the released Pile-NER-type format, so
any other trainer can use it), `stats.json` and `stats.md`. With `mode=benchmark`: one
`<dataset>.json` per dataset of the benchmark in the official evaluation form (one query per
item, gold answer last, ids those `uniner-eval predictions=` matches) and `benchmark.json`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from uniner.cli.checks import check_prepare
from uniner.cli.entry import run_tool, tool
from uniner.config import CONF_DIR  # also registers the `asset` resolver
from uniner.data.datamodule import encode_rows, render_rows
from uniner.data.prompts import prompt_style, to_conversation_item
from uniner.data.records import ReadReport
from uniner.data.sources import load_passages
from uniner.data.stats import corpus_stats, stats_markdown
from uniner.errors import ConfigError
from uniner.evaluation.benchmark import load_benchmark, query_item
from uniner.model.backbone import build_tokenizer

log = logging.getLogger(__name__)


def reader_drops(report: ReadReport) -> Counter:
    """What a reader skipped or dropped, as stats entries."""
    dropped = Counter(report.notes)
    if report.skipped_rows:
        dropped["malformed rows skipped"] += report.skipped_rows
    if report.dropped_mentions:
        dropped["mentions of dropped types"] += report.dropped_mentions
    return dropped


def write_benchmark(cfg: DictConfig, out: Path) -> dict:
    """Write each dataset's queries of `cfg.benchmark` in the official evaluation form; returns
    the counts per dataset and the missing datasets."""
    queries, missing = load_benchmark(cfg.benchmark)
    per: dict[str, list] = {}
    for q in queries:
        per.setdefault(q.dataset, []).append(q)
    datasets = {}
    for name, qs in per.items():
        with open(out / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump([query_item(q) for q in qs], f, ensure_ascii=False, indent=1)
        datasets[name] = {"file": f"{name}.json", "queries": len(qs),
                          "sentences": len({q.sentence for q in qs}),
                          "types": len({q.type for q in qs})}
    summary = {"benchmark": cfg.benchmark.name, "datasets": datasets, "missing": missing}
    (out / "benchmark.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def run(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Build, write and return the stats of the conversations of `cfg.data` and `cfg.sampling`
    (`mode=benchmark`: the queries of `cfg.benchmark`, see `write_benchmark`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mode = cfg.get("mode", "train")
    if mode == "benchmark":  # the released form: no tokenizer, no prompt style
        return write_benchmark(cfg, out)
    if mode != "train":
        raise ConfigError(f"mode={mode!r}: choose train or benchmark")
    tokenizer = build_tokenizer(cfg.backbone)
    style = prompt_style(cfg.prompt, tokenizer)
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    report = ReadReport(str(source.get("path")))
    passages = load_passages(source, report)
    sampler = instantiate(cfg.sampling)
    queries = sampler.queries(passages, epoch=cfg.epoch)

    items = [to_conversation_item(p, q) for p, q in zip(passages, queries)]
    with open(out / "conversations.json", "w", encoding="utf-8") as f:
        json.dump(items, f, ensure_ascii=False, indent=1)

    rows = render_rows(passages, queries, style=style,
                       train_on_read_reply=cfg.data.train_on_read_reply)
    encoded, dropped = encode_rows(rows, tokenizer, max_length=cfg.data.max_length,
                                   cache_dir=cfg.data.cache_dir and Path(cfg.data.cache_dir
                                                                         ).expanduser(),
                                   cache_max_gb=cfg.data.cache_max_gb,
                                   auto_bos=style.auto_bos)
    dropped = reader_drops(report) + dropped
    lengths = [len(ids) for ids in encoded["input_ids"]]
    stats = corpus_stats(passages, queries, lengths, dict(dropped))
    stats = {"source": source.get("path"), "sampling": sampler.strategy,
             "tokenizer": tokenizer.name_or_path, "max_length": cfg.data.max_length, **stats}
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
    (out / "stats.md").write_text(stats_markdown(stats))
    return stats


@tool("uniner-prepare", torch_threads=False)
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    out = HydraConfig.get().runtime.output_dir
    stats = run_tool("uniner-prepare", lambda: check_prepare(cfg), lambda: run(cfg, out), out)
    if cfg.mode == "benchmark":
        for name, d in stats["datasets"].items():
            print(f"{name}: {d['queries']} queries = {d['sentences']} sentences x {d['types']} "
                  "types")
        for name in stats["missing"]:
            print(f"{name}: missing (no file)")
        print(f"wrote {len(stats['datasets'])} <dataset>.json files and benchmark.json to {out}")
        return
    print(stats_markdown(stats))
    print(f"wrote conversations.json, stats.json and stats.md to {out}")


if __name__ == "__main__":
    main()
