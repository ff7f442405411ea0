#!/usr/bin/env bash
# Token classification on CoNLL-2003 as docs/results.md reports it: minilm-l6 + houlsby-64, lr 1e-3, batch 32,
# 3 epochs, max length 128, first piece labelled, evaluated on the test set after each epoch; seeds 1 2 3; prints one
# JSON line per run (the best test entity F1 over the epochs) and the median.
#   ADAPTERSHARP: the command (default: dotnet run -c Release --project src/AdapterSharp.Cli --)
#   DATA: the conll2003 folder (default ../shared/datasets/conll2003); MODEL (default minilm-l6); DEVICE (default auto)
set -uo pipefail
cmd=${ADAPTERSHARP:-dotnet run -c Release --project src/AdapterSharp.Cli --}
data=${DATA:-../shared/datasets/conll2003}; model=${MODEL:-minilm-l6}; device=${DEVICE:-auto}
out=${OUT:-runs/conll}; mkdir -p "$out"
: > "$out/runs.jsonl"
for seed in ${SEEDS:-1 2 3}; do
  run="$out/conll2003-houlsby-$seed"
  $cmd train --model "$model" --device "$device" --task conll2003 --data "$data" --eval-split test --method houlsby \
    --adapter-size 64 --batch-size 32 --epochs 3 --lr 1e-3 --max-length 128 --seed "$seed" --time-budget none ${EXTRA:-} \
    --output "$run" > "$run.log" 2>&1 < /dev/null
  python3 - "$run" "$seed" <<'PY' | tee -a "$out/runs.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
best = max(rows, key=lambda r: r["f1"])
print(json.dumps({"task": "conll2003", "seed": int(sys.argv[2]), "best_f1": round(100 * best["f1"], 2), "epoch": best["epoch"],
                  "per_epoch_f1": [round(100 * r["f1"], 2) for r in rows], "elapsed_s": rows[-1]["elapsed_s"]}))
PY
done
python3 -c "
import json, statistics, sys
values = [json.loads(l)['best_f1'] for l in open('$out/runs.jsonl')]
print(f'conll2003 houlsby-64: median test entity F1 {statistics.median(values):.2f} over seeds, values {values}')"
