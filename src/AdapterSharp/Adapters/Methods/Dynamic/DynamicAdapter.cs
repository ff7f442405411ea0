using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// A bottleneck whose size is chosen per input. The controller reads the input's mean over its real tokens and
/// gives a fraction s = σ(w·h̄ + b) of the m units. Training multiplies unit i's activation by the soft nested mask
/// σ((s·m − i − ½)/τ), which is near 1 for units well below s·m and near 0 above, so the task loss reaches s through
/// the units at the edge; the pass's auxiliary loss adds λ·s (averaged over the adapter's sites), which pulls the size
/// down where the units are not worth it. Evaluation keeps exactly the first round(s·m) units and records those sizes.
/// A naive controller that outputs an integer size would get no gradient at all.
/// </summary>
public sealed class DynamicAdapter : SublayerAdapter, IAdapterStatistics
{
    readonly Linear down;
    readonly Linear up;
    readonly Linear controller;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm? layer_norm;
    readonly DynamicConfig config;
    readonly string adapter;
    readonly int size;
    Tensor? sizeSum, rowCount; // evaluation only: Σ chosen sizes and rows, on the device

    public DynamicAdapter(int hidden, DynamicConfig config, string adapter, LayerNorm? baseLayerNorm) : base(nameof(DynamicAdapter))
    {
        this.config = config;
        this.adapter = adapter;
        size = config.AdapterSize;
        (down, up) = Bottleneck.Create(hidden, size, heads: 1, config.Init);
        controller = nn.Linear(hidden, 1);
        using (no_grad())
        {
            nn.init.zeros_(controller.weight!);
            controller.bias!.fill_(Math.Log(config.InitialFraction / (1 - config.InitialFraction)));
        }
        if (baseLayerNorm is not null) layer_norm = LayerNormCopy.Copy(baseLayerNorm);
        RegisterComponents();
    }

    public override bool AddsToOutput => true;

    public override LayerNorm? LayerNorm => layer_norm;

    /// <summary>No per-row form: each row's size depends on its own input.</summary>
    public override IReadOnlyList<BottleneckStage>? RowStages => null;

    public override Tensor? Delta(Tensor sublayer, Tensor residual, ForwardPass pass)
    {
        var fraction = Fraction(sublayer, pass.TokenMask); // (B, 1) float32
        var units = arange(size, ScalarType.Float32, sublayer.device); // (m)
        Tensor mask;
        // The soft mask while this adapter trains; frozen (below a stack or under a fusion that trains), it computes
        // what it will at inference.
        if (training && controller.weight!.requires_grad)
        {
            mask = ((fraction * size - units - 0.5) / config.MaskTemperature).sigmoid(); // (B, m)
            if (config.SizePenalty > 0) pass.AddLoss($"size-penalty/{adapter}", fraction.mean() * config.SizePenalty);
        }
        else
        {
            var chosen = (fraction * size).round(); // (B, 1)
            mask = units.lt(chosen).to_type(ScalarType.Float32); // (B, m): the first round(s·m) units
            Record(chosen);
        }
        var inner = Activations.Apply(config.NonLinearity, pass.Project(down, sublayer)); // (B, T, m)
        inner = inner * mask.unsqueeze(1).to_type(inner.dtype);
        return pass.Project(up, inner);
    }

    /// <summary>s per row: the controller on the input's mean over its real tokens (all tokens when none is padded).</summary>
    /// <param name="hidden">(B, T, d).</param>
    /// <param name="tokens">(B, T) bool, or null.</param>
    /// <returns>(B, 1) float32.</returns>
    Tensor Fraction(Tensor hidden, Tensor? tokens)
    {
        var x = hidden.to_type(ScalarType.Float32);
        Tensor pooled;
        if (tokens is null) pooled = x.mean([1]);
        else
        {
            var weights = tokens.to_type(ScalarType.Float32).unsqueeze(-1); // (B, T, 1)
            pooled = (x * weights).sum([1]) / weights.sum([1]).clamp_min(1); // (B, d)
        }
        return controller.call(pooled).sigmoid();
    }

    void Record(Tensor chosen)
    {
        using var noGrad = no_grad();
        var total = chosen.sum();
        var rows = tensor((float)chosen.shape[0], device: chosen.device);
        if (sizeSum is not null && (sizeSum.device.type != chosen.device.type || sizeSum.device.index != chosen.device.index)) ResetStatistics(); // the model moved
        if (sizeSum is null)
        {
            sizeSum = total.DetachFromDisposeScope();
            rowCount = rows.DetachFromDisposeScope();
        }
        else
        {
            sizeSum.add_(total);
            rowCount!.add_(rows);
        }
    }

    public void ResetStatistics()
    {
        sizeSum?.Dispose();
        rowCount?.Dispose();
        sizeSum = rowCount = null;
    }

    /// <summary>The mean size chosen since the last reset: <c>learned_size</c>, in units.</summary>
    public IReadOnlyDictionary<string, double> ReadStatistics() =>
        sizeSum is null ? new Dictionary<string, double>()
            : new Dictionary<string, double> { ["learned_size"] = sizeSum.item<float>() / rowCount!.item<float>() };

    protected override void Dispose(bool disposing)
    {
        if (disposing) ResetStatistics();
        base.Dispose(disposing);
    }
}
