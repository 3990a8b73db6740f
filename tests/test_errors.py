"""A user's mistake is one line naming the key, file or line, and a non-zero exit, in seconds and
before any model loads; `HYDRA_FULL_ERROR=1` still shows the traceback (issue 18).

The tools run as a user runs them, in a subprocess (`python -m uniner.cli.<tool>`).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from uniner.cli import checks, schemas
from uniner.config import CONF_DIR
from uniner.errors import ConfigError, MissingFileError
from uniner.model import paths

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["debug=smoke", "logger=none"]
# what uniner-train must not reach when its config is wrong: importing the model room fails
NO_MODEL = ("import sys; sys.modules['uniner.model.backbone'] = None; "
            "sys.argv = ['uniner-train', *sys.argv[1:]]; from uniner.cli.train import main; main()")


def cli(tool: str, *args: str, cwd: Path, stdin: str = "", model: bool = True,
        **env: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **env}
    cmd = ["-m", f"uniner.cli.{tool}"] if model else ["-c", NO_MODEL]
    return subprocess.run([sys.executable, *cmd, *args], cwd=cwd, input=stdin, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line(done: subprocess.CompletedProcess, line: str) -> None:
    """Exit 2, no traceback nor Hydra's "Error executing job", and `line` last on stderr."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr, \
        done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == line


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A directory that looks like a model (never loaded: the input fails first)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


# ------------------------------------------------------------------------------ uniner-train


@pytest.mark.parametrize("override, line", [
    ("trainer.max_epochs=three", "trainer.max_epochs=three: expected an integer or null"),
    ("data.batch_size=abc", "data.batch_size=abc: expected an integer"),
    ("data.padding=widest", "data.padding=widest: expected one of longest, max_length"),
    ("module.max_new_tokens=lots", "module.max_new_tokens=lots: expected an integer >= 1 or auto"),
])
def test_an_override_of_the_wrong_type_names_key_and_type(tmp_path, override, line):
    done = cli("train", *SMOKE, override, cwd=tmp_path, model=False)
    assert_one_line(done, f"uniner-train: error: {line}")


def test_a_missing_data_file_fails_before_the_model_loads(tmp_path):
    path = tmp_path / "nope" / "train.txt"
    done = cli("train", *SMOKE, "data=bio", f"data.source.path={path}", cwd=tmp_path,
               model=False)
    assert_one_line(done, f"uniner-train: error: data.source.path={path}: no such file or "
                          "directory")


def test_a_missing_data_root_names_the_key_and_the_variable(tmp_path):
    """Every dataset of the benchmark under an absent data root: one line up front (not a
    crash after training)."""
    root = tmp_path / "nope"
    done = cli("train", *SMOKE, "benchmark=zero_shot", f"paths.data_root={root}",
               cwd=tmp_path, model=False)
    assert_one_line(done, f"uniner-train: error: paths.data_root={root}: no such directory "
                          "(needed by benchmark=zero_shot); set UNINER_DATA=<your copy of the "
                          "data> or paths.data_root=<dir>")


