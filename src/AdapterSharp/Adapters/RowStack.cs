using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Adapters;

/// <summary>
/// One site's adapters stacked for mixed batches, so that one pass gives every row its own adapter by
/// gathering its slice (index 0: none; index k: <c>Names[k - 1]</c>) and using batched products instead of
/// a loop over adapters. Each adapter is a list of bottleneck stages applied in turn (<see cref="SublayerAdapter.RowStages"/>:
/// one for a Houlsby adapter, one per level for a hierarchical one); stage s stacks every adapter's s-th stage,
/// and an adapter with fewer stages (or none here) gets a zero bottleneck there, which adds exactly nothing. An
/// adapter without a LayerNorm copy gets the base LayerNorm's γ/β, and "none" both. Detached copies, for inference:
/// the model rebuilds them when its adapters change.
/// </summary>
sealed class RowStack : IDisposable
{
    RowStack(IReadOnlyList<string> names) => Names = names;

    public IReadOnlyList<string> Names { get; }

    Bottlenecks[] stages = [];
    Tensor? gamma, beta; // (K+1, d) float32, null when no adapter has a LayerNorm copy here
    double eps;

    public static RowStack Build(IReadOnlyList<string> names, AdapterSite site, LayerNorm baseLayerNorm, ScalarType matmulType)
    {
        var adapters = names.Select(n => site.TryGet(n, out var adapter) ? adapter : null).Prepend(null).ToArray(); // index 0: none
        var result = new RowStack(names);
        var baseWeight = baseLayerNorm.weight!;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var perSlot = adapters.Select((a, k) => a is null ? [] : a.RowStages
            ?? throw new InvalidOperationException($"adapter '{names[k - 1]}' has no form that a mixed batch can stack")).ToArray();
        int depth = perSlot.Max(s => s.Count);
        result.stages = Enumerable.Range(0, depth)
            .Select(s => Bottlenecks.Build(perSlot.Select(stages => s < stages.Count ? stages[s] : null).ToArray(), baseWeight.shape[0], baseWeight.device, matmulType))
            .ToArray();
        if (adapters.Any(a => a?.LayerNorm is not null))
        {
            result.gamma = stack(adapters.Select(a => (Tensor)(a?.LayerNorm ?? baseLayerNorm).weight!).ToArray()).DetachFromDisposeScope(); // (K+1, d)
            result.beta = stack(adapters.Select(a => (Tensor)(a?.LayerNorm ?? baseLayerNorm).bias!).ToArray()).DetachFromDisposeScope();
            result.eps = baseLayerNorm.eps; // the copies were made with the base's eps
        }
        return result;
    }

    /// <summary>The mixed-batch version of <see cref="AdapterSite.Apply"/>.</summary>
    /// <param name="rows">(B) int64 stack indices.</param>
    public Tensor Apply(Tensor sublayer, Tensor residual, Tensor rows, LayerNorm baseLayerNorm, ForwardPass pass)
    {
        foreach (var stage in stages)
            sublayer = sublayer + stage.Delta(sublayer, residual, rows, pass);
        return Normalize(sublayer + residual, rows, baseLayerNorm);
    }

    /// <summary>LayerNorm without affine, then each row's γ and β; the base LayerNorm when no adapter has a copy here.</summary>
    /// <param name="hidden">(B, T, d) float32.</param>
    /// <param name="rows">(B) int64 stack indices.</param>
    public Tensor Normalize(Tensor hidden, Tensor rows, LayerNorm baseLayerNorm)
    {
        if (gamma is null) return baseLayerNorm.call(hidden);
        var normalized = F.layer_norm(hidden, [hidden.shape[^1]], eps: eps); // (B, T, d)
        return normalized * gamma.index_select(0, rows).unsqueeze(1) + beta!.index_select(0, rows).unsqueeze(1); // γ, β: (B, 1, d)
    }

    public void Dispose()
    {
        foreach (var stage in stages) stage.Dispose();
        gamma?.Dispose();
        beta?.Dispose();
    }

    /// <summary>
    /// One stage of every adapter at one site as (K+1) stacked matrices, padded with zeros to the largest size M.
    /// Padding is exact: a zero down row and bias give a pre-activation of 0, and the matching zero up column adds
    /// nothing whatever f(0) is (it is 0 for every allowed non-linearity anyway).
    /// </summary>
    sealed class Bottlenecks : IDisposable
    {
        Tensor down = null!;     // (K+1, d, M) in the matmul type, transposed for x W
        Tensor downBias = null!; // (K+1, 1, M)
        Tensor up = null!;       // (K+1, M, d)
        Tensor upBias = null!;   // (K+1, 1, d)
        Tensor scaling = null!;  // (K+1) float32
        Tensor? parallelRows;    // (K+1) bool, only when serial and parallel stages share the site
        bool allParallel;
        // The first non-linearity applies to every row; each further one replaces it on its rows ((K+1) bool).
        (string Name, Tensor? Rows)[] activations = [];

