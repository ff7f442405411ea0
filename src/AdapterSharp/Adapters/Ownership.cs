using AdapterSharp.Adapters.Methods;
using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>
/// One tensor an adapter owns: its key in the adapter's file (<c>encoder.layer.3.output.adapter.down.weight</c>),
/// where it lives (a module and the parameter's name there, which survive moves between devices and types, where
/// parameter objects do not), whether weight decay applies to it, and whether it is a base parameter that the adapter
/// fine-tunes (full, top-k, a hybrid) rather than one of its own modules'.
/// </summary>
public sealed record OwnedTensor(string Key, nn.Module Owner, string Local, bool Decay, bool OfBase = false)
{
    public Parameter Parameter => Owner.get_parameter(Local) ?? throw new InvalidOperationException($"'{Key}' is no longer in the model");

    /// <summary>The usual groups: no weight decay on LayerNorms and biases, decay on weights and embedding tables.</summary>
    public static bool DefaultDecay(nn.Module owner, string local) => owner is not LayerNorm && local != "bias";
}

/// <summary>
/// A trainable tensor as the optimizer takes it: its file key, the parameter, whether it decays, and whether it is a
/// base parameter the adapter fine-tunes (which may take a learning rate of its own).
/// </summary>
public readonly record struct TrainedParameter(string Key, Parameter Parameter, bool Decay, bool OfBase = false);

/// <summary>Everything one adapter (or fusion) put into the model and owns, as recorded when it was injected.</summary>
public sealed class AdapterRecord(string name, IReadOnlyList<OwnedTensor> tensors, IReadOnlyList<(IAdapterContainer Container, nn.Module Module, string FileKey)> placements)
{
    public string Name { get; } = name;

    /// <summary>What it owns and trains, with file keys: its modules' parameters, its head's, and base parameters it fine-tunes.</summary>
    public IReadOnlyList<OwnedTensor> Tensors { get; } = tensors;

    /// <summary>The modules it placed, and where: what removing it takes out.</summary>
    public IReadOnlyList<(IAdapterContainer Container, nn.Module Module, string FileKey)> Placements { get; } = placements;
}

/// <summary>
/// Where a method puts one adapter's modules, and the record of what it created: each module placed through
/// <see cref="Place(SublayerSlot, SublayerAdapter)"/> and its siblings is registered under the adapter's name and its
/// parameters are recorded with their file keys. Freezing, optimizer groups, saving, loading, removal, mixed batches
/// and the cast of frozen weights all read that record; nothing decides ownership from a parameter's name.
/// </summary>
public sealed class AdapterInjection
{
    readonly BertModel bert;
    readonly NamedModules<nn.Module> shared;
    readonly List<OwnedTensor> tensors = [];
    readonly List<(IAdapterContainer, nn.Module, string)> placements = [];
    readonly Dictionary<SublayerSlot, SublayerAdapter> taken = [];

    internal AdapterInjection(string name, BertModel bert, NamedModules<nn.Module> shared)
    {
        Name = name;
        this.bert = bert;
        this.shared = shared;
        SublayerSlots = bert.SublayerSlots().ToArray();
        ProjectionSlots = bert.ProjectionSlots().ToArray();
    }

    /// <summary>The adapter's name: what its modules are registered under.</summary>
    public string Name { get; }

    public BertConfig Config => bert.Config;

    /// <summary>The embeddings' LayerNorm, then each layer's attention output and FFN output.</summary>
    public IReadOnlyList<SublayerSlot> SublayerSlots { get; }

    /// <summary>Each layer's query, key, value, attention output, intermediate and output projections.</summary>
    public IReadOnlyList<ProjectionSlot> ProjectionSlots { get; }

    /// <summary>The attention-output slots (where <paramref name="attention"/>) and FFN-output slots (where <paramref name="ffn"/>) of the config's layers.</summary>
    public IEnumerable<SublayerSlot> SublayerSlotsOf(MethodConfig config, bool attention, bool ffn) =>
        SublayerSlots.Where(s => (s.Kind == SlotKind.AttentionOutput ? attention : s.Kind == SlotKind.FfnOutput && ffn) && config.AppliesToLayer(s.Layer));

    /// <summary>Puts <paramref name="module"/> at a sublayer's end; its parameters are keyed under the slot's file key.</summary>
    public void Place(SublayerSlot slot, SublayerAdapter module)
    {
        Place(slot.Site, module, slot.FileKey);
        taken[slot] = module;
    }

