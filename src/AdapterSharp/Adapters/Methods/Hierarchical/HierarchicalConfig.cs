using System.Text.Json.Serialization;
using AdapterSharp.Model;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// Hierarchical adapters: at each site several bottlenecks of different sizes applied in sequence, each on what
/// the one before produced (<c>h₁ = h + A₁(h)</c>, <c>h₂ = h₁ + A₂(h₁)</c>, …), small to large by default.
/// </summary>
public sealed record HierarchicalConfig : MethodConfig
{
    /// <summary>The bottleneck sizes, in the order they apply.</summary>
    [JsonPropertyName("adapter_sizes")] public int[] AdapterSizes { get; init; } = [16, 64];

    [JsonPropertyName("attention_adapter")] public bool AttentionAdapter { get; init; } = true;
    [JsonPropertyName("ffn_adapter")] public bool FfnAdapter { get; init; } = true;
    [JsonPropertyName("non_linearity")] public string NonLinearity { get; init; } = "relu";
    [JsonPropertyName("init")] public AdapterInit Init { get; init; } = AdapterInit.Houlsby;

    [JsonIgnore] public override bool Fusable => AttentionAdapter || FfnAdapter;

    /// <summary>A method the first format did not know.</summary>
    [JsonIgnore] public override int FormatVersion => 2;

    public override void Validate(BertConfig model)
    {
        base.Validate(model);
        Require(AdapterSizes is { Length: > 0 }, "adapter_sizes needs at least one size");
        Require(AttentionAdapter || FfnAdapter, "a hierarchical adapter needs attention_adapter or ffn_adapter");
        Require(AdapterSizes.Length <= 8, $"adapter_sizes: at most 8 levels, got {AdapterSizes.Length}");
        foreach (var size in AdapterSizes) Bottleneck.Validate(size, null, NonLinearity, 1.0, model.HiddenSize);
    }

    public static readonly HierarchicalConfig Default = new() { Method = "hierarchical", TrainLayerNorms = true };
}

/// <summary>Places a <see cref="HierarchicalAdapter"/> where the config says, LayerNorm copies as Houlsby adapters have them.</summary>
public sealed class HierarchicalMethod : AdapterMethod<HierarchicalConfig>
{
    public override IReadOnlyList<MethodConfig> Presets { get; } = [HierarchicalConfig.Default];

    protected override void Inject(HierarchicalConfig config, AdapterInjection injection)
    {
        foreach (var slot in injection.SublayerSlotsOf(config, config.AttentionAdapter, config.FfnAdapter))
            injection.Place(slot, new HierarchicalAdapter(injection.Config.HiddenSize, config, config.TrainLayerNorms ? slot.LayerNorm : null));
        injection.AddLayerNormCopies(config);
    }
}
