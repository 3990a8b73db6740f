"""Multirun identity: which keys a sweep varies, a run's values of them, and the W&B group, tags
and config keys that let the dashboard (and `uniner-report`) compare the runs of one sweep.

A key is swept when the sweep definition gives it more than one value: `hydra.sweeper.params`
(experiment and sweep configs) plus the command line of the launch, which Hydra's basic sweeper
saves as `<sweep_dir>/multirun.yaml`. Later definitions win, as in the basic sweeper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

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


def label(run_values: Mapping[str, Any]) -> str:
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


def wandb_identity(cfg: DictConfig, logger_cfg: DictConfig) -> tuple[dict, dict]:
    """(WandbLogger arguments, extra config) for the current Hydra job.

    A single run keeps `logger.wandb.group` or `${name}`. A multirun job gets the sweep's group,
    its swept values as tags (`sampling=none`) and as top-level config keys (`sweep/sampling`),
    and `variant`, the swept values but the seed, for W&B's group-by.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    configured = logger_cfg.get("group")
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {"group": configured or cfg.get("name")}, {}
    hc = HydraConfig.get()
    sweep_dir = Path(hc.runtime.cwd) / hc.sweep.dir
    run_values = job_values(hc, sweep_dir)
    tags = [*(logger_cfg.get("tags") or []), *(f"{k}={v}"[:MAX_TAG] for k, v in run_values.items())]
    extra = {"variant": label(variant(run_values)),
             **{f"{PREFIX}{k}": v for k, v in run_values.items()}}
    return {"group": group_name(configured, hc.runtime.choices, sweep_dir), "tags": tags}, extra