    /// <summary>Puts <paramref name="module"/> inside a projection; its parameters are keyed under the projection's file key.</summary>
    public void Place(ProjectionSlot slot, ProjectionAdapter module) => Place(slot.Site, module, slot.FileKey);

    /// <summary>
    /// Puts <paramref name="module"/> at the model level, once (weights that several sites share): state-dict key
    /// <c>shared.&lt;name&gt;.…</c>, file key <c>shared.…</c>. Sites that use it hold it without registering it.
    /// </summary>
    public void PlaceShared(nn.Module module) => Place(shared, module, "shared");

    /// <summary>
    /// Where the config trains LayerNorms per task: a copy of the base LayerNorm at every sublayer slot of its layers
    /// (and the embeddings', when it covers all layers) where this injection placed nothing of its own.
    /// </summary>
    public void AddLayerNormCopies(MethodConfig config)
    {
        if (!config.TrainLayerNorms) return;
        foreach (var slot in SublayerSlots)
        {
            bool applies = slot.Kind == SlotKind.Embeddings ? config.Layers is null : config.AppliesToLayer(slot.Layer);
            if (applies && !taken.ContainsKey(slot)) Place(slot, new LayerNormCopy(slot.LayerNorm));
        }
    }

    internal void Place<T>(NamedModules<T> container, T module, string fileKey) where T : nn.Module
    {
        container.Add(Name, module);
        placements.Add((container, module, fileKey));
        Own(fileKey, module);
    }

    /// <summary>Records base parameters this adapter fine-tunes: every one of <paramref name="module"/>'s own, under <paramref name="path"/>.</summary>
    internal void OwnBase(string path, nn.Module module) => OwnParameters(path, module, ofBase: true);

    void OwnParameters(string path, nn.Module module, bool ofBase)
    {
        foreach (var (local, _) in module.named_parameters(recurse: false))
            tensors.Add(new OwnedTensor($"{path}.{local}", module, local, OwnedTensor.DefaultDecay(module, local), ofBase));
    }

    void Own(string prefix, nn.Module module)
    {
        OwnParameters(prefix, module, ofBase: false);
        foreach (var (name, child) in module.named_children())
            Own($"{prefix}.{name}", child);
    }

    /// <summary>The base LayerNorms this adapter replaces with copies of its own: they take no part in its passes.</summary>
    internal IEnumerable<nn.Module> ReplacedLayerNorms() =>
        taken.Where(t => t.Value.LayerNorm is not null).Select(t => (nn.Module)t.Key.LayerNorm);

    internal AdapterRecord Seal() => new(Name, tensors.ToArray(), placements.ToArray());

    /// <summary>Takes out everything placed so far (a failed injection).</summary>
    internal void Undo()
    {
        foreach (var (container, _, _) in placements) container.Remove(Name);
        placements.Clear();
        tensors.Clear();
    }
}

/// <summary>An adapter's own copy of a site's LayerNorm, and nothing else there (LayerNorms trained per task).</summary>
public sealed class LayerNormCopy : SublayerAdapter
{
    [TorchSharp.Utils.ComponentName(Name = "LayerNorm")] readonly LayerNorm layer_norm;

    public LayerNormCopy(LayerNorm baseLayerNorm) : base(nameof(LayerNormCopy))
    {
        layer_norm = Copy(baseLayerNorm);
        RegisterComponents();
    }

    /// <summary>A new LayerNorm with <paramref name="source"/>'s eps, weight and bias.</summary>
    public static LayerNorm Copy(LayerNorm source)
    {
        var copy = nn.LayerNorm(source.weight!.shape[0], source.eps);
        using var noGrad = no_grad();
        copy.weight!.copy_(source.weight!);
        copy.bias!.copy_(source.bias!);
        return copy;
    }

    public override bool AddsToOutput => false;

    public override Tensor? Delta(Tensor sublayer, Tensor residual, ForwardPass pass) => null;

    public override LayerNorm? LayerNorm => layer_norm;
}

/// <summary>
/// A module that gathers figures while the model evaluates (a dynamic adapter's chosen sizes, say), read after the
/// evaluation (<c>AdapterModel.Statistics</c>).
/// </summary>
public interface IAdapterStatistics
{
    /// <summary>Forgets what was gathered.</summary>
    void ResetStatistics();

    /// <summary>What was gathered since the last reset, by name (one host read).</summary>
    IReadOnlyDictionary<string, double> ReadStatistics();
}
