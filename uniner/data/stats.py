"""Corpus statistics: counts, token lengths, the paper's head/tail type table and the
type-frequency plot."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uniner.data.records import Passage

# The paper's split of the type distribution: the top 1% of types, the next 9%, the rest.
TIERS = (("top 1%", 0.0, 0.01), ("top 1-10%", 0.01, 0.10), ("rest (90%)", 0.10, 1.0))


def head_tail_table(passages: Sequence[Passage], examples: int = 5) -> list[dict]:
    """Types ranked by mention count, cut into the paper's tiers.

    Returns one row per tier: number of types, share of all mentions, and example types.
    """
    counts = Counter(m.type for p in passages for m in p.mentions)
    ranked = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    total = sum(counts.values()) or 1
    rows = []
    for name, lo, hi in TIERS:
        # ceil so that a small corpus still has a non-empty head
        a, b = math.ceil(lo * len(ranked)), math.ceil(hi * len(ranked))
        tier = ranked[a:b]
        rows.append({
            "tier": name,
            "types": len(tier),
            "mention_share": sum(counts[t] for t in tier) / total,
            "examples": tier[:examples],
        })
    return rows


def _summary(values: Sequence[int]) -> dict:
    if not values:
        return {"mean": 0.0, "p50": 0, "p90": 0, "max": 0}
    a = np.asarray(values)
    return {"mean": round(float(a.mean()), 1), "p50": int(np.percentile(a, 50)),
            "p90": int(np.percentile(a, 90)), "max": int(a.max())}


def corpus_stats(passages: Sequence[Passage], queries: Sequence[Sequence[str]] | None = None,
                 token_lengths: Sequence[int] | None = None, dropped: dict | None = None) -> dict:
    """Counts of a corpus and, when given, of the queries asked about it.

    Args:
        passages: the passages.
        queries: per passage, the types asked (positives and sampled negatives).
        token_lengths: tokens per encoded conversation.
        dropped: what was dropped on the way (reader, sampling, max-length policy), by reason.
    """
    stats = {
        "passages": len(passages),
        "entities": sum(len(p.mentions) for p in passages),
        "distinct_types": len({m.type for p in passages for m in p.mentions}),
    }
    if queries is not None:
        positive = sum(len(set(q) & set(p.types)) for p, q in zip(passages, queries))
        total = sum(len(q) for q in queries)
        stats.update(queries=total, positive_queries=positive, negative_queries=total - positive,
                     queries_per_passage=round(total / max(len(passages), 1), 2))
    if token_lengths is not None:
        stats["tokens_per_conversation"] = _summary(token_lengths)
    stats["dropped"] = dict(dropped or {})
    stats["head_tail"] = head_tail_table(passages)
    return stats


def stats_markdown(stats: dict) -> str:
    """The stats as a short Markdown report."""
    lines = ["| what | count |", "|---|---|"]
    for key, value in stats.items():
        if key in ("head_tail", "dropped", "tokens_per_conversation"):
            continue
        lines.append(f"| {key.replace('_', ' ')} | {value:,} |" if isinstance(value, int)
                     else f"| {key.replace('_', ' ')} | {value} |")
    if "tokens_per_conversation" in stats:
        t = stats["tokens_per_conversation"]
        lines.append(f"| tokens per conversation | mean {t['mean']}, p50 {t['p50']}, "
                     f"p90 {t['p90']}, max {t['max']} |")
    dropped = stats.get("dropped") or {}
    lines += ["", "Dropped:" if dropped else "Dropped: nothing."]
    lines += [f"- {reason}: {n:,}" for reason, n in dropped.items()]
    lines += ["", "| types (ranked by mentions) | types | share of mentions | examples |",
              "|---|---|---|---|"]
    for row in stats["head_tail"]:
        lines.append(f"| {row['tier']} | {row['types']:,} | {row['mention_share']:.1%} | "
                     f"{', '.join(row['examples'])} |")
    return "\n".join(lines) + "\n"


def type_frequency_plot(passages: list[Passage], path: Path) -> None:
    """Entity types ranked by mention count, log-log (the long tail the paper describes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = Counter(m.type for p in passages for m in p.mentions)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    if ranked:
        ax.loglog(range(1, len(ranked) + 1), [c for _, c in ranked], marker=".", lw=1)
        for rank, (name, c) in enumerate(ranked[:5], 1):
            ax.annotate(name, (rank, c), fontsize=7, xytext=(4, 2), textcoords="offset points")
    else:
        ax.text(0.5, 0.5, "no entities", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("type rank")
    ax.set_ylabel("mentions")
    ax.set_title(f"{len(ranked):,} entity types, "
                 f"{sum(counts.values()):,} mentions in {len(passages):,} passages")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
