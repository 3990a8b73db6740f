"""The ablations the report recognises (their reference numbers are data: `references.yaml`)
and whether a sweep's tables show the ordering each expects (`ordering_verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from uniner.evaluation.scoring import AVERAGE as AVG
from uniner.evaluation.scoring import LABELS
from uniner.evaluation.tables import Table, mean_std


@dataclass(frozen=True)
class Reference:
    """Reference averages (points) of the variants, shown as a labelled row under the table."""

    label: str
    values: dict[str, float]  # the ablated key's value -> the average


RISES, FALLS = "rises", "falls"  # how a metric is expected to move along an ablation's order


@dataclass(frozen=True)
class Ablation:
    """An ablation the report recognises: a sweep over `key` with (at least) the values of
    `order`, along which each metric of `expected` rises or falls; reference rows per metric."""

    key: str
    order: tuple[str, ...]
    expected: dict[str, str]  # metric -> RISES or FALLS along `order`
    references: dict[str, Reference]

    def applies(self, table: Table) -> bool:
        return self.key in table.keys and set(self.order) <= {
            str(row.values.get(self.key)) for row in table.rows}


REFERENCES = Path(__file__).with_name("references.yaml")


def load_ablations(path: Path = REFERENCES) -> dict[str, Ablation]:
    """The ablations of a references file (`references.yaml`), by name."""
    ablations = {}
    for name, a in yaml.safe_load(path.read_text()).items():
        unknown = set(a["expected"].values()) - {RISES, FALLS}
        if unknown:  # anything else would silently be read as "falls"
            raise ValueError(f"{path}: {name}: expected is {RISES} or {FALLS}, not {unknown}")
        # str: the values are compared with a row's value as text (8 and "8" alike)
        ablations[name] = Ablation(
            str(a["key"]), tuple(str(v) for v in a["order"]), dict(a["expected"]),
            {metric: Reference(r["label"], {str(v): float(x) for v, x in r["values"].items()})
             for metric, r in a["references"].items()})
    return ablations


ABLATIONS = load_ablations()
NEGATIVE_SAMPLING = ABLATIONS["negative_sampling"]  # the paper's (issue 16)


@dataclass(frozen=True)
class Verdict:
    """Whether a table's Avg moves along `ablation.order` as expected by more than the seeds'
    spread (`holds`), whether its means are at least in that order (`in_order`), in words."""

    metric: str
    holds: bool
    in_order: bool
    text: str


RULE = ("holds iff each gap between consecutive strategies' mean Avg exceeds the sample std "
        "over seeds of both strategies")


def ordering_verdict(table: Table, ablation: Ablation, scale: float = 100,
                     digits: int = 1) -> Verdict:
    """The expected ordering of `table.metric` (Avg column): holds iff for each consecutive
    pair (a, b) of `ablation.order` the step from a to b goes the expected way by more than
    std(a) and std(b). With fewer than 2 runs a strategy there is no spread: the means may be
    in order, but the ordering cannot hold."""
    rises = ablation.expected[table.metric] == RISES
    rows = {str(row.values.get(ablation.key)): row for row in table.rows}
    stats = {v: mean_std(rows[v].cells[AVG]) if v in rows else (None, None)
             for v in ablation.order}
    name = LABELS.get(table.metric, table.metric)
    expected = (" < " if rises else " > ").join(ablation.order)

    def shown(v: str) -> str:
        mean, std = stats[v]
        return f"{v} " + ("—" if mean is None else f"{mean * scale:.{digits}f}" + (
            "" if std is None else f" ± {std * scale:.{digits}f}"))

    reasons, gaps, in_order = [], [], True
    for a, b in zip(ablation.order, ablation.order[1:]):
        (ma, sa), (mb, sb) = stats[a], stats[b]
        if ma is None or mb is None:
            reasons.append(f"{a if ma is None else b} has no runs")
            in_order = False
            continue
        gap = (mb - ma) if rises else (ma - mb)
        step = f"{b} - {a}" if rises else f"{a} - {b}"
        gaps.append(f"{step} = {gap * scale:.{digits}f}")
        in_order = in_order and gap > 0
        if sa is None or sb is None:
            reasons.append(f"{a} vs {b}: fewer than 2 runs, no spread to beat")
        elif not gap > max(sa, sb):
            reasons.append(f"{step} = {gap * scale:.{digits}f} (needs > "
                           f"{max(sa, sb) * scale:.{digits}f})")
    holds = not reasons
    spreadless = in_order and bool(reasons) and all("no spread" in r for r in reasons)
    verdict = ("holds" if holds else "means in this order, gaps not judged" if spreadless
               else "does not hold")
    detail = [", ".join(shown(v) for v in ablation.order) + "; mean ± std over seeds"]
    if spreadless:
        detail.append("; ".join(gaps) + "; one run a strategy: no spread over seeds to judge "
                      "the gaps against")
    elif not holds:
        detail.append("; ".join(reasons))
    text = (f"Ordering of the average {name} {expected}: **{verdict}** ({'; '.join(detail)})."
            f" Rule: {RULE}.")
    return Verdict(table.metric, holds, in_order, text)


def ordering_verdicts(tables: list[Table], ablation: Ablation | None, scale: float = 100,
                      digits: int = 1) -> list[Verdict]:
    """The verdict of each table whose metric the ablation orders, in the tables' order."""
    if ablation is None:
        return []
    return [ordering_verdict(t, ablation, scale, digits) for t in tables
            if t.metric in ablation.expected]


def find_ablation(tables: list[Table], ablations: dict[str, Ablation] = ABLATIONS
                  ) -> Ablation | None:
    """The ablation a sweep's tables are (its key swept over all its values), if any."""
    return next((a for a in ablations.values() if any(a.applies(t) for t in tables)), None)
