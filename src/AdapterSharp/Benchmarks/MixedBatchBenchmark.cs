using System.Diagnostics;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Benchmarks;

/// <summary>
/// Forward throughput of one batch whose rows are spread over K adapters: the per-row mixed pass
/// (<see cref="AdapterModel.LogitsPerRow"/>) against the usual way, a loop over sub-batches of one adapter each.
/// </summary>
public static class MixedBatchBenchmark
{
    /// <param name="methods">The adapters' methods, by preset name, taken in turn (default: all houlsby).</param>
    public static IEnumerable<Dictionary<string, object>> Run(string shape, int batch, int seq, int[] adapterCounts,
        int steps, int warmup, Device device, string dtype, IReadOnlyList<string>? methods = null)
    {
        using var model = Build(shape, batch, adapterCounts, device, dtype, methods);
        manual_seed(1);
        using var ids = randint(1000, 30000, [batch, seq], device: device);
        using var types = zeros([batch, seq], ScalarType.Int64, device);

        foreach (int k in adapterCounts)
        {
            var names = Enumerable.Range(0, batch).Select(i => (string?)$"a{i % k}").ToArray();
            double mixed = Time(() => model.LogitsPerRow(ids, null, types, names).Logits.Dispose(), steps, warmup, device);
            double loop = Time(() =>
            {
                // The sub-batch baseline: one forward per adapter over its rows.
                for (int a = 0; a < k; a++)
                {
                    using var scope = NewDisposeScope();
                    var rows = tensor(Enumerable.Range(0, batch).Where(i => i % k == a).Select(i => (long)i).ToArray()).to(device);
                    model.Active = $"a{a}";
                    model.Logits(ids.index_select(0, rows), null, types.index_select(0, rows));
                }
            }, steps, warmup, device);
            yield return new Dictionary<string, object>
            {
                ["workload"] = $"mixed/{shape}",
                ["methods"] = string.Join(",", methods is { Count: > 0 } ? methods : ["houlsby"]),
                ["impl"] = "adaptersharp",
                ["dtype"] = dtype,
                ["batch"] = batch,
                ["seq"] = seq,
                ["adapters"] = k,
                ["mixed_ms"] = Math.Round(mixed * 1e3, 3),
                ["mixed_tokens_per_s"] = Math.Round(batch * seq / mixed),
                ["subbatch_loop_ms"] = Math.Round(loop * 1e3, 3),
                ["subbatch_loop_tokens_per_s"] = Math.Round(batch * seq / loop),
                ["device"] = device.type == DeviceType.CUDA ? "cuda" : "cpu",
            };
        }
    }

    static AdapterModel Build(string shape, int batch, int[] adapterCounts, Device device, string dtype, IReadOnlyList<string>? methods)
    {
        var presets = (methods is { Count: > 0 } ? methods : ["houlsby"]).Select(MethodRegistry.Get).ToArray();
        if (presets.FirstOrDefault(p => !p.RowRoutable) is { } alone)
            throw new ArgumentException($"--methods: {alone.Method} adapters cannot join a mixed batch");
        if (!TrainingBenchmark.Shapes.TryGetValue(shape, out var config))
            throw new ArgumentException($"--shape: unknown shape '{shape}'");
        if (adapterCounts.Any(k => k < 1 || k > batch))
            throw new ArgumentException($"adapter counts must be between 1 and the batch size {batch}");
        manual_seed(0);
        var model = new AdapterModel(new BertModel(config, addPooler: false));
        for (int k = 0; k < adapterCounts.Max(); k++)
        {
            // Heads of different sizes, as a server holds them.
            var head = (k % 3) switch { 0 => HeadConfig.Classification(["0", "1"]), 1 => HeadConfig.Classification(["a", "b", "c"]), _ => HeadConfig.Regression() };
            var preset = presets[k % presets.Length];
            model.AddAdapter($"a{k}", preset is BottleneckConfig bottleneck ? bottleneck with { Init = AdapterInit.Bert } : preset, head);
            // Off any identity start (LoRA's B starts at 0), so that every adapter changes what its rows compute.
            if (preset is not BottleneckConfig)
                using (no_grad())
                    foreach (var tensor in model.Record($"a{k}").Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.02);
        }
        model.FreezeAll();
        model.to(device);
        model.UseMatmulType(dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32);
        model.eval();
        return model;
    }

    /// <summary>
    /// Equivalence on this device: for each K, a batch whose rows are padded to random lengths and spread over K
    /// adapters (every 7th row on none), run once mixed; each row then alone, unpadded, with its adapter. Reports
    /// the largest |Δ| over the rows' own logits (and the last hidden state of the "none" rows).
    /// </summary>
    public static IEnumerable<Dictionary<string, object>> Check(string shape, int batch, int seq, int[] adapterCounts, Device device, string dtype,
        IReadOnlyList<string>? methods = null)
    {
        using var model = Build(shape, batch, adapterCounts, device, dtype, methods);
        using var noGrad = no_grad();
        manual_seed(2);
        using var ids = randint(1000, 30000, [batch, seq], device: device);
        using var types = zeros([batch, seq], ScalarType.Int64, device);
        var random = new Random(3);
        var lengths = Enumerable.Range(0, batch).Select(_ => random.Next(2, seq + 1)).ToArray();
        using var mask = tensor(lengths.SelectMany(n => Enumerable.Range(0, seq).Select(t => t < n ? 1L : 0L)).ToArray()).view(batch, seq).to(device);
        foreach (int k in adapterCounts)
        {
            using var scope = NewDisposeScope();
            var names = Enumerable.Range(0, batch).Select(i => i % 7 == 6 ? null : (string?)$"a{i % k}").ToArray();
            var mixed = model.LogitsPerRow(ids, mask, types, names);
            var hidden = model.EncodePerRow(ids, mask, types, names);
            double worst = 0;
            for (int i = 0; i < batch; i++)
            {
                var row = ids.narrow(0, i, 1).narrow(1, 0, lengths[i]);
                var rowTypes = types.narrow(0, i, 1).narrow(1, 0, lengths[i]);
                Tensor diff;
                if (names[i] is { } name)
                {
                    model.Active = name;
                    var alone = model.Logits(row, null, rowTypes); // (1, outputs)
                    diff = (mixed.Logits.narrow(0, i, 1).narrow(1, 0, mixed.Outputs[i]) - alone).abs().max();
                }
                else
                {
                    model.Active = null;
                    var alone = model.Encode(row, null, rowTypes); // (1, n, d)
                    diff = (hidden.narrow(0, i, 1).narrow(1, 0, lengths[i]) - alone).abs().max();
                }
                worst = Math.Max(worst, diff.to_type(ScalarType.Float64).item<double>());
            }
            yield return new Dictionary<string, object>
            {
                ["workload"] = $"mixed-check/{shape}",
                ["methods"] = string.Join(",", methods is { Count: > 0 } ? methods : ["houlsby"]),
                ["dtype"] = dtype,
                ["batch"] = batch,
                ["seq"] = seq,
                ["adapters"] = k,
                ["max_abs_diff"] = worst,
                ["device"] = device.type == DeviceType.CUDA ? "cuda" : "cpu",
            };
        }
    }

    static double Time(Action step, int steps, int warmup, Device device)
    {
        using var noGrad = no_grad();
        for (int i = 0; i < warmup; i++)
            using (NewDisposeScope()) step();
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++)
            using (NewDisposeScope()) step();
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
        return clock.Elapsed.TotalSeconds / steps;
    }
}
