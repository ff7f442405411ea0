using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// Bottlenecks of several sizes at one site, in sequence: <c>levels.0</c>, <c>levels.1</c>, … each adds to what the one
/// before produced, so the site gets <c>h + Σ Δₖ</c> with <c>Δₖ = Aₖ(h + Δ₁ + … + Δₖ₋₁)</c>; and the site's LayerNorm copy.
/// </summary>
public sealed class HierarchicalAdapter : SublayerAdapter
{
    readonly ModuleList<Bottleneck> levels;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm? layer_norm;

    public HierarchicalAdapter(int hidden, HierarchicalConfig config, LayerNorm? baseLayerNorm) : base(nameof(HierarchicalAdapter))
    {
        levels = nn.ModuleList(config.AdapterSizes.Select(size => new Bottleneck(hidden, size, config.NonLinearity, config.Init)).ToArray());
        if (baseLayerNorm is not null) layer_norm = LayerNormCopy.Copy(baseLayerNorm);
        RegisterComponents();
    }

    public override bool AddsToOutput => true;

    public override LayerNorm? LayerNorm => layer_norm;

    public override Tensor? Delta(Tensor sublayer, Tensor residual, ForwardPass pass)
    {
        Tensor? total = null;
        var running = sublayer;
        foreach (var level in levels)
        {
            var delta = level.Apply(running, pass);
            total = total is null ? delta : total + delta;
            running = sublayer + total;
        }
        return total;
    }

    public override IReadOnlyList<BottleneckStage>? RowStages => levels.Select(level => level.Stage()).ToArray();
}
