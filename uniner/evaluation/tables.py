"""The report of a sweep: its runs (`uniner.evaluation.sweeps.Run`) grouped by variant into the
paper's table, one per metric (`build_table`: one row per variant, one column per benchmark
dataset plus Avg, each cell the mean ± sample std over the variant's runs), written as Markdown,
CSV, a grouped-bar plot and one self-contained HTML page (`write_report`).
"""

from __future__ import annotations

import base64
import csv
import html
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniner.evaluation.scoring import AVERAGE as AVG
from uniner.evaluation.scoring import LABELS
from uniner.evaluation.sweeps import AVERAGED, Run, label, variant


@dataclass
class Row:
    values: dict[str, Any]  # the variant's swept values
    cells: dict[str, list[float]]  # column -> one value per run

    @property
    def runs(self) -> int:
        return max((len(v) for v in self.cells.values()), default=0)


@dataclass
class Table:
    metric: str
    keys: list[str]  # the variant columns
    columns: list[str]  # datasets, then "average"
    rows: list[Row]


# ------------------------------------------------------------------------------------ the table


def build_table(runs: list[Run], metric: str = "f1", average_over=AVERAGED) -> Table:
    """Runs grouped by variant (first-seen order); columns: the benchmark datasets, then Avg."""
    columns = list(dict.fromkeys(
        [d for r in runs for d in r.datasets]
        + [d for r in runs for d in r.scores if d != AVG] + [m for r in runs for m in r.missing]))
    rows: dict[tuple, Row] = {}
    for r in runs:
        values = variant(r.values, average_over)
        key = tuple((k, str(v)) for k, v in values.items())
        row = rows.setdefault(key, Row(values, {c: [] for c in [*columns, AVG]}))
        for c in [*columns, AVG]:
            value = (r.scores.get(c) or {}).get(metric)
            if value is not None:
                row.cells[c].append(float(value))
    keys = list(dict.fromkeys(k for row in rows.values() for k in row.values))
    return Table(metric, keys, [*columns, AVG], list(rows.values()))


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
    return [*table.keys, *("Avg" if c == AVG else c for c in table.columns), "runs"]


def text_rows(table: Table, scale: float = 100, digits: int = 1) -> list[list[str]]:
    return [[str(row.values.get(k, "")) for k in table.keys]
            + [cell(row.cells[c], scale, digits) for c in table.columns] + [str(row.runs)]
            for row in table.rows]


def to_markdown(table: Table, scale: float = 100, digits: int = 1) -> str:
    head = header(table)
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * len(table.keys) + "---:|" * (len(head) - len(table.keys))]
    for cells in text_rows(table, scale, digits):
        avg = len(table.keys) + len(table.columns) - 1
        cells[avg] = f"**{cells[avg]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(table: Table, path: Path, scale: float = 100) -> None:
    """Numbers, not text: `<column>_mean`, `<column>_std` per dataset and avg."""
    names = ["avg" if c == AVG else c for c in table.columns]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*table.keys, "runs", *(f"{n}_{s}" for n in names for s in ("mean", "std"))])
        for row in table.rows:
            stats = [mean_std(row.cells[c]) for c in table.columns]
            w.writerow([*(row.values.get(k, "") for k in table.keys), row.runs,
                        *("" if v is None else round(v * scale, 6) for m in stats for v in m)])


def write_runs_csv(runs: list[Run], metrics: list[str], path: Path) -> None:
    """Every run's raw values (fractions, not points), for one's own analysis."""
    keys = list(dict.fromkeys(k for r in runs for k in r.values))
    columns = build_table(runs).columns
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", *keys, *(f"{'avg' if c == AVG else c}/{m}" for c in columns
                                    for m in metrics)])
        for r in runs:
            w.writerow([r.name, *(r.values.get(k, "") for k in keys),
                        *((r.scores.get(c) or {}).get(m, "") for c in columns for m in metrics)])


# ------------------------------------------------------------------------------------ the plot


