#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for a run on the GPU host, where only the working tree travels (64 MiB):
# the CUDA bundle, the HF reference scripts, the GLUE tasks named in $TASKS, and minilm-l6 as f16 safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
rm -rf .gpu && mkdir -p .gpu
scripts/cuda-bundle.sh .gpu/app.txz
cp "$shared"/bench/*.py .gpu/
for task in ${TASKS:-}; do
  mkdir -p ".gpu/glue/$task" && cp "$shared/datasets/glue/$task"/*.tsv ".gpu/glue/$task/"
done
if [ -n "${MODEL:-}" ]; then
  dotnet run -c Release --project src/AdapterSharp.Cli -- convert --model "$MODEL" --dtype f16 --output .gpu/model
fi
du -sh .gpu
