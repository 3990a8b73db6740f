"""Training throughput: rows padded to max_length (the official recipe) vs padded to the longest
row vs packed rows, on the same conversations, through NERDataModule + NERModule + Lightning.

    python experiments/bench_train.py --arch tiny --steps 20 --json bench.json        # CPU
    python experiments/bench_train.py --arch llama-7b --device cuda --precision bf16-mixed \\
        --gradient-checkpointing --peak-tflops 989 --json bench-7b.json               # one GPU

The conversations are the 2,217 Pile-NER passages of `$UNINER_DATA/pile_ner_bio` with frequency
negatives (k=5), tokenized with `tokenizer_sp32k`: about 489 tokens a conversation, p90 649,
max 1,020 at max_length 1024, the length profile of the released Pile-NER-type (485 / 646 / ~1,000).
The model is random-init (`tiny`: the tiny backbone with a 32k vocabulary; `llama-7b`: the
LLaMA-7B architecture). Each mode runs in a fresh process (clean peak memory), `--repeats` times,
modes interleaved; the median repeat is reported. Per mode: non-pad tokens/s over the measured
steps (wall time between step ends, so batch assembly counts), mean step time (forward, backward,
optimizer), peak memory (CUDA max allocated; on the CPU the process's peak RSS), and, where
`--peak-tflops` is given, MFU = 6 * N * tokens/s / peak FLOPs (N: all parameters, frozen included)
and the utilization against what a frozen-base LoRA step needs: (4N + attention) * tokens/s /
peak (no weight gradients of the base; attention's 12 * layers * d * keys a token, keys counted
per conversation, so packing is not charged for attention it does not compute).

Modes: `max_length` (the official recipe's padding), `longest`, `packed`, and packed rows with the
`module.kernels` losses (`+chunked`, `+liger`) and `torch.compile` on the decoder layers
(`+compile`). The default is the issue's table for the device (`--modes` overrides).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from uniner.data.batching import row_lengths
from uniner.data.datamodule import NERDataModule
from uniner.data.prompts import UniNER
from uniner.data.sampling import NegativeSampler
from uniner.model.backbone import build_backbone
from uniner.model.module import NERModule

DATA = Path(os.environ.get("UNINER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PADDED = {"padding": "max_length", "packing": False}
PACKED = {"padding": "longest", "packing": True}
MODES = {  # mode -> (data module settings, NERModule kernels and compile)
    "max_length": (PADDED, {"kernels": "plain"}),
    "longest": ({"padding": "longest", "packing": False}, {"kernels": "plain"}),
    "packed": (PACKED, {"kernels": "plain"}),
    "packed+chunked": (PACKED, {"kernels": "chunked"}),
    "packed+liger": (PACKED, {"kernels": "liger"}),
    "packed+chunked+compile": (PACKED, {"kernels": "chunked", "compile": "layers"}),
    "packed+liger+compile": (PACKED, {"kernels": "liger", "compile": "layers"}),
}
DEFAULT_MODES = {  # the table: official padding, packed, + loss, + fused kernels + compile
    "cpu": "max_length,packed,packed+chunked,packed+chunked+compile",
    "cuda": "max_length,packed,packed+chunked,packed+liger,packed+liger+compile",
}
ARCHS = {
    "tiny": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 192,
             "tie_word_embeddings": False},
    "llama-7b": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32,
                 "intermediate_size": 11008, "rms_norm_eps": 1e-6, "tie_word_embeddings": False},
}
QUANTS = {"none": {"name": "none"}, "int8": {"name": "int8", "bits": 8},
          "nf4": {"name": "nf4", "bits": 4, "quant_type": "nf4"}}
ADAPTERS = {"none": {"name": "none", "lr": 2e-5},
            "lora": {"name": "lora", "lr": 2e-4, "r": 8, "alpha": 16,
                     "target_modules": ["q_proj", "v_proj"]}}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    ap.add_argument("--adapter", choices=sorted(ADAPTERS), default="lora")
    ap.add_argument("--quant", choices=sorted(QUANTS), default="none")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", default=None,
                    help="Lightning precision; default 32-true on the CPU, bf16-mixed on CUDA")
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                    help="weights dtype; auto: bf16 on a bf16 GPU, else fp32")
    ap.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--modes", default=None, help=f"comma-separated, of {', '.join(MODES)}; "
                    "default: " + "; ".join(f"{d}: {m}" for d, m in DEFAULT_MODES.items()))
    ap.add_argument("--pad-to-multiple-of", type=int, default=None,
                    help="data.pad_to_multiple_of: padded widths a multiple of this")
    ap.add_argument("--no-cudnn-sdpa", action="store_true",
                    help="diagnostic: keep SDPA off cuDNN (a graph built per new shape)")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=2, help="rows a batch (packed rows)")
    ap.add_argument("--batch-tokens", type=int, default=None, help="token budget instead of rows")
    ap.add_argument("--negatives", type=int, default=5, help="frequency negatives a passage")
    ap.add_argument("--steps", type=int, default=20, help="measured steps a mode")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured steps first")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak (H100/H200 bf16: 989); enables MFU")
    ap.add_argument("--data", default=str(DATA / "pile_ner_bio" / "passages.txt"))
    ap.add_argument("--tokenizer", default=str(DATA / "tokenizer_sp32k"))
    ap.add_argument("--machine", default=platform.node(), help="label recorded with the results")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    args.modes = args.modes or DEFAULT_MODES[args.device]
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        ap.error(f"--modes: unknown {sorted(unknown)}; choose from {sorted(MODES)}")
    return args


def measure(mode: str, args: dict) -> dict:
    """One mode in this (fresh) process: build everything, train, time the steps."""
    cuda = args["device"] == "cuda"
    if args["no_cudnn_sdpa"]:
        torch.backends.cuda.enable_cudnn_sdp(False)
    vocab = len(AutoTokenizer.from_pretrained(args["tokenizer"]))
    arch = {**ARCHS[args["arch"]], "vocab_size": vocab,
            "max_position_embeddings": max(2048, args["max_length"])}
    backbone = {"name": args["arch"], "config": arch, "tokenizer": args["tokenizer"],
                "dtype": args["dtype"], "attn_implementation": args["attn"],
                "gradient_checkpointing": args["gradient_checkpointing"]}
    with torch.device("cuda" if cuda else "cpu"):  # a 7B random init straight on the GPU
        model, tokenizer = build_backbone(backbone, QUANTS[args["quant"]],
                                          ADAPTERS[args["adapter"]], seed=0)
    config = AutoConfig.for_model(**arch)
    with torch.device("meta"):  # N for 6N: the architecture's parameters, however stored
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())

    dm = NERDataModule({"format": "bio", "path": args["data"]},
                       NegativeSampler(strategy="frequency", k=args["negatives"], seed=0),
                       max_length=args["max_length"], batch_size=args["batch_size"],
                       batch_tokens=args["batch_tokens"], seed=0,
                       pad_to_multiple_of=args["pad_to_multiple_of"], **MODES[mode][0])
    style = UniNER(tokenizer)
    dm.connect(tokenizer, style)
    dm.setup("fit")
    lengths = row_lengths(dm.encode(dm.train_passages, 0))

    meter = StepMeter(args["warmup"], cuda)
    module = NERModule(model, tokenizer, partial(torch.optim.AdamW,
                                                 lr=ADAPTERS[args["adapter"]]["lr"]),
                       style=style, **MODES[mode][1])
    trainer = pl.Trainer(accelerator="gpu" if cuda else "cpu", devices=1,
                         precision=args["precision"], max_steps=args["warmup"] + args["steps"],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, gradient_clip_val=1.0, callbacks=[meter])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=dm)
    if len(meter.step_s) < args["steps"]:
        raise RuntimeError(f"{mode}: only {len(meter.step_s)} measured steps (an epoch is "
                           "shorter than --warmup + --steps)")
    wall = meter.ends[-1] - meter.ends[0]
    tokens = sum(meter.tokens[1:])  # the steps that end after the first measured end
    peak = torch.cuda.max_memory_allocated() if cuda \
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers, hidden = arch["num_hidden_layers"], arch["hidden_size"]
    return {"tokens_per_s": tokens / wall,
            # FLOPs a non-pad token for a frozen base: 2N forward + 2N input gradients, plus
            # attention (QK^T and AV: 4*d*keys forward, twice that backward, per layer)
            "flops_4n_attn_per_token": 4 * n_params
            + 12 * layers * hidden * sum(meter.keys[1:]) / max(1, tokens),
            "labelled_share": sum(meter.labelled) / sum(meter.tokens),
            "kernels": module.resolved_kernels,
            "compile": MODES[mode][1].get("compile", False),
            "step_s": statistics.mean(meter.step_s),
            "padding_share": 1 - sum(meter.tokens) / sum(meter.cells),
            "rows_per_batch": statistics.mean(meter.rows),
            "peak_memory_gib": peak / 2**30,
            "distinct_widths": len(set(meter.widths)),
            "n_params": n_params,
            "attn_implementation": base.config._attn_implementation,
            "conversations": len(lengths),
            "conversation_tokens": {"mean": float(lengths.mean()),
                                    "p90": float(sorted(lengths)[int(0.9 * len(lengths))]),
                                    "max": int(lengths.max())}}


class StepMeter(pl.Callback):
    """Per measured step: its time, end time, non-pad tokens, padded cells and rows."""

    def __init__(self, warmup: int, cuda: bool):
        self.warmup, self.cuda = warmup, cuda
        self.step_s, self.ends, self.tokens, self.cells, self.rows = [], [], [], [], []
        self.widths = []
        self.keys = []  # per step: the keys each non-pad token attends to, summed
        self.labelled = []  # per step: positions with a label (that need logits)
        self._start = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = self._now()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        end = self._now()
        if batch_idx < self.warmup:
            return
        self.step_s.append(end - self._start)
        self.ends.append(end)
        self.tokens.append(int(batch["num_tokens"]))
        self.cells.append(batch["input_ids"].numel())
        self.rows.append(batch["input_ids"].shape[0])
        self.widths.append(batch["input_ids"].shape[1])
        self.labelled.append(int((batch["labels"][:, 1:] != -100).sum()))
        if "position_ids" in batch:  # packed: a conversation's tokens attend to its prefix
            self.keys.append(int((batch["position_ids"] + 1).sum()))
        else:
            mask = batch["attention_mask"]
            self.keys.append(int((mask.cumsum(-1) * mask).sum()))


def table(results: dict, args: argparse.Namespace) -> str:
    peak = args.peak_tflops
    lines = ["| mode | kernels | non-pad tok/s | x max_length | step s | padding | rows | widths "
             "| peak GiB |" + (" MFU (6N) | util. (4N + attn) |" if peak else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if peak else "")]
    base = results.get("max_length", {}).get("tokens_per_s")
    for mode, r in results.items():
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        kernels = r["kernels"] + (" + compile" if r["compile"] else "")
        line = (f"| {mode} | {kernels} | {r['tokens_per_s']:,.0f} | {ratio} | {r['step_s']:.3f} | "
                f"{r['padding_share']:.1%} | {r['rows_per_batch']:.1f} | "
                f"{r['distinct_widths']} | {r['peak_memory_gib']:.2f} |")
        if peak:
            line += f" {r['mfu']:.1%} | {r['utilization']:.1%} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    modes = args.modes.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    spawn = multiprocessing.get_context("spawn")
    for _ in range(args.repeats):
        for mode in modes:  # interleaved, so a change in machine load hits every mode alike
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                runs[mode].append(pool.submit(measure, mode, vars(args)).result())
    results = {}
    for mode, reps in runs.items():
        r = dict(sorted(reps, key=lambda x: x["tokens_per_s"])[len(reps) // 2])
        r["tokens_per_s_repeats"] = [x["tokens_per_s"] for x in reps]
        if args.peak_tflops:
            r["mfu"] = 6 * r["n_params"] * r["tokens_per_s"] / (args.peak_tflops * 1e12)
            r["utilization"] = (r["flops_4n_attn_per_token"] * r["tokens_per_s"]
                                / (args.peak_tflops * 1e12))
        results[mode] = r
    out = {"date": datetime.date.today().isoformat(), "machine": args.machine,
           "command": " ".join(["python", *sys.argv]), "args": vars(args), "results": results}
    print(table(results, args))
    first = next(iter(results.values()))["conversation_tokens"]
    print(f"conversations: {next(iter(results.values()))['conversations']:,}, tokens mean "
          f"{first['mean']:.0f}, p90 {first['p90']:.0f}, max {first['max']}; tokens with a "
          f"label (the only ones chunked/liger give logits): "
          f"{next(iter(results.values()))['labelled_share']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
