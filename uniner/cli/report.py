"""`uniner-report`: a finished sweep as the paper's table (Markdown and CSV), a grouped-bar plot
and one self-contained HTML page, read from its multirun directory or its W&B group.

    uniner-report sweep_dir=multirun/negative_sampling_ablation/2025-01-31_12-00-00
    uniner-report sweep_dir=multirun/negative_sampling_ablation/latest  # its newest launch

One row per variant (the swept values but the seed), one column per benchmark dataset plus Avg,
each cell the mean ± sample std over the variant's runs (seeds).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from uniner import config
from uniner.cli import sweep

log = logging.getLogger(__name__)

AVG = "average"  # metrics.json's name of the benchmark average; `test/avg/<metric>` in W&B
NAMES = {"f1": "F1", "precision": "precision", "recall": "recall",
         "empty_query_fp_rate": "empty-query FP rate"}


@dataclass
class Run:
    """One finished job: its swept values (seed included) and its test metrics per dataset."""

    name: str
    values: dict[str, Any]
    scores: dict[str, dict[str, float]]  # dataset (and "average") -> metric -> value
    datasets: list[str] = field(default_factory=list)  # the benchmark's, in config order
    missing: list[str] = field(default_factory=list)  # benchmark files the run did not find
    wandb: dict | None = None  # project, entity, group where the run logged to W&B


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


# ------------------------------------------------------------------------------------ reading


def _job_order(path: Path) -> tuple:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def load_sweep_dir(sweep_dir: str | Path) -> tuple[list[Run], list[str]]:
    """The finished runs of a multirun directory, and notes on the jobs without results."""
    root = Path(sweep_dir)
    jobs = sorted((p for p in root.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()),
                  key=_job_order) if root.is_dir() else []
    if not jobs:
        raise FileNotFoundError(f"{root}: no Hydra jobs (<n>/.hydra/overrides.yaml) in it")
    tasks = {p: [str(o) for o in OmegaConf.load(p / ".hydra" / "overrides.yaml")] for p in jobs}
    hydra_cfgs = {p: _load(p / ".hydra" / "hydra.yaml").get("hydra") or {} for p in jobs}
    params = (hydra_cfgs[jobs[0]].get("sweeper") or {}).get("params") or {}
    keys = (sweep.swept_keys(params, sweep.launch_overrides(root))
            or _varying(list(tasks.values())))
    runs, notes = [], []
    for p in jobs:
        metrics_file = p / "metrics.json"
        if not metrics_file.is_file():
            notes.append(f"{p.name}: no metrics.json (failed or unfinished), left out")
            continue
        metrics = json.loads(metrics_file.read_text())
        job_cfg = _load(p / ".hydra" / "config.yaml")
        runs.append(Run(
            name=p.name, values=sweep.values(tasks[p], keys), scores=metrics.get("test") or {},
            datasets=_dataset_names(job_cfg), missing=list(metrics.get("missing") or []),
            wandb=_wandb_settings(job_cfg, hydra_cfgs[p], root)))
    return runs, notes


def _load(path: Path) -> dict:
    # unresolved: the saved configs hold ${hydra:...} and ${now:...} interpolations
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}


def _varying(tasks: list[list[str]]) -> list[str]:
    """Keys whose override differs between jobs (when the sweep definition is not saved)."""
    parsed = [{k: o.get_value_element_as_str() for k, o in sweep.parse(t).items()} for t in tasks]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    return [k for k in keys if len({p.get(k) for p in parsed}) > 1]


def _dataset_names(job_cfg: dict) -> list[str]:
    """The benchmark's dataset names in config order (a name -> dataset mapping, or a list)."""
    datasets = (job_cfg.get("benchmark") or {}).get("datasets") or []
    if isinstance(datasets, dict):
        return [str(d.get("name") or k) for k, d in datasets.items() if isinstance(d, dict)]
    return [d["name"] for d in datasets if isinstance(d, dict) and "name" in d]


