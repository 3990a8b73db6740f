"""From a source config to passages: one reader per format (`readers.READERS`), weighted mixes of
sources, and a benchmark's datasets at their train split (the `supervised` source,
`datasets.supervised_passages`). The data module and `uniner-prepare` read through
`load_passages`.
"""

from __future__ import annotations

import numpy as np

from uniner.data import readers
from uniner.data.datasets import supervised_passages
from uniner.data.records import Passage, ReadReport
from uniner.errors import ConfigError

# formats that combine other sources
COMBINED = ("mix", "supervised")


def load_passages(source: dict, report: ReadReport | None = None) -> list[Passage]:
    """Read the passages of a source config: `{"format": ..., <that reader's arguments>}`.

    Two formats combine other sources: `supervised` (a benchmark's datasets at their train split,
    `datasets.supervised_passages`) and `mix` (weighted parts, `mix_passages`).
    """
    source = dict(source)
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
