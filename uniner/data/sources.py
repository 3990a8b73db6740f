"""From a source config to passages: one reader per format (`readers.READERS`), weighted mixes of
sources, and a benchmark's datasets at their train split (the `supervised` source,
`datasets.supervised_passages`), a fixed held-out share of any of them (`holdout` + `part`),
and any of them cut into sentence pieces (`pieces`).
The data module, `uniner-prepare` and the benchmark's datasets read through `load_passages`.
"""

from __future__ import annotations

import numpy as np

from uniner.data import readers
from uniner.data.datasets import supervised_passages
from uniner.data.pieces import cut_passages
from uniner.data.records import Passage, ReadReport
from uniner.errors import ConfigError

# formats that combine other sources
COMBINED = ("mix", "supervised")
PARTS = ("train", "heldout")  # `part:` of a source with `holdout:`


def load_passages(source: dict, report: ReadReport | None = None) -> list[Passage]:
    """Read the passages of a source config: `{"format": ..., <that reader's arguments>}`.

    Two formats combine other sources: `supervised` (a benchmark's datasets at their train split,
    `datasets.supervised_passages`) and `mix` (weighted parts, `mix_passages`).
    Any source may add `holdout: {fraction, seed}` and `part: train|heldout` (`split_holdout`),
    and `pieces: {max_words}` (`pieces.cut_passages`: passages cut into pieces of whole
    sentences, after the held-out split); these keys are removed before its reader is called.
    """
    source = dict(source)
    if "pieces" in source:
        pieces = source.pop("pieces")
        passages = load_passages(source, report)
        return cut_passages(passages, pieces, report) if pieces else passages
    if "holdout" in source or "part" in source:
        holdout, part = source.pop("holdout", None), source.pop("part", None)
        return split_holdout(load_passages(source, report), holdout, part)
    fmt = source.pop("format", None)
    if fmt == "mix":
        return mix_passages(report=report, **source)
    if fmt == "supervised":
        return supervised_passages(report=report, **source)
    if fmt not in readers.READERS:
        raise ConfigError(f"data.source.format={fmt!r}: choose one of "
                          f"{sorted([*readers.READERS, *COMBINED])}")
    return readers.read_source({"format": fmt, **source}, report)


def mix_passages(parts: dict, *, seed: int = 42, report: ReadReport | None = None
                 ) -> list[Passage]:
    """Passages of several sources, each part weighted: `{name: {weight, <source config>}}`.

    A weight is how many times each passage of the part is taken: 1 all once, 0 none (the part
    is not read), 0.5 a seeded random half, 2.5 all twice plus a random half. Ids become
    `{part}/{id}` (`#k` marks the k-th repeat).
    """
    out: list[Passage] = []
    for i, (name, part) in enumerate(parts.items()):
        part = dict(part)
        weight = float(part.pop("weight", 1.0))
        if weight < 0:
            raise ConfigError(f"data.source.parts.{name}.weight={weight}: must be >= 0")
        if weight == 0:
            continue
        passages = load_passages(part, report)
        whole, frac = divmod(weight, 1.0)
        rng = np.random.default_rng([seed, i])
        extra = sorted(rng.choice(len(passages), int(round(frac * len(passages))), replace=False))
        for k, taken in enumerate([range(len(passages))] * int(whole) + [extra]):
            out += [Passage(f"{name}/{passages[j].id}" + (f"#{k}" if k else ""),
                            passages[j].text, passages[j].mentions, passages[j].negatives)
                    for j in taken]
    return out


def holdout_indices(n: int, fraction: float, seed: int = 0) -> list[int]:
    """Sorted indices of the held-out `round(fraction * n)` of `n` passages: the first ones of a
    permutation seeded by `seed` alone, so every run (whatever its own seed) holds out the same
    passages of the same source."""
    k = int(round(fraction * n))
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(n)[:k])


def split_holdout(passages: list[Passage], holdout, part) -> list[Passage]:
    """The `part` (`train` or `heldout`) of `passages` under `holdout: {fraction, seed}`
    (`holdout_indices`); both parts keep the source's order, together they are all passages.

    Raises:
        ConfigError: one key without the other, an unknown part, a fraction outside (0, 1).
    """
    if holdout is None or part is None:
        raise ConfigError("a held-out split needs both `holdout: {fraction, seed}` and "
                          f"`part: train|heldout` (got holdout={holdout!r}, part={part!r})")
    if part not in PARTS:
        raise ConfigError(f"part={part!r}: choose one of {', '.join(PARTS)}")
    holdout = dict(holdout)
    unknown = sorted(set(holdout) - {"fraction", "seed"})
    if unknown:
        raise ConfigError(f"holdout: unknown keys {unknown}; give fraction and seed")
    fraction = float(holdout.get("fraction", 0.1))
    if not 0 < fraction < 1:
        raise ConfigError(f"holdout.fraction={fraction}: must be in (0, 1)")
    held = set(holdout_indices(len(passages), fraction, int(holdout.get("seed", 0))))
    return [p for i, p in enumerate(passages) if (i in held) == (part == "heldout")]
