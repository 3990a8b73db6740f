"""Negative sampling: which absent entity types each passage is also asked about (answer `[]`).

`uniform`: every type of the corpus absent from the passage is equally likely.
`frequency`: probability proportional to the number of passages the type occurs in.
`none`: no negatives. Draws are without replacement within a passage, seeded, and re-drawn per
epoch on request. Vectorised so that the real scale (45,889 passages, 13,020 types) takes a second.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from uniner.data.records import Passage
from uniner.errors import ConfigError

STRATEGIES = ("none", "uniform", "frequency")


@dataclass
class NegativeSampler:
    """Draws negative types per passage.

    Attributes:
        strategy: `none`, `uniform` or `frequency`.
        k: negatives per passage (fixed count); exclusive with `ratio`.
        ratio: negatives per positive type (rounded up); exclusive with `k`.
        keep_source_negatives: keep the `[]` questions baked into a source (Pile-NER-type);
            stripped by default so that the strategy alone decides.
        redraw_each_epoch: a fresh draw (and type order) per epoch instead of one for all.
        seed: seed of the draws.
    """

    strategy: str = "frequency"
    k: int | None = 3
    ratio: float | None = None
    keep_source_negatives: bool = False
    redraw_each_epoch: bool = True
    seed: int = 42

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"sampling.strategy={self.strategy!r}: choose one of {STRATEGIES}")
        if (self.k is None) == (self.ratio is None) and self.strategy != "none":
            raise ConfigError("sampling: set exactly one of `k` (count) and `ratio` "
                              f"(per positive type); got k={self.k}, ratio={self.ratio}")
        if (self.k is not None and self.k < 0) or (self.ratio is not None and self.ratio < 0):
            raise ConfigError("sampling.k and sampling.ratio must be >= 0")

    def _count(self, n_positive: int) -> int:
        return self.k if self.k is not None else math.ceil(self.ratio * n_positive)

    def rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch if self.redraw_each_epoch else 0])

    def draw(self, passages: Sequence[Passage], epoch: int = 0) -> list[list[str]]:
        """Negative types per passage (sampled, plus the source's own if kept)."""
        source = [list(p.negatives) if self.keep_source_negatives else [] for p in passages]
        if self.strategy == "none":
            return source
        freq = Counter(t for p in passages for t in p.types)
        vocab = sorted(freq, key=lambda t: (-freq[t], t))  # deterministic order
        index = {t: i for i, t in enumerate(vocab)}
        weights = np.array([freq[t] for t in vocab] if self.strategy == "frequency"
                           else [1] * len(vocab), dtype=np.float64)
        cdf = np.cumsum(weights) / weights.sum()
        wanted = [self._count(len(p.types)) for p in passages]
        rng = self.rng(epoch)
        # Oversample in one vectorised draw, then reject positives and repeats row by row:
        # sequential draws with rejection = sampling without replacement from the absent types.
        width = 2 * max(wanted, default=0) + 8
        draws = np.searchsorted(cdf, rng.random((len(passages), width)), side="right")
        out = []
        for row, p, n, extra in zip(draws, passages, wanted, source):
            taken = {index[t] for t in p.types} | {index[t] for t in extra if t in index}
            n = min(n, len(vocab) - len(taken))
            picked = []
            for i in row.tolist():
                if len(picked) == n:
                    break
                if i not in taken:
                    taken.add(i)
                    picked.append(i)
            while len(picked) < n:  # rare: the row ran out; draw on from the same generator
                i = int(np.searchsorted(cdf, rng.random(), side="right"))
                if i not in taken:
                    taken.add(i)
                    picked.append(i)
            out.append(extra + [vocab[i] for i in picked])
        return out

    def queries(self, passages: Sequence[Passage], epoch: int = 0) -> list[list[str]]:
        """Per passage, the types to ask: positives and negatives in a shuffled order."""
        negatives = self.draw(passages, epoch)
        rng = np.random.default_rng([self.seed, epoch if self.redraw_each_epoch else 0, 1])
        out = []
        for p, neg in zip(passages, negatives):
            types = p.types + [t for t in neg if t not in set(p.types)]
            out.append([types[i] for i in rng.permutation(len(types))])
        return out
