"""uniner: targeted distillation of open NER into small LLMs (UniversalNER recipe).

`from uniner import Extractor` loads the extraction API on first use, so `import uniner` (and
every console script's start) does not pay for torch and transformers.
"""

__all__ = ["Extractor", "Entity"]


def __getattr__(name: str):
    if name in __all__:
        from uniner.inference import extractor

        return getattr(extractor, name)
    raise AttributeError(f"module 'uniner' has no attribute {name!r}")
