using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Model;

/// <summary>
/// What every module of one encoder reads during a forward pass, set on the model rather than threaded
/// through calls: which adapter is active, and in which precision the matrix products run.
/// </summary>
public sealed class ForwardContext
{
    /// <summary>The active adapter's name, or null for the bare base model.</summary>
    public string? ActiveAdapter { get; set; }

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
    public Tensor Project(Linear linear, Tensor x)
    {
        if (MatmulType == ScalarType.Float32 && x.dtype == ScalarType.Float32 && linear.weight!.dtype == ScalarType.Float32)
            return linear.call(x);
        return Project(x, linear.weight!, linear.bias);
    }

    public Tensor Project(Tensor x, Tensor weight, Tensor? bias) =>
        F.linear(As(x), As(weight), bias is null ? null : As(bias));

    Tensor As(Tensor t) => t.dtype == MatmulType ? t : t.to_type(MatmulType);
}
