using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>
/// The adapters and fusions loaded onto one base, each with its head, and what each owns (<see cref="AdapterRecord"/>,
/// as its method's injector recorded it). Adding runs the method's injector; removing takes out what it placed.
/// </summary>
public sealed class AdapterSet
{
    readonly BertModel bert;
    readonly NamedModules<PredictionHead> heads;
    readonly NamedModules<nn.Module> shared;
    readonly Dictionary<string, MethodConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, FusionConfig> fusions = new(StringComparer.Ordinal);
    readonly Dictionary<string, AdapterRecord> records = new(StringComparer.Ordinal);

    internal AdapterSet(BertModel bert, NamedModules<PredictionHead> heads, NamedModules<nn.Module> shared)
    {
        this.bert = bert;
        this.heads = heads;
        this.shared = shared;
    }

    public IReadOnlyDictionary<string, MethodConfig> Adapters => configs;
    public IReadOnlyDictionary<string, FusionConfig> Fusions => fusions;

    /// <summary>Whether an adapter or a fusion is loaded under <paramref name="name"/>.</summary>
    public bool Contains(string name) => configs.ContainsKey(name) || fusions.ContainsKey(name);

    public PredictionHead Head(string name) => heads[name];

    /// <summary>What adapter or fusion <paramref name="name"/> owns, with file keys.</summary>
    public AdapterRecord Record(string name) =>
        records.TryGetValue(name, out var record) ? record : throw new ArgumentException($"no adapter named '{name}' (loaded: {Loaded})");

    internal string Loaded => string.Join(", ", configs.Keys.Concat(fusions.Keys));

    /// <summary>
    /// Adds adapter <paramref name="name"/>: its method's modules where its config says, the base parameters it
    /// fine-tunes, and its head. Nothing trains yet (see <c>AdapterModel.TrainOnly</c>).
    /// </summary>
    public void Add(string name, MethodConfig config, HeadConfig head)
    {
        RequireFree(name);
        config.Validate(bert.Config);
        var method = MethodRegistry.For(config);
        // Full and top-k write into the shared base itself, which every other adapter (and the bare model) reads.
        if (config.ModifiesBase && configs.Count > 0)
            throw new ArgumentException(
                $"adapter '{name}' ({config.Method}) changes base weights and cannot share the base with the loaded adapters ({string.Join(", ", configs.Keys)})");
        if (configs.FirstOrDefault(c => c.Value.ModifiesBase) is { Key: { } owner } held)
            throw new ArgumentException($"adapter '{owner}' ({held.Value.Method}) has changed the base weights; no other adapter can share it");
        Inject(name, injection =>
        {
            method.Inject(config, injection);
            OwnBaseLayers(config, injection);
            injection.Place(heads, new PredictionHead(bert.Config.HiddenSize, bert.Config.HiddenDropoutProb, head), "head");
        });
        configs[name] = config;
    }

    /// <summary>
    /// Adds AdapterFusion <paramref name="name"/> over the loaded adapters <paramref name="config"/> names: a fusion
    /// layer (<see cref="AdapterFusion"/>) at every site where all of them add something, under
    /// <c>….fusion.&lt;name&gt;.</c>, and a new head.
    /// </summary>
    public void AddFusion(string name, FusionConfig config, HeadConfig head)
    {
        RequireFree(name);
        config.Validate();
        foreach (var adapter in config.Adapters)
        {
            if (!configs.TryGetValue(adapter, out var adapterConfig))
                throw new ArgumentException($"fusion '{name}' fuses adapter '{adapter}', which is not loaded (loaded: {string.Join(", ", configs.Keys)})");
            if (adapterConfig.ModifiesBase)
                throw new ArgumentException($"fusion '{name}': adapter '{adapter}' ({adapterConfig.Method}) changes base weights and cannot be fused");
            if (!adapterConfig.Fusable)
                throw new ArgumentException($"fusion '{name}': adapter '{adapter}' ({adapterConfig.Method}) adds nothing at sublayer ends for a fusion to attend over");
        }
        var slots = bert.SublayerSlots()
            .Where(s => s.Fusions is not null && config.Adapters.All(a => s.Site.TryGet(a, out var x) && x.AddsToOutput)).ToList();
        if (slots.Count == 0)
            throw new ArgumentException($"fusion '{name}': the adapters ({string.Join(", ", config.Adapters)}) share no site where all have a bottleneck");
        Inject(name, injection =>
        {
            foreach (var slot in slots)
                injection.Place(slot.Fusions!, new AdapterFusion(bert.Config.HiddenSize, slot.LayerNorm), slot.FusionFileKey!);
            injection.Place(heads, new PredictionHead(bert.Config.HiddenSize, bert.Config.HiddenDropoutProb, head), "head");
        });
        fusions[name] = config;
    }

    /// <summary>Removes an adapter or a fusion: what it placed, and its head. The base and the others are untouched.</summary>
    public void Remove(string name)
    {
        if (!Contains(name)) throw new ArgumentException($"no adapter named '{name}'");
        if (configs.ContainsKey(name) && fusions.FirstOrDefault(f => f.Value.Adapters.Contains(name)) is { Key: { } fusion })
            throw new ArgumentException($"adapter '{name}' is fused by '{fusion}': remove the fusion first");
        foreach (var (container, _, _) in records[name].Placements) container.Remove(name);
        records.Remove(name);
        configs.Remove(name);
        fusions.Remove(name);
    }

    void RequireFree(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            throw new ArgumentException($"adapter name '{name}' must be 1-64 letters, digits, '-' or '_'");
        if (Contains(name)) throw new ArgumentException($"an adapter named '{name}' is already loaded");
    }

    /// <summary>Runs <paramref name="inject"/>, moves what it placed to the model's device and records it; on failure takes it all out.</summary>
    void Inject(string name, Action<AdapterInjection> inject)
    {
        var injection = new AdapterInjection(name, bert, shared);
        try
        {
            inject(injection);
            var record = injection.Seal();
            // A model already moved to a device gets the new modules there too.
            var device = bert.Embeddings.LayerNorm.weight!.device;
            if (device.type != DeviceType.CPU)
                foreach (var (_, module, _) in record.Placements) module.to(device);
            records[name] = record;
        }
        catch
        {
            injection.Undo();
            throw;
        }
    }

    /// <summary>
    /// The base parameters a config fine-tunes: all of them, or those of its top k layers; but not base LayerNorms
    /// that the adapter replaces with its own copies, which its passes never use.
    /// </summary>
    void OwnBaseLayers(MethodConfig config, AdapterInjection injection)
    {
        if (!config.ModifiesBase) return;
        var replaced = injection.ReplacedLayerNorms().ToHashSet(ReferenceEqualityComparer.Instance);
        var layers = bert.Encoder.Layers;
        var roots = config.TrainAllBase
            ? [("embeddings", (nn.Module)bert.Embeddings), ("encoder", bert.Encoder)]
            : Enumerable.Range(layers.Count - config.TrainTopLayers, config.TrainTopLayers).Select(i => ($"encoder.layer.{i}", (nn.Module)layers[i]));
        foreach (var (path, root) in roots)
            foreach (var (modulePath, module) in BertModel.BaseModules(path, root))
                if (!replaced.Contains(module))
                    injection.OwnBase(modulePath, module);
    }
}
