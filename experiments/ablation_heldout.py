"""Empty-query FP rate and F1 of an ablation sweep's runs on held-out Pile-NER passages.

    PYTHONPATH=. python experiments/ablation_heldout.py multirun/<experiment>/<launch time>

Stop-gap until the held-out evaluation lives in the package (issue 16): each run of
`experiment=negative_sampling_ablation_small` trains on a fixed, seeded share of `pile_ner_bio`
(`data=pile_ner_bio_split`: a `mix` with one part of weight < 1 and a fixed `source.seed`); the
passages left out are rebuilt here exactly as `uniner.sources.mix_passages` chose the others, and
each run's `export/` answers them. Three query sets per held-out passage:

- `heldout_top20`: the 20 types that occur in most training passages (the types a benchmark asks),
- `heldout_rand20`: 20 types drawn uniformly from the training vocabulary (fixed seed; mostly
  rare types),
- `heldout_pos`: the passage's own types only (no empty query; recall of what is there).

Writes `heldout.json` in every run directory and prints one table, mean ± std over seeds per
strategy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from uniner.backbone import load_trained
from uniner.benchmark import passage_queries
from uniner.evaluate import evaluate
from uniner.generation import answer_queries
from uniner.sources import load_passages


def split(source: dict) -> tuple[list, list]:
    """Training and held-out passages of a one-part `mix` source (the same draw as
    `mix_passages`)."""
    if source.get("format") != "mix" or len(source["parts"]) != 1:
        raise ValueError("expects data.source: a mix with one part (data=pile_ner_bio_split)")
    (name, part), = source["parts"].items()
    part = dict(part)
    weight = float(part.pop("weight"))
    if not 0 < weight < 1:
        raise ValueError(f"part weight {weight}: must be in (0, 1) to hold passages out")
    passages = load_passages(part)
    rng = np.random.default_rng([source.get("seed", 42), 0])
    taken = set(rng.choice(len(passages), int(round(weight * len(passages))), replace=False)
                .tolist())
    return ([p for i, p in enumerate(passages) if i in taken],
            [p for i, p in enumerate(passages) if i not in taken])


def heldout_queries(cfg, n_passages: int, n_types: int = 20, seed: int = 0):
    train, held = split(OmegaConf.to_container(cfg.data.source, resolve=True))
    freq = Counter(t for p in train for t in p.types)
    vocab = sorted(freq, key=lambda t: (-freq[t], t))
    top = vocab[:n_types]
    rand = [vocab[i] for i in np.random.default_rng(seed).choice(len(vocab), n_types,
                                                                 replace=False)]
    held = held[:n_passages]
    return (passage_queries(held, [top] * len(held), "heldout_top20")
            + passage_queries(held, [rand] * len(held), "heldout_rand20")
            + passage_queries(held, [p.types for p in held], "heldout_pos")), top, rand


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--passages", type=int, default=40, help="held-out passages asked")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="default: the run's module.max_new_tokens")
    args = ap.parse_args(argv)
    runs = sorted(p.parent.parent for p in Path(args.sweep_dir).glob("*/.hydra/config.yaml"))
    rows = []
    for run in runs:
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        t0 = time.time()
        queries, top, rand = heldout_queries(cfg, args.passages)
        model, tok = load_trained(str(run / "export"), device="cpu")
        answers = answer_queries(model, tok, queries, batch_size=512, max_new_tokens=
                                 args.max_new_tokens or cfg.module.max_new_tokens)
        res = evaluate(queries, answers).results
        keep = ("f1", "empty_query_fp_rate", "queries", "empty_queries", "malformed")
        res = {k: {m: v[m] for m in keep if m in v} for k, v in res.items() if k != "average"}
        (run / "heldout.json").write_text(json.dumps(
            {"results": res, "top20": top, "rand20": rand, "passages": args.passages}, indent=1))
        rows.append((cfg.sampling.strategy, cfg.seed, res))
        print(f"{run.name}: {cfg.sampling.strategy} seed {cfg.seed} "
              + " ".join(f"{k} FP {v['empty_query_fp_rate']:.3f} F1 {v['f1']:.3f}"
                         for k, v in res.items()) + f" ({time.time() - t0:.0f} s)",
              file=sys.stderr)

    def ms(xs):
        std = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{100 * statistics.mean(xs):.1f} ± {100 * std:.1f}"

    sets = ["heldout_top20", "heldout_rand20", "heldout_pos"]
    print("| sampling | seeds | " + " | ".join(f"{s} FP % | {s} F1" for s in sets[:2])
          + " | heldout_pos F1 |")
    print("|---|---:|" + "---:|" * 5)
    for strategy in ("none", "uniform", "frequency"):
        got = [r for s, _, r in rows if s == strategy]
        if not got:
            continue
        cells = []
        for s in sets[:2]:
            cells += [ms([r[s]["empty_query_fp_rate"] for r in got]), ms([r[s]["f1"] for r in got])]
        cells.append(ms([r["heldout_pos"]["f1"] for r in got]))
        print(f"| {strategy} | {len(got)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
