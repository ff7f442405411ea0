#!/usr/bin/env bash
# The AdapterFusion experiment of docs/results.md: houlsby-64 adapters for SST-2 (1 epoch, batch 64), MRPC and
# STS-B (10 epochs, batch 32, lr 1e-3, as in the fidelity runs), then AdapterFusion over the three, trained for
# MRPC (fusion layers + a new head only); prints the best MRPC dev F1 of each MRPC run.
#   ADAPTERSHARP: the command (default: dotnet run -c Release --project src/AdapterSharp.Cli --)
#   DATA: GLUE root (default ../shared/datasets/glue); MODEL (default minilm-l6); DEVICE (default auto); OUT (runs/fusion)
#   STEPS: which parts to run (default "adapters fusion"); MRPC_SEEDS (default 1): seeds of the single MRPC adapter
#   (seed 1's is the one fused); FUSION_LRS (default 5e-5) x FUSION_SEEDS (default 1): the fusion runs
#   EXTRA: more train options for every run (e.g. --cuda-graphs off)
#   PARALLEL=1: the runs of each part at the same time (on a GPU host the runs are host-bound, one core each)
set -uo pipefail
cmd=${ADAPTERSHARP:-dotnet run -c Release --project src/AdapterSharp.Cli --}
data=${DATA:-../shared/datasets/glue}; model=${MODEL:-minilm-l6}; device=${DEVICE:-auto}
out=${OUT:-runs/fusion}; mkdir -p "$out"
train() {
  if [ "${PARALLEL:-0}" = 1 ]; then run_one "$@" & else run_one "$@"; fi
}
run_one() {
  local run=$1; shift
  $cmd train --model "$model" --device "$device" --time-budget none --output "$out/$run" "$@" ${EXTRA:-} > "$out/$run.log" 2>&1 < /dev/null
  echo "$run: $(tail -n 4 "$out/$run.log" | grep '^best' || echo "failed, see $out/$run.log")"
}
if [[ " ${STEPS:-adapters fusion} " == *" adapters "* ]]; then
  train sst2 --task sst2 --data "$data/SST-2" --batch-size 64 --epochs 1 --seed 1
  for seed in ${MRPC_SEEDS:-1}; do train "mrpc-$seed" --task mrpc --data "$data/MRPC" --epochs 10 --seed "$seed"; done
  train stsb --task stsb --data "$data/STS-B" --epochs 10 --seed 1
  wait
fi
if [[ " ${STEPS:-adapters fusion} " == *" fusion "* ]]; then
  for lr in ${FUSION_LRS:-5e-5}; do
    for seed in ${FUSION_SEEDS:-1}; do
      train "fusion-$lr-$seed" --task mrpc --data "$data/MRPC" --method fusion \
        --fuse "$out/sst2/adapter,$out/mrpc-1/adapter,$out/stsb/adapter" --epochs 10 --lr "$lr" --seed "$seed"
    done
  done
  wait
fi
