namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// Places a <see cref="BottleneckAdapter"/> at the attention output and/or FFN output of each layer the config
/// names, with LayerNorm copies at the sites of those layers (and the embeddings') when LayerNorms train per task.
/// </summary>
public sealed class BottleneckMethod : AdapterMethod<BottleneckConfig>
{
    public override IReadOnlyList<MethodConfig> Presets { get; } =
        [BottleneckConfig.Houlsby, BottleneckConfig.Pfeiffer, BottleneckConfig.ParallelAdapter, BottleneckConfig.Reverse, BottleneckConfig.MultiHead];

    protected override void Inject(BottleneckConfig config, AdapterInjection injection)
    {
        foreach (var slot in injection.SublayerSlotsOf(config, config.AttentionAdapter, config.FfnAdapter))
            injection.Place(slot, new BottleneckAdapter(injection.Config.HiddenSize, config, config.TrainLayerNorms ? slot.LayerNorm : null));
        injection.AddLayerNormCopies(config);
    }
}