def _wandb_settings(job_cfg: dict, hydra_cfg: dict, sweep_dir: Path) -> dict | None:
    wb = (job_cfg.get("logger") or {}).get("wandb")
    if not wb:
        return None
    configured = wb.get("group")
    if isinstance(configured, str) and "${" in configured:
        configured = None  # an interpolation the report can't resolve: the default naming
    choices = (hydra_cfg.get("runtime") or {}).get("choices") or {}
    return {"project": wb.get("project"), "entity": wb.get("entity"),
            "group": sweep.group_name(configured, choices, sweep_dir.resolve())}


def load_wandb_group(group: str, project: str, entity: str | None = None) -> list[Run]:
    """The finished runs of a W&B group, with the public API (needs network and a key)."""
    import wandb

    path = f"{entity}/{project}" if entity else project
    api_runs = wandb.Api().runs(path, filters={"group": group}, order="+created_at")
    runs = runs_from_wandb(api_runs)
    for r in runs:
        r.wandb = {"project": project, "entity": entity, "group": group}
    return runs


def runs_from_wandb(api_runs) -> list[Run]:
    """`Run`s from W&B public-API runs: swept values from the `sweep/<key>` config keys,
    metrics from the `test/<dataset>/<metric>` summary keys."""
    runs = []
    for r in api_runs:
        if r.job_type == "report" or r.state != "finished":
            continue
        cfg = dict(r.config)
        scores: dict[str, dict[str, float]] = {}
        for key, value in dict(r.summary_metrics).items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "test" and isinstance(value, int | float):
                scores.setdefault(AVG if parts[1] == "avg" else parts[1], {})[parts[2]] = value
        values = {k[len(sweep.PREFIX):]: v for k, v in cfg.items() if k.startswith(sweep.PREFIX)}
        runs.append(Run(name=r.name, values=values, scores=scores, datasets=_dataset_names(cfg)))
    return runs


# ------------------------------------------------------------------------------------ the table


