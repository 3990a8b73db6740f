"""Queries per second answering benchmark queries: one `generate` per query, batched `generate`,
and the extraction engine, on the same queries and the same model in one run.

    python experiments/bench_extract.py                      # tiny backbone, this CPU
    python experiments/bench_extract.py --arch llama-7b --device cuda --dtype bf16 \\
        --sentences 200 --single-queries 64 --output bench_extract_gpu.json

Queries: the first `--sentences` sentences of a CrossNER test split (`$UNINER_DATA`) x all types
of that dataset, rendered with the training template. Modes:
  (a) one query per `model.generate` call, as the official `hf.py` path (on the first
      `--single-queries` queries only: it is slow);
  (b) `generation.generate_answers`, plain batched `generate` (left-padded, length-sorted), at
      each of `--generate-batch-sizes`;
  (c) `engine.Engine` (shared passage prefixes, token-budget batches).
Random weights never stop on their own, so every mode decodes exactly `--new-tokens` tokens (no
EOS, no `]` stop). (b) and (c) must give the same answers; the share that do is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from uniner.config import CONF_DIR
from uniner.data.datasets import dataset_entries
from uniner.evaluation.benchmark import dataset_queries, load_benchmark
from uniner.inference.answers import generate_answers
from uniner.inference.engine import Engine, encode_queries
from uniner.model.backbone import build_tokenizer

DATA = Path(os.environ.get("UNINER_DATA", "../shared/data"))
# the LLaMA-7B architecture (huggyllama/llama-7b's config), random-init, with a 32k LLaMA-style
# tokenizer from the shared data
LLAMA_7B = {"name": "llama-7b-random", "tokenizer": str(DATA / "tokenizer_sp32k"),
            "config": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=32,
                           intermediate_size=11008, vocab_size=32000,
                           max_position_embeddings=2048, rms_norm_eps=1e-6,
                           tie_word_embeddings=False)}


def compose_node(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides))


def build_model(arch: str, device: str, dtype: str):
    """A random-init model of `arch`, created directly on `device` (7B initialises in seconds on
    a GPU, minutes on a CPU), and its tokenizer."""
    if arch == "tiny":
        backbone = OmegaConf.to_container(compose_node("+backbone=tiny").backbone, resolve=True)
    else:
        backbone = LLAMA_7B
    tokenizer = build_tokenizer(backbone)
    kwargs = dict(backbone["config"])
    config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs,
                                  bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            config, dtype={"fp32": torch.float32, "bf16": torch.bfloat16,
                           "fp16": torch.float16}[dtype], attn_implementation="sdpa")
    return model.eval(), tokenizer


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=["tiny", "llama-7b"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--dataset", default="crossner_ai", help="a CrossNER node of the benchmark")
    ap.add_argument("--sentences", type=int, default=60)
    ap.add_argument("--new-tokens", type=int, default=12)
    ap.add_argument("--single-queries", type=int, default=60, help="queries timed in mode (a)")
    ap.add_argument("--generate-batch-sizes", default="32,256",
                    help="mode (b) batch sizes; 32 is generation.generate_answers' default")
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--batch-rows", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 on a shared CPU: OpenMP barriers stall when other "
                         "processes hold a core)")
    ap.add_argument("--estimate-zero-shot", action="store_true",
                    help="count the 7 zero-shot datasets' queries and estimate their time")
    ap.add_argument("--output", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = compose_node(f"paths.data_root={DATA}", "benchmark=zero_shot")
    node = next(d for d in dataset_entries(cfg.benchmark.datasets) if d["name"] == args.dataset)
    queries = dataset_queries(node, args.sentences)
    model, tokenizer = build_model(args.arch, args.device, args.dtype)
    pairs = [(q.text, q.type) for q in queries]
    prompts = encode_queries(pairs, tokenizer)
    texts = [q.text for q in queries]
    n_new = args.new_tokens
    model.generation_config.min_new_tokens = n_new  # no EOS stop in (a) and (b)
    print(f"{args.arch} on {args.device} ({args.dtype}, {torch.get_num_threads()} threads): "
          f"{len(queries)} queries = {args.sentences} sentences of {args.dataset} x "
          f"{len(queries) // max(1, len({q.sentence for q in queries}))} types, "
          f"mean prompt {sum(map(len, prompts)) / len(prompts):.0f} tokens, {n_new} new tokens")

    def one_by_one():
        out = []
        for p in prompts[: args.single_queries]:
            ids = torch.tensor([p], device=args.device)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=n_new, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            out.append(tokenizer.decode(gen[0, len(p):], skip_special_tokens=True).strip())
        return out

    engine = Engine(model, tokenizer, max_new_tokens=n_new, batch_tokens=args.batch_tokens,
                    batch_rows=args.batch_rows, early_stop=False)
    # warm-up: kernels, allocator, tokenizer caches
    engine.answer_prompts(prompts[:16], texts[:16])
    generate_answers(model, tokenizer, prompts[:16], max_new_tokens=n_new,
                     stop_at_list_close=False)

    results: dict = {"arch": args.arch, "device": args.device, "dtype": args.dtype,
                     "threads": torch.get_num_threads(), "dataset": args.dataset,
                     "sentences": args.sentences, "queries": len(queries), "new_tokens": n_new,
                     "torch": torch.__version__, "machine": platform.node()}
    single, dt = timed(one_by_one, args.device)
    results["a_one_query_per_generate"] = {"queries": len(single), "seconds": dt,
                                           "queries_per_s": len(single) / dt}
    batched = {}
    for bs in (int(b) for b in args.generate_batch_sizes.split(",")):
        answers, dt = timed(lambda bs=bs: generate_answers(
            model, tokenizer, prompts, max_new_tokens=n_new, batch_size=bs,
            stop_at_list_close=False), args.device)
        batched[bs] = answers
        results[f"b_batched_generate_bs{bs}"] = {"seconds": dt, "queries_per_s": len(prompts) / dt}
    fast, dt = timed(lambda: engine.answer_prompts(prompts, texts), args.device)
    results["c_engine"] = {"seconds": dt, "queries_per_s": len(prompts) / dt,
                           "batch_tokens": args.batch_tokens, "batch_rows": args.batch_rows}
    first = next(iter(batched.values()))
    results["engine_equals_batched_generate"] = sum(a == b for a, b in zip(fast, first)) / len(fast)
    results["engine_equals_one_by_one"] = sum(a == b for a, b in zip(fast, single)) / len(single)
    best_b = max(results[f"b_batched_generate_bs{bs}"]["queries_per_s"] for bs in batched)
    default_b = results[f"b_batched_generate_bs{next(iter(batched))}"]["queries_per_s"]
    results["ratio_engine_to_first_b"] = results["c_engine"]["queries_per_s"] / default_b
    results["ratio_engine_to_best_b"] = results["c_engine"]["queries_per_s"] / best_b
    if args.estimate_zero_shot:
        all_queries, missing = load_benchmark(cfg.benchmark)
        results["zero_shot_queries"] = len(all_queries)
        results["zero_shot_missing"] = missing
        results["zero_shot_engine_minutes"] = (
            len(all_queries) / results["c_engine"]["queries_per_s"] / 60)
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
