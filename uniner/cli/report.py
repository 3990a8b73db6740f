"""`uniner-report`: a finished sweep as the paper's table (Markdown and CSV), a grouped-bar plot
and one self-contained HTML page, read from its multirun directory or its W&B group.

    uniner-report sweep_dir=multirun/negative_sampling_ablation/2025-01-31_12-00-00
    uniner-report sweep_dir=multirun/negative_sampling_ablation/latest  # its newest launch

One row per variant (the swept values but the seed), one column per benchmark dataset plus Avg,
each cell the mean ± sample std over the variant's runs (seeds), one table and plot per metric
(F1, the empty-query FP rate, the empty-query malformed rate); on the negative-sampling ablation
also the reference rows and the orderings of F1 and FP in words, and how to rerun the sweep
(command, W&B group, each variant's config). `baselines=[<run dir>, ...]` adds finished runs
outside the sweep as rows (the untuned base: the sweep's command with `trainer.max_steps=0`).
The table is `uniner.evaluation.tables`, the reference rows and verdicts
`uniner.evaluation.ablations`, the files `uniner.evaluation.report_files`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from uniner import config
from uniner.cli.entry import tool, user_errors
from uniner.cli.loggers import finish, wandb_logger
from uniner.errors import ConfigError
from uniner.evaluation.ablations import find_ablation, ordering_verdicts
from uniner.evaluation.report_files import write_report
from uniner.evaluation.scoring import AVERAGE
from uniner.evaluation.sweeps import (
    AVERAGED,
    Run,
    label,
    latest_sweep,
    load_baseline,
    load_sweep_dir,
    load_wandb_group,
    sweep_provenance,
    variant,
)
from uniner.evaluation.tables import Table, build_table, header, mean_std, text_rows
from uniner.progress import run_directory

log = logging.getLogger(__name__)


def report(cfg: DictConfig) -> dict[str, Path]:
    """Read the sweep, write `report.{md,csv,png,html}` and `runs.csv`; returns their paths."""
    if bool(cfg.sweep_dir) == bool(cfg.wandb_group):
        raise ConfigError("give exactly one of sweep_dir=<multirun dir> or wandb_group=<group>")
    if cfg.sweep_dir:
        cfg.sweep_dir = str(latest_sweep(cfg.sweep_dir))
        runs, notes = load_sweep_dir(cfg.sweep_dir)
        source, title = str(cfg.sweep_dir), Path(cfg.sweep_dir).resolve().name
        parent = Path(cfg.sweep_dir).resolve().parent.name
        title = f"{parent} {title}" if parent not in ("", "multirun") else title
        out = Path(cfg.out_dir or Path(cfg.sweep_dir) / "report")
        provenance = sweep_provenance(cfg.sweep_dir, runs, list(cfg.average_over))
    else:
        runs, notes = load_wandb_group(cfg.wandb_group, cfg.wandb.project, cfg.wandb.entity), []
        source = title = str(cfg.wandb_group)
        out = Path(cfg.out_dir or Path("outputs/report") / str(cfg.wandb_group))
        provenance = None
    if not runs:
        raise RuntimeError(f"{source}: no finished runs with test metrics")
    key = next(iter(variant(runs[0].values, list(cfg.average_over))), None)
    for run_dir in cfg.baselines or []:
        if key is None:
            raise ConfigError("baselines: the sweep varies no key to label a baseline row with")
        runs.append(load_baseline(run_dir, key))
    run_directory(out)
    missing = sorted({m for r in runs for m in r.missing})
    if missing:
        notes.append(f"benchmark files not found by the runs (no scores): {', '.join(missing)}")
    notes += run_caveats(runs, list(cfg.average_over))
    tables = [build_table(runs, m, list(cfg.average_over)) for m in cfg.metrics]
    empty = [t.metric for t in tables[1:] if not any(v for row in t.rows
                                                      for v in row.cells.values())]
    if empty:
        notes.append(f"no run reports {', '.join(empty)} (runs older than the metric): "
                     "no table")
        tables = [t for t in tables if t.metric not in empty]
    scale, digits = float(cfg.scale), int(cfg.digits)
    paths = write_report(runs, tables, out, title=title, source=source, notes=notes,
                         scale=scale, digits=digits, provenance=provenance)
    settings = _summary_run_settings(cfg, runs, provenance)
    if settings:
        log_to_wandb(tables, paths, settings, source, scale, digits)
    print(paths["md"].read_text())
    log.info("report written to %s", out)
    run_directory(out)
    return paths


SMOKE_STEPS = 50  # fewer training steps than this: a run that checks the pipeline, not a recipe


def run_caveats(runs: list[Run], average_over: Sequence[str] = AVERAGED) -> list[str]:
    """What the tables cannot say themselves: runs too short to mean anything about a recipe
    (their `trainer.max_steps`, `debug=smoke`), and runs whose answers are mostly malformed
    (the official parser reads them as [], so their FP rate is low for want of answers),
    labelled as the tables label their variants (`average_over`)."""
    from omegaconf import OmegaConf

    notes = []
    steps = set()
    for r in runs:
        if r.config is not None and Path(r.config).is_file():
            max_steps = OmegaConf.select(OmegaConf.load(r.config), "trainer.max_steps")
            if isinstance(max_steps, int) and 0 < max_steps < SMOKE_STEPS:
                steps.add(max_steps)
    if steps:
        notes.append(f"smoke-sized runs: trained {', '.join(map(str, sorted(steps)))} steps "
                     "(trainer.max_steps); these numbers check the pipeline, not the recipe")
    broken = sorted({label(variant(r.values, average_over), r.baseline) for r in runs
                     if r.scores.get("average", {}).get("empty_query_malformed_rate", 0) >= 0.5})
    if broken:
        notes.append("mostly malformed answers (>= 50% of the empty queries) in "
                     f"{', '.join(broken)}: the official parser reads them as [], so their FP "
                     "rate is low for want of answers, not by judgement")
    return notes


def _summary_run_settings(cfg: DictConfig, runs: list[Run], provenance=None) -> dict | None:
    """Where the summary run goes: the sweep's own W&B project and group (if it used W&B; else
    the group its runs would have had, as the report names it)."""
    used = next((r.wandb for r in runs if r.wandb), None)
    if cfg.wandb.log in (False, "false") or (cfg.wandb.log == "auto" and used is None):
        return None
    settings = dict(used or {"project": cfg.wandb.project, "entity": cfg.wandb.entity})
    settings["group"] = (cfg.wandb.group or settings.get("group") or cfg.wandb_group
                         or (provenance.wandb_group if provenance else None)
                         or Path(str(cfg.sweep_dir)).resolve().name)
    return settings


def log_to_wandb(tables: list[Table], paths: dict[str, Path], settings: dict, source: str,
                 scale: float, digits: int) -> None:
    """The tables, plots and page as a `report` run of the sweep's group; on a known ablation
    also its ordering verdicts (`report/ordering/<metric>`, `.../holds`, `.../in_order`)."""
    import wandb

    logger = wandb_logger(paths["md"].parent, project=settings.get("project") or "uniner",
                          entity=settings.get("entity"), group=settings["group"],
                          job_type="report", name=f"report-{settings['group']}",
                          config={"source": source, "metric": tables[0].metric})
    try:
        run = logger.experiment
        run.log({**{"report/table" + ("" if i == 0 else f"_{t.metric}"): wandb.Table(
                    columns=header(t), data=text_rows(t, scale, digits))
                    for i, t in enumerate(tables)},
                 "report/plot": wandb.Image(str(paths["png"])),
                 **{f"report/plot_{k[4:]}": wandb.Image(str(p)) for k, p in paths.items()
                    if k.startswith("png_")},
                 "report/page": wandb.Html(paths["html"].read_text())})
        for table in tables:  # the averages as summary numbers, one per variant and metric
            for row in table.rows:
                mean, _ = mean_std(row.cells[AVERAGE])
                name = label(row.values, row.baseline)
                if mean is not None:
                    run.summary[f"report/{name}/avg_{table.metric}"] = mean
        for verdict in ordering_verdicts(tables, find_ablation(tables), scale, digits):
            run.summary[f"report/ordering/{verdict.metric}"] = verdict.text.replace("**", "")
            run.summary[f"report/ordering/{verdict.metric}/holds"] = verdict.holds
            run.summary[f"report/ordering/{verdict.metric}/in_order"] = verdict.in_order
    finally:
        finish([logger])


@tool("uniner-report", torch_threads=False)
@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    with user_errors("uniner-report"):
        report(cfg)


if __name__ == "__main__":
    main()