        public static Bottlenecks Build(BottleneckStage?[] slots, long hidden, Device device, ScalarType matmulType)
        {
            long count = slots.Length;
            long size = slots.Max(p => p?.Down.shape[0] ?? 0);
            var down = zeros(count, hidden, size, device: device);
            var downBias = zeros(count, 1, size, device: device);
            var up = zeros(count, size, hidden, device: device);
            var upBias = zeros(count, 1, hidden, device: device);
            for (int k = 0; k < count; k++)
            {
                if (slots[k] is not { } stage) continue;
                long m = stage.Down.shape[0];
                down[k].narrow(1, 0, m).copy_(stage.Down.t());
                downBias[k, 0].narrow(0, 0, m).copy_(stage.DownBias);
                up[k].narrow(0, 0, m).copy_(stage.Up.t());
                upBias[k, 0].copy_(stage.UpBias);
            }

            var present = slots.Where(s => s is not null).Select(s => s!).ToArray();
            var result = new Bottlenecks
            {
                down = down.to_type(matmulType).DetachFromDisposeScope(),
                downBias = downBias.to_type(matmulType).DetachFromDisposeScope(),
                up = up.to_type(matmulType).DetachFromDisposeScope(),
                upBias = upBias.to_type(matmulType).DetachFromDisposeScope(),
                scaling = tensor(slots.Select(s => s is null ? 0f : (float)s.Scaling).ToArray(), device: device).DetachFromDisposeScope(),
                allParallel = present.All(s => s.ReadsResidual),
            };
            if (!result.allParallel && present.Any(s => s.ReadsResidual))
                result.parallelRows = Select(slots, s => s.ReadsResidual, device);
            result.activations = present.Select(s => s.NonLinearity).Distinct()
                .Select((name, i) => (name, i == 0 ? null : Select(slots, s => s.NonLinearity == name, device)))
                .ToArray();
            return result;
        }

        static Tensor Select(BottleneckStage?[] slots, Func<BottleneckStage, bool> predicate, Device device) =>
            tensor(slots.Select(s => s is not null && predicate(s)).ToArray(), device: device).DetachFromDisposeScope();

        /// <summary>Each row's <c>scaling · (W_up f(W_down x + b_down) + b_up)</c>, x its running sublayer output or input.</summary>
        /// <returns>(B, T, d).</returns>
        public Tensor Delta(Tensor sublayer, Tensor residual, Tensor rows, ForwardPass pass)
        {
            var input = allParallel ? residual
                : parallelRows is null ? sublayer
                : where(PerRow(parallelRows, rows), residual, sublayer); // (B, T, d)
            var inner = pass.ProjectPerRow(input, down.index_select(0, rows), downBias.index_select(0, rows)); // (B, T, M)
            inner = Activate(inner, rows);
            var output = pass.ProjectPerRow(inner, up.index_select(0, rows), upBias.index_select(0, rows)); // (B, T, d)
            return output * PerRow(scaling, rows);
        }

        Tensor Activate(Tensor inner, Tensor rows)
        {
            var result = Activations.Apply(activations[0].Name, inner);
            foreach (var (name, selected) in activations.Skip(1))
                result = where(PerRow(selected!, rows), Activations.Apply(name, inner), result);
            return result;
        }

        static Tensor PerRow(Tensor values, Tensor rows) => values.index_select(0, rows).view(-1, 1, 1); // (B, 1, 1)

        public void Dispose()
        {
            foreach (var t in new[] { down, downBias, up, upBias, scaling, parallelRows })
                t?.Dispose();
            foreach (var (_, rows) in activations)
                rows?.Dispose();
        }
    }
}

/// <summary>
/// One projection's adapters stacked for mixed batches: each adapter's low-rank map (<see cref="ProjectionAdapter.LowRank"/>)
/// as (K+1, in, R) and (K+1, R, out) matrices padded with zeros to the largest rank R (exact: zero columns add
/// nothing), so that two batched products give every row its own <c>Up Down x</c>. Detached copies, like <see cref="RowStack"/>.
/// </summary>
sealed class ProjectionRowStack : IDisposable
{
    ProjectionRowStack(IReadOnlyList<string> names) => Names = names;

    public IReadOnlyList<string> Names { get; }

    Tensor? down; // (K+1, in, R) in the matmul type
    Tensor? up;   // (K+1, R, out)

    public static ProjectionRowStack Build(IReadOnlyList<string> names, ProjectionSite site, ScalarType matmulType)
    {
        var result = new ProjectionRowStack(names);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var factors = new (Tensor Down, Tensor Up)?[names.Count + 1]; // index 0: none
        for (int k = 1; k <= names.Count; k++)
            if (site.TryGet(names[k - 1], out var adapter))
                factors[k] = adapter.LowRank ?? throw new InvalidOperationException($"adapter '{names[k - 1]}' has no low-rank form that a mixed batch can stack");
        var present = factors.Where(f => f is not null).Select(f => f!.Value).ToArray();
        if (present.Length == 0) return result;
        long rank = present.Max(f => f.Down.shape[0]), input = present[0].Down.shape[1], output = present[0].Up.shape[0];
        var device = present[0].Down.device;
        var down = zeros(factors.Length, input, rank, device: device);
        var up = zeros(factors.Length, rank, output, device: device);
        for (int k = 0; k < factors.Length; k++)
        {
            if (factors[k] is not { } f) continue;
            long r = f.Down.shape[0];
            down[k].narrow(1, 0, r).copy_(f.Down.t());
            up[k].narrow(0, 0, r).copy_(f.Up.t());
        }
        result.down = down.to_type(matmulType).DetachFromDisposeScope();
        result.up = up.to_type(matmulType).DetachFromDisposeScope();
        return result;
    }

    /// <summary>Each row's <c>Up Down x</c>, or null when no adapter has anything here.</summary>
    /// <param name="input">(B, T, in).</param>
    /// <param name="rows">(B) int64 stack indices.</param>
    /// <returns>(B, T, out).</returns>
    public Tensor? Delta(Tensor input, Tensor rows, ForwardPass pass)
    {
        if (down is null) return null;
        var inner = pass.ProjectPerRow(input, down.index_select(0, rows), null); // (B, T, R)
        return pass.ProjectPerRow(inner, up!.index_select(0, rows), null);
    }

    public void Dispose()
    {
        down?.Dispose();
        up?.Dispose();
    }
}
