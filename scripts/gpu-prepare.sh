#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for a run on the GPU host, where only the working tree travels (64 MiB):
# the CUDA bundle, the HF reference scripts, the GLUE tasks named in $TASKS, CoNLL-2003 with CONLL=1, SQuAD v1.1 dev with SQUAD=1, the tokenizer
# fixtures with FIXTURES=1, and minilm-l6 as f16 safetensors with MODEL=minilm-l6.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
rm -rf .gpu && mkdir -p .gpu
scripts/cuda-bundle.sh .gpu/app.txz
cp "$shared"/bench/*.py .gpu/
for task in ${TASKS:-}; do
  mkdir -p ".gpu/glue/$task" && cp "$shared/datasets/glue/$task"/*.tsv ".gpu/glue/$task/"
done
if [ -n "${CONLL:-}" ]; then
  # CoNLL-2003 compressed (4.9 MB → ~1 MB), unpacked on the host: `xz -dk .gpu/conll2003/*.xz`.
  mkdir -p .gpu/conll2003 && for f in train valid test; do xz -9c "$shared/datasets/conll2003/$f.txt" > ".gpu/conll2003/$f.txt.xz"; done
fi
if [ -n "${SQUAD:-}" ]; then
  mkdir -p .gpu/squad && xz -9c "$shared/datasets/squad/dev-v1.1.json" > .gpu/squad/dev-v1.1.json.xz
fi
if [ -n "${FIXTURES:-}" ]; then
  mkdir -p .gpu/fixtures && cp "$shared"/fixtures/tokenizer/*.jsonl .gpu/fixtures/
fi
if [ -n "${MODEL:-}" ]; then
  dotnet run -c Release --project src/AdapterSharp.Cli -- convert --model "$MODEL" --dtype f16 --output .gpu/model
fi
du -sh .gpu
