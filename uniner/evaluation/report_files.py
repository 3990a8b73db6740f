"""The report's files: a sweep's tables (`uniner.evaluation.tables`) and, on a known ablation, its
reference rows and verdicts (`uniner.evaluation.ablations`) as Markdown, CSV, a grouped-bar plot
per metric and one self-contained HTML page (`write_report`).
"""

from __future__ import annotations

import base64
import csv
import html
import os
from dataclasses import dataclass
from pathlib import Path

from uniner.evaluation.ablations import (
    Ablation,
    Reference,
    Verdict,
    find_ablation,
    ordering_verdicts,
)
from uniner.evaluation.scoring import AVERAGE as AVG
from uniner.evaluation.scoring import LABELS
from uniner.evaluation.sweeps import Provenance, Run, label
from uniner.evaluation.tables import Table, build_table, header, mean_std, text_rows

# ------------------------------------------------------------------------------------ the tables


def reference_cells(table: Table, ablation: Ablation | None) -> list[str] | None:
    """The ablation's reference of the table's metric, if it has one, as one table row: its
    label, then in the Avg column the average of each variant, `none 31.5 / uniform 47.7 /
    frequency 53.4`."""
    reference = ablation.references.get(table.metric) if ablation else None
    if reference is None:
        return None
    values = " / ".join(f"{v} {reference.values[v]:g}" for v in ablation.order
                        if v in reference.values)
    return ([f"*{reference.label}*"] + [""] * (len(table.keys) - 1)
            + ["—"] * (len(table.columns) - 1) + [values, "—"])


def to_markdown(table: Table, scale: float = 100, digits: int = 1,
                reference: list[str] | None = None) -> str:
    """The table; `reference` (`reference_cells`) adds a labelled row of reference numbers."""
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


# ------------------------------------------------------------------------------------ rerunning


@dataclass(frozen=True)
class VariantConfigs:
    """One variant's runs' configs, as "Reproduce" links them."""

    variant: str  # its label, `sampling=uniform`
    links: list[tuple[str, str]]  # per run: its name, its config's path from the report's folder
    text: str  # the first run's config, or "(not found)"


@dataclass(frozen=True)
class Reproduce:
    """How to rerun a sweep: the one source of the "Reproduce" section of both the Markdown and
    the HTML page."""

    command: str | None
    wandb_group: str
    wandb_note: str  # "", or why the group holds no runs
    configs: list[VariantConfigs]


def reproduce(provenance: Provenance, out: Path) -> Reproduce:
    """What `provenance` says about rerunning, its config links relative to `out`."""
    return Reproduce(
        provenance.command, provenance.wandb_group,
        "" if provenance.wandb_logged else " (the runs did not log to W&B)",
        [VariantConfigs(name, [(c.parent.parent.name, _rel(c, out)) for c in configs],
                        configs[0].read_text() if configs[0].is_file() else "(not found)")
         for name, configs in provenance.configs.items()])


def _rel(path: Path, out: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), out.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


def _reproduce_markdown(rerun: Reproduce) -> list[str]:
    md = ["\n## Reproduce\n\n"]
    if rerun.command:
        md.append(f"```bash\n{rerun.command}\n```\n\n")
    md.append(f"- W&B group: `{rerun.wandb_group}`{rerun.wandb_note}\n")
    md += [f"- config of {c.variant}: " + ", ".join(f"[{run}]({link})" for run, link in c.links)
           + "\n" for c in rerun.configs]
    return md


def _reproduce_html(rerun: Reproduce) -> str:
    esc = html.escape
    parts = ["<h2>Reproduce</h2><ul>"]
    if rerun.command:
        parts.append(f"<li>command: <code>{esc(rerun.command)}</code></li>")
    parts.append(f"<li>W&amp;B group: <code>{esc(rerun.wandb_group)}</code>{rerun.wandb_note}"
                 "</li></ul>")
    for c in rerun.configs:
        links = ", ".join(f"<a href='{esc(link)}'>{esc(run)}</a>" for run, link in c.links)
        parts.append(f"<details><summary>config of {esc(c.variant)} (runs {links})</summary>"
                     f"<pre>{esc(c.text)}</pre></details>")
    return "".join(parts)


# ------------------------------------------------------------------------------------ the pages


def markdown_page(tables: list[Table], runs: list[Run], title: str, source: str,
                  notes: list[str], scale: float = 100, digits: int = 1, *,
                  ablation: Ablation | None = None, verdicts: list[Verdict] = (),
                  rerun: Reproduce | None = None) -> str:
    """The verdicts, the tables (with reference rows), how to rerun and the notes."""
    md = [f"# {title}\n", f"{len(runs)} runs from `{source}`.\n"]
    md += [f"\n{v.text}\n" for v in verdicts]
    for t in tables:
        md += [f"\n## {LABELS.get(t.metric, t.metric)}\n\n",
               to_markdown(t, scale, digits, reference_cells(t, ablation))]
    if rerun is not None:
        md += _reproduce_markdown(rerun)
    md += [f"\n- {n}\n" for n in notes]
    return "".join(md)


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


def html_page(tables: list[Table], pngs: list[Path], runs: list[Run], title: str,
              notes: list[str], scale: float = 100, digits: int = 1, *,
              ablation: Ablation | None = None, verdicts: list[Verdict] = (),
              rerun: Reproduce | None = None) -> str:
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
        parts.append(f"<h2>{esc(LABELS.get(table.metric, table.metric))}</h2>")
        parts.append(_html_table(table, scale, digits, reference_cells(table, ablation)))
    parts.append("<div class='plots'>")
    for png in pngs:
        image = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<img alt='{esc(png.name)}' src='data:image/png;base64,{image}'>")
    parts.append("</div>")
    if rerun is not None:
        parts.append(_reproduce_html(rerun))
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
    rerun = reproduce(provenance, out) if provenance is not None else None
    pngs = []
    for i, t in enumerate(tables):
        png = paths["png"] if i == 0 else out / f"report.{t.metric}.png"
        if i:
            paths[f"png_{t.metric}"] = png
        plot(t, png, scale, f"{title}: {LABELS.get(t.metric, t.metric)}",
             ablation.references.get(t.metric) if ablation else None,
             ablation.key if ablation else None)
        pngs.append(png)
    paths["md"].write_text(markdown_page(tables, runs, title, source, notes, scale, digits,
                                         ablation=ablation, verdicts=verdicts, rerun=rerun))
    write_csv(tables[0], paths["csv"], scale)
    write_runs_csv(runs, [t.metric for t in tables], out / "runs.csv")
    paths["html"].write_text(html_page(tables, pngs, runs, title, notes, scale, digits,
                                       ablation=ablation, verdicts=verdicts, rerun=rerun))
    return paths
