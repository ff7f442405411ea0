using System.Text.Json.Serialization;
using AdapterSharp.Model;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// Bottleneck adapters (Houlsby et al. 2019) and their variants as configuration: where they go, how big, which
/// non-linearity, how initialised, serial or parallel. Houlsby, Pfeiffer, Parallel, Reverse and MultiHead are presets.
/// </summary>
public sealed record BottleneckConfig : MethodConfig
{
    /// <summary>An adapter after the attention output projection (before its residual + LayerNorm).</summary>
    [JsonPropertyName("attention_adapter")] public bool AttentionAdapter { get; init; }

    /// <summary>An adapter after the feed-forward output projection (before its residual + LayerNorm).</summary>
    [JsonPropertyName("ffn_adapter")] public bool FfnAdapter { get; init; }

    /// <summary>
    /// Parallel placement (He et al. 2022): the adapter reads the sublayer's input and its scaled output is
    /// added to the sublayer's output, instead of transforming that output in series.
    /// </summary>
    [JsonPropertyName("parallel")] public bool Parallel { get; init; }

    /// <summary>Bottleneck size m (per head for multi-head adapters); null: use <see cref="ReductionFactor"/>.</summary>
    [JsonPropertyName("adapter_size")] public int? AdapterSize { get; init; }

    /// <summary>m = hidden / reduction factor when no size is given; below 1 it expands (reverse adapters).</summary>
    [JsonPropertyName("reduction_factor")] public double? ReductionFactor { get; init; }

    [JsonPropertyName("non_linearity")] public string NonLinearity { get; init; } = "relu";
    [JsonPropertyName("init")] public AdapterInit Init { get; init; } = AdapterInit.Houlsby;

    /// <summary>Multiplies the adapter's output (parallel adapters use 4).</summary>
    [JsonPropertyName("scaling")] public double Scaling { get; init; } = 1.0;

    /// <summary>Down-projection heads H; their activations are averaged before the shared up-projection.</summary>
    [JsonPropertyName("heads")] public int Heads { get; init; } = 1;

    [JsonIgnore] public bool HasBottleneck => AttentionAdapter || FfnAdapter;

    [JsonIgnore] public override bool Fusable => HasBottleneck;

    public int BottleneckSize(int hidden) => Bottleneck.Size(AdapterSize, ReductionFactor, hidden);

    public override void Validate(BertConfig model)
    {
        base.Validate(model);
        if (HasBottleneck)
        {
            Require(Heads is >= 1 and <= 64, $"heads must be between 1 and 64, got {Heads}");
            Bottleneck.Validate(AdapterSize, ReductionFactor, NonLinearity, Scaling, model.HiddenSize, Heads);
        }
    }

    /// <summary>Houlsby et al. 2019: adapters after attention-out and FFN-out, m = 64, LayerNorms per task.</summary>
    public static readonly BottleneckConfig Houlsby = new()
    {
        Method = "houlsby",
        AttentionAdapter = true,
        FfnAdapter = true,
        AdapterSize = 64,
        TrainLayerNorms = true,
    };

    /// <summary>Pfeiffer et al. 2021: one adapter per layer, after the FFN output.</summary>
    public static readonly BottleneckConfig Pfeiffer = Houlsby with { Method = "pfeiffer", AttentionAdapter = false };

    /// <summary>He et al. 2022: a scaled bottleneck in parallel with the FFN.</summary>
    public static readonly BottleneckConfig ParallelAdapter = Houlsby with
    {
        Method = "parallel",
        AttentionAdapter = false,
        Parallel = true,
        Scaling = 4.0,
    };

    /// <summary>Expansion adapter: inner size twice the hidden size.</summary>
    public static readonly BottleneckConfig Reverse = Houlsby with { Method = "reverse", AdapterSize = null, ReductionFactor = 0.5 };

    /// <summary>H down-projections averaged into one shared up-projection.</summary>
    public static readonly BottleneckConfig MultiHead = Houlsby with { Method = "multihead", Heads = 4 };
}
