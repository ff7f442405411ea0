using System.Text.Json.Serialization;
using AdapterSharp.Model;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// One bottleneck shared by every site of every layer (each site keeps its own LayerNorm copy): the parameters of a
/// single Houlsby adapter for the whole encoder, counted and saved once.
/// </summary>
public sealed record SharedConfig : MethodConfig
{
    [JsonPropertyName("adapter_size")] public int AdapterSize { get; init; } = 64;
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
        Require(AttentionAdapter || FfnAdapter, "a shared adapter needs attention_adapter or ffn_adapter");
        Bottleneck.Validate(AdapterSize, null, NonLinearity, 1.0, model.HiddenSize);
    }

    public static readonly SharedConfig Default = new() { Method = "shared", TrainLayerNorms = true };
}

/// <summary>Places the one bottleneck at the model level and, at each site it serves, a <see cref="SharedSiteAdapter"/> that uses it.</summary>
public sealed class SharedMethod : AdapterMethod<SharedConfig>
{
    public override IReadOnlyList<MethodConfig> Presets { get; } = [SharedConfig.Default];

    protected override void Inject(SharedConfig config, AdapterInjection injection)
    {
        var bottleneck = new Bottleneck(injection.Config.HiddenSize, config.AdapterSize, config.NonLinearity, config.Init);
        injection.PlaceShared(bottleneck);
        foreach (var slot in injection.SublayerSlotsOf(config, config.AttentionAdapter, config.FfnAdapter))
            injection.Place(slot, new SharedSiteAdapter(bottleneck, config.TrainLayerNorms ? slot.LayerNorm : null));
        injection.AddLayerNormCopies(config);
    }
}
