#!/usr/bin/env bash
# Runs on the GPU host (PyTorch installed, no .NET), from the repository root, with .gpu/ prepared by
# scripts/gpu-prepare.sh: AdapterSharp's `bench train` and the HF reference on the same workloads, one after the
# other on the same GPU, each workload in its own process (so each device-memory figure is that workload's
# alone), then the ratio table. Results go to $OUT (or ./gpu-out).
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
app=/tmp/adaptersharp; rm -rf "$app"; mkdir -p "$app"; tar xJf .gpu/app.txz -C "$app" # always this bundle, never a warm machine's older one
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
steps=${STEPS:-30}; warmup=${WARMUP:-10}
workloads=("--shape bert-base --mode adapter --batch 64 --seq 128"
           "--shape bert-base --mode full --batch 64 --seq 128"
           "--shape bert-base --mode adapter --batch 256 --seq 128"
           "--shape minilm-l6 --mode adapter --batch 128 --seq 64")

: > "$out/ours.jsonl"; : > "$out/ours_infer.jsonl"; : > "$out/hf.jsonl"
for w in "${workloads[@]}"; do
  "$app/adaptersharp" bench train --device cuda $w --steps "$steps" --warmup "$warmup" 2>/dev/null | tee -a "$out/ours.jsonl"
done
for w in "${workloads[@]:0:2}"; do # the eager path, for comparison
  "$app/adaptersharp" bench train --device cuda $w --steps "$steps" --warmup "$warmup" --cuda-graphs off 2>/dev/null | tee -a "$out/ours.jsonl"
done
for w in "${workloads[@]}"; do
  "$app/adaptersharp" bench infer --device cuda $w --steps "$steps" --warmup "$warmup" 2>/dev/null | tee -a "$out/ours_infer.jsonl"
done

ref=.gpu/hf_adapter_reference.py
for args in "${workloads[@]}" "--shape bert-base --mode adapter --batch 64 --seq 128 --compile"; do
  python3 scripts/hf_reference_memory.py "$ref" $args --steps "$steps" --warmup "$warmup" 2>/dev/null | tee -a "$out/hf.jsonl"
done
python3 scripts/bench_table.py "$out/ours.jsonl" "$out/hf.jsonl" | tee "$out/table.md"
