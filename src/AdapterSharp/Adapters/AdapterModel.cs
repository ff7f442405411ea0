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
    public PredictionHead Head(string name) => heads[name];

    /// <summary>The active adapter (and head), or null for none.</summary>
    public string? Active
    {
        get => bert.Context.ActiveAdapter;
        set
        {
            if (value is not null && !configs.ContainsKey(value))
                throw new ArgumentException($"no adapter named '{value}' (loaded: {string.Join(", ", configs.Keys)})");
            bert.Context.ActiveAdapter = value;
        }
    }

    /// <summary>
    /// Adds adapter <paramref name="name"/>: its bottlenecks and per-task LayerNorms at the sites its config
    /// names, and its head. Returns nothing trained yet; see <see cref="TrainOnly"/>.
    /// </summary>
    public void AddAdapter(string name, AdapterConfig config, HeadConfig head)
    {
        ValidateName(name);
        if (configs.ContainsKey(name)) throw new ArgumentException($"an adapter named '{name}' is already loaded");
        config.Validate(Config.NumHiddenLayers);
        if (config.ModifiesBase && configs.Values.Any(c => c.ModifiesBase))
            throw new ArgumentException($"adapter '{name}' ({config.Method}) changes base weights, and so does one already loaded");
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
        configs[name] = config;

        void AddAt(AdapterSite site, LayerNorm layerNorm, bool bottleneck)
        {
            if (bottleneck || config.TrainLayerNorms)
                site.Add(name, new Adapter(hidden, config, bottleneck, config.TrainLayerNorms ? layerNorm : null, bert.Context));
        }
    }

    /// <summary>Removes an adapter and its head; the base and the other adapters are untouched.</summary>
    public void RemoveAdapter(string name)
    {
        if (!configs.Remove(name)) throw new ArgumentException($"no adapter named '{name}'");
        foreach (var site in Sites()) site.Remove(name);
        heads.Remove(name);
        if (Active == name) Active = null;
    }

    IEnumerable<AdapterSite> Sites()
    {
        yield return bert.Embeddings.Adapters;
        foreach (var layer in bert.Encoder.Layers)
        {
            yield return layer.Attention.Output.Adapters;
            yield return layer.Output.Adapters;
        }
    }

    /// <summary>
    /// Freezes every parameter, then unfreezes what method <paramref name="name"/> trains: its adapters,
    /// LayerNorm copies and head, plus base layers for the full and top-k baselines. Activates it.
    /// </summary>
    public List<(string Name, Parameter Parameter)> TrainOnly(string name)
    {
        Active = name;
        var trained = new List<(string, Parameter)>();
        foreach (var (path, parameter) in named_parameters())
        {
            bool train = IsTrainedBy(name, path);
            parameter.requires_grad = train;
            if (train) trained.Add((path, parameter));
        }
        return trained;
    }

    /// <summary>Freezes every parameter (serving).</summary>
    public void FreezeAll()
    {
        foreach (var parameter in parameters()) parameter.requires_grad = false;
    }

    /// <summary>Whether the tensor at <paramref name="path"/> belongs to (is trained by) adapter <paramref name="name"/>.</summary>
    public bool IsTrainedBy(string name, string path)
    {
        var config = configs[name];
        if (path.StartsWith($"heads.{name}.", StringComparison.Ordinal)) return true;
        if (path.Contains($".adapters.{name}.", StringComparison.Ordinal)) return true;
        if (path.StartsWith("heads.", StringComparison.Ordinal) || path.Contains(".adapters.", StringComparison.Ordinal)) return false;
        if (path.StartsWith("bert.pooler.", StringComparison.Ordinal)) return false; // unused by the head
        if (config.TrainAllBase) return true;
        if (config.TrainTopLayers > 0)
        {
            int first = Config.NumHiddenLayers - config.TrainTopLayers;
            return Enumerable.Range(first, config.TrainTopLayers)
                .Any(i => path.StartsWith($"bert.encoder.layer.{i}.", StringComparison.Ordinal));
        }
        return false;
    }

    /// <summary>(B, labels) logits or (B, 1) scores from the active adapter's head.</summary>
    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) =>
        Logits(inputIds, attentionMask, tokenTypeIds);

    /// <summary><see cref="forward"/>, with a null mask meaning "no padding in this batch".</summary>
    public Tensor Logits(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds)
    {
        var name = Active ?? throw new InvalidOperationException("no active adapter: set Active first");
        using var scope = NewDisposeScope();
        var hidden = bert.Encode(inputIds, attentionMask, tokenTypeIds);
        return heads[name].call(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The tensors that make up adapter <paramref name="name"/>, under file names that do not depend on it:
    /// <c>.adapters.&lt;name&gt;.</c> becomes <c>.adapter.</c>, <c>heads.&lt;name&gt;.</c> becomes <c>head.</c>,
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
        return key.Replace($".adapters.{name}.", ".adapter.", StringComparison.Ordinal);
    }

    static void ValidateName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            throw new ArgumentException($"adapter name '{name}' must be 1-64 letters, digits, '-' or '_'");
    }
}