def build_table(runs: list[Run], metric: str = "f1", average_over=sweep.AVERAGED) -> Table:
    """Runs grouped by variant (first-seen order); columns: the benchmark datasets, then Avg."""
    columns = list(dict.fromkeys(
        [d for r in runs for d in r.datasets]
        + [d for r in runs for d in r.scores if d != AVG] + [m for r in runs for m in r.missing]))
    rows: dict[tuple, Row] = {}
    for r in runs:
        values = sweep.variant(r.values, average_over)
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
                      label=sweep.label(row.values))
        bars[-1].set_edgecolor("black")  # the average
        bars[-1].set_linewidth(1.5)
        ax.annotate(f"{means[-1]:.1f}", (xs[-1], means[-1] + errs[-1]), ha="center",
                    va="bottom", fontsize=7, fontweight="bold")
    ax.set_xticks(range(n_groups))
    labels = ax.set_xticklabels(["Avg" if c == AVG else c for c in columns],
                                rotation=30, ha="right")
    labels[-1].set_fontweight("bold")
    ax.set_ylabel(f"{NAMES.get(table.metric, table.metric)}" + (" (%)" if scale == 100 else ""))
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
        parts.append(f"<h2>{esc(NAMES.get(table.metric, table.metric))}</h2>"
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
                     f"{esc(sweep.label(r.values))}</td><td>{shown}</td></tr>")
    parts.append("</table>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                     + "</ul>")
    return "".join(parts) + "</body></html>\n"


# ------------------------------------------------------------------------------------ the app


def latest_sweep(sweep_dir: str | Path) -> Path:
    """`<experiment dir>/latest` is its newest launch (launch folders are named by time); any
    other path is itself."""
    path = Path(sweep_dir)
    if path.name != "latest" or path.exists():
        return path
    launches = sorted(d for d in path.parent.glob("*") if d.is_dir()) \
        if path.parent.is_dir() else []
    if not launches:
        raise FileNotFoundError(f"sweep_dir={sweep_dir}: no launch folder in {path.parent}")
    log.info("sweep_dir=%s: the newest launch, %s", sweep_dir, launches[-1])
    return launches[-1]


def report(cfg: DictConfig) -> dict[str, Path]:
    """Read the sweep, write `report.{md,csv,png,html}` and `runs.csv`; returns their paths."""
    if bool(cfg.sweep_dir) == bool(cfg.wandb_group):
        raise ValueError("give exactly one of sweep_dir=<multirun dir> or wandb_group=<group>")
    if cfg.sweep_dir:
        cfg.sweep_dir = str(latest_sweep(cfg.sweep_dir))
        runs, notes = load_sweep_dir(cfg.sweep_dir)
        source, title = str(cfg.sweep_dir), Path(cfg.sweep_dir).resolve().name
        parent = Path(cfg.sweep_dir).resolve().parent.name
        title = f"{parent} {title}" if parent not in ("", "multirun") else title
        out = Path(cfg.out_dir or Path(cfg.sweep_dir) / "report")
    else:
        runs, notes = load_wandb_group(cfg.wandb_group, cfg.wandb.project, cfg.wandb.entity), []
        source = title = str(cfg.wandb_group)
        out = Path(cfg.out_dir or Path("outputs/report") / str(cfg.wandb_group))
    if not runs:
        raise RuntimeError(f"{source}: no finished runs with test metrics")
    missing = sorted({m for r in runs for m in r.missing})
    if missing:
        notes.append(f"benchmark files not found by the runs (no scores): {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    metrics = list(cfg.metrics)
    tables = [build_table(runs, m, list(cfg.average_over)) for m in metrics]
    scale, digits = float(cfg.scale), int(cfg.digits)
    paths = {k: out / f"report.{k}" for k in ("md", "csv", "png", "html")}
    md = [f"# {title}\n", f"{len(runs)} runs from `{source}`.\n"]
    for t in tables:
        md += [f"\n## {NAMES.get(t.metric, t.metric)}\n\n", to_markdown(t, scale, digits)]
    md += [f"\n- {n}\n" for n in notes]
    paths["md"].write_text("".join(md))
    write_csv(tables[0], paths["csv"], scale)
    write_runs_csv(runs, metrics, out / "runs.csv")
    plot(tables[0], paths["png"], scale, title)
    paths["html"].write_text(to_html(tables, paths["png"], runs, title, notes, scale, digits))
    settings = _summary_run_settings(cfg, runs)
    if settings:
        log_to_wandb(tables[0], paths, settings, source, scale, digits)
    print(to_markdown(tables[0], scale, digits))
    log.info("report written to %s", out)
    return paths


def _summary_run_settings(cfg: DictConfig, runs: list[Run]) -> dict | None:
    """Where the summary run goes: the sweep's own W&B project and group (if it used W&B)."""
    used = next((r.wandb for r in runs if r.wandb), None)
    if cfg.wandb.log in (False, "false") or (cfg.wandb.log == "auto" and used is None):
        return None
    settings = dict(used or {"project": cfg.wandb.project, "entity": cfg.wandb.entity})
    settings["group"] = (cfg.wandb.group or settings.get("group") or cfg.wandb_group
                         or Path(str(cfg.sweep_dir)).resolve().name)
    return settings


def log_to_wandb(table: Table, paths: dict[str, Path], settings: dict, source: str,
                 scale: float, digits: int) -> None:
    """The table, plot and page as a `report` run of the sweep's group."""
    import wandb

    run = wandb.init(project=settings.get("project") or "uniner", entity=settings.get("entity"),
                     group=settings["group"], job_type="report",
                     name=f"report-{settings['group']}", dir=str(paths["md"].parent),
                     mode="offline" if config.wandb_offline() else "online",
                     config={"source": source, "metric": table.metric})
    try:
        run.log({"report/table": wandb.Table(columns=header(table),
                                             data=text_rows(table, scale, digits)),
                 "report/plot": wandb.Image(str(paths["png"])),
                 "report/page": wandb.Html(paths["html"].read_text())})
        for row in table.rows:  # the averages as summary numbers, one per variant
            mean, _ = mean_std(row.cells[AVG])
            if mean is not None:
                run.summary[f"report/{sweep.label(row.values)}/avg_{table.metric}"] = mean
    finally:
        run.finish()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    report(cfg)


if __name__ == "__main__":
    main()
