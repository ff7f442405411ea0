#!/usr/bin/env python3
"""Ratio table: AdapterSharp's `bench train` JSON lines against the HF reference's, matched by workload,
batch and seq. Usage: bench_table.py ours.jsonl hf.jsonl"""
import json, sys

def load(path):
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")]

ours, hf = load(sys.argv[1]), load(sys.argv[2])
print("| workload | batch×seq | ours: CUDA graphs | HF impl | HF tok/s | ours tok/s | ratio | HF step ms | ours step ms | ours MFU | HF peak alloc GB | ours peak alloc GB | HF device GB | ours device GB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for o in ours:
    for h in hf:
        if h["workload"] == o["workload"] and h["batch"] == o["batch"] and h["seq"] == o["seq"]:
            print(f"| {o['workload']} | {o['batch']}×{o['seq']} | {'on' if o.get('cuda_graphs') else 'off'} | {h['impl']} | {h['tokens_per_s']:,} | {o['tokens_per_s']:,.0f} | "
                  f"{o['tokens_per_s'] / h['tokens_per_s']:.2f}× | {h['step_ms']} | {o['step_ms']} | {o.get('mfu', 0):.1%} | "
                  f"{h.get('peak_mem_gb', '')} | {o.get('peak_alloc_gb', '')} | {h.get('device_used_gb', '')} | {o.get('device_used_gb', '')} |")
