#!/usr/bin/env bash
# Runs on the GPU host (PyTorch installed, no .NET), from the repository root, with .gpu/ prepared by
# scripts/gpu-prepare.sh: AdapterSharp's `bench train --suite` and the HF reference on the same workloads,
# one after the other on the same GPU, then the ratio table. Results go to $OUT (or ./gpu-out).
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
app=/tmp/adaptersharp; mkdir -p "$app"; tar xJf .gpu/app.txz -C "$app"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
steps=${STEPS:-30}; warmup=${WARMUP:-10}

"$app/adaptersharp" bench train --suite --device cuda --steps "$steps" --warmup "$warmup" | tee "$out/ours.jsonl"
"$app/adaptersharp" bench infer --suite --device cuda --steps "$steps" --warmup "$warmup" | tee "$out/ours_infer.jsonl"

ref=.gpu/hf_adapter_reference.py
: > "$out/hf.jsonl"
for args in "--shape bert-base --mode adapter --batch 64 --seq 128" \
            "--shape bert-base --mode full --batch 64 --seq 128" \
            "--shape bert-base --mode adapter --batch 64 --seq 128 --compile" \
            "--shape bert-base --mode adapter --batch 256 --seq 128" \
            "--shape minilm-l6 --mode adapter --batch 128 --seq 64"; do
  python3 scripts/hf_reference_memory.py "$ref" $args --steps "$steps" --warmup "$warmup" | tee -a "$out/hf.jsonl"
done
python3 scripts/bench_table.py "$out/ours.jsonl" "$out/hf.jsonl" | tee "$out/table.md"
