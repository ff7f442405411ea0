using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>
/// What one named adapter holds at one site of the encoder: a bottleneck (<c>down</c> d→H·m, non-linearity,
/// <c>up</c> m→d) and/or its own copy of the site's LayerNorm (LayerNorms trained per task). The forward pass
/// returns the bottleneck's contribution, <c>scaling · W_up mean_k f(W_down,k h) + b_up</c>; the site adds it.
/// </summary>
public sealed class Adapter : nn.Module<Tensor, Tensor>
{
    readonly Linear? down;
    readonly Linear? up;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm? layer_norm;
    readonly int heads;
    readonly string nonLinearity;
    readonly double scaling;
    readonly ForwardContext context;

    /// <param name="hidden">The encoder's hidden size d.</param>
    /// <param name="config">Bottleneck size, heads, non-linearity, init, scaling.</param>
    /// <param name="bottleneck">Whether this site gets a bottleneck (a LayerNorm-only adapter gets none).</param>
    /// <param name="baseLayerNorm">The site's LayerNorm to copy for per-task training, or null to use the base's.</param>
    /// <param name="context">The encoder's forward context (matmul precision).</param>
    public Adapter(int hidden, AdapterConfig config, bool bottleneck, LayerNorm? baseLayerNorm, ForwardContext context) : base(nameof(Adapter))
    {
        this.context = context;
        heads = config.Heads;
        nonLinearity = config.NonLinearity;
        scaling = config.Scaling;
        IsParallel = config.Parallel;
        if (bottleneck)
        {
            int size = config.BottleneckSize(hidden);
            down = nn.Linear(hidden, (long)heads * size);
            up = nn.Linear(size, hidden);
            Initialize(config.Init);
        }
        if (baseLayerNorm is not null)
        {
            layer_norm = nn.LayerNorm(hidden, baseLayerNorm.eps);
            using var noGrad = no_grad();
            layer_norm.weight!.copy_(baseLayerNorm.weight!);
            layer_norm.bias!.copy_(baseLayerNorm.bias!);
        }
        RegisterComponents();
    }

    public bool HasBottleneck => down is not null;

    public bool IsParallel { get; }

    public string NonLinearity => nonLinearity;

    public double Scaling => scaling;

    /// <summary>The LayerNorm this adapter trains for its site, or null when it uses the base's.</summary>
    public LayerNorm? LayerNorm => layer_norm;

    void Initialize(AdapterInit init)
    {
        using var noGrad = no_grad();
        foreach (var linear in new[] { down!, up! })
        {
            using var scope = NewDisposeScope();
            if (init == AdapterInit.Bert) nn.init.normal_(linear.weight!, 0, 0.02);
            else TruncatedNormal(linear.weight!, std: 1e-2);
            nn.init.zeros_(linear.bias!);
        }
        if (init == AdapterInit.Zero)
            using (NewDisposeScope())
                nn.init.zeros_(up!.weight!);
    }

    /// <summary>
    /// N(0, σ²) cut at ±2σ, by inverse-CDF sampling. Not TorchSharp's <c>nn.init.trunc_normal_</c>: in 0.107 its
    /// native side ends with <c>mul_(mean).add_(std)</c> where it means <c>mul_(std·√2).add_(mean)</c>, so with
    /// mean 0 it fills the tensor with the constant σ. Every hidden unit of an adapter then starts identical,
    /// gets identical updates, and the bottleneck trains as rank 1.
    /// </summary>
    public static void TruncatedNormal(Tensor weight, double std)
    {
        const double cdfAtMinus2 = 0.022750131948179195, cdfAtPlus2 = 0.9772498680518208; // Φ(-2), Φ(2)
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        weight.uniform_(2 * cdfAtMinus2 - 1, 2 * cdfAtPlus2 - 1).erfinv_().mul_(std * Math.Sqrt(2)).clamp_(-2 * std, 2 * std);
    }

    /// <summary>
    /// The bottleneck as one head of size H·m, for stacking with other adapters:
    /// (1/H) Σ_k W_up f(W_down,k h) = [W_up/H … W_up/H] f(W_down h), so averaging the heads becomes an
    /// up-projection tiled H times. Returns W_down (H·m, d), b_down (H·m), W_up (d, H·m), b_up (d).
    /// </summary>
    internal (Tensor Down, Tensor DownBias, Tensor Up, Tensor UpBias) AsSingleHead()
    {
        var upWeight = heads == 1 ? up!.weight! : up!.weight!.repeat(1, heads) / heads; // (d, H·m)
        return (down!.weight!, down.bias!, upWeight, up.bias!);
    }

    /// <param name="hidden">(B, T, d): the sublayer output (serial) or input (parallel).</param>
    /// <returns>(B, T, d): what the adapter adds.</returns>
    public override Tensor forward(Tensor hidden)
    {
        var inner = Activations.Apply(nonLinearity, context.Project(down!, hidden)); // (B, T, H·m)
        if (heads > 1)
        {
            // (1/H) Σ_k W_up f(W_down,k h) = W_up ((1/H) Σ_k f(W_down,k h)): average the heads, then project once.
            var shape = inner.shape;
            inner = inner.view(shape[0], shape[1], heads, shape[2] / heads).mean([2]); // (B, T, m)
        }
        var output = context.Project(up!, inner);
        return scaling == 1.0 ? output : output * scaling;
    }
}

