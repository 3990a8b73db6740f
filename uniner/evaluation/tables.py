"""The report of a sweep: its runs (`uniner.evaluation.sweeps.Run`) grouped by variant into the
paper's table, one per metric (`build_table`: one row per variant, one column per benchmark
dataset plus Avg, each cell the mean ± sample std over the variant's runs), written as Markdown,
CSV, a grouped-bar plot per metric and one self-contained HTML page (`write_report`). A sweep
that is a known ablation (`ABLATIONS`: the negative-sampling one) also gets reference rows of
published numbers and its expected ordering judged in words (`ordering_verdict`).
"""

from __future__ import annotations

import base64
import csv
import html
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniner.evaluation.scoring import AVERAGE as AVG
from uniner.evaluation.scoring import LABELS
from uniner.evaluation.sweeps import AVERAGED, Provenance, Run, label, variant


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


@dataclass(frozen=True)
class Reference:
    """Published averages (points) of the variants, shown as a labelled row under the table."""

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


# The paper's negative-sampling ablation (issue 16). Its F1 are the paper's (UniNER-7B, Pile-NER,
# average of the 7 zero-shot sets); the paper gives no FP rates: those are the 58M-student
# measurement of DESIGN.md, labelled as such.
NEGATIVE_SAMPLING = Ablation(
    "sampling", ("none", "uniform", "frequency"),
    {"f1": RISES, "empty_query_fp_rate": FALLS},
    {"f1": Reference("paper (UniNER-7B, avg of 7 zero-shot sets)",
                     {"none": 31.5, "uniform": 47.7, "frequency": 53.4}),
     "empty_query_fp_rate": Reference("58M student from scratch, 2,000 Pile-NER passages "
                                      "(DESIGN.md; not in the paper)",
                                      {"none": 92.0, "uniform": 61.0, "frequency": 29.0})})
ABLATIONS = (NEGATIVE_SAMPLING,)


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
    spreadless = in_order and all("no spread" in r for r in reasons)
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


def find_ablation(tables: list[Table], ablations=ABLATIONS) -> Ablation | None:
    """The ablation a sweep's tables are (its key swept over all its values), if any."""
    return next((a for a in ablations if any(a.applies(t) for t in tables)), None)


def reference_cells(table: Table, reference: Reference, ablation: Ablation) -> list[str]:
    """The reference as one table row: its label, then in the Avg column the published average
    of each variant, `none 31.5 / uniform 47.7 / frequency 53.4`."""
    values = " / ".join(f"{v} {reference.values[v]:g}" for v in ablation.order
                        if v in reference.values)
    return ([f"*{reference.label}*"] + [""] * (len(table.keys) - 1)
            + ["—"] * (len(table.columns) - 1) + [values, "—"])


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
    return [*table.keys, *("Avg" if c == AVG else f"{c} (not in Avg)" if c in table.outside
                           else c for c in table.columns), "runs"]


def text_rows(table: Table, scale: float = 100, digits: int = 1) -> list[list[str]]:
    return [[str(row.values.get(k, "")) for k in table.keys]
            + [cell(row.cells[c], scale, digits) for c in table.columns] + [str(row.runs)]
            for row in table.rows]


def to_markdown(table: Table, scale: float = 100, digits: int = 1,
                reference: list[str] | None = None) -> str:
    """The table; `reference` (`reference_cells`) adds a labelled row of published numbers."""
    head = header(table)
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * len(table.keys) + "---:|" * (len(head) - len(table.keys))]
    for cells in text_rows(table, scale, digits):
        avg = len(table.keys) + len(table.columns) - 1
        cells[avg] = f"**{cells[avg]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if reference:
        lines.append("| " + " | ".join(reference) + " |")
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


