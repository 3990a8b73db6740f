"""How often each run of a sweep answers with something, on queries whose gold is `[]` and on
queries whose gold has entities, and which types draw the non-empty answers.

The empty-query FP rate says how often a student answers an absent type; this says whether it
tells absent from present at all (a student that answers `[]` to everything has FP 0 too).

    python experiments/answer_rates.py multirun/negative_sampling_ablation_small/latest
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from uniner.evaluation.sweeps import latest_sweep


def rates(run: Path) -> tuple[float, float, Counter]:
    """(share of empty-gold queries answered non-empty, the same for non-empty-gold queries,
    the types of the non-empty answers to empty-gold queries) of a run's predictions.jsonl."""
    answered = {True: [0, 0], False: [0, 0]}
    types: Counter = Counter()
    with open(run / "predictions.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            empty_gold = not row["gold"]
            answered[empty_gold][0] += bool(row["items"])
            answered[empty_gold][1] += 1
            if empty_gold and row["items"]:
                types[row["type"]] += 1
    return (answered[True][0] / max(1, answered[True][1]),
            answered[False][0] / max(1, answered[False][1]), types)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--key", default="sampling.strategy", help="the variant's config key")
    args = parser.parse_args()
    sweep = latest_sweep(args.sweep_dir).resolve()  # <experiment>/latest: the newest launch
    by_variant: dict[str, list] = defaultdict(list)
    for run in sorted((p for p in sweep.iterdir() if (p / "predictions.jsonl").is_file()),
                      key=lambda p: int(p.name) if p.name.isdigit() else p.name):
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        by_variant[str(OmegaConf.select(cfg, args.key))].append(rates(run))
    print(f"{sweep}\n")
    print(f"| {args.key} | runs | answered on gold [] | answered on gold entities | "
          "types answered most on gold [] |")
    print("|---|---:|---:|---:|---|")
    for variant, runs in by_variant.items():
        def cell(values):
            mean = statistics.fmean(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{100 * mean:.1f}% ± {100 * std:.1f}"
        types = sum((t for *_, t in runs), Counter())
        top = ", ".join(f"{t} ({n})" for t, n in types.most_common(4)) or "-"
        print(f"| {variant} | {len(runs)} | {cell([r[0] for r in runs])} | "
              f"{cell([r[1] for r in runs])} | {top} |")


if __name__ == "__main__":
    main()
