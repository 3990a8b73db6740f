"""The loggers of the entry points: `build_loggers` from the `logger` group (uniner-train,
uniner-eval), the W&B identity of a multirun job (`wandb_identity`), `wandb_logger` for a run
outside that group (uniner-report's summary run), `log_results` (the results tables to W&B) and
`finish`, which ends the W&B run in every case.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from uniner import config
from uniner.evaluation import sweeps
from uniner.evaluation.scoring import AVERAGE, REPORTED, Evaluation
from uniner.progress import shown_path


def build_loggers(cfg: DictConfig, job_type: str | None = None) -> list:
    """The `logger` group's loggers, the resolved config (secrets redacted) logged to each.

    A W&B logger gets the run's identity (`wandb_identity`) and, when given, `job_type`
    (`eval` for uniner-eval) instead of the configured one.
    """
    loggers, extra = [], {}
    for c in (cfg.get("logger") or {}).values():
        if c and str(c.get("_target_", "")).endswith("WandbLogger"):
            quiet_wandb()
            kwargs, extra = wandb_identity(cfg, c)
            loggers.append(without_anonymous(
                instantiate(c, **kwargs, **({"job_type": job_type} if job_type else {}))))
        elif c:
            loggers.append(instantiate(c))
    for lg in loggers:
        if hasattr(lg, "log_hyperparams"):
            lg.log_hyperparams({**config.redact({k: cfg[k] for k in cfg if k != "hydra"}),
                                **extra})
    return loggers


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
    run_values = sweeps.job_values(hc, sweep_dir)
    tags = [*(logger_cfg.get("tags") or []),
            *(f"{k}={v}"[:sweeps.MAX_TAG] for k, v in run_values.items())]
    extra = {"variant": sweeps.label(sweeps.variant(run_values)),
             **{f"{sweeps.PREFIX}{k}": v for k, v in run_values.items()}}
    return {"group": sweeps.group_name(configured, hc.runtime.choices, sweep_dir),
            "tags": tags}, extra


def wandb_logger(save_dir: str | Path, **kwargs):
    """A W&B logger outside the `logger` group, offline unless an API key is available (as
    `logger=wandb`); `kwargs` go to `wandb.init` (project, group, job_type, config ...)."""
    from pytorch_lightning.loggers import WandbLogger

    quiet_wandb()
    return without_anonymous(WandbLogger(save_dir=str(save_dir), offline=config.wandb_offline(),
                                         **kwargs))


def quiet_wandb() -> None:
    """W&B's own ~30 lines at the end of a run push the results table off the screen: silence
    them (`WANDB_SILENT`, unless the user set it) and say where the run is in one line
    (`finish`)."""
    os.environ.setdefault("WANDB_SILENT", "true")


def without_anonymous(logger):
    """Lightning's WandbLogger passes `anonymous=None` to `wandb.init`, a setting W&B deprecated
    (it warns "The anonymous setting has no effect"): drop it before the run starts."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger


def log_results(loggers: list, ev: Evaluation, prefix: str = "test",
                files_dir: str | Path | None = None) -> None:
    """The results table (and the per-type one) to loggers that take tables (W&B); with
    `files_dir`, its three output files are uploaded with the run."""
    for lg in loggers:
        if not hasattr(lg, "log_table"):
            continue
        rows = [[name, *(m.get(r.key, 0.0) for r in REPORTED)] for name, m in ev.results.items()]
        lg.log_table(f"{prefix}/results", columns=["dataset", *(r.key for r in REPORTED)],
                     data=rows)
        per_type = [[name, t, s["precision"], s["recall"], s["f1"], s.get("queries", 0)]
                    for name, m in ev.results.items() if name != AVERAGE
                    for t, s in m["per_type"].items()]
        lg.log_table(f"{prefix}/per_type", columns=["dataset", "type", "precision", "recall",
                                                    "f1", "queries"], data=per_type)
        if files_dir is not None and hasattr(lg, "experiment"):
            save_files(lg.experiment, files_dir, ("predictions.jsonl", "metrics.json",
                                                  "results.md"))


def save_files(run, files_dir: str | Path, names: tuple[str, ...]) -> None:
    """Upload finished files with the W&B run: copied into its directory, then saved from
    there (`run.save` of an outside file symlinks it and warns about each one)."""
    run_dir = Path(run.dir)
    for name in names:
        target = run_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(files_dir) / name, target)
        run.save(str(target), base_path=str(run_dir), policy="now")


def finish(loggers: list, *, finalize: bool = False) -> None:
    """End the run: `finalize` the loggers (when no Trainer did), then `wandb.finish()` when one
    of them is a W&B logger (so that the next run of the process starts its own)."""
    if finalize:
        for lg in loggers:
            lg.finalize("success")
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        run = wandb.run
        wandb.finish()
        if run is not None:
            print(wandb_line(run), file=sys.stderr, flush=True)


def wandb_line(run) -> str:
    """Where a finished W&B run is: its page, or its offline directory and how to upload it."""
    if run.settings.mode == "offline" or getattr(run, "offline", False):
        where = shown_path(Path(run.dir).parent)
        return f"W&B: offline run in {where}; upload it with: wandb sync {where}"
    return f"W&B: {run.url}"