def plot(table: Table, path: Path, scale: float = 100, title: str = "",
         reference: Reference | None = None, key: str | None = None) -> None:
    """Grouped bars: one group per dataset with scores and the average (shaded, bold), one bar
    per variant, error bars the std over seeds; `reference` marks each variant's published
    average (a black x on its Avg bar, the variant's value of `key`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if c == AVG or any(row.cells[c] for row in table.rows)]
    n_groups, n_bars = len(columns), max(1, len(table.rows))
    width = 0.8 / n_bars
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * n_groups * n_bars + 2.5) + 2.0, 4.2))
    ax.axvspan(n_groups - 1.5, n_groups - 0.5, color="0.9", zorder=0)  # the Avg group
    colors = plt.get_cmap("tab10").colors
    marked = False
    for i, row in enumerate(table.rows):
        stats = [mean_std(row.cells[c]) for c in columns]
        means = [0.0 if m is None else m * scale for m, _ in stats]
        errs = [0.0 if s is None else s * scale for _, s in stats]
        # a share cannot leave [0, scale]: the std's bar stops at the bounds
        spread = [[min(e, m) for m, e in zip(means, errs)],
                  [min(e, scale - m) for m, e in zip(means, errs)]]
        xs = [g - 0.4 + width * (i + 0.5) for g in range(n_groups)]
        color = colors[i % len(colors)]
        bars = ax.bar(xs, means, width, yerr=spread, capsize=2, color=color, zorder=2,
                      label=label(row.values, row.baseline))
        bars[-1].set_edgecolor("black")  # the average
        bars[-1].set_linewidth(1.5)
        ax.annotate(f"{means[-1]:.1f}", (xs[-1], means[-1] + spread[1][-1]), ha="center",
                    va="bottom", fontsize=7, fontweight="bold")
        published = reference.values.get(str(row.values.get(key))) if reference else None
        if published is not None:
            ax.scatter([xs[-1]], [published], marker="x", color="black", zorder=3,
                       label=None if marked else reference.label)
            marked = True
    ax.set_xticks(range(n_groups))
    labels = ax.set_xticklabels(["Avg" if c == AVG else c for c in columns],
                                rotation=30, ha="right")
    labels[-1].set_fontweight("bold")
    ax.set_ylabel(f"{LABELS.get(table.metric, table.metric)}" + (" (%)" if scale == 100 else ""))
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, scale * 1.08)  # shares: 0 to 100%, room for the Avg labels
    ax.grid(axis="y", alpha=0.3, zorder=1)
    # beside the plot, never over the bars
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------ HTML


def _html_table(table: Table, scale: float, digits: int, reference: list[str] | None) -> str:
    esc = html.escape
    parts = ["<table class='report'><tr>"]
    for i, h in enumerate(header(table)):
        cls = "k" if i < len(table.keys) else ("avg" if h == "Avg" else "")
        parts.append(f"<th class='{cls}'>{esc(h)}</th>")
    parts.append("</tr>")
    avg = len(table.keys) + len(table.columns) - 1
    rows = text_rows(table, scale, digits)
    for n, cells in enumerate(rows + ([reference] if reference else [])):
        ref = n == len(rows)
        parts.append("<tr" + (" class='ref'>" if ref else ">") + "".join(
            f"<td class='{'k' if i < len(table.keys) else 'avg' if i == avg else ''}'>"
            f"{esc(c.strip('*'))}</td>" for i, c in enumerate(cells)) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def to_html(tables: list[Table], pngs: list[Path], runs: list[Run], title: str,
            notes: list[str], scale: float = 100, digits: int = 1, *,
            ablation: Ablation | None = None, verdicts: list[Verdict] = (),
            provenance: Provenance | None = None, out: Path | None = None) -> str:
    """One self-contained page: the verdict, the tables (with reference rows), the plots
    (embedded, side by side), how to rerun (command, W&B group, each variant's config, collapsed),
    every run and the notes."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td.k,th.k{text-align:left}.avg{font-weight:bold;background:#eee}"
             "tr.ref td{font-style:italic;color:#555}.plots img{max-width:49%}"
             "pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:30em}</style></head>"
             f"<body><h1>{esc(title)}</h1>"]
    for verdict in verdicts:
        parts.append(f"<p class='verdict'><b>{esc(verdict.text.replace('**', ''))}</b></p>")
    for table in tables:
        ref = ablation.references.get(table.metric) if ablation else None
        parts.append(f"<h2>{esc(LABELS.get(table.metric, table.metric))}</h2>")
        parts.append(_html_table(table, scale, digits,
                                 reference_cells(table, ref, ablation) if ref else None))
    parts.append("<div class='plots'>")
    for png in pngs:
        image = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<img alt='{esc(png.name)}' src='data:image/png;base64,{image}'>")
    parts.append("</div>")
    if provenance is not None:
        parts.append("<h2>Reproduce</h2><ul>")
        if provenance.command:
            parts.append(f"<li>command: <code>{esc(provenance.command)}</code></li>")
        parts.append(f"<li>W&amp;B group: <code>{esc(provenance.wandb_group)}</code>"
                     + ("" if provenance.wandb_logged else " (the runs did not log to W&B)")
                     + "</li></ul>")
        for name, configs in provenance.configs.items():
            links = ", ".join(f"<a href='{esc(_rel(c, out))}'>{esc(c.parent.parent.name)}</a>"
                              for c in configs)
            text = configs[0].read_text() if configs[0].is_file() else "(not found)"
            parts.append(f"<details><summary>config of {esc(name)} (runs {links})</summary>"
                         f"<pre>{esc(text)}</pre></details>")
    parts.append("<h2>Runs</h2><table><tr><th class='k'>run</th><th class='k'>values</th>"
                 "<th>Avg F1</th></tr>")
    for r in runs:
        f1 = (r.scores.get(AVG) or {}).get("f1")
        shown = "—" if f1 is None else f"{f1 * scale:.{digits + 1}f}"
        parts.append(f"<tr><td class='k'>{esc(r.name)}</td><td class='k'>"
                     f"{esc(label(r.values, r.baseline))}</td><td>{shown}</td></tr>")
    parts.append("</table>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                     + "</ul>")
    return "".join(parts) + "</body></html>\n"


def _rel(path: Path, out: Path | None) -> str:
    if out is None:
        return str(path)
    try:
        return os.path.relpath(path.resolve(), out.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


# ------------------------------------------------------------------------------------ the report


def write_report(runs: list[Run], tables: list[Table], out: Path, *, title: str, source: str,
                 notes: list[str], scale: float = 100, digits: int = 1,
                 provenance: Provenance | None = None) -> dict[str, Path]:
    """`report.{md,csv,png,html}` (the csv and `report.png` of the first table, one
    `report.<metric>.png` per further table) and `runs.csv` in `out`; returns the paths of the
    report files (`png_<metric>` for the further plots). On a recognised ablation
    (`find_ablation`) the tables get its reference rows and the page states the ordering."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"report.{k}" for k in ("md", "csv", "png", "html")}
    ablation = find_ablation(tables)
    verdicts = ordering_verdicts(tables, ablation, scale, digits)
    md = [f"# {title}\n", f"{len(runs)} runs from `{source}`.\n"]
    md += [f"\n{v.text}\n" for v in verdicts]
    for t in tables:
        ref = ablation.references.get(t.metric) if ablation else None
        md += [f"\n## {LABELS.get(t.metric, t.metric)}\n\n",
               to_markdown(t, scale, digits, reference_cells(t, ref, ablation) if ref else None)]
    pngs = []
    for i, t in enumerate(tables):
        png = paths["png"] if i == 0 else out / f"report.{t.metric}.png"
        if i:
            paths[f"png_{t.metric}"] = png
        ref = ablation.references.get(t.metric) if ablation else None
        plot(t, png, scale, f"{title}: {LABELS.get(t.metric, t.metric)}", ref,
             ablation.key if ablation else None)
        pngs.append(png)
    if provenance is not None:
        md.append("\n## Reproduce\n\n")
        if provenance.command:
            md.append(f"```bash\n{provenance.command}\n```\n\n")
        md.append(f"- W&B group: `{provenance.wandb_group}`"
                  + ("" if provenance.wandb_logged else " (the runs did not log to W&B)") + "\n")
        for name, configs in provenance.configs.items():
            md.append(f"- config of {name}: " + ", ".join(
                f"[{c.parent.parent.name}]({_rel(c, out)})" for c in configs) + "\n")
    md += [f"\n- {n}\n" for n in notes]
    paths["md"].write_text("".join(md))
    write_csv(tables[0], paths["csv"], scale)
    write_runs_csv(runs, [t.metric for t in tables], out / "runs.csv")
    paths["html"].write_text(to_html(tables, pngs, runs, title, notes, scale, digits,
                                     ablation=ablation, verdicts=verdicts, provenance=provenance,
                                     out=out))
    return paths
