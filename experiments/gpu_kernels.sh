#!/usr/bin/env bash
# Issue 13's GPU figures on one H200 in one go (about 9 minutes): liger's loss equals the plain
# loss (the gpu-marked tests), then the training table of random-init LLaMA-7B LoRA r=8 q/v, bf16,
# sp32k, Pile-NER lengths: official padding, packed, packed + chunked / liger loss, packed + liger
# + compile at 4 rows of 1,024 without checkpointing; then packed at 8 rows with checkpointing.
# Prepared here with `../shared/tools/gpu-pack.sh liger-kernel==0.8.5`; on the GPU machine:
#   source .devsite/activate; bash experiments/gpu_kernels.sh [test|table|ckpt ...]
# The JSON results go to $OUT (else the current directory).
set -euo pipefail
out=${OUT:-.}
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(test table ckpt)
common=(--arch llama-7b --adapter lora --device cuda --dtype bf16 --precision bf16-mixed
        --steps 15 --warmup 4 --peak-tflops 989 --machine h200)
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader || true
python -c "import torch, transformers, peft, liger_kernel; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__)"
for part in "${parts[@]}"; do
  case $part in
    test)  python -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels.py 2>&1 \
             | tee "$out/gpu_tests.log" | tail -15 || echo "gpu tests FAILED (above)" ;;
    table) python experiments/bench_train.py "${common[@]}" --batch-size 4 \
             --json "$out/kernels_h200.json" > "$out/table.log" 2>&1 \
             || { tail -40 "$out/table.log"; exit 1; }
           grep -E '^\||^conv' "$out/table.log" ;;
    ckpt)  python experiments/bench_train.py "${common[@]}" --gradient-checkpointing \
             --batch-size 8 --modes packed,packed+chunked,packed+liger \
             --json "$out/kernels_h200_ckpt.json" > "$out/ckpt.log" 2>&1 \
             || { tail -40 "$out/ckpt.log"; exit 1; }
           grep -E '^\||^conv' "$out/ckpt.log" ;;
    *) echo "unknown part $part: test, table or ckpt" >&2; exit 2 ;;
  esac
done
