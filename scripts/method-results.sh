#!/usr/bin/env bash
# Trains each method of $SPECS on each task of $TASKS_SPEC for each seed of $SEEDS, $PARALLEL runs at a time, and
# prints one JSON line per run (best dev metric, trainable parameters, and a dynamic adapter's learned size at its
# best checkpoint), then per (method, task) the median over the seeds. The settings of docs/results.md's tables:
# hf_glue_reference.py's (batch 32, SST-2 64; 2 epochs SST-2, 10 the others; warmup 10%, decay 0.01, clipping 1.0).
#   ADAPTERSHARP: the command (default: dotnet run -c Release --project src/AdapterSharp.Cli --)
#   DATA: GLUE root (default ../shared/datasets/glue); MODEL (default minilm-l6); DEVICE (default auto); OUT (runs/methods)
#   SPECS: one method a line, "label|train options" (default: houlsby, hierarchical, shared, dynamic, hybrid)
#   TASKS_SPEC: one task a line, "task folder batch epochs" (default: sst2, mrpc, cola)
#   SEEDS (default "1 2 3"); PARALLEL (default 4)
set -uo pipefail
cmd=${ADAPTERSHARP:-dotnet run -c Release --project src/AdapterSharp.Cli --}
data=${DATA:-../shared/datasets/glue}; model=${MODEL:-minilm-l6}; device=${DEVICE:-auto}
out=${OUT:-runs/methods}; mkdir -p "$out"
specs=${SPECS:-"houlsby|--method houlsby
hierarchical|--method hierarchical
shared|--method shared
dynamic|--method dynamic
hybrid|--method houlsby --train-top-k 2"}
tasks=${TASKS_SPEC:-"sst2 SST-2 64 2
mrpc MRPC 32 10
cola CoLA 32 10"}

run_one() { # label "options" task folder batch epochs seed
  local label=$1 options=$2 task=$3 folder=$4 batch=$5 epochs=$6 seed=$7
  local run="$out/$label-$task-$seed"
  $cmd train --model "$model" --device "$device" --task "$task" --data "$data/$folder" $options \
    --batch-size "$batch" --epochs "$epochs" --seed "$seed" --time-budget none --output "$run" > "$run.log" 2>&1 < /dev/null
  python3 - "$run" "$label" "$task" "$seed" <<'PY'
import json, sys
run, label, task, seed = sys.argv[1:5]
metric = {"sst2": "accuracy", "mrpc": "f1", "stsb": "pearson", "cola": "mcc"}.get(task, "accuracy")
try:
    config = json.load(open(f"{run}/adapter/adapter_config.json"))
    rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
    record = {"method": label, "task": task, "seed": int(seed), "metric": metric,
              "best": max(r[metric] for r in rows if r.get(metric) is not None),
              "trainable": config["trainable_parameters"], "epochs": len(rows)}
    if "learned_size" in config["metrics"]:
        record["learned_size"] = round(config["metrics"]["learned_size"], 2)
        record["learned_sizes"] = {k.split("/", 1)[1]: round(v, 1) for k, v in config["metrics"].items() if k.startswith("learned_size/")}
except Exception as e:
    record = {"method": label, "task": task, "seed": int(seed), "error": f"{type(e).__name__}: {e} (see {run}.log)"}
print(json.dumps(record), flush=True)
PY
}
export -f run_one; export cmd data model device out

: > "$out/runs.jsonl"
while IFS='|' read -r label options; do
  [ -n "$label" ] || continue
  while read -r task folder batch epochs; do
    [ -n "$task" ] || continue
    for seed in ${SEEDS:-1 2 3}; do printf '%s\0%s\0%s\0%s\0%s\0%s\0%s\0' "$label" "$options" "$task" "$folder" "$batch" "$epochs" "$seed"; done
  done <<< "$tasks"
done <<< "$specs" | xargs -0 -n 7 -P "${PARALLEL:-4}" bash -c 'run_one "$@"' _ | tee -a "$out/runs.jsonl"

python3 - "$out/runs.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    if "best" in r: groups.setdefault((r["method"], r["task"]), []).append(r)
for (method, task), rs in sorted(groups.items()):
    rs.sort(key=lambda r: r["seed"])
    line = f"{method} {task} {rs[0]['metric']}: median {statistics.median(r['best'] for r in rs) * 100:.2f} over seeds " \
           f"{[round(r['best'] * 100, 2) for r in rs]}, trainable {rs[0]['trainable']:,}"
    if "learned_size" in rs[0]: line += f", learned size {[r['learned_size'] for r in rs]}"
    print(line)
for r in rows:
    if "error" in r: print("FAILED", r)
PY
