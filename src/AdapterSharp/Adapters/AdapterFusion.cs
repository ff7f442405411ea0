using System.Text.Json.Serialization;
using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Adapters;

/// <summary>What a fusion is: the adapters it attends over, by name. Saved in <c>fusion_config.json</c>.</summary>
public sealed record FusionConfig
{
    [JsonPropertyName("adapters")] public string[] Adapters { get; init; } = [];

    /// <summary>Throws <see cref="ArgumentException"/> with a one-line reason if the record is inconsistent.</summary>
    public void Validate()
    {
        if (Adapters is null || Adapters.Length < 2)
            throw new ArgumentException($"fusion config: fuse at least two adapters, got {Adapters?.Length ?? 0}");
        if (Adapters.Distinct(StringComparer.Ordinal).Count() != Adapters.Length)
            throw new ArgumentException($"fusion config: an adapter appears twice in ({string.Join(", ", Adapters)})");
    }
}

/// <summary>
/// One AdapterFusion layer at one site (Pfeiffer et al. 2021, §3.2): attention over N adapters' outputs, per token.
/// With h the sublayer output and oᵢ = h + Aᵢ(h) adapter i's output,
/// <c>sᵢ = (W_Q h + b_Q)·(W_K oᵢ + b_K)</c>, <c>p = softmax(s)</c> over the adapters, and the site gets
/// <c>LayerNorm(W_V Σᵢ pᵢ oᵢ + residual)</c>.
/// <para>
/// Choices, after AdapterHub's default ("dynamic") fusion: W_Q, W_K from N(0, 0.02) with zero biases, so the
/// scores start near 0 and the adapters near equally weighted; W_V without bias, initialised to the identity
/// (off-diagonal 1e-6), so the fusion starts as the mean of the adapters' outputs. No 1/√d score scaling, no
/// temperature schedule, no dropout on the scores, and no ‖W_V − I‖ penalty: fewer knobs, and the identity start
/// already keeps V near the adapters' outputs. W_V is applied after the weighted sum: it has no bias, so
/// <c>Σ pᵢ W_V oᵢ = W_V Σ pᵢ oᵢ</c>, one product instead of N. The fusion trains its own copy of the site's
/// LayerNorm (started from the base's), as each Houlsby adapter does.
/// </para>
/// </summary>
public sealed class AdapterFusion : nn.Module
{
    readonly Linear query;
    readonly Linear key;
    readonly Linear value;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm layer_norm;

    /// <param name="hidden">The encoder's hidden size d.</param>
    /// <param name="baseLayerNorm">The site's LayerNorm, copied as the fusion's own.</param>
    public AdapterFusion(int hidden, LayerNorm baseLayerNorm) : base(nameof(AdapterFusion))
    {
        query = nn.Linear(hidden, hidden);
        key = nn.Linear(hidden, hidden);
        value = nn.Linear(hidden, hidden, hasBias: false);
        layer_norm = nn.LayerNorm(hidden, baseLayerNorm.eps);
        using (no_grad())
        using (NewDisposeScope())
        {
            nn.init.normal_(query.weight!, 0, 0.02);
            nn.init.zeros_(query.bias!);
            nn.init.normal_(key.weight!, 0, 0.02);
            nn.init.zeros_(key.bias!);
            value.weight!.copy_(eye(hidden) * (1 - 1e-6) + 1e-6); // I, off-diagonal 1e-6
            layer_norm.weight!.copy_(baseLayerNorm.weight!);
            layer_norm.bias!.copy_(baseLayerNorm.bias!);
        }
        RegisterComponents();
    }

    public LayerNorm LayerNorm => layer_norm;

    /// <param name="sublayer">(B, T, d) the sublayer output h: the query.</param>
    /// <param name="outputs">N tensors (B, T, d): each fused adapter's output oᵢ = h + Aᵢ(h).</param>
    /// <returns>(B, T, d) <c>W_V Σᵢ pᵢ oᵢ</c>, before the residual and LayerNorm.</returns>
    public Tensor Mix(Tensor sublayer, IReadOnlyList<Tensor> outputs, ForwardPass pass)
    {
        var stacked = stack(outputs, dim: 2); // (B, T, N, d)
        var q = pass.Project(query, sublayer).unsqueeze(-1); // (B, T, d, 1)
        var k = pass.Project(key, stacked); // (B, T, N, d)
        var scores = matmul(k, q).squeeze(-1).to_type(ScalarType.Float32); // (B, T, N)
        var weights = F.softmax(scores, -1).unsqueeze(-1); // (B, T, N, 1)
        var mixed = (weights * stacked).sum(2); // (B, T, d)
        return pass.Project(value, mixed);
    }
}
