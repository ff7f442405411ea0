using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Adapters;

/// <summary>
/// One site's adapters stacked for mixed batches, so that one pass gives every row its own adapter by
/// gathering its slice (index 0: none; index k: <c>Names[k - 1]</c>) and using batched products instead of
/// a loop over adapters. An adapter without a bottleneck here gets a zero one, an adapter without a
/// LayerNorm copy the base LayerNorm's γ/β, and "none" both. Detached copies, for inference: the model
/// rebuilds them when its adapters change.
/// </summary>
sealed class RowStack : IDisposable
{
    RowStack(IReadOnlyList<string> names) => Names = names;

    public IReadOnlyList<string> Names { get; }

    Bottlenecks? bottlenecks;
    Tensor? gamma, beta; // (K+1, d) float32, null when no adapter has a LayerNorm copy here
    double eps;

    public static RowStack Build(IReadOnlyList<string> names, AdapterSite site, LayerNorm baseLayerNorm, ScalarType matmulType)
    {
        var adapters = names.Select(n => site.TryGet(n, out var adapter) ? adapter : null).Prepend(null).ToArray(); // index 0: none
        var result = new RowStack(names);
        var baseWeight = baseLayerNorm.weight!;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        if (adapters.Any(a => a is { HasBottleneck: true }))
            result.bottlenecks = Bottlenecks.Build(adapters, baseWeight.shape[0], baseWeight.device, matmulType);
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
    public Tensor Apply(Tensor sublayer, Tensor residual, Tensor rows, LayerNorm baseLayerNorm, ForwardContext context)
    {
        if (bottlenecks is { } b)
            sublayer = sublayer + b.Delta(sublayer, residual, rows, context);
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
        bottlenecks?.Dispose();
        gamma?.Dispose();
        beta?.Dispose();
    }

    /// <summary>
    /// Every adapter's bottleneck at one site as (K+1) stacked matrices, padded with zeros to the largest size M
    /// (H·m for multi-head adapters, see <see cref="Adapter.AsSingleHead"/>). Padding is exact: a zero down row
    /// and bias give a pre-activation of 0, and the matching zero up column adds nothing whatever f(0) is
    /// (it is 0 for every allowed non-linearity anyway).
    /// </summary>
    sealed class Bottlenecks : IDisposable
    {
        Tensor down = null!;     // (K+1, d, M) in the matmul type, transposed for x W
        Tensor downBias = null!; // (K+1, 1, M)
        Tensor up = null!;       // (K+1, M, d)
        Tensor upBias = null!;   // (K+1, 1, d)
        Tensor scaling = null!;  // (K+1) float32
        Tensor? parallelRows;    // (K+1) bool, only when serial and parallel adapters share the site
        bool allParallel;
        // The first non-linearity applies to every row; each further one replaces it on its rows ((K+1) bool).
        (string Name, Tensor? Rows)[] activations = [];

        public static Bottlenecks Build(Adapter?[] adapters, long hidden, Device device, ScalarType matmulType)
        {
            long slots = adapters.Length;
            var parts = new (Tensor Down, Tensor DownBias, Tensor Up, Tensor UpBias)?[slots];
            for (int k = 0; k < slots; k++)
                if (adapters[k] is { HasBottleneck: true } adapter) parts[k] = adapter.AsSingleHead();
            long size = parts.Max(p => p?.Down.shape[0] ?? 0);
            var down = zeros(slots, hidden, size, device: device);
            var downBias = zeros(slots, 1, size, device: device);
            var up = zeros(slots, size, hidden, device: device);
            var upBias = zeros(slots, 1, hidden, device: device);
            for (int k = 0; k < slots; k++)
            {
                if (parts[k] is not { } part) continue;
                long m = part.Down.shape[0];
                down[k].narrow(1, 0, m).copy_(part.Down.t());
                downBias[k, 0].narrow(0, 0, m).copy_(part.DownBias);
                up[k].narrow(0, 0, m).copy_(part.Up.t());
                upBias[k, 0].copy_(part.UpBias);
            }

            var withBottleneck = adapters.Where(a => a is { HasBottleneck: true }).Select(a => a!).ToArray();
            var result = new Bottlenecks
            {
                down = down.to_type(matmulType).DetachFromDisposeScope(),
                downBias = downBias.to_type(matmulType).DetachFromDisposeScope(),
                up = up.to_type(matmulType).DetachFromDisposeScope(),
                upBias = upBias.to_type(matmulType).DetachFromDisposeScope(),
                scaling = tensor(adapters.Select(a => a is { HasBottleneck: true } ? (float)a.Scaling : 0f).ToArray(), device: device)
                    .DetachFromDisposeScope(),
                allParallel = withBottleneck.All(a => a.IsParallel),
            };
            if (!result.allParallel && withBottleneck.Any(a => a.IsParallel))
                result.parallelRows = Select(adapters, a => a.IsParallel, device);
            result.activations = withBottleneck.Select(a => a.NonLinearity).Distinct()
                .Select((name, i) => (name, i == 0 ? null : Select(adapters, a => a.NonLinearity == name, device)))
                .ToArray();
            return result;
        }

        static Tensor Select(Adapter?[] adapters, Func<Adapter, bool> predicate, Device device) =>
            tensor(adapters.Select(a => a is { HasBottleneck: true } && predicate(a)).ToArray(), device: device).DetachFromDisposeScope();

        /// <summary>Each row's <c>scaling · (W_up f(W_down x + b_down) + b_up)</c>, x its sublayer output or input.</summary>
        /// <returns>(B, T, d) float32.</returns>
        public Tensor Delta(Tensor sublayer, Tensor residual, Tensor rows, ForwardContext context)
        {
            var input = allParallel ? residual
                : parallelRows is null ? sublayer
                : where(PerRow(parallelRows, rows), residual, sublayer); // (B, T, d)
            var inner = context.ProjectPerRow(input, down.index_select(0, rows), downBias.index_select(0, rows)); // (B, T, M)
            inner = Activate(inner, rows);
            var output = context.ProjectPerRow(inner, up.index_select(0, rows), upBias.index_select(0, rows)); // (B, T, d)
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
