"""Export a random-init model the way `uniner-train` exports one, for timing `uniner-eval` end to
end where no trained checkpoint of that size exists (the answers are noise; the time is real).

    python experiments/export_random.py --arch llama-7b --device cuda --dtype bf16 --out DIR
    python -m uniner.cli.eval checkpoint=DIR benchmark=zero_shot max_new_tokens=12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extract import build_model  # noqa: E402

from uniner.data.prompts import UniNER
from uniner.model.export import export  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=["tiny", "llama-7b"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model, tokenizer = build_model(args.arch, args.device, args.dtype)
    print(export(model, tokenizer, args.out, style=UniNER(tokenizer)))


if __name__ == "__main__":
    main()
