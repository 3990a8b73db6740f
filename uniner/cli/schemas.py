"""The types of the configs' knobs, as dataclasses: each tool checks its composed config against
its schema (`checks.check_types`) before anything heavy loads, so that `trainer.max_epochs=three`
fails at once, naming the key and the type it needs.

A tool's schema composes its components' own dataclasses (`DataArgs`, `ModuleArgs`,
`NegativeSampler`, `BackboneArgs`, ...: the one place a knob's type, default and check live);
this module types only what no component of uniner owns: the Lightning trainer's and the
optimizer's knobs and each tool's own keys. Keys a schema
does not list, and free-form nodes typed `Any` (`trainer.strategy`, `backbone.config`,
`data.source`, a benchmark's datasets), pass unchecked, so user config folders and `+key=value`
overrides keep working. The YAML files in `conf/` hold the values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

# the components' own typed configs and choices: one definition each, checked here by OmegaConf
from uniner.data.args import DataArgs as Data
from uniner.data.sampling import NegativeSampler as Sampling
from uniner.evaluation.benchmark import BenchmarkArgs as Benchmark
from uniner.evaluation.scoring import METRICS
from uniner.inference.args import ENGINES
from uniner.inference.args import GenerationArgs as Generation
from uniner.model.args import AdapterArgs as Adapter
from uniner.model.args import BackboneArgs as Backbone
from uniner.model.args import CheckpointArgs as Checkpoint
from uniner.model.args import ModuleArgs as Module
from uniner.model.args import QuantArgs as Quant

# closed choices (a prompt style, a sampling strategy or a dtype is checked where it is
# registered, so that a new one needs no edit here)
Metric = Enum("Metric", METRICS)
GenerationEngine = Enum("GenerationEngine", ENGINES)
Mode = Enum("Mode", ["train", "benchmark"])
MatmulPrecision = Enum("MatmulPrecision", ["highest", "high", "medium"])


@dataclass
class Paths:
    data_root: str = "./data"


@dataclass
class Trainer:
    accelerator: str = "auto"
    devices: Any = "auto"  # a count, "auto" or a list of device ids
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"  # 32-true, bf16-mixed, 16, ...
    max_epochs: int | None = None
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: float | None = None  # a fraction, or a count of batches
    limit_val_batches: float | None = None
    limit_test_batches: float | None = None
    num_sanity_val_steps: int = 0
    reload_dataloaders_every_n_epochs: int = 0
    enable_progress_bar: bool = True
    deterministic: Any = False  # true, false or "warn"


@dataclass
class Optimizer:
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Train:
    """`uniner-train` (conf/train.yaml)."""

    name: str = ""
    seed: int = 42
    prompt: str = "uniner"
    ckpt_path: str | None = None
    optimized_metric: str | None = None
    export: bool = True
    merge_lora: bool = False
    float32_matmul_precision: MatmulPrecision = MatmulPrecision.highest
    paths: Paths = field(default_factory=Paths)
    data: Data = field(default_factory=Data)
    sampling: Sampling = field(default_factory=Sampling)
    backbone: Backbone = MISSING
    quant: Quant = MISSING
    adapter: Adapter = MISSING
    trainer: Trainer = field(default_factory=Trainer)
    optimizer: Optimizer = field(default_factory=Optimizer)
    module: Module = field(default_factory=Module)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    benchmark: Benchmark = field(default_factory=Benchmark)


@dataclass
class Prepare:
    """`uniner-prepare` (conf/prepare.yaml)."""

    mode: Mode = Mode.train
    seed: int = 42
    prompt: str = "uniner"
    epoch: int = 0
    paths: Paths = field(default_factory=Paths)
    data: Data = field(default_factory=Data)
    sampling: Sampling = field(default_factory=Sampling)
    backbone: Backbone = MISSING
    benchmark: Benchmark = field(default_factory=Benchmark)


@dataclass
class Eval(Generation):
    """`uniner-eval` (conf/eval.yaml)."""

    name: str = ""
    predictions: str | None = None
    allow_missing: bool = False
    metric: Metric = Metric.uniner
    engine: GenerationEngine = GenerationEngine.hf
    paths: Paths = field(default_factory=Paths)
    benchmark: Benchmark = field(default_factory=Benchmark)


@dataclass
class Predict(Generation):
    """`uniner-predict` (conf/predict.yaml)."""

    input: str = ""
    types: Any = None  # a list of names, or one name
    output: str | None = None
    chunk: int = 1024
    progress: bool = True


@dataclass
class Demo(Generation):
    """`uniner-demo` (conf/demo.yaml)."""

    outputs_root: str = "outputs/train"
    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    inbrowser: bool = False
    context: int | None = None
    max_chars: int = 100000
    presets: list[str] = field(default_factory=list)
    examples_file: str | None = None
    num_examples: int = 6
