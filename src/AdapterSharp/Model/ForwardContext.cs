using AdapterSharp.Adapters;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Model;

/// <summary>
/// What every module of one encoder reads during a forward pass, set on the model rather than threaded
/// through calls: which adapter is active (for the whole batch, or per row), and in which precision the
/// matrix products run.
/// </summary>
public sealed class ForwardContext
{
    /// <summary>The active adapter's name, or null for the bare base model.</summary>
    public string? ActiveAdapter { get; set; }

    /// <summary>
    /// Each row's adapter in a mixed batch, or null; while set it overrides <see cref="ActiveAdapter"/>.
    /// <c>AdapterModel.EncodePerRow</c> and <c>LogitsPerRow</c> set it for one pass and clear it.
    /// </summary>
    public RowSelection? RowAdapters { get; set; }

    /// <summary>
    /// Several adapters combined (<see cref="Stack"/>, <see cref="Fuse"/>), or null; while set it overrides
    /// <see cref="ActiveAdapter"/>. Kept apart from it so that a single adapter's path stays a plain call.
    /// </summary>
    public AdapterComposition? Composition { get; set; }

    /// <summary>
    /// Element type of the matrix products (float32, or bfloat16 on GPUs). The residual stream, LayerNorms,
    /// softmax statistics and losses stay float32 either way.
    /// </summary>
    public ScalarType MatmulType { get; set; } = ScalarType.Float32;

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

    /// <summary>
    /// A different linear map per row, <c>x_b W_b + bias_b</c>, in <see cref="MatmulType"/>.
    /// </summary>
    /// <param name="x">(B, T, in).</param>
    /// <param name="weight">(B, in, out): already transposed, one matrix per row.</param>
    /// <param name="bias">(B, 1, out).</param>
    /// <returns>(B, T, out).</returns>
    public Tensor ProjectPerRow(Tensor x, Tensor weight, Tensor bias) =>
        // TorchSharp 0.107's Tensor.baddbmm is batch1.baddbmm(batch2, input) (torch.baddbmm(input, …) mixes them up).
        As(x).baddbmm(As(weight), As(bias));

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
        if (!AddNorm.KernelsTake(sublayer, added, residual, norm))
            return norm.call((added is null ? sublayer : sublayer + added) + residual);
        var (output, low) = AddNorm.Apply(sublayer, added, residual, norm, AddNorm.Backend.Kernels);
        lowCopy?.Low.Dispose();
        lowCopy = new LowCopy(output, low.DetachFromDisposeScope());
        return output;
    }

    /// <summary>Lets go of the last sublayer's matmul-type copy: called when a forward pass ends.</summary>
    public static void ReleaseLowCopy()
    {
        lowCopy?.Low.Dispose();
        lowCopy = null;
    }

    /// <summary>The last fused sublayer's output and its copy in the matmul type. Per thread: concurrent forward
    /// passes (the server's) each have their own; matched by reference, so another tensor never gets it.</summary>
    sealed record LowCopy(Tensor Of, Tensor Low);

    [ThreadStatic] static LowCopy? lowCopy;

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
