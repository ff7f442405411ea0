#!/usr/bin/env python3
"""Runs one workload of shared/bench/hf_adapter_reference.py (imported unchanged; its path is the first
argument, its own options follow) and adds the device memory in use at the end (CUDA context and PyTorch's
cached blocks included), measured as `adaptersharp bench` measures its own: total minus free, cudaMemGetInfo."""
import argparse, importlib.util, json, sys
import torch

spec = importlib.util.spec_from_file_location("hf_ref", sys.argv[1])
ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
ap = argparse.ArgumentParser()
ap.add_argument("--shape", default="bert-base"); ap.add_argument("--mode", default="adapter")
ap.add_argument("--batch", type=int, default=64); ap.add_argument("--seq", type=int, default=128)
ap.add_argument("--steps", type=int, default=30); ap.add_argument("--warmup", type=int, default=10)
ap.add_argument("--adapter-size", type=int, default=64); ap.add_argument("--dtype", default="bf16")
ap.add_argument("--attn", default="sdpa"); ap.add_argument("--compile", action="store_true")
a = ap.parse_args(sys.argv[2:])
r = ref.run(a.shape, a.mode, a.batch, a.seq, a.steps, a.warmup, a.adapter_size, a.dtype, a.compile, a.attn)
free, total = torch.cuda.mem_get_info()
r["device_used_gb"] = round((total - free) / 2**30, 2)
print(json.dumps(r), flush=True)
