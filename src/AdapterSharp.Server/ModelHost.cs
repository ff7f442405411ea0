using System.Collections.Immutable;
using System.Text.Json.Serialization;
using AdapterSharp.Adapters;
using AdapterSharp.Checkpoints;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using AdapterSharp.Text;
using Microsoft.AspNetCore.Http;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Server;

/// <summary>What <c>GET /v1/adapters</c> tells about one loaded adapter.</summary>
public sealed record AdapterInfo
{
    public required string Name { get; init; }
    public required string Method { get; init; }
    public string? Task { get; init; }
    /// <summary>"classification" or "regression".</summary>
    public required string Kind { get; init; }
    public string[]? Labels { get; init; }
    public long TrainableParameters { get; init; }
    public required string BaseModel { get; init; }
    public int MaxLength { get; init; }
    /// <summary>For an AdapterFusion: the adapters it fuses, loaded with it and only for it.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string[]? Fuses { get; init; }
    /// <summary>For a stacked adapter: the adapters below it, bottom first, loaded with it and only for it.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string[]? StackedOn { get; init; }
    /// <summary>Whether it combines several adapters in every row (a stack or a fusion).</summary>
    [JsonIgnore] public bool Composed => Fuses is not null || StackedOn is not null;
    /// <summary>Whether its method can share a mixed batch with other adapters' rows (one pass, each row its own adapter).</summary>
    [JsonIgnore] public bool RowRoutable { get; init; } = true;
    /// <summary>Whether its rows need a pass of their own: it is composed, or its method has no per-row form.</summary>
    [JsonIgnore] public bool RunsApart => Composed || !RowRoutable;
    [JsonIgnore] public HeadConfig Head { get; init; } = new();
}

/// <summary>
/// The frozen base, loaded once, and the adapters on it. Adapters are added and removed only by the inference
/// worker, between batches (<see cref="Load"/>, <see cref="Unload"/>), or before it starts; other threads read
/// <see cref="Adapters"/>, a snapshot replaced as a whole after each change.
/// </summary>
public sealed class ModelHost : IDisposable
{
    volatile ImmutableDictionary<string, AdapterInfo> adapters = ImmutableDictionary.Create<string, AdapterInfo>(StringComparer.Ordinal);
    readonly ScalarType matmulType;

    ModelHost(AdapterModel model, BertTokenizer tokenizer, BaseModelIdentity identity, Device device, ScalarType matmulType)
    {
        Model = model;
        Tokenizer = tokenizer;
        Identity = identity;
        Device = device;
        this.matmulType = matmulType;
    }

    public AdapterModel Model { get; }
    public BertTokenizer Tokenizer { get; }
    public BaseModelIdentity Identity { get; }
    public Device Device { get; }
    public IReadOnlyDictionary<string, AdapterInfo> Adapters => adapters;

    /// <summary>The base model <paramref name="model"/> (see <see cref="Pretrained.Load"/>), frozen, on <paramref name="device"/>, in eval mode.</summary>
    public static ModelHost Open(string model, Device device, string precision = "auto", string? vocab = null, Action<string>? log = null) =>
        Open(Pretrained.Load(model, vocab, log), device, precision);

    /// <summary>A host for an encoder already read from disk.</summary>
    public static ModelHost Open(PretrainedEncoder encoder, Device device, string precision = "auto")
    {
        var adapterModel = AdapterModel.FromPretrained(encoder);
        var host = new ModelHost(adapterModel, encoder.Tokenizer, BaseModelIdentity.Of(encoder), device, Devices.MatmulType(precision, device));
        host.Prepare();
        return host;
    }

    void Prepare() => Model.PrepareForInference(Device, matmulType);

    /// <summary>
    /// Loads the adapter folder <paramref name="dir"/> under <paramref name="name"/> (default: its saved name).
    /// 409 when the name is taken; the loader's <see cref="ModelFormatException"/> for a bad folder. A stacked
    /// adapter (<c>train --stack</c>) loads with the adapters it runs on, a fusion folder (<c>fusion_config.json</c>)
    /// with the adapters it fuses: under their saved names, for it alone, found through
    /// <paramref name="findReferenced"/> (default: where it records them).
    /// </summary>
    public AdapterInfo Load(string dir, string? name = null, Func<string, AdapterReference, string>? findReferenced = null)
    {
        findReferenced ??= (from, reference) => reference.Find(from, "refers to", "it");
        if (FusionFiles.IsFusionFolder(dir)) return LoadFusion(dir, name, findReferenced);
        var manifest = AdapterFiles.ReadManifest(dir);
        name ??= manifest.Name;
        RequireFree(name);
        // Such an adapter would change what every other adapter computes.
        if (manifest.Config.ModifiesBase)
            throw new ModelFormatException($"{dir}: a {manifest.Config.Method} adapter changes the shared base weights and cannot be served beside others");
        var lower = manifest.StackedOn ?? [];
        Loading(dir, name, lower, findReferenced, () => AdapterFiles.Load(dir, Model, Identity, name));
        long trainable = Model.Record(name).Tensors.Sum(t => t.Parameter.numel());
        return Serve(Describe(name, manifest.Config.Method, manifest.Task, manifest.Head, manifest.MaxLength, trainable) with
        {
            StackedOn = lower.Length > 0 ? [.. lower.Select(a => a.Name)] : null,
            RowRoutable = manifest.Config.RowRoutable,
        });
    }

