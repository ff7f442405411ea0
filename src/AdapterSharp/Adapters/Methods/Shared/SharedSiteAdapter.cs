using AdapterSharp.Model;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// A site's use of the shared bottleneck: it adds <c>A(h)</c> with the one <see cref="Bottleneck"/> every site uses,
/// which it holds without registering (its weights are the model's <c>shared.&lt;name&gt;</c>, counted and saved
/// once), and normalises with its own LayerNorm copy.
/// </summary>
public sealed class SharedSiteAdapter : SublayerAdapter
{
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm? layer_norm;
    readonly Shared bottleneck;

    public SharedSiteAdapter(Bottleneck bottleneck, LayerNorm? baseLayerNorm) : base(nameof(SharedSiteAdapter))
    {
        if (baseLayerNorm is not null) layer_norm = LayerNormCopy.Copy(baseLayerNorm);
        this.bottleneck = new Shared(bottleneck);
        RegisterComponents();
    }

    /// <summary>Holds the shared module out of sight of <c>RegisterComponents</c>, which registers module fields.</summary>
    sealed record Shared(Bottleneck Module);

    public override bool AddsToOutput => true;

    public override LayerNorm? LayerNorm => layer_norm;

    public override Tensor? Delta(Tensor sublayer, Tensor residual, ForwardPass pass) => bottleneck.Module.Apply(sublayer, pass);

    public override IReadOnlyList<BottleneckStage>? RowStages => [bottleneck.Module.Stage()];
}
