#!/usr/bin/env bash
# Extractive QA on SQuAD v1.1 as docs/results.md reports it: the dev set split by article (1-38 train, 39-48 evaluate,
# as ../shared/datasets/squad/README.md defines), minilm-l6 + houlsby-64, lr 1e-3, batch 32, 3 epochs, max length 384,
# doc stride 128, n-best 20, answers of at most 30 pieces; seeds 1 2 3; one JSON line per run (best epoch's F1 and its
# exact match) and the medians.
#   ADAPTERSHARP: the command (default: dotnet run -c Release --project src/AdapterSharp.Cli --)
#   DATA: the squad folder (default ../shared/datasets/squad); MODEL (default minilm-l6); DEVICE (default auto)
#   METHOD_ARGS (default "--method houlsby --adapter-size 64"), LR (default 1e-3)
set -uo pipefail
cmd=${ADAPTERSHARP:-dotnet run -c Release --project src/AdapterSharp.Cli --}
data=${DATA:-../shared/datasets/squad}; model=${MODEL:-minilm-l6}; device=${DEVICE:-auto}
out=${OUT:-runs/squad}; mkdir -p "$out"
: > "$out/runs.jsonl"
for seed in ${SEEDS:-1 2 3}; do
  run="$out/squad-$seed"
  $cmd train --model "$model" --device "$device" --task squad --data "$data" ${METHOD_ARGS:---method houlsby --adapter-size 64} \
    --batch-size 32 --epochs 3 --lr "${LR:-1e-3}" --max-length 384 --doc-stride 128 --seed "$seed" --time-budget none ${EXTRA:-} \
    --output "$run" > "$run.log" 2>&1 < /dev/null
  python3 - "$run" "$seed" <<'PY' | tee -a "$out/runs.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
best = max(rows, key=lambda r: r["f1"])
print(json.dumps({"task": "squad", "seed": int(sys.argv[2]), "best_f1": round(100 * best["f1"], 2), "em": round(100 * best["exact_match"], 2),
                  "epoch": best["epoch"], "per_epoch_f1": [round(100 * r["f1"], 2) for r in rows], "elapsed_s": rows[-1]["elapsed_s"]}))
PY
done
python3 -c "
import json, statistics
rows = [json.loads(l) for l in open('$out/runs.jsonl')]
print(f'squad: median F1 {statistics.median(r[\"best_f1\"] for r in rows):.2f}, median EM {statistics.median(r[\"em\"] for r in rows):.2f}, runs {rows}')"
