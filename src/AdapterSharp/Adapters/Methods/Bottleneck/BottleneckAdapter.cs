using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// A bottleneck adapter at one sublayer's end: <c>down</c> d→H·m, non-linearity, <c>up</c> m→d, and its own copy of
/// the site's LayerNorm when LayerNorms train per task. It adds <c>scaling · W_up mean_k f(W_down,k h) + b_up</c> to
/// the sublayer output h (serial), or the same of the sublayer's input (parallel).
/// </summary>
public sealed class BottleneckAdapter : SublayerAdapter
{
    readonly Linear down;
    readonly Linear up;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm? layer_norm;
    readonly BottleneckConfig config;

    /// <param name="hidden">The encoder's hidden size d.</param>
    /// <param name="baseLayerNorm">The site's LayerNorm to copy for per-task training, or null to use the base's.</param>
    public BottleneckAdapter(int hidden, BottleneckConfig config, LayerNorm? baseLayerNorm) : base(nameof(BottleneckAdapter))
    {
        this.config = config;
        (down, up) = Bottleneck.Create(hidden, config.BottleneckSize(hidden), config.Heads, config.Init);
        if (baseLayerNorm is not null) layer_norm = LayerNormCopy.Copy(baseLayerNorm);
        RegisterComponents();
    }

    public override bool AddsToOutput => true;

    public override LayerNorm? LayerNorm => layer_norm;

    public override Tensor? Delta(Tensor sublayer, Tensor residual, ForwardPass pass) =>
        Bottleneck.Forward(down, up, config.Heads, config.NonLinearity, config.Scaling, config.Parallel ? residual : sublayer, pass);

    public override IReadOnlyList<BottleneckStage>? RowStages =>
        [Bottleneck.Stage(down, up, config.Heads, config.NonLinearity, config.Scaling, readsResidual: config.Parallel)];
}