def plot(table: Table, path: Path, scale: float = 100, title: str = "") -> None:
    """Grouped bars: one group per dataset with scores and the average (shaded, bold), one bar
    per variant, error bars the std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if c == AVG or any(row.cells[c] for row in table.rows)]
    n_groups, n_bars = len(columns), max(1, len(table.rows))
    width = 0.8 / n_bars
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * n_groups * n_bars + 2.5), 4.2))
    ax.axvspan(n_groups - 1.5, n_groups - 0.5, color="0.9", zorder=0)  # the Avg group
    colors = plt.get_cmap("tab10").colors
    for i, row in enumerate(table.rows):
        stats = [mean_std(row.cells[c]) for c in columns]
        means = [0.0 if m is None else m * scale for m, _ in stats]
        errs = [0.0 if s is None else s * scale for _, s in stats]
        xs = [g - 0.4 + width * (i + 0.5) for g in range(n_groups)]
        color = colors[i % len(colors)]
        bars = ax.bar(xs, means, width, yerr=errs, capsize=2, color=color, zorder=2,
                      label=label(row.values))
        bars[-1].set_edgecolor("black")  # the average
        bars[-1].set_linewidth(1.5)
        ax.annotate(f"{means[-1]:.1f}", (xs[-1], means[-1] + errs[-1]), ha="center",
                    va="bottom", fontsize=7, fontweight="bold")
    ax.set_xticks(range(n_groups))
    labels = ax.set_xticklabels(["Avg" if c == AVG else c for c in columns],
                                rotation=30, ha="right")
    labels[-1].set_fontweight("bold")
    ax.set_ylabel(f"{LABELS.get(table.metric, table.metric)}" + (" (%)" if scale == 100 else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3, zorder=1)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------ HTML


def to_html(tables: list[Table], png: Path, runs: list[Run], title: str, notes: list[str],
            scale: float = 100, digits: int = 1) -> str:
    """One self-contained page: the tables, the plot (embedded), every run and the notes."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td.k,th.k{text-align:left}.avg{font-weight:bold;background:#eee}</style></head>"
             f"<body><h1>{esc(title)}</h1>"]
    for table in tables:
        parts.append(f"<h2>{esc(LABELS.get(table.metric, table.metric))}</h2>"
                     "<table class='report'><tr>")
        for i, h in enumerate(header(table)):
            cls = "k" if i < len(table.keys) else ("avg" if h == "Avg" else "")
            parts.append(f"<th class='{cls}'>{esc(h)}</th>")
        parts.append("</tr>")
        avg = len(table.keys) + len(table.columns) - 1
        for cells in text_rows(table, scale, digits):
            parts.append("<tr>" + "".join(
                f"<td class='{'k' if i < len(table.keys) else 'avg' if i == avg else ''}'>"
                f"{esc(c)}</td>" for i, c in enumerate(cells)) + "</tr>")
        parts.append("</table>")
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    parts.append(f"<img alt='{esc(title)}' src='data:image/png;base64,{image}'>")
    parts.append("<h2>Runs</h2><table><tr><th class='k'>run</th><th class='k'>values</th>"
                 "<th>Avg F1</th></tr>")
    for r in runs:
        f1 = (r.scores.get(AVG) or {}).get("f1")
        shown = "—" if f1 is None else f"{f1 * scale:.{digits + 1}f}"
        parts.append(f"<tr><td class='k'>{esc(r.name)}</td><td class='k'>"
                     f"{esc(label(r.values))}</td><td>{shown}</td></tr>")
    parts.append("</table>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                     + "</ul>")
    return "".join(parts) + "</body></html>\n"


# ------------------------------------------------------------------------------------ the report


def write_report(runs: list[Run], tables: list[Table], out: Path, *, title: str, source: str,
                 notes: list[str], scale: float = 100, digits: int = 1) -> dict[str, Path]:
    """`report.{md,csv,png,html}` (the csv and the plot of the first table) and `runs.csv` in
    `out`; returns the paths of the four report files."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"report.{k}" for k in ("md", "csv", "png", "html")}
    md = [f"# {title}\n", f"{len(runs)} runs from `{source}`.\n"]
    for t in tables:
        md += [f"\n## {LABELS.get(t.metric, t.metric)}\n\n", to_markdown(t, scale, digits)]
    md += [f"\n- {n}\n" for n in notes]
    paths["md"].write_text("".join(md))
    write_csv(tables[0], paths["csv"], scale)
    write_runs_csv(runs, [t.metric for t in tables], out / "runs.csv")
    plot(tables[0], paths["png"], scale, title)
    paths["html"].write_text(to_html(tables, paths["png"], runs, title, notes, scale, digits))
    return paths
