using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// A bottleneck, <c>scaling · W_up mean_k f(W_down,k x) + b_up</c>: <c>down</c> d → H·m, a non-linearity, the H
/// heads averaged, <c>up</c> m → d. The building block of the bottleneck family; methods that place one as a
/// child (hierarchical levels, the shared adapter) use this module, and those that keep <c>down</c>/<c>up</c> as their
/// own fields (so that their keys stay <c>adapters.x.down.weight</c>) use its static parts.
/// </summary>
public sealed class Bottleneck : nn.Module
{
    readonly Linear down;
    readonly Linear up;
    readonly int heads;
    readonly string nonLinearity;
    readonly double scaling;

    public Bottleneck(int hidden, int size, string nonLinearity, AdapterInit init, double scaling = 1.0, int heads = 1) : base(nameof(Bottleneck))
    {
        (down, up) = Create(hidden, size, heads, init);
        this.heads = heads;
        this.nonLinearity = nonLinearity;
        this.scaling = scaling;
        RegisterComponents();
    }

    /// <param name="x">(B, T, d).</param>
    /// <returns>(B, T, d) in the pass's matmul type.</returns>
    public Tensor Apply(Tensor x, ForwardPass pass) => Forward(down, up, heads, nonLinearity, scaling, x, pass);

    /// <summary>The bottleneck as a mixed-batch stage.</summary>
    public BottleneckStage Stage(bool readsResidual = false) => Stage(down, up, heads, nonLinearity, scaling, readsResidual);

    /// <summary>m: the given size, or hidden / reduction factor.</summary>
    public static int Size(int? size, double? reductionFactor, int hidden) =>
        size ?? Math.Max(1, (int)Math.Round(hidden / (reductionFactor ?? throw new InvalidOperationException("no adapter size"))));

    static readonly string[] NonLinearities = ["relu", "gelu", "swish", "silu", "tanh", "identity"];

    /// <summary>The largest bottleneck, as a multiple of the hidden size (reverse adapters use 2).</summary>
    public const int MaxSizePerHidden = 8;

    /// <summary>
    /// The checks every bottleneck config makes, as one-line <see cref="ArgumentException"/>s: a size (heads × m) of at
    /// most <see cref="MaxSizePerHidden"/> times the hidden size, before anything of that size is allocated.
    /// </summary>
    public static void Validate(int? size, double? reductionFactor, string nonLinearity, double scaling, int hidden, int heads = 1)
    {
        if (!(size is > 0 || reductionFactor is > 0))
            throw new ArgumentException("adapter config: a bottleneck needs adapter_size > 0 or reduction_factor > 0");
        double total = (size ?? hidden / reductionFactor!.Value) * heads;
        if (total > (double)MaxSizePerHidden * hidden)
            throw new ArgumentException(
                $"adapter config: a bottleneck of {total:0} units (heads × size) is more than {MaxSizePerHidden} × the model's hidden size {hidden}");
        if (!NonLinearities.Contains(nonLinearity))
            throw new ArgumentException($"adapter config: non_linearity '{nonLinearity}' is not one of {string.Join(", ", NonLinearities)}");
        if (!(scaling is > 0 and < 1e6)) throw new ArgumentException($"adapter config: scaling must be positive, got {scaling}");
    }

    /// <summary>The two projections of a bottleneck of size <paramref name="size"/> (per head), initialised as <paramref name="init"/> says.</summary>
    public static (Linear Down, Linear Up) Create(int hidden, int size, int heads, AdapterInit init)
    {
        var down = nn.Linear(hidden, (long)heads * size);
        var up = nn.Linear(size, hidden);
        using var noGrad = no_grad();
        foreach (var linear in new[] { down, up })
        {
            using var scope = NewDisposeScope();
            if (init == AdapterInit.Bert) nn.init.normal_(linear.weight!, 0, 0.02);
            else Init.TruncatedNormal(linear.weight!, std: 1e-2);
            nn.init.zeros_(linear.bias!);
        }
        if (init == AdapterInit.Zero)
            using (NewDisposeScope())
                nn.init.zeros_(up.weight!);
        return (down, up);
    }

    /// <param name="x">(B, T, d).</param>
    /// <returns>(B, T, d): <c>scaling · W_up mean_k f(W_down,k x) + b_up</c>.</returns>
    public static Tensor Forward(Linear down, Linear up, int heads, string nonLinearity, double scaling, Tensor x, ForwardPass pass)
    {
        var inner = Activations.Apply(nonLinearity, pass.Project(down, x)); // (B, T, H·m)
        if (heads > 1)
        {
            // (1/H) Σ_k W_up f(W_down,k h) = W_up ((1/H) Σ_k f(W_down,k h)): average the heads, then project once.
            var shape = inner.shape;
            inner = inner.view(shape[0], shape[1], heads, shape[2] / heads).mean([2]); // (B, T, m)
        }
        var output = pass.Project(up, inner);
        return scaling == 1.0 ? output : output * scaling;
    }

    /// <summary>
    /// The bottleneck as one head of size H·m, for stacking with other adapters:
    /// (1/H) Σ_k W_up f(W_down,k h) = [W_up/H … W_up/H] f(W_down h), so averaging the heads becomes an
    /// up-projection tiled H times.
    /// </summary>
    public static BottleneckStage Stage(Linear down, Linear up, int heads, string nonLinearity, double scaling, bool readsResidual)
    {
        var upWeight = heads == 1 ? up.weight! : up.weight!.repeat(1, heads) / heads; // (d, H·m)
        return new BottleneckStage(down.weight!, down.bias!, upWeight, up.bias!, scaling, readsResidual, nonLinearity);
    }
}
