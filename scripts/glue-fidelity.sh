#!/usr/bin/env bash
# The fidelity benchmark of docs/results.md: houlsby-64 (and, with METHODS="houlsby full", full fine-tuning)
# on SST-2, MRPC, STS-B and CoLA with the reference's settings (batch 32, SST-2 64; lr 1e-3 adapters, 2e-5
# full, SST-2 full 3e-5; epochs as in the table), seeds 1 2 3; prints one JSON line per run and the medians.
#   ADAPTERSHARP: the command (default: dotnet run -c Release --project src/AdapterSharp.Cli --)
#   DATA: GLUE root (default ../shared/datasets/glue); MODEL (default minilm-l6); DEVICE (default auto)
set -uo pipefail
cmd=${ADAPTERSHARP:-dotnet run -c Release --project src/AdapterSharp.Cli --}
data=${DATA:-../shared/datasets/glue}; model=${MODEL:-minilm-l6}; device=${DEVICE:-auto}
out=${OUT:-runs/fidelity}; mkdir -p "$out"
: > "$out/runs.jsonl"
for method in ${METHODS:-houlsby}; do
  # One task per line: name, folder, batch, epochs for adapters, epochs for full fine-tuning.
  specs=${TASKS_SPEC:-"sst2 SST-2 64 2 2
mrpc MRPC 32 10 5
stsb STS-B 32 10 5
cola CoLA 32 10 5"}
  while read -r task folder batch epochs_adapter epochs_full; do
    [ -n "$task" ] || continue
    if [ "$method" = full ]; then epochs=$epochs_full; lr=2e-5; [ "$task" = sst2 ] && lr=3e-5; else epochs=$epochs_adapter; lr=1e-3; fi
    for seed in ${SEEDS:-1 2 3}; do
      run="$out/$task-$method-$seed"
      $cmd train --model "$model" --device "$device" --task "$task" --data "$data/$folder" --method "$method" \
        --batch-size "$batch" --epochs "$epochs" --lr "$lr" --seed "$seed" --time-budget none ${EXTRA:-} --output "$run" > "$run.log" 2>&1 < /dev/null
      best=$(python3 -c "import json,sys; rows=[json.loads(l) for l in open('$run/metrics.jsonl')]; m=sys.argv[1]; print(max(r[m] for r in rows))" \
        "$(case $task in sst2) echo accuracy;; mrpc) echo f1;; stsb) echo pearson;; cola) echo mcc;; esac)" 2>/dev/null || echo null)
      echo "{\"task\": \"$task\", \"method\": \"$method\", \"seed\": $seed, \"epochs\": $epochs, \"lr\": $lr, \"batch\": $batch, \"best\": $best}" | tee -a "$out/runs.jsonl"
    done < /dev/null
  done <<< "$specs"
done
python3 - "$out/runs.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    if r["best"] is not None: groups.setdefault((r["task"], r["method"]), []).append(r["best"])
for (task, method), values in groups.items():
    print(f"{task} {method}: median {statistics.median(values):.4f} over seeds, values {values}")
PY
