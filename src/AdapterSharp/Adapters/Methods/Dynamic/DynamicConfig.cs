using System.Text.Json.Serialization;
using AdapterSharp.Model;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// Dynamic adapters: a bottleneck of at most <see cref="AdapterSize"/> units whose size a small learned controller
/// chooses per input. Training uses a soft nested mask over the units, so the controller gets a gradient, plus a
/// penalty on the size; inference truncates hard.
/// </summary>
public sealed record DynamicConfig : MethodConfig
{
    /// <summary>The largest size m.</summary>
    [JsonPropertyName("adapter_size")] public int AdapterSize { get; init; } = 64;

    /// <summary>λ: the auxiliary loss is λ times the mean fraction of m in use (over the adapter's sites and the batch).</summary>
    [JsonPropertyName("size_penalty")] public double SizePenalty { get; init; } = 0.01;

    /// <summary>τ, in units: how soft the mask's edge is while training (unit i gets σ((s·m − i − ½)/τ)).</summary>
    [JsonPropertyName("mask_temperature")] public double MaskTemperature { get; init; } = 1.0;

    /// <summary>The fraction of m the controller starts at (its bias is the logit of it; its weights start at 0).</summary>
    [JsonPropertyName("initial_fraction")] public double InitialFraction { get; init; } = 0.95;

    [JsonPropertyName("attention_adapter")] public bool AttentionAdapter { get; init; } = true;
    [JsonPropertyName("ffn_adapter")] public bool FfnAdapter { get; init; } = true;
    [JsonPropertyName("non_linearity")] public string NonLinearity { get; init; } = "relu";
    [JsonPropertyName("init")] public AdapterInit Init { get; init; } = AdapterInit.Houlsby;

    /// <summary>Each row's size is its own input's: no per-row stack can hold that, so its rows run apart.</summary>
    [JsonIgnore] public override bool RowRoutable => false;

    [JsonIgnore] public override bool Fusable => AttentionAdapter || FfnAdapter;

    /// <summary>A method the first format did not know.</summary>
    [JsonIgnore] public override int FormatVersion => 2;

    public override void Validate(BertConfig model)
    {
        base.Validate(model);
        Require(AttentionAdapter || FfnAdapter, "a dynamic adapter needs attention_adapter or ffn_adapter");
        Bottleneck.Validate(AdapterSize, null, NonLinearity, 1.0, model.HiddenSize);
        Require(SizePenalty is >= 0 and < 1e6, $"size_penalty must be non-negative, got {SizePenalty}");
        Require(MaskTemperature is > 0 and < 1e6, $"mask_temperature must be positive, got {MaskTemperature}");
        Require(InitialFraction is > 0 and < 1, $"initial_fraction must be between 0 and 1, got {InitialFraction}");
    }

    public static readonly DynamicConfig Default = new() { Method = "dynamic", TrainLayerNorms = true };
}

/// <summary>Places a <see cref="DynamicAdapter"/> where the config says, LayerNorm copies as Houlsby adapters have them.</summary>
public sealed class DynamicMethod : AdapterMethod<DynamicConfig>
{
    public override IReadOnlyList<MethodConfig> Presets { get; } = [DynamicConfig.Default];

    protected override void Inject(DynamicConfig config, AdapterInjection injection)
    {
        foreach (var slot in injection.SublayerSlotsOf(config, config.AttentionAdapter, config.FfnAdapter))
            injection.Place(slot, new DynamicAdapter(injection.Config.HiddenSize, config, injection.Name, config.TrainLayerNorms ? slot.LayerNorm : null));
        injection.AddLayerNormCopies(config);
    }
}
