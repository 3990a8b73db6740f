"""A sweep's runs (`uniner.evaluation.sweeps.Run`) as the paper's table, one per metric: one row
per variant, one column per benchmark dataset plus Avg, each cell the mean ± sample std over the
variant's runs (`build_table`), and its cells as text, which every renderer shares.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from uniner.evaluation.scoring import AVERAGE as AVG
from uniner.evaluation.scoring import OUTSIDE_AVERAGE
from uniner.evaluation.sweeps import AVERAGED, Run, variant


@dataclass
class Row:
    values: dict[str, Any]  # the variant's swept values
    cells: dict[str, list[float]]  # column -> one value per run
    baseline: bool = False  # a run outside the sweep (the untuned base), not a variant

    @property
    def runs(self) -> int:
        return max((len(v) for v in self.cells.values()), default=0)


@dataclass
class Table:
    metric: str
    keys: list[str]  # the variant columns
    columns: list[str]  # datasets, then "average"
    rows: list[Row]
    outside: tuple[str, ...] = ()  # datasets scored beside the average, not in it


def build_table(runs: list[Run], metric: str = "f1", average_over=AVERAGED) -> Table:
    """Runs grouped by variant (first-seen order); columns: the benchmark datasets, then Avg."""
    columns = list(dict.fromkeys(
        [d for r in runs for d in r.datasets]
        + [d for r in runs for d in r.scores if d != AVG] + [m for r in runs for m in r.missing]))
    rows: dict[tuple, Row] = {}
    for r in runs:
        values = variant(r.values, average_over)
        key = tuple((k, str(v)) for k, v in values.items())
        row = rows.setdefault(key, Row(values, {c: [] for c in [*columns, AVG]}, r.baseline))
        for c in [*columns, AVG]:
            value = (r.scores.get(c) or {}).get(metric)
            if value is not None:
                row.cells[c].append(float(value))
    keys = list(dict.fromkeys(k for row in rows.values() for k in row.values))
    outside = tuple(c for c in columns if any(
        (r.scores.get(c) or {}).get("in_average") is False for r in runs))
    return Table(metric, keys, [*columns, AVG], list(rows.values()), outside)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for fewer than 2 values)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def cell(values: list[float], scale: float = 100, digits: int = 1) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def header(table: Table) -> list[str]:
    names = ["Avg" if c == AVG else f"{c} {OUTSIDE_AVERAGE}" if c in table.outside else c
             for c in table.columns]
    return [*table.keys, *names, "runs"]


def text_rows(table: Table, scale: float = 100, digits: int = 1) -> list[list[str]]:
    return [[str(row.values.get(k, "")) for k in table.keys]
            + [cell(row.cells[c], scale, digits) for c in table.columns] + [str(row.runs)]
            for row in table.rows]
