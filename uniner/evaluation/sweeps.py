"""A sweep and its runs: which keys a multirun varies, a run's values of them, its variant, its
W&B group, and the finished runs of a multirun directory or of a W&B group, as `Run`s.

A key is swept when the sweep definition gives it more than one value: `hydra.sweeper.params`
(experiment and sweep configs) plus the command line of the launch, which Hydra's basic sweeper
saves as `<sweep_dir>/multirun.yaml`. Later definitions win, as in the basic sweeper.
`uniner.cli.loggers` gives a multirun job these values as W&B group, tags and config keys;
`uniner.evaluation.tables` and `report_files` build the report of the runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from uniner.errors import MissingFileError
from uniner.evaluation.scoring import AVERAGE

log = logging.getLogger(__name__)

AVERAGED = ("seed",)  # swept keys that repeat a variant rather than define one
PREFIX = "sweep/"  # W&B config keys of the swept values: sweep/sampling, sweep/seed
MAX_TAG = 64  # W&B's tag length limit


def parse(overrides: Iterable[str]) -> dict[str, Override]:
    """Overrides by key (`+`/`++` prefixes dropped), the last one of a key winning."""
    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    return {_key(o): o for o in parsed if not o.is_delete()}


def _key(o: Override) -> str:
    return o.key_or_group if o.package is None else f"{o.key_or_group}@{o.package}"


def _n_values(o: Override) -> int | None:
    try:
        return len(list(o.sweep_string_iterator())) if o.is_discrete_sweep() else None
    except Exception:  # glob() needs Hydra's config loader: count it as swept
        return None


def swept_keys(sweeper_params: Mapping | None, launch_overrides: Sequence[str]) -> list[str]:
    """Keys the sweep gives more than one value, in sweep order."""
    defined = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(launch_overrides)
    return [k for k, o in parse(defined).items() if o.is_sweep_override() and _n_values(o) != 1]


def values(task_overrides: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
    """This run's values of `keys`, typed (`seed=1` gives 1), from its task overrides."""
    parsed = parse(task_overrides)
    return {k: _typed(parsed[k]) for k in keys if k in parsed}


def _typed(o: Override) -> Any:
    value = o.value()
    return value if isinstance(value, str | int | float | bool) or value is None else (
        o.get_value_element_as_str())


def variant(run_values: Mapping[str, Any], averaged: Sequence[str] = AVERAGED) -> dict[str, Any]:
    """The swept values that define a variant: all but the averaged ones (seed)."""
    return {k: v for k, v in run_values.items() if k not in averaged}


def label(run_values: Mapping[str, Any], baseline: bool = False) -> str:
    """`sampling=none seed=1`; a baseline row is called by its value alone."""
    if baseline:
        return " ".join(map(str, run_values.values()))
    return " ".join(f"{k}={v}" for k, v in run_values.items()) or "all runs"


def group_name(configured: str | None, choices: Mapping, sweep_dir: str | Path) -> str:
    """The W&B group of a multirun: `<experiment>-<sweep dir name>`, the dir name being the
    launch time with the default `hydra.sweep.dir`; `configured` (logger.wandb.group) wins."""
    if configured:
        return str(configured)
    what = choices.get("experiment") or choices.get("sweep") or "multirun"
    return f"{what}-{Path(str(sweep_dir)).name}"


