"""The extraction engine of this checkout against the engine of another git revision (and plain
batched `generate`), in one process on the same model and queries, runs interleaved: a fair
before/after on a loaded machine, where separate runs see different loads.

    python experiments/ab_engine.py --base-rev cf38439 --sentences 100 --rounds 4
    python experiments/ab_engine.py --base-rev cf38439 --stopping --max-new-tokens 32

Modes: `base` (`uniner/inference/engine.py` at `--base-rev`, imported by path), `new` (this
checkout's, its CPU default: no refill), `new-refill` (with `refill=True`, its default on a
GPU; with `--stopping` only), `gen32` (`generate_answers` of tests/reference_generate.py, 32
rows). The tiny random-init backbone, fp32, one thread. Without `--stopping` every mode decodes
exactly `--max-new-tokens` (as `bench_extract.py`); with it the output rows of EOS and of the
`]` tokens are rescaled (as tests/test_extract.py) so that answers end at different lengths, as
a trained model's do, and the engines stop rows at EOS or `]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

EXPERIMENTS = Path(__file__).resolve().parent
sys.path[:0] = [str(EXPERIMENTS), str(EXPERIMENTS.parent / "tests")]  # bench_extract, the reference

from bench_extract import DATA, build_model, compose_node  # noqa: E402
from reference_generate import generate_answers  # noqa: E402

from uniner.data.datasets import dataset_entries  # noqa: E402
from uniner.data.prompts import UniNER  # noqa: E402
from uniner.evaluation.benchmark import dataset_queries  # noqa: E402
from uniner.inference.engine import Engine  # noqa: E402
from uniner.inference.planner import closing_token_ids, encode_queries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def engine_at(rev: str):
    """The `engine` module of git revision `rev`, imported under another name."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:uniner/inference/engine.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "base_engine.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("base_engine", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_engine"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-rev", required=True)
    ap.add_argument("--dataset", default="crossner_ai")
    ap.add_argument("--sentences", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--stopping", action="store_true",
                    help="answers of different lengths (EOS / `]` made likely), early stop on")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = compose_node(f"paths.data_root={DATA}", "benchmark=zero_shot")
    node = next(d for d in dataset_entries(cfg.benchmark.datasets) if d["name"] == args.dataset)
    queries = dataset_queries(node, args.sentences)
    model, tok = build_model("tiny", "cpu", "fp32")
    n_new, stop = args.max_new_tokens, args.stopping
    if stop:
        with torch.no_grad():
            head = model.get_output_embeddings().weight
            head[tok.eos_token_id] *= -1.5
            head[closing_token_ids(tok)] *= 5.0
    else:
        model.generation_config.min_new_tokens = n_new
    prompts = encode_queries([(q.text, q.type) for q in queries], tok, UniNER(tok))
    texts = [q.text for q in queries]
    base = engine_at(args.base_rev)
    modes = {"base": base.Engine(model, tok, max_new_tokens=n_new, early_stop=stop),
             "new": Engine(model, tok, max_new_tokens=n_new, early_stop=stop,
                            style=UniNER(tok))}
    if stop:
        modes["new-refill"] = Engine(model, tok, max_new_tokens=n_new, refill=True,
                                     style=UniNER(tok))

    def gen32():
        return generate_answers(model, tok, prompts, max_new_tokens=n_new, batch_size=32,
                                stop_at_list_close=stop)

    for engine in modes.values():
        engine.answer_prompts(prompts[:16], texts[:16])
    names = [*modes, "gen32"]
    times: dict = {name: [] for name in names}
    outs: dict = {}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            outs[name] = gen32() if name == "gen32" else modes[name].answer_prompts(prompts, texts)
            times[name].append(time.perf_counter() - t0)
        print(r, {k: round(len(prompts) / v[-1], 1) for k, v in times.items()}, flush=True)
    qps = {k: len(prompts) / statistics.median(v) for k, v in times.items()}
    results = {"base_rev": args.base_rev, "queries": len(prompts), "max_new_tokens": n_new,
               "stopping": stop, "rounds": args.rounds, "load_before": load_before,
               "load_after": os.getloadavg(), "median_queries_per_s": qps,
               "new_over_base": qps["new"] / qps["base"],
               "new_over_base_per_round": [b / n for b, n in zip(times["base"], times["new"])],
               "over_gen32": {k: qps[k] / qps["gen32"] for k in modes},
               "answers_equal_new": {k: outs[k] == outs["new"] for k in names},
               "new_stats": modes["new"].stats}
    if stop:
        results["answer_tokens_mean"] = sum(len(tok(a)["input_ids"]) for a in outs["new"]) \
            / len(prompts)
    print(json.dumps(results, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
