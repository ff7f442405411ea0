using System.Diagnostics;
using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Benchmarks;

/// <summary>
/// The fused sublayer end (<see cref="AddNorm"/>) against libtorch's operators, on random (rows × hidden)
/// operands: how far apart the outputs and all five gradients are, and what each takes forward and backward.
/// </summary>
public static class KernelBenchmark
{
    /// <summary>One record per comparison and per timing, with and without an adapter's output to add.</summary>
    public static IEnumerable<Dictionary<string, object>> AddNormRecords(Device device, long rows, long hidden, int steps, int seed,
        FusedKernels mode = FusedKernels.Auto)
    {
        foreach (bool adapter in new[] { true, false })
        {
            using var scope = NewDisposeScope();
            using var norm = nn.LayerNorm(hidden, 1e-12).to(device);
            manual_seed(seed);
            using (no_grad())
            {
                norm.weight!.copy_(1 + 0.1 * randn([hidden], device: device));
                norm.bias!.copy_(0.1 * randn([hidden], device: device));
            }
            var low = ScalarType.BFloat16;
            var a = randn([rows, hidden], device: device).to_type(low);
            var b = adapter ? (0.1 * randn([rows, hidden], device: device)).to_type(low) : null;
            var r = randn([rows, hidden], device: device);
            var gy = randn([rows, hidden], device: device);
            var gLow = randn([rows, hidden], device: device).to_type(low);

            bool kernels = AddNorm.KernelsTake(a, b, r, norm, mode);
            var operators = Run(norm, a, b, r, gy, gLow, Path.Operators);
            var unfused = Run(norm, a, b, r, gy, gLow, Path.Unfused);
            if (kernels) yield return Compare("kernels-vs-operators", adapter, rows, hidden, Run(norm, a, b, r, gy, gLow, Path.Kernels), operators);
            yield return Compare("operators-vs-unfused", adapter, rows, hidden, operators, unfused);

            foreach (var path in kernels ? new[] { Path.Kernels, Path.Unfused } : [Path.Operators, Path.Unfused])
                yield return Time(path, adapter, rows, hidden, steps, device, () => Run(norm, a, b, r, gy, gLow, path), () => Forward(norm, a, b, r, path));
        }
    }

    enum Path { Kernels, Operators, Unfused }

    static Tensor[] Forward(LayerNorm norm, Tensor a, Tensor? b, Tensor r, Path path)
    {
        if (path == Path.Unfused)
        {
            var y = norm.call((b is null ? a : a + b) + r);
            return [y, y.to_type(a.dtype)];
        }
        var (output, low) = AddNorm.Apply(a, b, r, norm, path == Path.Kernels ? AddNorm.Backend.Kernels : AddNorm.Backend.Operators);
        return [output, low];
    }

    /// <summary>Outputs, then the gradients of a, b (if any), r, weight and bias for the output gradients given.</summary>
    static Tensor[] Run(LayerNorm norm, Tensor a0, Tensor? b0, Tensor r0, Tensor gy, Tensor gLow, Path path)
    {
        var a = a0.detach().requires_grad_();
        var b = b0?.detach().requires_grad_();
        var r = r0.detach().requires_grad_();
        var outputs = Forward(norm, a, b, r, path);
        List<Tensor> inputs = b is null ? [a, r, norm.weight!, norm.bias!] : [a, b, r, norm.weight!, norm.bias!];
        var grads = autograd.grad(outputs, inputs, [gy, gLow]);
        return [outputs[0].detach(), outputs[1].detach(), .. grads];
    }

    static Dictionary<string, object> Compare(string pair, bool adapter, long rows, long hidden, Tensor[] x, Tensor[] reference)
    {
        string[] names = adapter ? ["y", "y_low", "da", "db", "dr", "dweight", "dbias"] : ["y", "y_low", "da", "dr", "dweight", "dbias"];
        var record = new Dictionary<string, object> { ["check"] = "add_layer_norm", ["pair"] = pair, ["adapter"] = adapter, ["rows"] = rows, ["hidden"] = hidden };
        double worst = 0;
        for (int i = 0; i < names.Length; i++)
        {
            // Largest difference relative to the reference's largest magnitude.
            var expected = reference[i].to_type(ScalarType.Float64);
            var error = (x[i].to_type(ScalarType.Float64) - expected).abs().max().item<double>() / Math.Max(expected.abs().max().item<double>(), 1e-30);
            record[names[i]] = error;
            worst = Math.Max(worst, error);
        }
        record["worst"] = worst;
        return record;
    }

    static Dictionary<string, object> Time(Path path, bool adapter, long rows, long hidden, int steps, Device device, Action step, Action forward)
    {
        double Measure(Action work)
        {
            for (int i = 0; i < 3; i++)
                using (NewDisposeScope()) work();
            Synchronize(device);
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < steps; i++)
                using (NewDisposeScope()) work();
            Synchronize(device);
            return clock.Elapsed.TotalMilliseconds / steps;
        }
        double both = Measure(step);
        double forwardOnly;
        using (no_grad()) forwardOnly = Measure(forward);
        return new Dictionary<string, object>
        {
            ["timing"] = "add_layer_norm",
            ["impl"] = path.ToString().ToLowerInvariant(),
            ["adapter"] = adapter,
            ["rows"] = rows,
            ["hidden"] = hidden,
            ["forward_ms"] = Math.Round(forwardOnly, 4),
            ["forward_backward_ms"] = Math.Round(both, 4),
        };
    }

    static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}