def test_a_benchmark_without_any_file_under_an_existing_root_is_one_line(tmp_path):
    done = cli("train", *SMOKE, "benchmark=zero_shot", f"paths.data_root={tmp_path}",
               cwd=tmp_path, model=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("uniner-train: error: benchmark=zero_shot: none of its 7 dataset "
                           f"files exists (first: {tmp_path}/crossner/ai/test.txt)")
    assert "UNINER_DATA" in last


def test_the_default_data_root_is_the_variable_else_data_in_the_working_directory(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        env = os.environ.pop("UNINER_DATA", None)
        try:
            assert compose("train").paths.data_root == "./data"
            os.environ["UNINER_DATA"] = str(tmp_path)
            assert compose("train").paths.data_root == str(tmp_path)
        finally:
            os.environ.pop("UNINER_DATA", None)
            if env is not None:
                os.environ["UNINER_DATA"] = env


def test_some_missing_datasets_are_listed_not_an_error(tmp_path, data_root):
    """Some dataset files absent: no error; they are the missing rows of the results."""
    (tmp_path / "crossner" / "ai").mkdir(parents=True)
    (tmp_path / "crossner" / "ai" / "test.txt").write_bytes(
        (data_root / "crossner" / "ai" / "test.txt").read_bytes())
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("eval", [f"paths.data_root={tmp_path}"])
    missing = checks.check_benchmark(cfg.benchmark, cfg.paths.data_root)
    assert len(missing) == 6 and "crossner_ai" not in missing
    with pytest.raises(MissingFileError,
                       match="benchmark.datasets.crossner_literature: .* not found"):
        cfg.benchmark.strict_files = True
        checks.check_benchmark(cfg.benchmark, cfg.paths.data_root)


@pytest.mark.parametrize("override, line", [
    ("benchmark.max_sentences=0", "benchmark.max_sentences=0: must be >= 1"),
    ("+benchmark.max_sentence=2", "benchmark: unknown key(s) ['max_sentence']"),
    ("benchmark.datasets=null", "benchmark=zero_shot: no datasets"),
])
def test_the_benchmark_group_checks_its_own_keys(override, line, data_root):
    """`BenchmarkArgs` owns the group's keys and checks: a misspelt key is named, not ignored
    (the run would have asked every sentence)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("eval", [f"paths.data_root={data_root}", override])
    with pytest.raises(ConfigError) as e:
        checks.check_benchmark(cfg.benchmark, cfg.paths.data_root)
    assert str(e.value).startswith(line)


@pytest.mark.parametrize("tool, override, line", [
    ("eval", "decoding=beam", "decoding=beam: expected one of greedy, constrained"),
    ("predict", "batch_size=0", "batch_size=0: must be >= 1"),
    ("demo", "max_new_tokens=0", "max_new_tokens=0: must be >= 1"),
    ("eval", "+quant.bits=3", "quant=none: bits=3, choose null, 8 or 4"),
])
def test_the_generation_keys_are_checked_once_for_the_three_tools(tool, override, line,
                                                                 tmp_path):
    """`GenerationArgs` owns the keys uniner-eval, -predict and -demo share: each tool's check
    refuses a bad value before it looks for the model."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        overrides = [override, f"checkpoint={tmp_path / 'absent'}"]
        cfg = compose(tool, overrides + (["input=x"] if tool == "predict" else []))
    with pytest.raises(ConfigError) as e:
        getattr(checks, f"check_{tool}")(cfg)
    assert str(e.value) == line


def test_the_generation_keys_reach_the_engine_under_its_names():
    """`batch_size` (the tools' key) is the engine's `batch_rows`; the quant group is typed."""
    from uniner.inference.args import GenerationArgs
    from uniner.model.args import QuantArgs

    gen = GenerationArgs.of({"batch_size": 3, "quant": {"name": "nf4", "bits": 4},
                             "input": "a key of the tool, not of the engine"})
    kwargs = gen.extractor_args()
    assert kwargs["batch_rows"] == 3 and "batch_size" not in kwargs
    assert kwargs["quant"] == QuantArgs(name="nf4", bits=4)

@pytest.mark.parametrize("tool, override, line", [
    ("train", "data=nope", "data=nope: no such option; choose one of bio, instructuie, pile_ner, "
                           "pile_ner_bio_split, sample, supervised"),
    ("train", "trainer.max_epoch=3", "trainer.max_epoch: no such key in the config (a new key is "
                                     "added with +trainer.max_epoch=...)"),
    ("train", "data.batch_size=[8", "data.batch_size=[8: no viable alternative at input '[8' "
                                    "(the override grammar: key=value, group=option, "
                                    "+new_key=value)"),
    ("eval", "data=sample", "data: not a config group of this tool (to add it: +data=sample)"),
    ("predict", "types", "types: missing EQUAL at '<EOF>' (the override grammar: key=value, "
                         "group=option, +new_key=value)"),
])
def test_a_command_line_hydra_cannot_compose_is_one_line(tmp_path, tool, override, line):
    """Hydra's own composition errors: one line naming the override, exit 2, no model loaded
    (the shared `_base` of a group is not offered as an option)."""
    done = cli(tool, override, cwd=tmp_path, model=tool != "train") if tool != "train" \
        else cli(tool, *SMOKE, override, cwd=tmp_path, model=False)
    assert_one_line(done, f"uniner-{tool}: error: {line}")
    assert "HYDRA_FULL_ERROR" not in done.stderr


def test_hydra_full_error_shows_a_composition_errors_traceback(tmp_path):
    done = cli("train", *SMOKE, "data=nope", cwd=tmp_path, model=False, HYDRA_FULL_ERROR="1")
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert "MissingConfigException" in done.stderr


def test_hydra_full_error_shows_the_traceback(tmp_path):
    done = cli("train", *SMOKE, "data.batch_size=abc", cwd=tmp_path, model=False,
               HYDRA_FULL_ERROR="1")
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "ConfigError: data.batch_size=abc" in done.stderr


@pytest.mark.parametrize("override, line", [
    ("sampling.k=-1", "sampling.k and sampling.ratio must be >= 0"),
    ("sampling.strategy=fancy", "sampling.strategy='fancy': choose one of ('none', 'uniform', "
                                "'frequency')"),
    ("checkpoint.mode=median", "checkpoint.mode=median: expected one of max, min"),
])
def test_a_value_the_component_refuses_is_one_line_before_loading(tmp_path, override, line):
    """The component validates its own values (NegativeSampler.__post_init__); the CLI builds
    it among its checks and reports the refusal, unwrapped from Hydra's instantiate."""
    done = cli("train", override, cwd=tmp_path)
    assert_one_line(done, f"uniner-train: error: {line}")


# ------------------------------------------------------------------------------ eval, predict


@pytest.mark.parametrize("tool, args", [
    ("predict", ["input=some text", "types=[person]"]),
    ("eval", ["benchmark=sample"]),
])
def test_a_checkpoint_that_is_no_directory_is_one_line(tmp_path, tool, args):
    (tmp_path / "outputs").mkdir()  # outputs/nope: a path, not the hub id `outputs/nope`
    done = cli(tool, "checkpoint=outputs/nope", *args, cwd=tmp_path)
    assert_one_line(done, f"uniner-{tool}: error: checkpoint=outputs/nope: no such directory")
    done = cli(tool, f"checkpoint={tmp_path}", *args, cwd=tmp_path)
    assert_one_line(done, f"uniner-{tool}: error: checkpoint={tmp_path}: not a model directory "
                          "(no config.json nor adapter_config.json)")


def test_eval_needs_exactly_one_of_checkpoint_and_predictions(tmp_path, model_dir):
    (tmp_path / "p.jsonl").write_text('{"id": "a", "output": "[]"}\n')
    rule = ("uniner-eval: error: give exactly one of checkpoint=DIR (generate) and "
            "predictions=FILE")
    for args in ([], [f"checkpoint={model_dir}", "predictions=p.jsonl"]):
        done = cli("eval", "benchmark=sample", *args, cwd=tmp_path)
        assert done.returncode != 0 and done.stderr.strip().startswith(rule), done.stderr


def test_a_bad_jsonl_line_is_one_line(tmp_path, model_dir):
    (tmp_path / "bad.jsonl").write_text('{"text": "Ada", "types": ["person"]}\n{"text": \n')
    done = cli("predict", f"checkpoint={model_dir}", "input=bad.jsonl", cwd=tmp_path)
    assert_one_line(done, "uniner-predict: error: bad.jsonl:2: not valid JSON (Expecting value)")


def test_empty_predict_input_is_an_error(tmp_path, model_dir):
    (tmp_path / "empty.txt").write_text("")
    done = cli("predict", f"checkpoint={model_dir}", "input=empty.txt", "types=[person]",
               cwd=tmp_path)
    assert_one_line(done, "uniner-predict: error: input=empty.txt: no text to extract from "
                          "(the file is empty)")
    done = cli("predict", f"checkpoint={model_dir}", "input=-", "types=[person]", cwd=tmp_path)
    assert_one_line(done, "uniner-predict: error: input=-: no text to extract from (stdin is "
                          "empty)")


def test_a_mandatory_value_left_unset_is_one_line(tmp_path):
    done = cli("predict", "input=x", "types=[a]", cwd=tmp_path)
    assert_one_line(done, "uniner-predict: error: checkpoint is missing: give it on the command "
                          "line (checkpoint=...)")


# ------------------------------------------------------------------------------ in process


def compose_cfg(name: str, overrides=()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")
                  if not p.stem.startswith("_"))


@pytest.mark.parametrize("override", [f"{g}={o}" for g in (
    "experiment", "sweep", "debug", "data", "sampling", "backbone", "quant", "adapter", "trainer",
    "logger", "benchmark") for o in options(g)])
def test_every_shipped_config_passes_its_schema(override, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # the options whose file the user must name (`???`)
    needs = {"backbone=custom": ["backbone.path=x"],
             "benchmark=own": ["benchmark.datasets.own.path=x"]}
    cfg = compose_cfg("train", [override, *needs.get(override, [])])
    cfg.trainer.default_root_dir = "."  # ${hydra:...} resolves only inside a run
    for logger in (cfg.logger or {}).values():
        logger.save_dir = "."
    checks.check_types(cfg, schemas.Train)


@pytest.mark.parametrize("name, schema, overrides", [
    ("eval", schemas.Eval, ["checkpoint=x"]),
    ("predict", schemas.Predict, ["checkpoint=x", "input=x"]),
    ("prepare", schemas.Prepare, []),
    ("demo", schemas.Demo, []),
])
def test_every_tool_config_passes_its_schema(name, schema, overrides):
    checks.check_types(compose_cfg(name, overrides), schema)


def test_hub_ids_and_paths():
    assert paths.hub_like("Universal-NER/UniNER-7B-type") and paths.hub_like("gpt2")
    assert not paths.hub_like("outputs/train/x/export") and not paths.hub_like("./model")
    assert not paths.hub_like("/abs/model") and not paths.hub_like("~/model")
    with pytest.raises(ConfigError, match="checkpoint=/abs/model: no such directory"):
        paths.check_model("checkpoint", "/abs/model")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache; `cached(repo_id)` puts a model's config.json in it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    def cached(repo_id: str) -> None:
        repo = tmp_path / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("abc123")
        (repo / "snapshots" / "abc123").mkdir(parents=True)
        (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    return cached


def test_a_hub_id_loads_from_the_cache_or_is_one_line_offline(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"^checkpoint=org/model: no such directory, and as a hub "
                       r"id it is not in the local cache \(HF_HUB_OFFLINE=1\); .*"
                       r"hf download org/model$"):
        paths.check_model("checkpoint", "org/model")
    hub_cache("org/model")
    paths.check_model("checkpoint", "org/model")  # cached: no network needed


def test_an_unreachable_hub_is_one_line_at_once(hub_cache, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def unreachable(address, timeout):
        assert timeout <= 3
        raise OSError("Network is unreachable")
    monkeypatch.setattr(paths.socket, "create_connection", unreachable)
    with pytest.raises(ConfigError, match=r"\(huggingface.co cannot be reached\)"):
        paths.check_model("backbone.path", "Qwen/Qwen2.5-0.5B")


@pytest.mark.parametrize("data", options("data"))
def test_every_data_source_finds_its_files_in_the_real_data(data, data_root, tmp_path):
    cfg = compose_cfg("train", [f"data={data}", f"paths.data_root={data_root}"])
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    checks.check_source(source, "data.source", cfg.paths.data_root)
    if data in ("bio", "instructuie", "supervised"):  # under the data root: not in an empty one
        cfg = compose_cfg("train", [f"data={data}", f"paths.data_root={tmp_path}"])
        source = OmegaConf.to_container(cfg.data.source, resolve=True)
        with pytest.raises(ConfigError, match=r"data\.source.*(not found|no such|none of)"):
            checks.check_source(source, "data.source", cfg.paths.data_root)


def test_a_mistake_leaves_no_run_directory_behind(tmp_path):
    done = subprocess.run([sys.executable, "-m", "uniner.cli.eval", "checkpoint=nope/x/y"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "uniner-eval: error: checkpoint=nope/x/y: no such directory"]
    assert list(tmp_path.iterdir()) == []  # no outputs/eval/<name>/<time>/.hydra left


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for a machine without a GPU")
def test_a_gpu_trainer_without_a_gpu_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "uniner.cli.train", "trainer=gpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "uniner-train: error: trainer.accelerator=gpu: no CUDA GPU here (a CPU build of torch); "
        "run on a GPU machine, or trainer=cpu"]


def test_a_missing_pile_ner_file_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "uniner.cli.train", "data=pile_ner",
                           "data.source.path=pile_ner.json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "uniner-train: error: data.source.path=pile_ner.json: no such file or directory"]
