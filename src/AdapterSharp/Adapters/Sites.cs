using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>
/// What an adapter method puts at a sublayer's end (the embeddings' LayerNorm, the attention output, the FFN
/// output): something added to the sublayer's output before its residual and LayerNorm, and/or its own copy of
/// that LayerNorm.
/// </summary>
public abstract class SublayerAdapter(string name) : nn.Module(name)
{
    /// <summary>Whether <see cref="Delta"/> adds anything here (false for a LayerNorm copy alone).</summary>
    public abstract bool AddsToOutput { get; }

    /// <summary>
    /// What this adapter adds to the sublayer's output, in the pass's matmul type, or null where it adds nothing.
    /// </summary>
    /// <param name="sublayer">(B, T, d) the sublayer's projection after dropout, h.</param>
    /// <param name="residual">(B, T, d) the sublayer's input x (what a parallel adapter reads).</param>
    public abstract Tensor? Delta(Tensor sublayer, Tensor residual, ForwardPass pass);

    /// <summary>Its own copy of the site's LayerNorm, or null to use the base's.</summary>
    public virtual LayerNorm? LayerNorm => null;

    /// <summary>
    /// This adapter as bottleneck stages applied in turn, for mixed batches (<see cref="RowStack"/>): empty when it
    /// adds nothing here, null when it has no such form (then its adapter cannot join a mixed batch). A module that adds
    /// something has none unless it says so.
    /// </summary>
    public virtual IReadOnlyList<BottleneckStage>? RowStages => AddsToOutput ? null : [];
}

/// <summary>
/// One bottleneck as mixed batches stack it: <c>Δ = scaling · (W_up f(W_down x + b_down) + b_up)</c> with x the
/// running sublayer output (or the sublayer's input where <paramref name="ReadsResidual"/>).
/// </summary>
/// <param name="Down">(M, d).</param>
/// <param name="DownBias">(M).</param>
/// <param name="Up">(d, M).</param>
/// <param name="UpBias">(d).</param>
public sealed record BottleneckStage(Tensor Down, Tensor DownBias, Tensor Up, Tensor UpBias, double Scaling, bool ReadsResidual, string NonLinearity);

/// <summary>What an adapter method puts inside a projection (LoRA, say): something added to the projection's output.</summary>
public abstract class ProjectionAdapter(string name) : nn.Module(name)
{
    /// <summary>What it adds to the projection of <paramref name="input"/>, in the pass's matmul type.</summary>
    /// <param name="input">(…, in).</param>
    /// <returns>(…, out).</returns>
    public abstract Tensor Delta(Tensor input, ForwardPass pass);

    /// <summary>
    /// At inference, <see cref="Delta"/> as a low-rank map <c>x ↦ Up Down x</c> — Down (r, in), Up (out, r), any
    /// scaling folded into Up — for mixed batches and merging; null when it has none (then it can do neither).
    /// </summary>
    public virtual (Tensor Down, Tensor Up)? LowRank => null;
}

/// <summary>Where in a layer a sublayer slot is.</summary>
public enum SlotKind { Embeddings, AttentionOutput, FfnOutput }

/// <summary>The projections an adapter can go inside.</summary>
public enum ProjectionTarget { Query, Key, Value, AttentionOutput, Intermediate, Output }

public static class ProjectionTargets
{
    /// <summary>The names used in configs and on the command line.</summary>
    public static string Name(ProjectionTarget target) => target switch
    {
        ProjectionTarget.Query => "query",
        ProjectionTarget.Key => "key",
        ProjectionTarget.Value => "value",
        ProjectionTarget.AttentionOutput => "attention-output",
        ProjectionTarget.Intermediate => "intermediate",
        _ => "output",
    };

    public static IReadOnlyList<string> Names { get; } = Enum.GetValues<ProjectionTarget>().Select(Name).ToArray();

    public static bool TryParse(string name, out ProjectionTarget target)
    {
        foreach (var candidate in Enum.GetValues<ProjectionTarget>())
            if (Name(candidate) == name)
            {
                target = candidate;
                return true;
            }
        target = default;
        return false;
    }
}

