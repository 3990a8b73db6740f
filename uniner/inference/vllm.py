"""The vLLM hand-off: benchmark queries answered by vLLM instead of the `Engine`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from uniner.errors import ConfigError
from uniner.inference.planner import encode_queries


def vllm_answers(checkpoint: str | Path, queries: Sequence[tuple[str, str]], *,
                 max_new_tokens: int = 256, dtype: str | None = None,
                 prompt: str | None = None) -> list[str]:
    """Greedy answers to (text, type) queries from vLLM: the same prompt ids (`encode_queries`
    with the checkpoint's tokenizer, in its prompt style: `prompt`, else as trained), a stop at
    the style's stop tokens or after the first `]`, stripped text.

    Raises:
        ImportError: vLLM is not installed (`pip install 'uniner[vllm]'`).
        ValueError: an adapter export (vLLM needs a full or merged model).
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise ImportError("engine=vllm needs vLLM, which is not installed: pip install "
                          "'uniner[vllm]' (Linux with CUDA); engine=hf, the default, runs "
                          "without it") from None
    from transformers import AutoTokenizer

    from uniner.data.prompts import load_prompt_style

    if (Path(checkpoint) / "adapter_config.json").is_file():
        raise ConfigError(f"engine=vllm: {checkpoint} is a LoRA adapter export; vLLM needs a full "
                          "model: export with merge_lora=true, or use engine=hf")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    style = load_prompt_style(checkpoint, tokenizer, prompt)
    prompts = encode_queries(queries, tokenizer, style)
    dtypes = {None: "auto", "auto": "auto", "bf16": "bfloat16", "fp16": "float16",
              "fp32": "float32"}
    llm = LLM(model=str(checkpoint), dtype=dtypes[dtype], enable_prefix_caching=True)
    # the official parser reads up to the first `]`: stop there, keeping the `]`
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=["]"],
                            include_stop_str_in_output=True,
                            stop_token_ids=style.stop_ids())
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    return [o.outputs[0].text.strip() for o in outputs]