    /// <summary>An AdapterFusion and the adapters it fuses.</summary>
    AdapterInfo LoadFusion(string dir, string? name, Func<string, AdapterReference, string> findReferenced)
    {
        var manifest = FusionFiles.ReadManifest(dir);
        if (name is not null && name != manifest.Name)
            throw new ApiException(StatusCodes.Status400BadRequest, $"name: a fusion is served under its saved name '{manifest.Name}', not '{name}'");
        name = manifest.Name;
        RequireFree(name);
        Loading(dir, name, manifest.Adapters, findReferenced, () => FusionFiles.Load(dir, Model, Identity, loadAdapters: false));
        return Serve(Describe(name, "fusion", manifest.Task, manifest.Head, manifest.MaxLength, manifest.TrainableParameters) with
        {
            Fuses = [.. manifest.Adapters.Select(a => a.Name)],
        });
    }

    AdapterInfo Describe(string name, string method, string? task, HeadConfig head, int maxLength, long trainableParameters) => new()
    {
        Name = name,
        Method = method,
        Task = task,
        Kind = head.Kind,
        Labels = head.IsRegression ? null : head.Labels,
        TrainableParameters = trainableParameters,
        BaseModel = Identity.Id,
        MaxLength = maxLength,
        Head = head,
    };

    AdapterInfo Serve(AdapterInfo info)
    {
        adapters = adapters.Add(info.Name, info);
        return info;
    }

    void RequireFree(string name)
    {
        if (adapters.ContainsKey(name) || Model.Adapters.ContainsKey(name) || Model.Fusions.ContainsKey(name))
            throw new ApiException(StatusCodes.Status409Conflict, $"an adapter named '{name}' is already loaded");
    }

    /// <summary>
    /// Loads the adapters <paramref name="name"/> refers to, then <paramref name="loadItself"/>, all or nothing. The
    /// referenced adapters are its alone: a name that is taken already is 409, so that no served adapter is shared
    /// with, or shadowed by, one of them. All are found before any loads.
    /// </summary>
    void Loading(string dir, string name, AdapterReference[] references, Func<string, AdapterReference, string> findReferenced, Action loadItself)
    {
        foreach (var reference in references)
            if (reference.Name == name || Model.Adapters.ContainsKey(reference.Name) || Model.Fusions.ContainsKey(reference.Name))
                throw new ApiException(StatusCodes.Status409Conflict,
                    $"'{name}' loads its adapter '{reference.Name}', and an adapter of that name is loaded already: unload it first");
        var folders = references.Select(reference => findReferenced(dir, reference)).ToArray();
        // Checked before anything loads: a full or top-k adapter would write the shared base weights as it loads,
        // which no rollback undoes.
        foreach (var folder in folders)
            if (AdapterFiles.ReadManifest(folder).Config is { ModifiesBase: true } config)
                throw new ModelFormatException($"{folder}: a {config.Method} adapter changes the shared base weights and cannot be loaded for '{name}'");
        var loaded = new List<string>();
        try
        {
            for (int i = 0; i < folders.Length; i++)
            {
                AdapterFiles.Load(folders[i], Model, Identity, references[i].Name);
                loaded.Add(references[i].Name);
            }
            loadItself();
            loaded.Insert(0, name);
            Model.Active = null;
            Prepare();
        }
        catch
        {
            foreach (var added in loaded) Model.RemoveAdapter(added); // itself first, then what it refers to
            throw;
        }
    }

    /// <summary>Removes adapter <paramref name="name"/>, with the adapters it refers to; 404 when none is loaded under that name.</summary>
    public void Unload(string name)
    {
        if (!adapters.TryGetValue(name, out var info)) throw new ApiException(StatusCodes.Status404NotFound, $"no adapter named '{name}'");
        Model.RemoveAdapter(name);
        foreach (var referenced in info.Fuses ?? info.StackedOn ?? []) Model.RemoveAdapter(referenced);
        adapters = adapters.Remove(name);
    }

    /// <summary>Makes <paramref name="name"/> (an adapter, a stack or a fusion) the one the next forward pass uses.</summary>
    public void Activate(string name)
    {
        var info = adapters[name];
        if (info.Fuses is not null) Model.ActivateFusion(name);
        else if (info.StackedOn is { } lower) Model.Composition = new Stack([.. lower, name]);
        else Model.Active = name;
    }

    public void Dispose() => Model.Dispose();
}
