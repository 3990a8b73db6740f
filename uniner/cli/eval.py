"""`uniner-eval`: score a checkpoint, or the outputs of any other engine, on a benchmark.

    uniner-eval checkpoint=outputs/train/<run>/export benchmark=zero_shot
    uniner-eval predictions=outputs.jsonl benchmark=zero_shot metric=both

`predictions=` reads JSON lines `{"id": <query id>, "output": <raw model text>}`; the ids are
those of `uniner-prepare mode=benchmark` (or of the official files, for `format: uniner_json`).
Writes, in the Hydra run directory, `predictions.jsonl` (one line per query: id, dataset, type,
raw output, parsed items, gold), `metrics.json` (`{dataset: {precision, recall, f1, ...}, ...,
"average": {...}}` plus `per_domain`, `counts`, `missing`, `metric`) and `results.md`, the paper's
table. `uniner-train` scores its test through the same `evaluate`.

Metrics: `uniner` (the official metric), `strict` (spans, with seqeval) or `both`; see
`uniner.evaluation.scoring`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from uniner.cli.checks import check_eval
from uniner.cli.entry import run_tool, tool
from uniner.cli.loggers import build_loggers, finish, log_results
from uniner.config import CONF_DIR
from uniner.errors import ConfigError
from uniner.evaluation.benchmark import Query, load_benchmark
from uniner.evaluation.scoring import (
    evaluate,
    flat_metrics,
    match_predictions,
    read_predictions,
    write_outputs,
)
from uniner.inference.args import ENGINES, GenerationArgs
from uniner.progress import progress


def generate_outputs(cfg: DictConfig, queries: Sequence[Query]) -> list[str]:
    """Greedy answers of `cfg.checkpoint` (any export or HF causal LM directory) from the engine
    `cfg.engine`: `hf` (`engine.Engine`, through `answer_queries`) or `vllm`."""
    engine = cfg.get("engine", "hf")
    if engine not in ENGINES:
        raise ConfigError(f"engine={engine!r}: choose one of {', '.join(ENGINES)}")
    gen = GenerationArgs.of(cfg)
    if engine == "vllm":
        from uniner.inference.vllm import vllm_answers

        if gen.quant is not None or gen.decoding != "greedy":
            raise ConfigError("engine=vllm loads the model as saved and decodes greedily: "
                              "quant= and decoding=constrained are engine=hf options")
        return vllm_answers(gen.checkpoint, [(q.text, q.type) for q in queries],
                            max_new_tokens=gen.max_new_tokens, dtype=gen.dtype,
                            prompt=gen.prompt)
    from uniner.data.prompts import load_prompt_style
    from uniner.inference.query_answers import answer_queries
    from uniner.model.export import load_trained

    model, tokenizer = load_trained(gen.checkpoint, quant=gen.quant, device=gen.device,
                                    dtype=gen.dtype)
    style = load_prompt_style(gen.checkpoint, tokenizer, gen.prompt)  # as trained
    with progress("answer", len(queries), "queries", enabled=cfg.get("progress", True)) as bar:
        return answer_queries(model, tokenizer, queries, max_new_tokens=gen.max_new_tokens,
                              batch_size=gen.batch_size, batch_tokens=gen.batch_tokens,
                              decoding=gen.decoding, style=style, progress=bar.update)


def run(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Answer (or read the answers of) `cfg.benchmark`, score, write and log; returns
    metrics.json's content. `checks.check_eval` has checked the config (one of checkpoint and
    predictions)."""
    queries, missing = load_benchmark(cfg.benchmark)
    if not queries:
        raise ConfigError(f"benchmark={cfg.benchmark.name}: no dataset file found "
                          f"(missing: {', '.join(missing)}); is paths.data_root right?")
    unknown = 0
    if cfg.predictions is not None:
        outputs, unknown = match_predictions(queries, read_predictions(cfg.predictions),
                                             allow_missing=cfg.allow_missing,
                                             source=str(cfg.predictions))
    else:
        outputs = generate_outputs(cfg, queries)
    ev = evaluate(queries, outputs, metric=cfg.metric, missing=missing, unknown_ids=unknown)
    metrics = write_outputs(out_dir, ev)
    loggers = build_loggers(cfg, job_type="eval")
    try:
        for lg in loggers:
            lg.log_metrics(flat_metrics(ev))
        log_results(loggers, ev, files_dir=out_dir)
    finally:
        finish(loggers, finalize=True)
    print(ev.table())
    return metrics


@tool("uniner-eval")
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> float:
    out = HydraConfig.get().runtime.output_dir
    metrics = run_tool("uniner-eval", lambda: check_eval(cfg), lambda: run(cfg, out), out)
    print(f"wrote predictions.jsonl, metrics.json and results.md to {out}")
    return metrics["average"]["f1"]


if __name__ == "__main__":
    main()
