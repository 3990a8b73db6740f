"""Lightning strategies that need Python objects the YAML cannot name directly."""

from __future__ import annotations

import importlib

from pytorch_lightning.strategies import FSDPStrategy

from uniner.errors import ConfigError


def _layer_class(name: str) -> type | None:
    """A decoder layer class of transformers by name, None where that model isn't available."""
    module = name.removesuffix("DecoderLayer").lower()
    try:
        mod = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    except ImportError:
        return None
    return getattr(mod, name, None)


def fsdp_strategy(layer_classes: list[str], sharding_strategy: str = "FULL_SHARD",
                  activation_checkpointing: bool = True, **kwargs) -> FSDPStrategy:
    """FSDP wrapping each decoder layer (by class name), optionally with activation checkpoints."""
    classes = {c for c in map(_layer_class, layer_classes) if c is not None}
    if not classes:
        raise ConfigError(f"trainer.strategy.layer_classes={layer_classes}: none found in "
                          "transformers")
    return FSDPStrategy(auto_wrap_policy=classes, sharding_strategy=sharding_strategy,
                        activation_checkpointing_policy=classes if activation_checkpointing
                        else None, **kwargs)
