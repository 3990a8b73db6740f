"""Speed on the real student (SmolLM2-135M-Instruct), side by side in one run, on this machine.

Training: `uniner-train experiment=real_student` for `--steps` steps in each variant (a fresh
process each; the same batches), non-pad tokens/s of the steps after the first (the median of
`train/tokens_per_s`) and the peak RSS: the chosen recipe (bf16 autocast, the chunked
loss) against the plain fp32 loss, and the variants tried for the recipe.
Answering: the same zero-shot queries (the first `--sentences` sentences of CrossNER AI x its 13
types, prompt=chat) answered by the engine and by batched `generate`, queries/s and the share of
identical answers, with the tuned export given by `--export` (short list answers, as in use).

    python experiments/bench_real_student.py --export outputs/real_student/train/export
    python experiments/bench_real_student.py --skip-train --export DIR       # answering only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_VARIANTS = {  # label -> overrides on experiment=real_student
    "recipe: full, bf16-mixed, chunked loss, 3,072-token length-grouped batches": [],
    "the same, 16 random pieces padded to the longest":
        ["data.batch_tokens=null", "data.batch_size=16"],
    "full, fp32, plain loss": ["trainer.precision=32-true", "module.kernels=plain"],
    "LoRA r=8 q/v, bf16-mixed, chunked": ["adapter=lora", "optimizer.lr=5e-4"],
}


def train_speed(overrides: list[str], steps: int, root: Path) -> dict:
    run = root / str(abs(hash(tuple(overrides))))
    command = ["uniner-train", "experiment=real_student", "logger=csv", "export=false",
               f"trainer.max_steps={steps}", "trainer.log_every_n_steps=1",
               "benchmark.max_sentences=1", f"hydra.run.dir={run}", *overrides]
    subprocess.run(command, check=True, capture_output=True)
    rows = [r for r in csv.DictReader(open(next(run.glob("csv/*/metrics.csv"))))
            if r.get("train/tokens_per_s")][1:]  # the first step warms up
    return {"tokens_per_s": statistics.median(float(r["train/tokens_per_s"]) for r in rows),
            "steps_measured": len(rows),
            "peak_rss_gib": max(float(r["train/peak_rss_gib"]) for r in rows)}


def answer_speed(export: str, sentences: int, batch_size: int) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from uniner.config import CONF_DIR
    from uniner.data.prompts import prompt_style
    from uniner.evaluation.benchmark import load_benchmark
    from uniner.inference.planner import encode_queries
    from uniner.inference.query_answers import answer_queries
    from uniner.model.export import load_trained

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from reference_generate import generate_answers

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", [f"benchmark.max_sentences={sentences}",
                               f"paths.data_root={os.environ['UNINER_DATA']}"])
    queries, _ = load_benchmark(cfg.benchmark)
    queries = [q for q in queries if q.dataset == "crossner_ai"]
    model, tokenizer = load_trained(export, device="cpu", dtype="fp32")
    style = prompt_style("chat", tokenizer)
    out = {"queries": len(queries), "threads": torch.get_num_threads()}
    start = time.perf_counter()
    engine = answer_queries(model, tokenizer, queries, max_new_tokens=64, style=style)
    out["engine_q_per_s"] = len(queries) / (time.perf_counter() - start)
    prompts = encode_queries([(q.text, q.type) for q in queries], tokenizer, style)
    start = time.perf_counter()
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=64,
                               batch_size=batch_size)
    out["generate_q_per_s"] = len(queries) / (time.perf_counter() - start)
    out["identical"] = sum(a == b for a, b in zip(engine, batched)) / len(queries)
    out["speedup"] = out["engine_q_per_s"] / out["generate_q_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--export", help="a tuned export for the answering bench")
    parser.add_argument("--sentences", type=int, default=30)
    parser.add_argument("--generate-batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("UNINER_DATA", str(Path(__file__).resolve().parents[2] / "shared/data"))
    result = {"machine": f"{platform.node()} {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M")}
    if not args.skip_train:
        with tempfile.TemporaryDirectory() as tmp:
            result["train"] = {label: train_speed(o, args.steps, Path(tmp))
                               for label, o in TRAIN_VARIANTS.items()}
        base = result["train"]["full, fp32, plain loss"]["tokens_per_s"]
        print("| training variant | tokens/s | vs fp32 plain | peak RSS GiB |")
        print("|---|---:|---:|---:|")
        for label, m in result["train"].items():
            print(f"| {label} | {m['tokens_per_s']:.0f} | {m['tokens_per_s'] / base:.2f}x | "
                  f"{m['peak_rss_gib']:.1f} |")
    if args.export:
        a = answer_speed(args.export, args.sentences, args.generate_batch_size)
        result["answer"] = a
        print(f"\n{a['queries']} CrossNER AI queries, prompt=chat, fp32, {a['threads']} threads: "
              f"engine {a['engine_q_per_s']:.1f} q/s, batched generate (bs "
              f"{args.generate_batch_size}) {a['generate_q_per_s']:.1f} q/s: "
              f"{a['speedup']:.2f}x; identical answers {100 * a['identical']:.1f}%")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
