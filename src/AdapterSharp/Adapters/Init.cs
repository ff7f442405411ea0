using System.Text.Json.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>How bottleneck weights start.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<AdapterInit>))]
public enum AdapterInit
{
    /// <summary>Houlsby et al.: weights truncated normal, σ = 1e-2 cut at ±2σ, biases 0: near identity.</summary>
    [JsonStringEnumMemberName("houlsby")] Houlsby,

    /// <summary>BERT's initializer: weights N(0, 0.02), biases 0.</summary>
    [JsonStringEnumMemberName("bert")] Bert,

    /// <summary>Down-projection as <see cref="Houlsby"/>, up-projection zero: exactly the base model at step 0.</summary>
    [JsonStringEnumMemberName("zero")] Zero,
}

public static class Init
{
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
}
