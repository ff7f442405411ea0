using AdapterSharp.Adapters;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Model;

/// <summary>Whether a sublayer's end runs as our fused CUDA kernels (see <see cref="AddNorm"/>).</summary>
public enum FusedKernels
{
    /// <summary>Where they apply (bfloat16 products on CUDA) and compile; otherwise libtorch's operators.</summary>
    Auto,

    /// <summary>As <see cref="Auto"/>, but a failed compile is an error rather than a fallback.</summary>
    On,

    /// <summary>libtorch's operators everywhere.</summary>
    Off,
}

/// <summary>
/// What one forward pass of the encoder needs, handed to every module as an argument: which adapters run (one for the
/// whole batch, a composition of several, or one per row), the precision of the products and whether the fused
/// kernels may run. It also carries what the pass produces besides its output: the bfloat16 copy of the last fused
/// sublayer output (for the next product, instead of a cast) and auxiliary losses that adapters add (a size penalty,
/// say). One pass, one object; dispose it when the pass is over.
/// </summary>
public sealed class ForwardPass : IDisposable
{
    /// <summary>A pass of the bare encoder (no adapter) in <paramref name="matmulType"/>.</summary>
    public ForwardPass(ScalarType matmulType = ScalarType.Float32, FusedKernels kernels = FusedKernels.Auto)
    {
        MatmulType = matmulType;
        Kernels = kernels;
    }

    /// <summary>The adapter every row runs through, or null.</summary>
    public string? Adapter { get; init; }

    /// <summary>Several adapters combined (<see cref="Stack"/>, <see cref="Fuse"/>), or null; overrides <see cref="Adapter"/>.</summary>
    public AdapterComposition? Composition { get; init; }

    /// <summary>Each row's adapter in a mixed batch, or null; overrides both of the above.</summary>
    public RowSelection? Rows { get; init; }

    /// <summary>
    /// Element type of the matrix products (float32, or bfloat16 on GPUs). The residual stream, LayerNorms,
    /// softmax statistics and losses stay float32 either way.
    /// </summary>
    public ScalarType MatmulType { get; }

    public FusedKernels Kernels { get; }

    /// <summary>(B, T) bool, true at real tokens; null when nothing is padded. Set by the encoder for adapters that pool over tokens.</summary>
    public Tensor? TokenMask { get; internal set; }

    /// <summary>Whether any adapter may run in this pass (sites skip their lookups otherwise).</summary>
    public bool HasAdapters => Adapter is not null || Composition is not null || Rows is not null;

    /// <summary>
    /// The names an adapter site runs in this pass when no rows are routed: the one adapter, or those of the
    /// composition, in order.
    /// </summary>
    public IReadOnlyList<string> Active => active ??= Composition?.Adapters ?? (Adapter is { } name ? [name] : []);

    IReadOnlyList<string>? active;

    readonly Dictionary<string, List<Tensor>> losses = new(StringComparer.Ordinal);

    /// <summary>
    /// Adds <paramref name="loss"/> (a scalar) to the pass's auxiliary loss under <paramref name="group"/>: each group
    /// contributes the mean of what its members added (so a penalty per site does not grow with the number of sites).
    /// The pass keeps it (out of the module's dispose scope) until it is disposed.
    /// </summary>
    public void AddLoss(string group, Tensor loss)
    {
        if (!losses.TryGetValue(group, out var list)) losses[group] = list = [];
        list.Add(loss.DetachFromDisposeScope());
    }

    /// <summary>The sum over groups of the mean of each group's losses, or null when no adapter added one.</summary>
    public Tensor? AuxiliaryLoss()
    {
        Tensor? total = null;
        foreach (var group in losses.Values)
        {
            var mean = stack(group).mean();
            total = total is null ? mean : total + mean;
        }
        return total;
    }

    /// <summary>
    /// <c>linear(x)</c> in <see cref="MatmulType"/>. Frozen weights already stored in that type are used as they
    /// are (cast once, up front); trainable float32 weights are cast on the fly, so gradients reach the float32
    /// masters.
    /// </summary>
    public Tensor Project(Linear linear, Tensor x) => Project(x, linear.weight!, linear.bias);