/// <summary>
/// A place at a sublayer's end where adapters go: its <paramref name="Site"/>, the base LayerNorm there, the fusion
/// layers there (none at the embeddings), and the file name of what an adapter puts there.
/// </summary>
/// <param name="Layer">0-based layer, or -1 for the embeddings.</param>
/// <param name="FusionFileKey">The file name of a fusion layer there (<c>encoder.layer.3.output.fusion</c>), or null.</param>
public sealed record SublayerSlot(SlotKind Kind, int Layer, AdapterSite Site, LayerNorm LayerNorm, NamedModules<AdapterFusion>? Fusions, string FileKey,
    string? FusionFileKey = null);

/// <summary>A projection adapters can go inside: its site, its base linear map, and its file name.</summary>
public sealed record ProjectionSlot(ProjectionTarget Target, int Layer, ProjectionSite Site, Linear Linear, string FileKey);

/// <summary>
/// The adapters at one sublayer's end, each a child module under its name (<c>….adapters.&lt;name&gt;.down.weight</c>).
/// An empty site adds no keys, so the bare encoder's state dict stays HF's.
/// </summary>
public sealed class AdapterSite : NamedModules<SublayerAdapter>
{
    RowStack? rowStack;

    /// <summary>
    /// <c>LayerNorm(h + Δ + residual)</c>, with the adapter's own LayerNorm if it has one; the base model's sublayer
    /// where no adapter runs here. In a mixed batch each row gets its own adapter; with a composition the adapters
    /// combine as it says.
    /// </summary>
    /// <param name="sublayer">(B, T, d) output of the sublayer's projection (after dropout).</param>
    /// <param name="residual">(B, T, d) the sublayer's input.</param>
    /// <param name="baseLayerNorm">The site's pretrained LayerNorm.</param>
    /// <param name="fusions">The site's AdapterFusion layers.</param>
    public Tensor Apply(Tensor sublayer, Tensor residual, LayerNorm baseLayerNorm, NamedModules<AdapterFusion> fusions, ForwardPass pass)
    {
        if (pass.Rows is { } rows)
            return StackFor(rows).Apply(sublayer, residual, rows.Index, baseLayerNorm, pass);
        if (pass.Composition is { } composition)
            return composition is Fuse fuse ? ApplyFuse(fuse, sublayer, residual, baseLayerNorm, fusions, pass) : ApplyStack(composition, sublayer, residual, baseLayerNorm, pass);
        var adapter = ActiveAdapter(pass);
        if (adapter is null) return pass.AddNormalize(sublayer, null, residual, baseLayerNorm);
        return pass.AddNormalize(sublayer, adapter.Delta(sublayer, residual, pass), residual, adapter.LayerNorm ?? baseLayerNorm);
    }

    /// <summary>
    /// The site's LayerNorm where it has no sublayer (the embeddings): the adapter's copy, or the base's. A stack
    /// uses its last adapter's copy, a fusion the base's.
    /// </summary>
    /// <param name="hidden">(B, T, d).</param>
    public Tensor Normalize(Tensor hidden, LayerNorm baseLayerNorm, ForwardPass pass)
    {
        if (pass.Rows is { } rows) return StackFor(rows).Normalize(hidden, rows.Index, baseLayerNorm);
        if (pass.Composition is { } composition)
            return (composition is Stack ? LastPresent(composition)?.LayerNorm ?? baseLayerNorm : baseLayerNorm).call(hidden);
        return (ActiveAdapter(pass)?.LayerNorm ?? baseLayerNorm).call(hidden);
    }

    SublayerAdapter? ActiveAdapter(ForwardPass pass) => pass.Adapter is { } name && Count > 0 && TryGet(name, out var adapter) ? adapter : null;

    /// <summary>Each adapter of the stack present here, in turn, on what the one before produced.</summary>
    Tensor ApplyStack(AdapterComposition stack, Tensor sublayer, Tensor residual, LayerNorm baseLayerNorm, ForwardPass pass)
    {
        foreach (var name in stack.Adapters)
            if (TryGet(name, out var adapter) && adapter.Delta(sublayer, residual, pass) is { } delta)
                sublayer = sublayer + delta;
        return (LastPresent(stack)?.LayerNorm ?? baseLayerNorm).call(sublayer + residual);
    }

