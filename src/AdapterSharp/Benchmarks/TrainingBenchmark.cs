using System.Diagnostics;
using System.Runtime.InteropServices;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using AdapterSharp.Native;
using AdapterSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Benchmarks;

/// <summary>
/// One fixed-shape workload, as in <c>shared/bench/hf_adapter_reference.py</c>: a randomly initialised BERT of a
/// given shape, Houlsby-64 adapters (or full fine-tuning), a 2-way head on [CLS], synthetic batches of
/// <see cref="Batch"/> × <see cref="Seq"/> tokens with no padding.
/// </summary>
/// <param name="Graphs">Replay each step as a captured CUDA graph (on CUDA, where available), as the trainer does.</param>
public sealed record Workload(string Shape, string Mode, int Batch, int Seq, int Steps = 30, int Warmup = 10, int AdapterSize = 64,
    string Dtype = "bf16", bool Graphs = true, FusedKernels Kernels = FusedKernels.Auto);

/// <summary>Times training steps and forward passes of <see cref="Workload"/>s; one JSON-ready record each.</summary>
public static class TrainingBenchmark
{
    /// <summary>The benchmark shapes, with BERT's vocabulary and positions (as the HF reference builds them).</summary>
    public static readonly IReadOnlyDictionary<string, BertConfig> Shapes = new Dictionary<string, BertConfig>
    {
        ["bert-base"] = Shape(768, 12, 12, 3072),
        ["bert-large"] = Shape(1024, 24, 16, 4096),
        ["minilm-l6"] = Shape(384, 6, 12, 1536),
        // bert-base's op count at a negligible size: what the host spends per step (dispatch, autograd, scopes).
        ["bert-base-ops"] = Shape(64, 12, 4, 256),
    };

    static BertConfig Shape(int hidden, int layers, int heads, int intermediate) => new()
    {
        HiddenSize = hidden,
        NumHiddenLayers = layers,
        NumAttentionHeads = heads,
        IntermediateSize = intermediate,
        VocabSize = 30522,
        MaxPositionEmbeddings = 512,
    };

    /// <summary>H100 SXM dense bf16 peak (datasheet), for MFU.</summary>
    public const double PeakBf16Flops = 989.4e12;

    public static Dictionary<string, object> Train(Workload workload, Device device) => Run(workload, device, training: true);

    public static Dictionary<string, object> Infer(Workload workload, Device device) => Run(workload, device, training: false);

