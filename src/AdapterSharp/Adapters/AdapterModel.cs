using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>
/// A frozen BERT encoder with named adapters, each with its own task head: the model the trainer, the CLI and the
/// server use. State-dict keys are HF's with the <c>bert.</c> prefix of task models, adapters under the site they
/// modify (<c>bert.encoder.layer.0.output.adapters.sst2.down.weight</c>), weights shared by every site under
/// <c>shared.&lt;name&gt;</c>, heads under <c>heads.&lt;name&gt;</c>. Its parts: the loaded adapters and what each owns
/// (<see cref="AdapterSet"/>), per-row routing for mixed batches (<see cref="RowRouting"/>), and state I/O
/// (<see cref="AdapterState"/>); what a forward pass runs travels in a <see cref="ForwardPass"/>.
/// </summary>
public sealed class AdapterModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    readonly BertModel bert;
    readonly NamedModules<PredictionHead> heads;
    readonly NamedModules<nn.Module> shared;
    readonly AdapterSet set;
    readonly RowRouting routing;
    string? active;
    AdapterComposition? composition;
    string? merged;

    public AdapterModel(BertModel bert) : base(nameof(AdapterModel))
    {
        this.bert = bert;
        heads = new NamedModules<PredictionHead>();
        shared = new NamedModules<nn.Module>();
        RegisterComponents();
        set = new AdapterSet(bert, heads, shared);
        routing = new RowRouting(bert, set);
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
    public IReadOnlyDictionary<string, MethodConfig> Adapters => set.Adapters;
    public IReadOnlyDictionary<string, FusionConfig> Fusions => set.Fusions;
    public PredictionHead Head(string name) => set.Head(name);

    /// <summary>What adapter or fusion <paramref name="name"/> put into the model and owns.</summary>
    public AdapterRecord Record(string name) => set.Record(name);

    /// <summary>The adapter folded into the base weights (<see cref="Merge"/>), or null.</summary>
    public string? Merged => merged;

    /// <summary>The active adapter (and head), or null for none. Setting it ends any <see cref="Composition"/>.</summary>
    public string? Active
    {
        get => active;
        set
        {
            if (value is not null && !set.Adapters.ContainsKey(value))
                throw new ArgumentException($"no adapter named '{value}' (loaded: {string.Join(", ", set.Adapters.Keys)})");
            composition = null;
            active = value;
        }
    }

    /// <summary>
    /// The active combination of adapters (<see cref="Stack"/>, <see cref="Fuse"/>) and its head, or null. Setting
    /// it clears <see cref="Active"/>; setting <see cref="Active"/> clears it.
    /// </summary>
    public AdapterComposition? Composition
    {
        get => composition;
        set
        {
            if (value is not null) CheckComposition(value);
            active = null;
            composition = value;
        }
    }

    void CheckComposition(AdapterComposition candidate)
    {
        foreach (var name in candidate.Adapters)
            if (!set.Adapters.ContainsKey(name))
                throw new ArgumentException($"{candidate}: no adapter named '{name}' (loaded: {string.Join(", ", set.Adapters.Keys)})");
        if (candidate.Adapters.FirstOrDefault(n => set.Adapters[n].ModifiesBase) is { } owner)
            throw new ArgumentException($"{candidate}: adapter '{owner}' ({set.Adapters[owner].Method}) changes base weights and cannot be combined");
        if (candidate is Fuse fuse)
        {
            if (!set.Fusions.TryGetValue(fuse.Fusion, out var config))
                throw new ArgumentException($"{candidate}: no fusion named '{fuse.Fusion}' (loaded: {string.Join(", ", set.Fusions.Keys)})");
            if (!config.Adapters.Order(StringComparer.Ordinal).SequenceEqual(fuse.Adapters.Order(StringComparer.Ordinal)))
                throw new ArgumentException($"{candidate}: fusion '{fuse.Fusion}' was made for ({string.Join(", ", config.Adapters)})");
        }
    }

    /// <summary>Activates fusion <paramref name="name"/> over the adapters it was made for.</summary>
    public void ActivateFusion(string name)
    {
        if (!set.Fusions.TryGetValue(name, out var config))
            throw new ArgumentException($"no fusion named '{name}' (loaded: {string.Join(", ", set.Fusions.Keys)})");
        Composition = new Fuse(name, config.Adapters);
    }

    /// <summary>
    /// Makes <paramref name="name"/> what the forward pass runs: a fusion with the adapters it fuses, the top of the
    /// current <see cref="Stack"/> as it is, or else the adapter alone.
    /// </summary>
    public void Activate(string name)
    {
        if (set.Fusions.ContainsKey(name)) ActivateFusion(name);
        else if (Composition is not Stack { Head: var last } || last != name) Active = name;
    }

    /// <summary>
    /// Adds adapter <paramref name="name"/> as its method's injector places it (see <see cref="MethodRegistry"/>),
    /// with its head. Nothing trains yet; see <see cref="TrainOnly"/>.
    /// </summary>
    public void AddAdapter(string name, MethodConfig config, HeadConfig head)
    {
        set.Add(name, config, head);
        routing.Invalidate();
    }

    /// <summary>
    /// Adds AdapterFusion <paramref name="name"/> over the loaded adapters <paramref name="config"/> names (see
    /// <see cref="AdapterSet.AddFusion"/>). Train it with <see cref="TrainOnly"/>, which freezes the adapters.
    /// </summary>
    public void AddFusion(string name, FusionConfig config, HeadConfig head) => set.AddFusion(name, config, head);

    /// <summary>Removes an adapter or a fusion, and its head; the base and the others are untouched.</summary>
    public void RemoveAdapter(string name)
    {
        if (merged == name) Unmerge(name);
        set.Remove(name);
        if (active == name) active = null;
        if (composition is { } c && (c.Adapters.Contains(name) || (c as Fuse)?.Fusion == name)) composition = null;
        routing.Invalidate();
    }

    /// <summary>
    /// Freezes every parameter, then unfreezes what <paramref name="name"/> owns (its record): its modules and head,
    /// base layers for methods that fine-tune them; for a fusion, its fusion layers and head (the fused adapters stay
    /// frozen). Activates it; an active <see cref="Stack"/> that ends in <paramref name="name"/> stays active (training
    /// an adapter on top of frozen ones).
    /// </summary>
    public IReadOnlyList<TrainedParameter> TrainOnly(string name)
    {
        var record = set.Record(name);
        RequireUnmerged("train");
        Activate(name);
        routing.Invalidate(); // training changes the weights the stacks copied
        FreezeAll();
        return Unfreeze(record);
    }

    /// <summary>
    /// Multi-task training: freezes every parameter, then unfreezes what each of <paramref name="names"/> owns,
    /// returned per adapter. Sets no active adapter, except that one name is <see cref="TrainOnly"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A name is unknown or repeated, or (with several) one changes base weights.</exception>
    public Dictionary<string, IReadOnlyList<TrainedParameter>> TrainEach(IReadOnlyList<string> names)
    {
        if (names.Count == 1) return new() { [names[0]] = TrainOnly(names[0]) };
        foreach (var name in names)
        {
            if (!set.Adapters.TryGetValue(name, out var config))
                throw new ArgumentException($"no adapter named '{name}' (loaded: {string.Join(", ", set.Adapters.Keys)})");
            if (config.ModifiesBase)
                throw new ArgumentException($"adapter '{name}' ({config.Method}) changes base weights, which the other adapters share; it must train alone");
        }
        if (names.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"adapter '{twice.Key}' is listed twice");
        RequireUnmerged("train");
        routing.Invalidate();
        FreezeAll();
        return names.ToDictionary(n => n, n => Unfreeze(set.Record(n)), StringComparer.Ordinal);
    }

    static IReadOnlyList<TrainedParameter> Unfreeze(AdapterRecord record)
    {
        var trained = new List<TrainedParameter>();
        foreach (var tensor in record.Tensors)
        {
            var parameter = tensor.Parameter;
            parameter.requires_grad = true;
            trained.Add(new TrainedParameter(tensor.Key, parameter, tensor.Decay, tensor.OfBase));
        }
        return trained;
    }

    /// <summary>
    /// Ready for inference: everything frozen, on <paramref name="device"/>, products in <paramref name="matmulType"/>
    /// (frozen base projections cast once), dropout off. Idempotent, so it can follow each adapter load.
    /// </summary>
    public void PrepareForInference(Device device, ScalarType matmulType)
    {
        FreezeAll();
        this.to(device); // a no-op for tensors already there: only new adapters move
        UseMatmulType(matmulType);
        eval();
    }

    /// <summary>
    /// Products in <paramref name="type"/>: the base's frozen projections are stored in it once (see
    /// <see cref="BertModel.UseMatmulType"/>). What adapters put into the model sits in adapter containers, which that
    /// walk never enters, so their modules keep their float32 masters; base layers an adapter fine-tunes stay float32
    /// while they train (and are cast with the rest once frozen for inference).
    /// </summary>
    public void UseMatmulType(ScalarType type)
    {
        bert.UseMatmulType(type);
        routing.Invalidate();
    }

    /// <summary>Freezes every parameter (serving).</summary>
    public void FreezeAll()
    {
        foreach (var parameter in parameters()) parameter.requires_grad = false;
    }

    /// <summary>A pass that runs the active adapter (or composition); dispose it when the pass is over.</summary>
    public ForwardPass NewPass()
    {
        if (merged is not null && (active != merged || composition is not null))
            throw new InvalidOperationException($"adapter '{merged}' is merged into the base weights: only it can run until Unmerge(\"{merged}\")");
        return new ForwardPass(bert.MatmulType, bert.Kernels) { Adapter = active, Composition = composition };
    }

    /// <summary>(B, labels) logits or (B, 1) scores from the active adapter's (or composition's) head.</summary>
    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) =>
        Logits(inputIds, attentionMask, tokenTypeIds);

    /// <summary><see cref="forward"/>, with a null mask meaning "no padding in this batch".</summary>
    public Tensor Logits(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds)
    {
        using var pass = NewPass();
        return Logits(inputIds, attentionMask, tokenTypeIds, pass);
    }

    /// <summary><see cref="Logits(Tensor, Tensor?, Tensor)"/> in <paramref name="pass"/> (which then holds any auxiliary losses).</summary>
    public Tensor Logits(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds, ForwardPass pass)
    {
        var name = pass.Composition?.Head ?? pass.Adapter ?? throw new InvalidOperationException("no active adapter: set Active or Composition first");
        using var scope = NewDisposeScope();
        var hidden = bert.Encode(inputIds, attentionMask, tokenTypeIds, pass);
        return heads[name].call(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>The last hidden state (B, T, d) through the active adapter (or composition, or the bare base).</summary>
    public Tensor Encode(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds)
    {
        using var pass = NewPass();
        return bert.Encode(inputIds, attentionMask, tokenTypeIds, pass);
    }

    /// <summary>
    /// The last hidden state (B, T, d) of a mixed batch: row i runs through adapter
    /// <paramref name="adapterPerRow"/>[i] (null: the bare base model), all rows in one pass. For inference:
    /// the adapters are used through copies stacked per site (see <see cref="InvalidateRowStacks"/>).
    /// </summary>
    /// <param name="adapterPerRow">One name or null per row of <paramref name="inputIds"/>.</param>
    /// <exception cref="ArgumentException">A name is not loaded, or names an adapter that cannot join a mixed batch.</exception>
    public Tensor EncodePerRow(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds, string?[] adapterPerRow)
    {
        using var scope = NewDisposeScope();
        return EncodeRows(inputIds, attentionMask, tokenTypeIds, SelectRows(adapterPerRow, inputIds)).MoveToOuterDisposeScope();
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
        var result = routing.Logits(hidden, rows, adapterPerRow);
        return result with { Logits = result.Logits.MoveToOuterDisposeScope() };
    }

    RowSelection SelectRows(string?[] adapterPerRow, Tensor inputIds)
    {
        RequireUnmerged("run a mixed batch");
        return routing.Select(adapterPerRow, inputIds);
    }

    Tensor EncodeRows(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds, RowSelection rows)
    {
        using var pass = new ForwardPass(bert.MatmulType, bert.Kernels) { Rows = rows };
        return bert.Encode(inputIds, attentionMask, tokenTypeIds, pass);
    }

    /// <summary>
    /// Drops the per-site stacks of adapter weights that mixed batches use; the next mixed batch rebuilds them.
    /// Adding, removing, loading and training adapters do this; call it after changing adapter weights any
    /// other way. (Moving the model or changing its matmul type is noticed without it.)
    /// </summary>
    public void InvalidateRowStacks() => routing.Invalidate();

    /// <summary>
    /// Folds adapter <paramref name="name"/> into the base weights for inference (a method that can be: LoRA's
    /// <c>W + B A · α/r</c>), so its passes cost what the bare base's do. Until <see cref="Unmerge"/>, only it can run.
    /// </summary>
    public void Merge(string name)
    {
        if (!set.Adapters.TryGetValue(name, out var config))
            throw new ArgumentException($"no adapter named '{name}' (loaded: {string.Join(", ", set.Adapters.Keys)})");
        if (!config.Mergeable)
            throw new ArgumentException($"adapter '{name}' ({config.Method}) cannot be merged into the base weights: it is not a linear change of them");
        if (merged is not null) throw new ArgumentException($"adapter '{merged}' is merged already: unmerge it first");
        FoldInto(name, sign: 1);
        merged = name;
        Active = name;
    }

    /// <summary>Takes a merged adapter back out of the base weights (up to rounding).</summary>
    public void Unmerge(string name)
    {
        if (merged != name) throw new ArgumentException($"adapter '{name}' is not merged");
        FoldInto(name, sign: -1);
        merged = null;
    }

    /// <summary>
    /// Adds (<paramref name="sign"/> 1) or subtracts the adapter's low-rank updates to the weights of the projections it
    /// sits in, all computed before any weight changes. Only on float32 weights: folded into bfloat16 ones, taking the
    /// update out again would not give the base back.
    /// </summary>
    void FoldInto(string name, int sign)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var updates = new List<(ProjectionSlot Slot, Tensor Update)>();
        foreach (var slot in bert.ProjectionSlots())
        {
            if (!slot.Site.TryGet(name, out var adapter)) continue;
            if (slot.Linear.weight!.dtype != ScalarType.Float32)
                throw new InvalidOperationException(
                    $"adapter '{name}': {slot.FileKey} is stored in {slot.Linear.weight.dtype}; merge before the base is cast (PrepareForInference) and unmerge before it is");
            var (down, up) = adapter.LowRank ?? throw new InvalidOperationException($"adapter '{name}' has no low-rank form at {slot.FileKey}");
            updates.Add((slot, up.matmul(down).to(slot.Linear.weight.device))); // (out, in)
        }
        foreach (var (slot, update) in updates)
        {
            slot.Linear.weight!.add_(update, alpha: sign);
            slot.Site.SetMerged(name, sign > 0);
        }
        routing.Invalidate();
    }

    void RequireUnmerged(string what)
    {
        if (merged is not null)
            throw new InvalidOperationException($"adapter '{merged}' is merged into the base weights: Unmerge(\"{merged}\") before you {what}");
    }

    /// <summary>
    /// What the modules of <paramref name="name"/> gathered since <see cref="ResetStatistics"/> (a dynamic adapter's
    /// chosen sizes, say): each figure per site, under <c>figure/site</c>, and its mean over the sites, under its name.
    /// Empty for adapters that gather nothing.
    /// </summary>
    public IReadOnlyDictionary<string, double> Statistics(string name)
    {
        var result = new SortedDictionary<string, double>(StringComparer.Ordinal);
        var perFigure = new Dictionary<string, List<double>>(StringComparer.Ordinal);
        foreach (var (_, module, fileKey) in set.Record(name).Placements)
        {
            if (module is not IAdapterStatistics statistics) continue;
            foreach (var (figure, value) in statistics.ReadStatistics())
            {
                result[$"{figure}/{fileKey}"] = value;
                if (!perFigure.TryGetValue(figure, out var values)) perFigure[figure] = values = [];
                values.Add(value);
            }
        }
        foreach (var (figure, values) in perFigure) result[figure] = values.Average();
        return result;
    }

    /// <summary>Forgets what the modules of <paramref name="name"/> gathered.</summary>
    public void ResetStatistics(string name)
    {
        foreach (var (_, module, _) in set.Record(name).Placements)
            (module as IAdapterStatistics)?.ResetStatistics();
    }

    /// <summary>The tensors adapter (or fusion) <paramref name="name"/> owns, by file key (see <see cref="AdapterState"/>).</summary>
    public Dictionary<string, TensorData> AdapterTensors(string name) => AdapterState.Tensors(set.Record(name));

    /// <summary>Adds adapter <paramref name="name"/> and fills it from tensors saved by <see cref="AdapterTensors"/>.</summary>
    public void LoadAdapter(string name, MethodConfig config, HeadConfig head, IReadOnlyDictionary<string, TensorData> tensors, string source)
    {
        AddAdapter(name, config, head);
        Filled(name, tensors, source);
    }

    /// <summary>
    /// Adds fusion <paramref name="name"/> over adapters already loaded and fills it from tensors saved by
    /// <see cref="AdapterTensors"/>.
    /// </summary>
    public void LoadFusion(string name, FusionConfig config, HeadConfig head, IReadOnlyDictionary<string, TensorData> tensors, string source)
    {
        AddFusion(name, config, head);
        Filled(name, tensors, source);
    }

    void Filled(string name, IReadOnlyDictionary<string, TensorData> tensors, string source)
    {
        try
        {
            AdapterState.Fill(set.Record(name), tensors, source);
            routing.Invalidate();
        }
        catch
        {
            RemoveAdapter(name);
            throw;
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) routing.Dispose();
        base.Dispose(disposing);
    }
}
