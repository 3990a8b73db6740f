"""Data pipeline speed at the real Pile-NER-type scale.

    python experiments/bench_data.py [--tokenizer $UNINER_DATA/tokenizer_sp32k]

A synthetic corpus of 45,889 passages over 13,020 Zipf-distributed types (about 4 typed
mentions a passage; the texts are the 2,217 Pile-NER passages of `pile_ner_bio`, cycled, so the
token lengths are Pile-NER's: mean ~460, p90 ~600 with the sp32k tokenizer), then (1) negative
sampling plus rendering of every conversation and (2) tokenization through `datasets.map`
(batched, fast tokenizer, one process per 10,000 conversations up to the cores), timed cold
(nothing cached) and warm (read back from the on-disk cache).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from uniner.data.datamodule import encode_rows, render_rows
from uniner.data.prompts import UniNER
from uniner.data.readers import read_bio
from uniner.data.records import Mention, Passage
from uniner.data.sampling import NegativeSampler


def synthetic_corpus(n_passages: int, n_types: int, real: list[Passage], seed: int = 0
                     ) -> list[Passage]:
    """`n_passages` with the real passages' texts (cycled, so the token-length histogram is
    Pile-NER's) and about 5 of each text's own mentions typed by a Zipf law over `n_types`."""
    rng = np.random.default_rng(seed)
    zipf = 1 / np.arange(1, n_types + 1)
    zipf /= zipf.sum()
    passages = []
    for i in range(n_passages):
        source = real[i % len(real)]
        names = list(dict.fromkeys(m.text for m in source.mentions)) or ["Entity"]
        n = min(len(names), rng.poisson(4) + 1)
        types = rng.choice(n_types, size=n, p=zipf)
        chosen = rng.choice(len(names), size=n, replace=False)
        passages.append(Passage(f"p{i}", source.text,
                                [Mention(names[j], f"type {t}") for j, t in zip(chosen, types)]))
    return passages


def main() -> None:
    ap = argparse.ArgumentParser()
    data = Path(os.environ.get("UNINER_DATA", "../shared/data"))
    ap.add_argument("--tokenizer", default=str(data / "tokenizer_sp32k"))
    ap.add_argument("--texts", default=str(data / "pile_ner_bio" / "passages.txt"),
                    help="BIO file whose passages give the texts (Pile-NER's by default)")
    ap.add_argument("--num-proc", type=int, default=None,
                    help="datasets.map processes (default: one per 10,000 conversations)")
    ap.add_argument("--passages", type=int, default=45_889)
    ap.add_argument("--types", type=int, default=13_020)
    ap.add_argument("--strategy", default="frequency")
    args = ap.parse_args()

    passages = synthetic_corpus(args.passages, args.types, read_bio(args.texts))
    print(f"corpus: {len(passages):,} passages, "
          f"{len({t for p in passages for t in p.types}):,} distinct types, "
          f"{sum(len(p.mentions) for p in passages) / len(passages):.1f} mentions/passage")

    t0 = time.perf_counter()
    queries = NegativeSampler(strategy=args.strategy, k=3).queries(passages, epoch=0)
    t1 = time.perf_counter()
    rows = render_rows(passages, queries, style=UniNER())
    t2 = time.perf_counter()
    print(f"sampling ({args.strategy}) {t1 - t0:.2f} s + rendering {t2 - t1:.2f} s "
          f"= {t2 - t0:.2f} s for {sum(map(len, queries)):,} queries")

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            ds, dropped = encode_rows(rows, tok, max_length=1024, cache_dir=cache,
                                      num_proc=args.num_proc)
            dt = time.perf_counter() - t0
            lengths = np.array([len(x) for x in ds["input_ids"]])
            print(f"tokenize {label}: {len(rows['id']) / dt:,.0f} conversations/s ({dt:.1f} s); "
                  f"tokens mean {lengths.mean():.0f}, p90 {np.percentile(lengths, 90):.0f}; "
                  f"dropped {dict(dropped)}")


if __name__ == "__main__":
    main()