    static Dictionary<string, object> Run(Workload w, Device device, bool training)
    {
        if (!Shapes.TryGetValue(w.Shape, out var config))
            throw new ArgumentException($"--shape: unknown shape '{w.Shape}' (expected {string.Join(", ", Shapes.Keys)})");
        var method = MethodOf(w); // validates the mode
        long fusedBefore = AddNorm.KernelPasses;
        bool graphs = w.Graphs && device.type == DeviceType.CUDA && CudaGraphs.Available;
        using var sideStream = graphs ? CudaGraphs.UseSideStream(device) : null;
        manual_seed(0);
        using var model = Build(config, method);
        model.Bert.Kernels = w.Kernels;
        model.to(device); // replaces (and frees) the parameter objects: take them only after the move
        var trained = model.TrainOnly("bench");
        bool bf16 = w.Dtype == "bf16";
        if (bf16) model.UseMatmulType(ScalarType.BFloat16);
        long trainable = trained.Sum(p => p.Parameter.numel());
        long total = model.parameters().Sum(p => p.numel());

        manual_seed(1);
        using var ids = randint(1000, 30000, [w.Batch, w.Seq], device: device);
        using var types = zeros([w.Batch, w.Seq], ScalarType.Int64, device);
        using var labels = randint(0, 2, [w.Batch], device: device);

        FlatAdamW? optimizer = null;
        if (training)
        {
            model.train();
            optimizer = new FlatAdamW(trained.Select(p => (p.Parameter, p.Decay)).ToList(), weightDecay: 0.01);
        }
        else
        {
            model.eval();
        }
        double lr = method.ModifiesBase ? 2e-5 : 1e-3;
        float lastLoss = float.NaN;

        // The work of one step on rows [0, rows), all on the device: what a CUDA graph captures.
        void Work(long rows)
        {
            using var scope = NewDisposeScope();
            var (x, t, y) = rows == w.Batch ? (ids, types, labels) : (ids.narrow(0, 0, rows), types.narrow(0, 0, rows), labels.narrow(0, 0, rows));
            if (training)
            {
                optimizer!.ZeroGrad();
                // No padding in these batches: no mask, as HF's SDPA path drops an all-ones mask too.
                var loss = F.cross_entropy(model.Logits(x, null, t).to_type(ScalarType.Float32), y);
                loss.backward();
                optimizer.Apply();
            }
            else
            {
                using var noGrad = no_grad();
                model.Logits(x, null, t);
            }
        }

        using var graph = graphs ? new CudaGraphs.Graph() : null;
        void Step()
        {
            optimizer?.Prepare(lr);
            if (graph is null) Work(w.Batch);
            else graph.Replay();
        }

        // Eager warm-up (cuBLAS handles and workspaces, autograd state, kernel loading), then the capture. Before a
        // capture the warm-up runs on an eighth of the batch: what it leaves in the allocator's cache stays there
        // (the graph allocates from its own pool), so a full-size warm-up would hold a second copy of the activations.
        long warmupRows = graph is null ? w.Batch : Math.Max(1, w.Batch / 8);
        for (int i = 0; i < w.Warmup; i++)
        {
            optimizer?.Prepare(lr);
            Work(warmupRows);
        }
        if (graph is not null)
        {
            Synchronize(device);
            graph.Capture(CudaGraphs.NewPool(), () => Work(w.Batch));
            CudaAllocator.EmptyCache(); // the warm-up's cached blocks: the replays use the graph's own pool
            for (int i = 0; i < w.Warmup; i++) Step();
        }
        Synchronize(device);
        var clock = Stopwatch.StartNew();
        var host = TimeSpan.Zero; // time the host spends issuing the steps: near step_ms means host-bound
        for (int i = 0; i < w.Steps; i++)
        {
            var issued = Stopwatch.GetTimestamp();
            Step();
            host += Stopwatch.GetElapsedTime(issued);
        }
        Synchronize(device);
        double seconds = clock.Elapsed.TotalSeconds / w.Steps;
        // Memory as the steps left it, before the loss below is computed for the report.
        var allocator = device.type == DeviceType.CUDA ? CudaAllocator.Read(Math.Max(0, (int)device.index)) : null;
        var deviceUsed = device.type == DeviceType.CUDA ? DeviceMemory.UsedBytes() : null;
        if (training)
            using (NewDisposeScope())
            using (no_grad())
                lastLoss = F.cross_entropy(model.Logits(ids, null, types).to_type(ScalarType.Float32), labels).item<float>();
        optimizer?.Dispose();

        double flops = StepFlops(config, w, training);
        var record = new Dictionary<string, object>
        {
            ["workload"] = $"{(training ? "train" : "infer")}/{w.Shape}/{w.Mode}",
            ["impl"] = "adaptersharp",
            ["dtype"] = w.Dtype,
            ["batch"] = w.Batch,
            ["seq"] = w.Seq,
            ["trainable_params"] = trainable,
            ["total_params"] = total,
            ["step_ms"] = Math.Round(seconds * 1e3, 3),
            ["tokens_per_s"] = Math.Round(w.Batch * w.Seq / seconds),
            ["tflops"] = Math.Round(flops / seconds / 1e12, 1),
            ["mfu"] = Math.Round(flops / seconds / PeakBf16Flops, 4),
            ["host_ms"] = Math.Round(host.TotalMilliseconds / w.Steps, 3),
            ["cuda_graphs"] = graphs,
            ["fused_kernels"] = AddNorm.KernelPasses > fusedBefore,
        };
        if (training) record["loss"] = Math.Round(lastLoss, 4);
        if (allocator is { } stats)
        {
            record["peak_alloc_gb"] = Math.Round(stats.PeakAllocated / Math.Pow(2, 30), 2); // the whole run's, capture included
            record["reserved_gb"] = Math.Round(stats.Reserved / Math.Pow(2, 30), 2); // the allocator's, graph pool included
        }
        if (deviceUsed is { } used)
            record["device_used_gb"] = Math.Round(used / Math.Pow(2, 30), 2);
        return record;
    }