    SublayerAdapter? LastPresent(AdapterComposition composition)
    {
        for (int i = composition.Adapters.Count - 1; i >= 0; i--)
            if (TryGet(composition.Adapters[i], out var adapter)) return adapter;
        return null;
    }

    /// <summary>The fusion's mix of its adapters' outputs where it has a layer here; the base sublayer elsewhere.</summary>
    Tensor ApplyFuse(Fuse fuse, Tensor sublayer, Tensor residual, LayerNorm baseLayerNorm, NamedModules<AdapterFusion> fusions, ForwardPass pass)
    {
        if (!fusions.TryGet(fuse.Fusion, out var fusion)) return baseLayerNorm.call(sublayer + residual);
        var outputs = new Tensor[fuse.Adapters.Count];
        for (int i = 0; i < outputs.Length; i++)
            outputs[i] = sublayer + this[fuse.Adapters[i]].Delta(sublayer, residual, pass)!; // (B, T, d); AddFusion checked that each adds here
        return fusion.LayerNorm.call(fusion.Mix(sublayer, outputs, pass) + residual);
    }

    /// <summary>Stacks this site's share of <paramref name="names"/> for mixed batches (see <see cref="RowStack"/>).</summary>
    internal void BuildRowStack(IReadOnlyList<string> names, LayerNorm baseLayerNorm, ScalarType matmulType)
    {
        ClearRowStack();
        rowStack = RowStack.Build(names, this, baseLayerNorm, matmulType);
    }

    internal void ClearRowStack()
    {
        rowStack?.Dispose();
        rowStack = null;
    }

    RowStack StackFor(RowSelection rows) =>
        rowStack is { } stack && ReferenceEquals(stack.Names, rows.Names)
            ? stack
            : throw new InvalidOperationException("no adapter stacks for this row selection: run mixed batches through AdapterModel.EncodePerRow or LogitsPerRow");

    protected override void Dispose(bool disposing)
    {
        if (disposing) ClearRowStack();
        base.Dispose(disposing);
    }
}

/// <summary>
/// The adapters inside one projection, each a child module under its name (<c>….query_adapters.&lt;name&gt;.lora_A.weight</c>):
/// what the running ones add joins the projection's output.
/// </summary>
public sealed class ProjectionSite : NamedModules<ProjectionAdapter>
{
    readonly HashSet<string> merged = new(StringComparer.Ordinal);
    ProjectionRowStack? rowStack;

    /// <summary>
    /// Adds, in place, what the adapters that run in <paramref name="pass"/> add to the projection of
    /// <paramref name="input"/>: one adapter, each adapter of a stack, or each row's in a mixed batch. A fusion runs
    /// none here (it fuses sublayer adapters only); an adapter merged into the base weights adds nothing more.
    /// </summary>
    /// <param name="output">(…, out) the projection's output (a view of it, for the fused query/key/value product).</param>
    /// <param name="input">(…, in).</param>
    public void AddTo(Tensor output, Tensor input, ForwardPass pass)
    {
        if (Count == 0 || !pass.HasAdapters) return;
        if (pass.Rows is { } rows)
        {
            if (rowStack is not { } stack || !ReferenceEquals(stack.Names, rows.Names))
                throw new InvalidOperationException("no adapter stacks for this row selection: run mixed batches through AdapterModel.EncodePerRow or LogitsPerRow");
            if (stack.Delta(input, rows.Index, pass) is { } delta) output.add_(delta);
            return;
        }
        if (pass.Composition is Fuse) return;
        foreach (var name in pass.Active)
            if (TryGet(name, out var adapter) && !merged.Contains(name))
                output.add_(adapter.Delta(input, pass));
    }

    /// <summary>Marks adapter <paramref name="name"/> as folded into the base weights (or not): it then adds nothing.</summary>
    internal void SetMerged(string name, bool isMerged)
    {
        if (isMerged) merged.Add(name);
        else merged.Remove(name);
    }

    internal void BuildRowStack(IReadOnlyList<string> names, ScalarType matmulType)
    {
        ClearRowStack();
        rowStack = ProjectionRowStack.Build(names, this, matmulType);
    }

    internal void ClearRowStack()
    {
        rowStack?.Dispose();
        rowStack = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) ClearRowStack();
        base.Dispose(disposing);
    }
}
