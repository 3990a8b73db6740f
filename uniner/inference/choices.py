"""The inference knobs' choices and defaults, torch-free: the engine, `Extractor` and the tools'
config schema (uniner-eval, uniner-predict, uniner-demo) read them from here."""

DECODINGS = ("greedy", "constrained")  # decoding=: `decoding.DECODERS`, in this order
ENGINES = ("hf", "vllm")  # uniner-eval engine=: uniner's own engine, or vLLM's
BATCH_TOKENS = 65536  # KV slots per batch: 32 GiB of bf16 cache for LLaMA-7B
BATCH_ROWS = 512  # rows per batch: a decode step reads the weights once for all of its rows