    /// <summary>
    /// <c>x Wᵀ + b</c> over the last dimension of <paramref name="x"/>, as one <c>addmm</c> on the rows flattened
    /// to 2-D, so the bias is added in the product's epilogue. Not <c>F.linear</c>: TorchSharp's goes through
    /// libtorch's C++ <c>nn::functional::linear</c>, which for 3-D input runs <c>matmul</c> and then a separate
    /// broadcast <c>+= bias</c> over the whole output (on the GPU, 8 extra passes per BERT layer).
    /// </summary>
    /// <param name="x">(…, in).</param>
    /// <param name="weight">(out, in).</param>
    /// <param name="bias">(out), or null.</param>
    /// <returns>(…, out).</returns>
    public Tensor Project(Tensor x, Tensor weight, Tensor? bias)
    {
        x = As(x);
        weight = As(weight);
        if (bias is null) return x.matmul(weight.t());
        if (x.dim() == 2) return addmm(As(bias), x, weight.t(), beta: 1, alpha: 1);
        var shape = x.shape;
        var rows = addmm(As(bias), x.reshape(-1, shape[^1]), weight.t(), beta: 1, alpha: 1); // (N, out)
        shape[^1] = weight.shape[0];
        return rows.view(shape);
    }

    /// <summary>A different linear map per row, <c>x_b W_b + bias_b</c>, in <see cref="MatmulType"/>.</summary>
    /// <param name="x">(B, T, in).</param>
    /// <param name="weight">(B, in, out): already transposed, one matrix per row.</param>
    /// <param name="bias">(B, 1, out), or null.</param>
    /// <returns>(B, T, out).</returns>
    public Tensor ProjectPerRow(Tensor x, Tensor weight, Tensor? bias) =>
        // TorchSharp 0.107's Tensor.baddbmm is batch1.baddbmm(batch2, input) (torch.baddbmm(input, …) mixes them up).
        bias is null ? As(x).bmm(As(weight)) : As(x).baddbmm(As(weight), As(bias));

    /// <summary>
    /// <c>norm(sublayer + added + residual)</c>, the end of a sublayer: fused into one kernel each way where
    /// <see cref="AddNorm.KernelsTake"/> (bfloat16 on CUDA), whose output's bfloat16 copy then serves the next
    /// product instead of a cast; libtorch's operators elsewhere, in the order HF's modules apply them.
    /// </summary>
    /// <param name="sublayer">(B, T, H) the sublayer's projection, after dropout.</param>
    /// <param name="added">(B, T, H) what an adapter adds to it, or null.</param>
    /// <param name="residual">(B, T, H) the sublayer's input.</param>
    public Tensor AddNormalize(Tensor sublayer, Tensor? added, Tensor residual, LayerNorm norm)
    {
        if (!AddNorm.KernelsTake(sublayer, added, residual, norm, Kernels))
            return norm.call((added is null ? sublayer : sublayer + added) + residual);
        var (output, low) = AddNorm.Apply(sublayer, added, residual, norm, AddNorm.Backend.Kernels);
        lowCopy?.Low.Dispose();
        lowCopy = new LowCopy(output, low.DetachFromDisposeScope());
        return output;
    }

    /// <summary>Lets go of the last fused sublayer's matmul-type copy (the encoder calls it when its layers are done).</summary>
    public void ReleaseLowCopy()
    {
        lowCopy?.Low.Dispose();
        lowCopy = null;
    }

    public void Dispose()
    {
        ReleaseLowCopy();
        foreach (var loss in losses.Values.SelectMany(l => l)) loss.Dispose();
        losses.Clear();
    }

    /// <summary>The last fused sublayer's output and its copy in the matmul type; matched by reference, so another tensor never gets it.</summary>
    sealed record LowCopy(Tensor Of, Tensor Low);

    LowCopy? lowCopy;

    Tensor As(Tensor t)
    {
        if (t.dtype == MatmulType) return t;
        if (lowCopy is { } copy && ReferenceEquals(copy.Of, t) && copy.Low.dtype == MatmulType) return copy.Low;
        return t.to_type(MatmulType);
    }
}

/// <summary>
/// Which adapter each row of a batch uses: <paramref name="Index"/> (B) int64 on the model's device, 0 for
/// the bare base model and k for <c>Names[k - 1]</c>. The adapter sites hold their adapters stacked in this
/// order; <paramref name="Names"/> is compared by reference to check that the stacks were built for it.
/// </summary>
public sealed record RowSelection(Tensor Index, IReadOnlyList<string> Names);
