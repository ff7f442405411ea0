#!/usr/bin/env python3
"""Kernel-time and memory breakdowns of one training workload on the GPU host, AdapterSharp's or the HF reference's.

AdapterSharp is a .NET process, which PyTorch's profiler cannot attach to; so this script hosts it in its own
process through the bundle's libhostfxr (the .NET hosting API): TorchSharp then uses the libtorch this Python has
already loaded, and CUPTI (torch.profiler) and the caching allocator's history see its kernels and allocations.

  gpu-profile.py kernels ours -- bench train --device cuda --shape bert-base --batch 256 --steps 8 --warmup 2
  gpu-profile.py kernels hf   -- --shape bert-base --batch 256 --steps 8 --warmup 2
  gpu-profile.py memory  ours|hf -- …     (peak allocated, what was live at the peak by block size, pools)

Environment: APP (unpacked CUDA bundle, default /tmp/app), HF_REF (hf_adapter_reference.py, default
.gpu/hf_adapter_reference.py), TRACE (chrome trace to write, default /tmp/trace.json). Kernel times are sums over
the whole run (warm-up and set-up included): divide by the steps, or compare two runs of the same step count."""
import argparse, collections, ctypes, importlib.util, json, os, sys
import torch


def run_ours(args):
    app = os.environ.get("APP", "/tmp/app")
    fxr = ctypes.CDLL(os.path.join(app, "libhostfxr.so"))

    class Params(ctypes.Structure):
        _fields_ = [("size", ctypes.c_size_t), ("host_path", ctypes.c_char_p), ("dotnet_root", ctypes.c_char_p)]

    argv = [os.path.join(app, "AdapterSharp.Cli.dll")] + args
    arr = (ctypes.c_char_p * len(argv))(*[a.encode() for a in argv])
    params = Params(ctypes.sizeof(Params), os.path.join(app, "AdapterSharp.Cli").encode(), app.encode())
    handle = ctypes.c_void_p()
    os.environ.setdefault("ADAPTERSHARP_LIBTORCH", os.path.join(os.path.dirname(torch.__file__), "lib"))
    rc = fxr.hostfxr_initialize_for_dotnet_command_line(len(argv), arr, ctypes.byref(params), ctypes.byref(handle))
    if rc != 0:
        raise SystemExit(f"hostfxr_initialize_for_dotnet_command_line failed: {rc & 0xffffffff:#x}")
    print("adaptersharp exit code", fxr.hostfxr_run_app(handle), flush=True)


def run_hf(args):
    spec = importlib.util.spec_from_file_location("hf_ref", os.environ.get("HF_REF", ".gpu/hf_adapter_reference.py"))
    ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="bert-base"); ap.add_argument("--mode", default="adapter")
    ap.add_argument("--batch", type=int, default=64); ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30); ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args(args)
    print(json.dumps(ref.run(a.shape, a.mode, a.batch, a.seq, a.steps, a.warmup, 64, "bf16", a.compile, "sdpa")), flush=True)


def kernels(run):
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run(); torch.cuda.synchronize()
    path = os.environ.get("TRACE", "/tmp/trace.json")
    prof.export_chrome_trace(path)
    agg = collections.defaultdict(lambda: [0.0, 0])
    for e in json.load(open(path))["traceEvents"]:
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e:
            a = agg[e["name"][:150]]; a[0] += e["dur"]; a[1] += 1
    total = sum(v[0] for v in agg.values())
    print(f"kernel time {total / 1e3:.1f} ms in {sum(v[1] for v in agg.values())} kernels")
    for name, (t, n) in sorted(agg.items(), key=lambda kv: -kv[1][0])[:45]:
        print(f"{t / 1e3:9.2f} ms {n:7d}  {t / total * 100:5.1f}%  {name}")


def memory(run):
    torch.cuda.memory._record_memory_history(max_entries=3_000_000, context=None, stacks="python")
    run(); torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    live, cur, peak, at_peak, reserved, reserved_peak = {}, 0, 0, collections.Counter(), 0, 0
    for e in snap["device_traces"][0]:
        if e["action"] == "alloc":
            live[e["addr"]] = e["size"]; cur += e["size"]
            if cur > peak: peak, at_peak = cur, collections.Counter(live.values())
        elif e["action"] == "free_requested" and e["addr"] in live:
            cur -= live.pop(e["addr"])
        elif e["action"] == "segment_alloc":
            reserved += e["size"]; reserved_peak = max(reserved_peak, reserved)
        elif e["action"] == "segment_free":
            reserved -= e["size"]
    print(f"peak allocated {peak / 2**30:.3f} GiB (torch.cuda.max_memory_allocated {torch.cuda.max_memory_allocated() / 2**30:.3f}); "
          f"reserved peak {reserved_peak / 2**30:.3f} GiB")
    print("live at the peak, by block size:")
    for size, n in sorted(at_peak.items(), key=lambda kv: -kv[0] * kv[1])[:25]:
        print(f"  {size / 2**20:10.2f} MiB x {n:4d} = {size * n / 2**20:9.1f} MiB")
    pools = collections.defaultdict(lambda: [0, 0, 0])
    for seg in snap["segments"]:
        p = pools[str(seg.get("segment_pool_id"))]; p[0] += seg["total_size"]; p[1] += seg["allocated_size"]; p[2] += 1
    for pid, (tot, alloc, n) in pools.items():
        print(f"pool {pid}: {n} segments, {tot / 2**30:.3f} GiB reserved, {alloc / 2**30:.3f} GiB allocated at the end")


if __name__ == "__main__":
    what, who = sys.argv[1], sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1:]
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
    run = (lambda: run_ours(args)) if who == "ours" else (lambda: run_hf(args))
    {"kernels": kernels, "memory": memory}[what](run)