def launch_overrides(sweep_dir: str | Path) -> list[str]:
    """The command-line overrides of the launch, from the basic sweeper's `multirun.yaml`."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return []
    return list(OmegaConf.select(OmegaConf.load(path), "hydra.overrides.task", default=[]) or [])


def job_values(hydra_cfg: DictConfig, sweep_dir: str | Path) -> dict[str, Any]:
    """The swept values of a multirun job, given its `hydra` config node; when the sweep
    definition can't be read (another sweeper), all of the job's task overrides."""
    task = list(hydra_cfg.overrides.task)
    params = OmegaConf.to_container(hydra_cfg.sweeper.get("params") or {}, resolve=False)
    keys = swept_keys(params, launch_overrides(sweep_dir))
    return values(task, keys or list(parse(task)))


@dataclass
class Run:
    """One finished job: its swept values (seed included) and its test metrics per dataset."""

    name: str
    values: dict[str, Any]
    scores: dict[str, dict[str, float]]  # dataset (and "average") -> metric -> value
    datasets: list[str] = field(default_factory=list)  # the benchmark's, in config order
    missing: list[str] = field(default_factory=list)  # benchmark files the run did not find
    wandb: dict | None = None  # project, entity, group where the run logged to W&B
    config: Path | None = None  # the job's resolved-at-launch config (`.hydra/config.yaml`)
    baseline: bool = False  # a run outside the sweep, shown beside it (`load_baseline`)


# ------------------------------------------------------------------------------------ reading


def latest_sweep(sweep_dir: str | Path) -> Path:
    """`<experiment dir>/latest` is its newest launch (launch folders are named by time); any
    other path is itself."""
    path = Path(sweep_dir)
    if path.name != "latest" or path.exists():
        return path
    launches = sorted(d for d in path.parent.glob("*") if d.is_dir()) \
        if path.parent.is_dir() else []
    if not launches:
        raise MissingFileError(f"sweep_dir={sweep_dir}: no launch folder in {path.parent}")
    log.info("sweep_dir=%s: the newest launch, %s", sweep_dir, launches[-1])
    return launches[-1]


def _job_order(path: Path) -> tuple:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def load_sweep_dir(sweep_dir: str | Path) -> tuple[list[Run], list[str]]:
    """The finished runs of a multirun directory, and notes on the jobs without results."""
    root = Path(sweep_dir)
    jobs = sorted((p for p in root.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()),
                  key=_job_order) if root.is_dir() else []
    if not jobs:
        raise MissingFileError(f"{root}: no Hydra jobs (<n>/.hydra/overrides.yaml) in it")
    tasks = {p: [str(o) for o in OmegaConf.load(p / ".hydra" / "overrides.yaml")] for p in jobs}
    hydra_cfgs = {p: _load(p / ".hydra" / "hydra.yaml").get("hydra") or {} for p in jobs}
    params = (hydra_cfgs[jobs[0]].get("sweeper") or {}).get("params") or {}
    keys = (swept_keys(params, launch_overrides(root))
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
            name=p.name, values=values(tasks[p], keys), scores=metrics.get("test") or {},
            datasets=_dataset_names(job_cfg), missing=list(metrics.get("missing") or []),
            wandb=_wandb_settings(job_cfg, hydra_cfgs[p], root),
            config=p / ".hydra" / "config.yaml"))
    return runs, notes


def baseline_label(job_cfg: dict, run_dir: Path) -> str:
    """What a baseline row is called: `untuned <backbone>` for a `uniner-train` run of 0 steps
    (the sweep's own recipe and queries on the backbone as it came), else the run's checkpoint
    or folder name; with its prompt style."""
    trainer, backbone = job_cfg.get("trainer") or {}, job_cfg.get("backbone") or {}
    if trainer.get("max_steps") == 0 and backbone.get("name"):
        name = f"untuned {backbone['name']}"
    elif job_cfg.get("checkpoint"):  # uniner-eval
        name = Path(str(job_cfg["checkpoint"]).split("/")[-1]).stem
    else:
        name = run_dir.name
    prompt = job_cfg.get("prompt")
    return f"{name} (prompt={prompt})" if prompt else name


def load_baseline(run_dir: str | Path, key: str) -> Run:
    """A finished `uniner-train` or `uniner-eval` run as a row of a sweep's tables: its scores
    under the value `baseline_label(...)` of the sweep's first key."""
    root = Path(run_dir)
    metrics_file = root / "metrics.json"
    if not metrics_file.is_file():
        raise MissingFileError(f"baselines: {root}: no metrics.json (not a finished uniner-train "
                               "or uniner-eval run)")
    metrics = json.loads(metrics_file.read_text())
    scores = metrics.get("test") or {k: v for k, v in metrics.items()
                                     if isinstance(v, dict) and "f1" in v}  # uniner-eval's
    job_cfg = _load(root / ".hydra" / "config.yaml")
    return Run(name=str(root), values={key: baseline_label(job_cfg, root)}, scores=scores,
               datasets=_dataset_names(job_cfg), missing=list(metrics.get("missing") or []),
               config=root / ".hydra" / "config.yaml", baseline=True)


@dataclass
class Provenance:
    """How to rerun and find a sweep: the launch command, the W&B group (or the one it would
    have had, and why it has none) and, per variant, the config files of its runs."""

    command: str | None
    wandb_group: str
    wandb_logged: bool
    configs: dict[str, list[Path]]  # variant label -> its runs' .hydra/config.yaml


def sweep_provenance(sweep_dir: str | Path, runs: Sequence[Run],
                     averaged: Sequence[str] = AVERAGED) -> Provenance:
    """The `Provenance` of a multirun directory's runs: `uniner-train -m` with the launch's
    command-line overrides (`multirun.yaml`), the runs' W&B group (or the default name)."""
    root = Path(sweep_dir)
    overrides = launch_overrides(root)
    command = "uniner-train -m " + " ".join(overrides) if overrides else None
    logged = next((r.wandb for r in runs if r.wandb), None)
    if logged:
        group = str(logged["group"])
    else:
        first = next((p for p in sorted(root.iterdir(), key=_job_order)
                      if (p / ".hydra" / "hydra.yaml").is_file()), None) if root.is_dir() else None
        hydra_cfg = (_load(first / ".hydra" / "hydra.yaml").get("hydra") or {}) if first else {}
        choices = (hydra_cfg.get("runtime") or {}).get("choices") or {}
        group = group_name(None, choices, root.resolve())
    configs: dict[str, list[Path]] = {}
    for r in runs:
        if r.config is not None:
            configs.setdefault(label(variant(r.values, averaged)), []).append(r.config)
    return Provenance(command, group, logged is not None, configs)


def _load(path: Path) -> dict:
    # unresolved: the saved configs hold ${hydra:...} and ${now:...} interpolations
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}


def _varying(tasks: list[list[str]]) -> list[str]:
    """Keys whose override differs between jobs (when the sweep definition is not saved)."""
    parsed = [{k: o.get_value_element_as_str() for k, o in parse(t).items()} for t in tasks]
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
            "group": group_name(configured, choices, sweep_dir.resolve())}


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
                scores.setdefault(AVERAGE if parts[1] == "avg" else parts[1], {})[parts[2]] = value
        values = {k[len(PREFIX):]: v for k, v in cfg.items() if k.startswith(PREFIX)}
        runs.append(Run(name=r.name, values=values, scores=scores, datasets=_dataset_names(cfg)))
    return runs
