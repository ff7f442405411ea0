using AdapterSharp.Checkpoints;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>
/// A frozen BERT encoder with named adapters, each with its own task head. State-dict keys are HF's with
/// the <c>bert.</c> prefix of task models, adapters under their site (<c>bert.encoder.layer.0.output.adapters.sst2.down.weight</c>)
/// and heads under <c>heads.&lt;name&gt;</c>. <c>forward</c> runs the active adapter and its head.
/// </summary>
public sealed class AdapterModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    readonly BertModel bert;
    readonly NamedModules<PredictionHead> heads;
    readonly Dictionary<string, AdapterConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, FusionConfig> fusions = new(StringComparer.Ordinal);
    RowStacks? rowStacks; // what the sites' mixed-batch stacks were built for; null: not built

    public AdapterModel(BertModel bert) : base(nameof(AdapterModel))
    {
        this.bert = bert;
        heads = new NamedModules<PredictionHead>();
        RegisterComponents();
    }

    /// <summary>
    /// The base for adapter tuning and serving: the pretrained encoder without its pooler (heads read the
    /// [CLS] vector of the last layer), no adapters yet.
    /// </summary>
    public static AdapterModel FromPretrained(PretrainedEncoder encoder)
    {
        var bert = new BertModel(encoder.Config, addPooler: false);
        var weights = encoder.Weights.Where(w => !w.Key.StartsWith("pooler.", StringComparison.Ordinal))
            .ToDictionary(w => w.Key, w => w.Value);
        StateDict.Load(bert, weights, encoder.WeightsPath);
        return new AdapterModel(bert);
    }

    public BertModel Bert => bert;
    public BertConfig Config => bert.Config;
    public IReadOnlyDictionary<string, AdapterConfig> Adapters => configs;
    public IReadOnlyDictionary<string, FusionConfig> Fusions => fusions;
    public PredictionHead Head(string name) => heads[name];

    /// <summary>The active adapter (and head), or null for none. Setting it ends any <see cref="Composition"/>.</summary>
    public string? Active
    {
        get => bert.Context.ActiveAdapter;
        set
        {
            if (value is not null && !configs.ContainsKey(value))
                throw new ArgumentException($"no adapter named '{value}' (loaded: {string.Join(", ", configs.Keys)})");
            bert.Context.Composition = null;
            bert.Context.ActiveAdapter = value;
        }
    }

    /// <summary>
    /// The active combination of adapters (<see cref="Stack"/>, <see cref="Fuse"/>) and its head, or null. Setting
    /// it clears <see cref="Active"/>; setting <see cref="Active"/> clears it.
    /// </summary>
    public AdapterComposition? Composition
    {
        get => bert.Context.Composition;
        set
        {
            if (value is not null) CheckComposition(value);
            bert.Context.ActiveAdapter = null;
            bert.Context.Composition = value;
        }
    }

    void CheckComposition(AdapterComposition composition)
    {
        foreach (var name in composition.Adapters)
            if (!configs.ContainsKey(name))
                throw new ArgumentException($"{composition}: no adapter named '{name}' (loaded: {string.Join(", ", configs.Keys)})");
        if (composition.Adapters.FirstOrDefault(n => configs[n].ModifiesBase) is { } owner)
            throw new ArgumentException($"{composition}: adapter '{owner}' ({configs[owner].Method}) changes base weights and cannot be combined");
        if (composition is Fuse fuse)
        {
            if (!fusions.TryGetValue(fuse.Fusion, out var config))
                throw new ArgumentException($"{composition}: no fusion named '{fuse.Fusion}' (loaded: {string.Join(", ", fusions.Keys)})");
            if (!config.Adapters.Order(StringComparer.Ordinal).SequenceEqual(fuse.Adapters.Order(StringComparer.Ordinal)))
                throw new ArgumentException($"{composition}: fusion '{fuse.Fusion}' was made for ({string.Join(", ", config.Adapters)})");
        }
    }

    /// <summary>Activates fusion <paramref name="name"/> over the adapters it was made for.</summary>
    public void ActivateFusion(string name)
    {
        if (!fusions.TryGetValue(name, out var config))
            throw new ArgumentException($"no fusion named '{name}' (loaded: {string.Join(", ", fusions.Keys)})");
        Composition = new Fuse(name, config.Adapters);
    }

    /// <summary>
    /// Adds adapter <paramref name="name"/>: its bottlenecks and per-task LayerNorms at the sites its config
    /// names, and its head. Returns nothing trained yet; see <see cref="TrainOnly"/>.
    /// </summary>
    public void AddAdapter(string name, AdapterConfig config, HeadConfig head)
    {
        ValidateName(name);
        if (configs.ContainsKey(name) || fusions.ContainsKey(name)) throw new ArgumentException($"an adapter named '{name}' is already loaded");
        config.Validate(Config.NumHiddenLayers);
        // Full and top-k write into the shared base itself, which every other adapter (and the bare model) reads.
        if (config.ModifiesBase && configs.Count > 0)
            throw new ArgumentException(
                $"adapter '{name}' ({config.Method}) changes base weights and cannot share the base with the loaded adapters ({string.Join(", ", configs.Keys)})");
        if (configs.FirstOrDefault(c => c.Value.ModifiesBase) is { Key: { } owner } held)
            throw new ArgumentException($"adapter '{owner}' ({held.Value.Method}) has changed the base weights; no other adapter can share it");
        int hidden = Config.HiddenSize;
        if (config.TrainLayerNorms && config.Layers is null)
            bert.Embeddings.Adapters.Add(name, new Adapter(hidden, config, bottleneck: false, bert.Embeddings.LayerNorm, bert.Context));
        var layers = bert.Encoder.Layers;
        for (int i = 0; i < layers.Count; i++)
        {
            if (!config.AppliesToLayer(i)) continue;
            AddAt(layers[i].Attention.Output.Adapters, layers[i].Attention.Output.LayerNorm, config.AttentionAdapter);
            AddAt(layers[i].Output.Adapters, layers[i].Output.LayerNorm, config.FfnAdapter);
        }
        heads.Add(name, new PredictionHead(hidden, Config.HiddenDropoutProb, head));
        // A model already moved to a device gets the new modules there too.
        var device = bert.Embeddings.LayerNorm.weight!.device;
        if (device.type != DeviceType.CPU)
            foreach (var module in Sites().Where(s => s.Site.Contains(name)).Select(s => (nn.Module)s.Site[name]).Append(heads[name]))
                module.to(device);
        configs[name] = config;
        InvalidateRowStacks();

        void AddAt(AdapterSite site, LayerNorm layerNorm, bool bottleneck)
        {
            if (bottleneck || config.TrainLayerNorms)
                site.Add(name, new Adapter(hidden, config, bottleneck, config.TrainLayerNorms ? layerNorm : null, bert.Context));
        }
    }

    /// <summary>
    /// Adds AdapterFusion <paramref name="name"/> over the loaded adapters <paramref name="config"/> names: a
    /// fusion layer (<see cref="AdapterFusion"/>) at every site where all of them have a bottleneck, under
    /// <c>….fusion.&lt;name&gt;.</c>, and a new head. Train it with <see cref="TrainOnly"/>, which freezes the adapters.
    /// </summary>
    public void AddFusion(string name, FusionConfig config, HeadConfig head)
    {
        ValidateName(name);
        if (configs.ContainsKey(name) || fusions.ContainsKey(name)) throw new ArgumentException($"an adapter named '{name}' is already loaded");
        config.Validate();
        foreach (var adapter in config.Adapters)
        {
            if (!configs.TryGetValue(adapter, out var adapterConfig))
                throw new ArgumentException($"fusion '{name}' fuses adapter '{adapter}', which is not loaded (loaded: {string.Join(", ", configs.Keys)})");
            if (adapterConfig.ModifiesBase)
                throw new ArgumentException($"fusion '{name}': adapter '{adapter}' ({adapterConfig.Method}) changes base weights and cannot be fused");
        }
        var sites = Sites().Where(s => s.Fusions is not null && config.Adapters.All(a => s.Site.TryGet(a, out var x) && x.HasBottleneck)).ToList();
        if (sites.Count == 0)
            throw new ArgumentException($"fusion '{name}': the adapters ({string.Join(", ", config.Adapters)}) share no site where all have a bottleneck");
        var device = bert.Embeddings.LayerNorm.weight!.device;
        foreach (var (_, layerNorm, site) in sites)
        {
            var fusion = new AdapterFusion(Config.HiddenSize, layerNorm, bert.Context);
            if (device.type != DeviceType.CPU) fusion.to(device);
            site!.Add(name, fusion);
        }
        heads.Add(name, new PredictionHead(Config.HiddenSize, Config.HiddenDropoutProb, head));
        if (device.type != DeviceType.CPU) heads[name].to(device);
        fusions[name] = config;
    }

    /// <summary>Removes an adapter or a fusion, and its head; the base and the others are untouched.</summary>
    public void RemoveAdapter(string name)
    {
        if (fusions.Remove(name))
        {
            foreach (var (_, _, site) in Sites()) site?.Remove(name);
            heads.Remove(name);
            if ((Composition as Fuse)?.Fusion == name) bert.Context.Composition = null;
            return;
        }
        if (!configs.ContainsKey(name)) throw new ArgumentException($"no adapter named '{name}'");
        if (fusions.FirstOrDefault(f => f.Value.Adapters.Contains(name)) is { Key: { } fusion })
            throw new ArgumentException($"adapter '{name}' is fused by '{fusion}': remove the fusion first");
        configs.Remove(name);
        foreach (var (site, _, _) in Sites()) site.Remove(name);
        heads.Remove(name);
        if (Active == name) Active = null;
        if (Composition?.Adapters.Contains(name) == true) bert.Context.Composition = null;
        InvalidateRowStacks();
    }

    /// <summary>Every adapter site with the base LayerNorm it replaces and its fusion layers (none at the embeddings).</summary>
    IEnumerable<(AdapterSite Site, LayerNorm LayerNorm, NamedModules<AdapterFusion>? Fusions)> Sites()
    {
        yield return (bert.Embeddings.Adapters, bert.Embeddings.LayerNorm, null);
        foreach (var layer in bert.Encoder.Layers)
        {
            yield return (layer.Attention.Output.Adapters, layer.Attention.Output.LayerNorm, layer.Attention.Output.Fusion);
            yield return (layer.Output.Adapters, layer.Output.LayerNorm, layer.Output.Fusion);
        }
    }

    /// <summary>
    /// Makes <paramref name="name"/> what the forward pass runs: a fusion with the adapters it fuses, the top of the
    /// current <see cref="Stack"/> as it is, or else the adapter alone.
    /// </summary>
    public void Activate(string name)
    {
        if (fusions.ContainsKey(name)) ActivateFusion(name);
        else if (Composition is not Stack { Head: var last } || last != name) Active = name;
    }

    /// <summary>
    /// Freezes every parameter, then unfreezes what method <paramref name="name"/> trains: its adapters,
    /// LayerNorm copies and head, plus base layers for the full and top-k baselines; for a fusion, its fusion
    /// layers and head (the fused adapters stay frozen). Activates it; an active <see cref="Stack"/> that ends in
    /// <paramref name="name"/> stays active (training an adapter on top of frozen ones).
    /// </summary>
    public List<(string Name, Parameter Parameter)> TrainOnly(string name)
    {
        Activate(name);
        InvalidateRowStacks(); // training changes the weights the stacks copied
        var trained = new List<(string, Parameter)>();
        foreach (var (path, parameter) in named_parameters())
        {
            bool train = IsTrainedBy(name, path);
            parameter.requires_grad = train;
            if (train) trained.Add((path, parameter));
        }
        return trained;
    }

    /// <summary>
    /// Multi-task training: freezes every parameter, then unfreezes what each of <paramref name="names"/> trains,
    /// returned per adapter. Sets no active adapter, except that one name is <see cref="TrainOnly"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A name is unknown or repeated, or (with several) one changes base weights.</exception>
    public Dictionary<string, List<(string Name, Parameter Parameter)>> TrainEach(IReadOnlyList<string> names)
    {
        if (names.Count == 1) return new() { [names[0]] = TrainOnly(names[0]) };
        var result = new Dictionary<string, List<(string Name, Parameter Parameter)>>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            if (!configs.TryGetValue(name, out var config))
                throw new ArgumentException($"no adapter named '{name}' (loaded: {string.Join(", ", configs.Keys)})");
            if (config.ModifiesBase)
                throw new ArgumentException($"adapter '{name}' ({config.Method}) changes base weights, which the other adapters share; it must train alone");
            if (!result.TryAdd(name, [])) throw new ArgumentException($"adapter '{name}' is listed twice");
        }
        InvalidateRowStacks();
        foreach (var (path, parameter) in named_parameters())
        {
            var owner = names.FirstOrDefault(n => IsTrainedBy(n, path));
            parameter.requires_grad = owner is not null;
            if (owner is not null) result[owner].Add((path, parameter));
        }
        return result;
    }

    /// <summary>
    /// Ready for inference: everything frozen, on <paramref name="device"/>, products in <paramref name="matmulType"/>
    /// (frozen base projections cast once), dropout off. Idempotent, so it can follow each adapter load.
    /// </summary>
    public void PrepareForInference(Device device, ScalarType matmulType)
    {
        FreezeAll();
        this.to(device); // a no-op for tensors already there: only new adapters move
        bert.UseMatmulType(matmulType);
        eval();
    }

    /// <summary>Freezes every parameter (serving).</summary>
    public void FreezeAll()
    {
        foreach (var parameter in parameters()) parameter.requires_grad = false;
    }

    /// <summary>Whether the tensor at <paramref name="path"/> belongs to (is trained by) adapter <paramref name="name"/>.</summary>
    public bool IsTrainedBy(string name, string path)
    {
        if (path.StartsWith($"heads.{name}.", StringComparison.Ordinal)) return true;
        if (path.Contains($".adapters.{name}.", StringComparison.Ordinal) || path.Contains($".fusion.{name}.", StringComparison.Ordinal)) return true;
        if (path.StartsWith("heads.", StringComparison.Ordinal) || path.Contains(".adapters.", StringComparison.Ordinal)
            || path.Contains(".fusion.", StringComparison.Ordinal)) return false;
        if (path.StartsWith("bert.pooler.", StringComparison.Ordinal)) return false; // unused by the head
        if (!configs.TryGetValue(name, out var config)) return false; // a fusion trains no base weights
        if (config.TrainAllBase) return true;
        if (config.TrainTopLayers > 0)
        {
            int first = Config.NumHiddenLayers - config.TrainTopLayers;
            return Enumerable.Range(first, config.TrainTopLayers)
                .Any(i => path.StartsWith($"bert.encoder.layer.{i}.", StringComparison.Ordinal));
        }
        return false;
    }

    /// <summary>(B, labels) logits or (B, 1) scores from the active adapter's (or composition's) head.</summary>
    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) =>
        Logits(inputIds, attentionMask, tokenTypeIds);

    /// <summary><see cref="forward"/>, with a null mask meaning "no padding in this batch".</summary>
    public Tensor Logits(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds)
    {
        var name = Composition?.Head ?? Active ?? throw new InvalidOperationException("no active adapter: set Active or Composition first");
        using var scope = NewDisposeScope();
        var hidden = bert.Encode(inputIds, attentionMask, tokenTypeIds);
        return heads[name].call(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The last hidden state (B, T, d) of a mixed batch: row i runs through adapter
    /// <paramref name="adapterPerRow"/>[i] (null: the bare base model), all rows in one pass. For inference:
    /// the adapters are used through copies stacked per site (see <see cref="InvalidateRowStacks"/>).
    /// </summary>
    /// <param name="adapterPerRow">One name or null per row of <paramref name="inputIds"/>.</param>
    /// <exception cref="ArgumentException">A name is not loaded, or names an adapter that changes base weights.</exception>
    public Tensor EncodePerRow(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds, string?[] adapterPerRow)
    {
        using var scope = NewDisposeScope();
        return EncodeRows(inputIds, attentionMask, tokenTypeIds, SelectRows(adapterPerRow, inputIds)).MoveToOuterDisposeScope();
    }

    Tensor EncodeRows(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds, RowSelection rows)
    {
        bert.Context.RowAdapters = rows;
        try
        {
            return bert.Encode(inputIds, attentionMask, tokenTypeIds);
        }
        finally
        {
            bert.Context.RowAdapters = null;
        }
    }

    /// <summary>
    /// Each row's logits from its own adapter and head, the encoder run once for the whole batch (see
    /// <see cref="EncodePerRow"/>) and the heads as one batched product over per-row copies of their weights
    /// (stacked once, like the adapters), so the cost does not grow with the number of adapters in the batch.
    /// Heads differ in size, so the result is padded: row i's logits are <c>Logits[i, ..Outputs[i]]</c> and the
    /// rest of the row is −∞.
    /// </summary>
    public RowLogits LogitsPerRow(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds, string?[] adapterPerRow)
    {
        using var scope = NewDisposeScope();
        var rows = SelectRows(adapterPerRow, inputIds);
        var hidden = EncodeRows(inputIds, attentionMask, tokenTypeIds, rows);
        var outputs = adapterPerRow.Select(n => n is null ? 0 : heads[n].Config.Outputs).ToArray();
        var stacks = rowStacks!; // built by SelectRows
        var index = rows.Index; // (B), the slots the sites used
        var cls = hidden.narrow(1, 0, 1).to_type(ScalarType.Float32); // (B, 1, d): heads read only [CLS]
        var logits = cls.baddbmm(stacks.HeadWeight.index_select(0, index), stacks.HeadBias.index_select(0, index)) // (B, 1, max outputs)
            .squeeze(1)
            .masked_fill(stacks.HeadUnused.index_select(0, index), float.NegativeInfinity);
        return new RowLogits(logits.MoveToOuterDisposeScope(), outputs);
    }

    /// <summary>
    /// Drops the per-site stacks of adapter weights that mixed batches use; the next mixed batch rebuilds them.
    /// Adding, removing, loading and training adapters do this; call it after changing adapter weights any
    /// other way. (Moving the model or changing its matmul type is noticed without it.)
    /// </summary>
    public void InvalidateRowStacks()
    {
        if (rowStacks is null) return;
        foreach (var (site, _, _) in Sites()) site.ClearRowStack();
        rowStacks.Dispose();
        rowStacks = null;
    }

    RowSelection SelectRows(string?[] adapterPerRow, Tensor inputIds)
    {
        if (adapterPerRow.Length != inputIds.shape[0])
            throw new ArgumentException($"{adapterPerRow.Length} adapter names for a batch of {inputIds.shape[0]} rows", nameof(adapterPerRow));
        var device = bert.Embeddings.LayerNorm.weight!.device;
        var type = bert.Context.MatmulType;
        if (rowStacks is not { } stacks || stacks.Device != device.ToString() || stacks.MatmulType != type)
        {
            InvalidateRowStacks();
            // Every adapter that leaves the base alone gets a slot, so one set of stacks serves every batch.
            var names = configs.Where(c => !c.Value.ModifiesBase).Select(c => c.Key).ToArray();
            foreach (var (site, layerNorm, _) in Sites()) site.BuildRowStack(names, layerNorm);
            var (weight, bias, unused) = StackHeads(names, device);
            rowStacks = stacks = new RowStacks(names, device.ToString(), type, weight, bias, unused);
        }
        var index = adapterPerRow.Select(name => name is null ? 0L : stacks.Slot(name, this)).ToArray();
        return new RowSelection(tensor(index, device: device), stacks.Names);
    }

    /// <summary>
    /// The heads of <paramref name="names"/> in slots 1..N (slot 0: no adapter, no head), padded to the largest:
    /// weights (N+1, d, max outputs) transposed for <c>baddbmm</c>, biases (N+1, 1, max outputs), and which
    /// outputs a slot lacks (N+1, max outputs).
    /// </summary>
    (Tensor Weight, Tensor Bias, Tensor Unused) StackHeads(string[] names, Device device)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int width = Math.Max(1, names.Select(n => heads[n].Config.Outputs).DefaultIfEmpty(1).Max());
        var weight = zeros([names.Length + 1, Config.HiddenSize, width], ScalarType.Float32, device);
        var bias = zeros([names.Length + 1, 1, width], ScalarType.Float32, device);
        var unused = ones([names.Length + 1, width], ScalarType.Bool, device);
        for (int slot = 1; slot <= names.Length; slot++)
        {
            var (w, b) = heads[names[slot - 1]].Classifier; // (outputs, d), (outputs)
            int outputs = (int)w.shape[0];
            weight[slot].narrow(1, 0, outputs).copy_(w.t());
            bias[slot, 0].narrow(0, 0, outputs).copy_(b);
            unused[slot].narrow(0, 0, outputs).fill_(false);
        }
        // Kept until the stacks are invalidated, whatever scope the first mixed batch ran in.
        return (weight.DetachFromDisposeScope(), bias.DetachFromDisposeScope(), unused.DetachFromDisposeScope());
    }

    sealed record RowStacks(string[] Names, string Device, ScalarType MatmulType, Tensor HeadWeight, Tensor HeadBias, Tensor HeadUnused)
        : IDisposable
    {
        readonly Dictionary<string, long> slots = Names.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i + 1L, StringComparer.Ordinal);

        public void Dispose()
        {
            HeadWeight.Dispose();
            HeadBias.Dispose();
            HeadUnused.Dispose();
        }

        public long Slot(string name, AdapterModel model)
        {
            if (slots.TryGetValue(name, out var slot)) return slot;
            if (model.configs.TryGetValue(name, out var config))
                throw new ArgumentException($"adapter '{name}' ({config.Method}) changes base weights, so it cannot share a batch with other adapters; run it alone (Active = \"{name}\")");
            throw new ArgumentException($"no adapter named '{name}' (loaded: {string.Join(", ", model.configs.Keys)})");
        }
    }

    /// <summary>
    /// The tensors that make up adapter <paramref name="name"/>, under file names that do not depend on it:
    /// <c>.adapters.&lt;name&gt;.</c> becomes <c>.adapter.</c>, <c>.fusion.&lt;name&gt;.</c> <c>.fusion.</c>, <c>heads.&lt;name&gt;.</c> <c>head.</c>,
    /// and trained base tensors (full, top-k) keep their names. No <c>bert.</c> prefix.
    /// </summary>
    public Dictionary<string, TensorData> AdapterTensors(string name)
    {
        var result = new Dictionary<string, TensorData>(StringComparer.Ordinal);
        foreach (var (path, parameter) in named_parameters())
            if (IsTrainedBy(name, path))
                result[ToFileKey(name, path)] = StateDict.FromTensor(parameter);
        return result;
    }

    /// <summary>Adds adapter <paramref name="name"/> and fills it from tensors saved by <see cref="AdapterTensors"/>.</summary>
    public void LoadAdapter(string name, AdapterConfig config, HeadConfig head, IReadOnlyDictionary<string, TensorData> tensors, string source)
    {
        AddAdapter(name, config, head);
        try
        {
            var targets = named_parameters().Where(p => IsTrainedBy(name, p.name))
                .ToDictionary(p => ToFileKey(name, p.name), p => (Tensor)p.parameter);
            var module = new Dictionary<string, Tensor>(targets);
            CopyInto(module, tensors, source);
            InvalidateRowStacks();
        }
        catch
        {
            RemoveAdapter(name);
            throw;
        }
    }

    /// <summary>
    /// Adds fusion <paramref name="name"/> over adapters already loaded and fills it from tensors saved by
    /// <see cref="AdapterTensors"/>.
    /// </summary>
    public void LoadFusion(string name, FusionConfig config, HeadConfig head, IReadOnlyDictionary<string, TensorData> tensors, string source)
    {
        AddFusion(name, config, head);
        try
        {
            var targets = named_parameters().Where(p => IsTrainedBy(name, p.name))
                .ToDictionary(p => ToFileKey(name, p.name), p => (Tensor)p.parameter);
            CopyInto(targets, tensors, source);
        }
        catch
        {
            RemoveAdapter(name);
            throw;
        }
    }

    static void CopyInto(Dictionary<string, Tensor> targets, IReadOnlyDictionary<string, TensorData> tensors, string source)
    {
        var missing = targets.Keys.FirstOrDefault(k => !tensors.ContainsKey(k));
        if (missing is not null)
            throw new ModelFormatException($"{source}: adapter file lacks tensor '{missing}' that its config requires");
        var unexpected = tensors.Keys.FirstOrDefault(k => !targets.ContainsKey(k));
        if (unexpected is not null)
            throw new ModelFormatException($"{source}: unexpected tensor '{unexpected}' for this adapter config");
        foreach (var (key, target) in targets)
            if (!tensors[key].Shape.SequenceEqual(target.shape))
                throw new ModelFormatException(
                    $"{source}: '{key}' has shape [{string.Join(", ", tensors[key].Shape)}], expected [{string.Join(", ", target.shape)}]");
        using var noGrad = no_grad();
        foreach (var (key, target) in targets)
        {
            using var scope = NewDisposeScope();
            target.copy_(StateDict.ToTensor(tensors[key]).to(target.device));
        }
    }

    static string ToFileKey(string name, string path)
    {
        if (path.StartsWith($"heads.{name}.", StringComparison.Ordinal)) return "head." + path[$"heads.{name}.".Length..];
        var key = path.StartsWith("bert.", StringComparison.Ordinal) ? path["bert.".Length..] : path;
        return key.Replace($".adapters.{name}.", ".adapter.", StringComparison.Ordinal)
            .Replace($".fusion.{name}.", ".fusion.", StringComparison.Ordinal);
    }

    static void ValidateName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            throw new ArgumentException($"adapter name '{name}' must be 1-64 letters, digits, '-' or '_'");
    }
}

/// <summary>
/// Per-row logits of a mixed batch (<see cref="AdapterModel.LogitsPerRow"/>): row i's are
/// <c>Logits[i, ..Outputs[i]]</c> of the (B, max labels) float32 tensor, the rest of the row −∞ (so softmax and
/// argmax over a whole row see only its own labels). Rows without an adapter have no head: 0 outputs.
/// The caller owns <paramref name="Logits"/>.
/// </summary>
public sealed record RowLogits(Tensor Logits, int[] Outputs);