    /// <summary>The reference's two modes, adapter (houlsby) and full, or any method preset by name (for ablations).</summary>
    static MethodConfig MethodOf(Workload w)
    {
        var method = w.Mode == "adapter" ? BottleneckConfig.Houlsby
            : MethodRegistry.Presets.FirstOrDefault(m => m.Method == w.Mode)
              ?? throw new ArgumentException($"--mode: '{w.Mode}' is not adapter or one of {MethodRegistry.Names}");
        // The workload's size goes where the method has a fixed one (a bottleneck's m); a reduction factor stays.
        return method.ToJson()["adapter_size"] is { } size && size.GetValue<int?>() is not null
            ? method.With("adapter_size", w.AdapterSize, "--adapter-size")
            : method;
    }

    static AdapterModel Build(BertConfig shape, MethodConfig method)
    {
        var bert = new BertModel(shape, addPooler: false);
        InitializeLikeHf(bert);
        var model = new AdapterModel(bert);
        model.AddAdapter("bench", method, HeadConfig.Classification(["0", "1"]));
        return model;
    }

    /// <summary>HF BERT's init: weights N(0, 0.02), biases 0, LayerNorms 1 and 0.</summary>
    static void InitializeLikeHf(BertModel bert)
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in bert.named_parameters())
        {
            if (name.Contains("LayerNorm", StringComparison.Ordinal))
            {
                if (name.EndsWith(".weight", StringComparison.Ordinal)) parameter.fill_(1);
                else parameter.zero_();
            }
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) parameter.zero_();
            else nn.init.normal_(parameter, 0, 0.02);
        }
    }

    /// <summary>
    /// Model FLOPs of one step from the shapes: matrix products only (2 per multiply-add). Forward: the
    /// projections and FFN, the two attention products and the adapters. Backward: twice the forward when
    /// every weight trains; with a frozen base, the base products need input gradients only (once the forward)
    /// while attention and adapters still cost twice.
    /// </summary>
    public static double StepFlops(BertConfig c, Workload w, bool training)
    {
        double tokens = (double)w.Batch * w.Seq;
        double linear = c.NumHiddenLayers * (4.0 * c.HiddenSize * c.HiddenSize + 2.0 * c.HiddenSize * c.IntermediateSize);
        double baseForward = 2 * tokens * linear;
        double attentionForward = c.NumHiddenLayers * 4.0 * w.Batch * w.Seq * (double)w.Seq * c.HiddenSize;
        double adapterForward = w.Mode == "adapter" ? 2 * tokens * c.NumHiddenLayers * 2 * (2.0 * c.HiddenSize * w.AdapterSize) : 0;
        double forward = baseForward + attentionForward + adapterForward;
        if (!training) return forward;
        return w.Mode == "full" ? 3 * forward : forward + baseForward + 2 * attentionForward + 2 * adapterForward;
    }

    static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}

/// <summary>Device memory in use (CUDA context and cached allocations included), from the CUDA runtime.</summary>
static class DeviceMemory
{
    delegate int MemGetInfo(out nuint free, out nuint total);

    public static long? UsedBytes()
    {
        foreach (var name in new[] { "libcudart.so.13", "libcudart.so.12", "libcudart.so" })
        {
            if (!NativeLibrary.TryLoad(name, out var handle)) continue;
            if (!NativeLibrary.TryGetExport(handle, "cudaMemGetInfo", out var export)) continue;
            var memGetInfo = Marshal.GetDelegateForFunctionPointer<MemGetInfo>(export);
            if (memGetInfo(out var free, out var total) == 0) return (long)(total - free);
        }
        return null;
    }
}
