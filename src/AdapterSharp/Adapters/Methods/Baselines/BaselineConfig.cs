namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// The paper's baselines, which add no module of their own: full fine-tuning, the top k layers, LayerNorms only,
/// and the head only (which also trains with every other method).
/// </summary>
public sealed record BaselineConfig : MethodConfig
{
    public static readonly BaselineConfig Full = new() { Method = "full", TrainAllBase = true };
    public static readonly BaselineConfig TopK = new() { Method = "top-k", TrainTopLayers = 2 };
    public static readonly BaselineConfig LayerNorm = new() { Method = "layernorm", TrainLayerNorms = true };
    public static readonly BaselineConfig Head = new() { Method = "head" };
}

/// <summary>LayerNorm copies where the config trains them; the base layers it fine-tunes are the model's to record.</summary>
public sealed class BaselineMethod : AdapterMethod<BaselineConfig>
{
    public override IReadOnlyList<MethodConfig> Presets { get; } = [BaselineConfig.Full, BaselineConfig.TopK, BaselineConfig.LayerNorm, BaselineConfig.Head];

    protected override void Inject(BaselineConfig config, AdapterInjection injection) => injection.AddLayerNormCopies(config);
}
