"""Queries per second answering benchmark queries: one `generate` per query, batched `generate`,
and the extraction engine, on the same queries and the same model in one run.

    python experiments/bench_extract.py                      # tiny backbone, this CPU
    python experiments/bench_extract.py --arch llama-7b --device cuda --dtype bf16 \\
        --sentences 200 --single-queries 64 --output bench_extract_gpu.json

Queries: the first `--sentences` sentences of a CrossNER test split (`$UNINER_DATA`) x all types
of that dataset, rendered with the training template. Modes:
  (a) one query per `model.generate` call, as the official `hf.py` path (on the first
      `--single-queries` queries only: it is slow);
  (b) `generate_answers` (tests/reference_generate.py), plain batched `generate` (left-padded,
      length-sorted), at each of `--generate-batch-sizes`;
  (c) `engine.Engine` (shared passage prefixes, token-budget batches).
Random weights never stop on their own, so every mode decodes exactly `--new-tokens` tokens (no
EOS, no `]` stop). (b) and (c) must give the same answers; the share that do is reported.

(b) and (c) run `--repeats` times, interleaved ((b) at each size, then (c), then again), so a
load that changes during the run weighs on both; medians are reported, and the ratio's median
over the repeats. Also reported: the 7 zero-shot sets' projected time (71,139 queries at the
engine's rate) and the utilization against the 2N-FLOPs-a-token bound (N: the parameters
without the input embeddings) over the tokens that must be computed: each sentence's prefix
once, each query's suffix, `--new-tokens` answer tokens a query (`--peak-tflops`, or `auto`: a
large matmul timed here). The engine's own counts (padding included) are reported beside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from uniner.config import CONF_DIR
from uniner.data.datasets import dataset_entries
from uniner.data.prompts import UniNER
from uniner.evaluation.benchmark import dataset_queries, load_benchmark
from uniner.inference.engine import Engine
from uniner.inference.planner import common_prefix_length, encode_queries
from uniner.model.backbone import build_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_generate import generate_answers  # noqa: E402

ZERO_SHOT_QUERIES = 71_139  # the 7 zero-shot test sets' sentences x types (benchmark=zero_shot)
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


def matmul_tflops(device: str, dtype: str, n: int = 4096, reps: int = 5) -> float:
    """The dense matmul rate of this device and dtype (a stand-in for the peak on a CPU)."""
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a, b = (torch.randn(n, n, device=device, dtype=dt) for _ in range(2))
    a @ b
    _, seconds = timed(lambda: [a @ b for _ in range(reps)], device)
    return 2 * n ** 3 * reps / seconds / 1e12


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
                    help="mode (b) batch sizes; 32 is generate_answers' default")
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--batch-rows", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 on a shared CPU: OpenMP barriers stall when other "
                         "processes hold a core)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved repeats of (b) and (c); medians are reported")
    ap.add_argument("--peak-tflops", default=None,
                    help="the device's dense peak in TFLOP/s for the utilization (H200 bf16: "
                         "989), or `auto` (a 4096^2 matmul in --dtype timed here)")
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
    prompts = encode_queries(pairs, tokenizer, UniNER(tokenizer))
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

    engine = Engine(model, tokenizer, style=UniNER(tokenizer), max_new_tokens=n_new,
                    batch_tokens=args.batch_tokens,
                    batch_rows=args.batch_rows, early_stop=False)
    # warm-up: kernels, allocator, tokenizer caches
    engine.answer_prompts(prompts[:16], texts[:16])
    generate_answers(model, tokenizer, prompts[:16], max_new_tokens=n_new,
                     stop_at_list_close=False)

    results: dict = {"arch": args.arch, "device": args.device, "dtype": args.dtype,
                     "threads": torch.get_num_threads(), "dataset": args.dataset,
                     "sentences": args.sentences, "queries": len(queries), "new_tokens": n_new,
                     "repeats": args.repeats, "torch": torch.__version__,
                     "machine": platform.node(), "load_before": os.getloadavg()}
    single, dt = timed(one_by_one, args.device)
    results["a_one_query_per_generate"] = {"queries": len(single), "seconds": dt,
                                           "queries_per_s": len(single) / dt}
    sizes = [int(b) for b in args.generate_batch_sizes.split(",")]
    times: dict = {bs: [] for bs in sizes}
    times["engine"] = []
    batched, ratios = {}, []
    for _ in range(args.repeats):
        for bs in sizes:
            batched[bs], dt = timed(lambda bs=bs: generate_answers(
                model, tokenizer, prompts, max_new_tokens=n_new, batch_size=bs,
                stop_at_list_close=False), args.device)
            times[bs].append(dt)
        fast, dt = timed(lambda: engine.answer_prompts(prompts, texts), args.device)
        times["engine"].append(dt)
        ratios.append(min(times[bs][-1] for bs in sizes) / dt)
    results["load_after"] = os.getloadavg()
    for bs in sizes:
        dt = statistics.median(times[bs])
        results[f"b_batched_generate_bs{bs}"] = {"seconds": dt, "queries_per_s": len(prompts) / dt,
                                                 "all_seconds": times[bs]}
    dt = statistics.median(times["engine"])
    results["c_engine"] = {"seconds": dt, "queries_per_s": len(prompts) / dt,
                           "all_seconds": times["engine"], "batch_tokens": args.batch_tokens,
                           "batch_rows": args.batch_rows, "computed": dict(engine.stats)}
    first = batched[sizes[0]]
    results["engine_equals_batched_generate"] = sum(a == b for a, b in zip(fast, first)) / len(fast)
    results["engine_equals_one_by_one"] = sum(a == b for a, b in zip(fast, single)) / len(single)
    best_b = max(results[f"b_batched_generate_bs{bs}"]["queries_per_s"] for bs in sizes)
    default_b = results[f"b_batched_generate_bs{sizes[0]}"]["queries_per_s"]
    engine_qps = results["c_engine"]["queries_per_s"]
    results["ratio_engine_to_first_b"] = engine_qps / default_b
    results["ratio_engine_to_best_b"] = engine_qps / best_b
    results["ratio_engine_to_best_b_per_repeat"] = ratios
    results["ratio_engine_to_best_b_median_of_repeats"] = statistics.median(ratios)
    results["zero_shot_projected_s"] = ZERO_SHOT_QUERIES / engine_qps

    # the work that must be done: each sentence's prompt prefix once, each query's suffix,
    # n_new answer tokens a query (the last one's forward pass included, as an upper count)
    by_text: dict = {}
    for p, t in zip(prompts, texts):
        by_text.setdefault(t, []).append(p)
    prefix_tokens = sum(min(common_prefix_length(ps), min(map(len, ps)) - 1)
                        for ps in by_text.values())
    total_prompt = sum(map(len, prompts))
    needed = prefix_tokens + (total_prompt - sum(
        min(common_prefix_length(ps), min(map(len, ps)) - 1) * len(ps)
        for ps in by_text.values())) + n_new * len(prompts)
    n_params = sum(p.numel() for p in model.parameters()) \
        - model.get_input_embeddings().weight.numel()
    st = engine.stats
    engine_computed = st["prefix_slots"] + st["suffix_slots"] + st["decode_tokens"]
    flops = 2 * n_params * needed
    results["flops"] = {
        "n_params_without_embeddings": n_params, "needed_tokens": needed,
        "needed_tokens_per_query": needed / len(prompts),
        "engine_computed_tokens_with_padding": engine_computed,
        "generate_computed_tokens_without_padding": total_prompt + (n_new - 1) * len(prompts),
        "engine_tflops_per_s": flops / results["c_engine"]["seconds"] / 1e12}
    peak = args.peak_tflops
    if peak == "auto":
        peak = matmul_tflops(args.device, args.dtype)
        results["flops"]["peak_tflops_measured"] = peak
    if peak:
        peak = float(peak)
        results["flops"]["peak_tflops"] = peak
        results["flops"]["engine_utilization"] = flops / results["c_engine"]["seconds"] / 1e12 \
            / peak
        results["flops"]["bound_queries_per_s"] = peak * 1e12 / (flops / len(prompts))
        results["flops"]["zero_shot_bound_s"] = ZERO_SHOT_QUERIES / \
            results["flops"]["bound_queries_per_s"]
    if args.estimate_zero_shot:
        all_queries, missing = load_benchmark(cfg.benchmark)
        results["zero_shot_queries"] = len(all_queries)
        results["zero_shot_missing"] = missing
        results["zero_shot_engine_minutes"] = len(all_queries) / engine_qps / 60
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