/// <summary>
/// An adapter site: the named adapters placed at one point of the encoder (embeddings, attention output or
/// FFN output of a layer), each a child module under its name: <c>….adapters.&lt;name&gt;.down.weight</c>.
/// An empty site adds no keys, so the bare encoder's state dict stays HF's.
/// </summary>
public sealed class AdapterSite(ForwardContext context) : NamedModules<Adapter>
{
    RowStack? rowStack;

    Adapter? ActiveAdapter => context.ActiveAdapter is { } name && TryGet(name, out var adapter) ? adapter : null;

    /// <summary>
    /// <c>LayerNorm(h + A(h) + residual)</c> in series, <c>LayerNorm(h + A(residual) + residual)</c> in parallel,
    /// with the adapter's own LayerNorm if it trains one; the base model's sublayer when no adapter is active here.
    /// In a mixed batch (<see cref="ForwardContext.RowAdapters"/> set) each row gets its own adapter.
    /// With a composition set (<see cref="ForwardContext.Composition"/>), the adapters combine as it says.
    /// </summary>
    /// <param name="sublayer">(B, T, d) output of the sublayer's projection (after dropout).</param>
    /// <param name="residual">(B, T, d) the sublayer's input.</param>
    /// <param name="baseLayerNorm">The site's pretrained LayerNorm.</param>
    /// <param name="fusions">The site's AdapterFusion layers.</param>
    public Tensor Apply(Tensor sublayer, Tensor residual, LayerNorm baseLayerNorm, NamedModules<AdapterFusion> fusions)
    {
        if (context.RowAdapters is { } rows)
            return StackFor(rows).Apply(sublayer, residual, rows.Index, baseLayerNorm, context);
        if (context.Composition is { } composition)
            return composition is Fuse fuse ? ApplyFuse(fuse, sublayer, residual, baseLayerNorm, fusions) : ApplyStack(composition, sublayer, residual, baseLayerNorm);
        var adapter = ActiveAdapter;
        if (adapter is null) return context.AddNormalize(sublayer, null, residual, baseLayerNorm);
        var added = adapter.HasBottleneck ? adapter.call(adapter.IsParallel ? residual : sublayer) : null;
        return context.AddNormalize(sublayer, added, residual, adapter.LayerNorm ?? baseLayerNorm);
    }

    /// <summary>
    /// The site's LayerNorm where it has no sublayer (the embeddings): the adapter's copy, or the base's. A stack
    /// uses its last adapter's copy, a fusion the base's.
    /// </summary>
    /// <param name="hidden">(B, T, d).</param>
    public Tensor Normalize(Tensor hidden, LayerNorm baseLayerNorm)
    {
        if (context.RowAdapters is { } rows) return StackFor(rows).Normalize(hidden, rows.Index, baseLayerNorm);
        if (context.Composition is { } composition)
            return (composition is Stack ? LastPresent(composition)?.LayerNorm ?? baseLayerNorm : baseLayerNorm).call(hidden);
        return (ActiveAdapter?.LayerNorm ?? baseLayerNorm).call(hidden);
    }

    /// <summary>Each adapter of the stack present here, in turn, on what the one before produced.</summary>
    Tensor ApplyStack(AdapterComposition stack, Tensor sublayer, Tensor residual, LayerNorm baseLayerNorm)
    {
        foreach (var name in stack.Adapters)
            if (TryGet(name, out var adapter) && adapter.HasBottleneck)
                sublayer = sublayer + adapter.call(adapter.IsParallel ? residual : sublayer);
        return (LastPresent(stack)?.LayerNorm ?? baseLayerNorm).call(sublayer + residual);
    }

    Adapter? LastPresent(AdapterComposition composition)
    {
        for (int i = composition.Adapters.Count - 1; i >= 0; i--)
            if (TryGet(composition.Adapters[i], out var adapter)) return adapter;
        return null;
    }

    /// <summary>The fusion's mix of its adapters' outputs where it has a layer here; the base sublayer elsewhere.</summary>
    Tensor ApplyFuse(Fuse fuse, Tensor sublayer, Tensor residual, LayerNorm baseLayerNorm, NamedModules<AdapterFusion> fusions)
    {
        if (!fusions.TryGet(fuse.Fusion, out var fusion)) return baseLayerNorm.call(sublayer + residual);
        var outputs = new Tensor[fuse.Adapters.Count];
        for (int i = 0; i < outputs.Length; i++)
        {
            var adapter = this[fuse.Adapters[i]];
            outputs[i] = sublayer + adapter.call(adapter.IsParallel ? residual : sublayer); // (B, T, d)
        }
        return fusion.LayerNorm.call(fusion.Mix(sublayer, outputs) + residual);
    }

    /// <summary>Stacks this site's share of <paramref name="names"/> for mixed batches (see <see cref="RowStack"/>).</summary>
    internal void BuildRowStack(IReadOnlyList<string> names, LayerNorm baseLayerNorm)
    {
        ClearRowStack();
        rowStack = RowStack.Build(names, this, baseLayerNorm, context.MatmulType);
    }

    internal void ClearRowStack()
    {
        rowStack?.Dispose();
        rowStack = null;
    }

    RowStack StackFor(RowSelection rows) =>
        rowStack is { } stack && ReferenceEquals(stack.Names, rows.Names)
            ? stack
            : throw new InvalidOperationException("no adapter stacks for this row selection: run mixed batches through AdapterModel.EncodePerRow or LogitsPerRow");

    protected override void Dispose(bool disposing)
    {
        if (disposing) ClearRowStack();
        base.Dispose(disposing);
    }
}
