#!/usr/bin/env bash
# The training figures on one H200 (random-init LLaMA-7B, LoRA r=8 q/v, bf16, sp32k, Pile-NER
# lengths), part by part:
#   test    issue 13: liger's loss equals the plain loss (the gpu-marked tests)
#   table   issue 13: official padding, packed, packed + chunked / liger loss, packed + liger +
#           compile at 4 rows of 1,024 without checkpointing
#   ckpt    issue 13: packed / + chunked / + liger at 8 rows with checkpointing
#   longest issue 12: `longest` padding against max_length, and with pad_to_multiple_of=64 (the
#           trainer=gpu default), 2 rows with checkpointing (widths column: distinct shapes)
#   qlora   issue 12: QLoRA nf4 with checkpointing, 1 row max_length and 4 packed rows: peak GiB
#           (goals <= 5 / <= 7 GiB, >= 8,000 tok/s at 4 rows)
# Default: test table ckpt (~9 min); `longest qlora` is a second call (~6 min): one call stays
# under the device's 10-minute limit. Prepared here with
# `../shared/tools/gpu-pack.sh liger-kernel==0.8.5`; on the GPU machine:
#   source .devsite/activate; bash experiments/gpu_train.sh [test|table|ckpt|longest|qlora ...]
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
    longest) for extra in "--modes max_length,longest" "--modes longest --pad-to-multiple-of 64"; do
             # shellcheck disable=SC2086
             python experiments/bench_train.py "${common[@]}" --gradient-checkpointing \
               --batch-size 2 --warmup 40 --steps 20 $extra >> "$out/longest.log" 2>&1 \
               || { tail -40 "$out/longest.log"; exit 1; }
           done
           grep -E '^\||^conv' "$out/longest.log" ;;
    qlora) for extra in "--modes max_length --batch-size 1" "--modes packed --batch-size 4"; do
             # shellcheck disable=SC2086
             python experiments/bench_train.py "${common[@]}" --quant nf4 \
               --gradient-checkpointing $extra >> "$out/qlora.log" 2>&1 \
               || { tail -40 "$out/qlora.log"; exit 1; }
           done
           grep -E '^\||^conv' "$out/qlora.log" ;;
    *) echo "unknown part $part: test, table, ckpt, longest or qlora" >&2; exit 2 ;;
  esac
done
