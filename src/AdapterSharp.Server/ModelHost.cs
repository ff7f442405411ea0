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
    /// 409 when the name is taken; the loader's <see cref="ModelFormatException"/> for a bad folder. A fusion
    /// folder (<c>fusion_config.json</c>) loads with the adapters it fuses, found through
    /// <paramref name="findFused"/> (default: where the fusion records them).
    /// </summary>
    public AdapterInfo Load(string dir, string? name = null, Func<string, AdapterReference, string>? findFused = null)
    {
        if (FusionFiles.IsFusionFolder(dir)) return LoadFusion(dir, name, findFused ?? ((from, reference) => reference.Find(from, "fuses", "this fusion")));
        var manifest = AdapterFiles.ReadManifest(dir);
        name ??= manifest.Name;
        if (adapters.ContainsKey(name) || Model.Adapters.ContainsKey(name))
            throw new ApiException(StatusCodes.Status409Conflict, $"an adapter named '{name}' is already loaded");
        if (manifest.StackedOn is { Length: > 0 } stacked)
            throw new ModelFormatException($"{dir}: this adapter runs on top of '{stacked[^1].Name}' (train --stack); the server runs single adapters only");
        // Such an adapter would change what every other adapter computes.
        if (manifest.Config.ModifiesBase)
            throw new ModelFormatException($"{dir}: a {manifest.Config.Method} adapter changes the shared base weights and cannot be served beside others");
        AdapterFiles.Load(dir, Model, Identity, name);
        Prepare();
        var info = new AdapterInfo
        {
            Name = name,
            Method = manifest.Config.Method,
            Task = manifest.Task,
            Kind = manifest.Head.Kind,
            Labels = manifest.Head.IsRegression ? null : manifest.Head.Labels,
            TrainableParameters = Model.named_parameters().Where(p => Model.IsTrainedBy(name, p.name)).Sum(p => p.parameter.numel()),
            BaseModel = Identity.Id,
            MaxLength = manifest.MaxLength,
            Head = manifest.Head,
        };
        adapters = adapters.Add(name, info);
        return info;
    }

    /// <summary>
    /// An AdapterFusion and the adapters it fuses, which load under their saved names for this fusion alone: a name
    /// that is taken already is 409, so that no served adapter is shared with, or shadowed by, a fusion's.
    /// </summary>
    AdapterInfo LoadFusion(string dir, string? name, Func<string, AdapterReference, string> findFused)
    {
        var manifest = FusionFiles.ReadManifest(dir);
        if (name is not null && name != manifest.Name)
            throw new ApiException(StatusCodes.Status400BadRequest, $"name: a fusion is served under its saved name '{manifest.Name}', not '{name}'");
        name = manifest.Name;
        if (adapters.ContainsKey(name) || Model.Adapters.ContainsKey(name) || Model.Fusions.ContainsKey(name))
            throw new ApiException(StatusCodes.Status409Conflict, $"an adapter named '{name}' is already loaded");
        foreach (var fused in manifest.Adapters)
            if (Model.Adapters.ContainsKey(fused.Name) || Model.Fusions.ContainsKey(fused.Name))
                throw new ApiException(StatusCodes.Status409Conflict,
                    $"fusion '{name}' loads its adapter '{fused.Name}', and an adapter of that name is loaded already: unload it first");
        var folders = manifest.Adapters.Select(fused => findFused(dir, fused)).ToArray(); // all found before any loads
        var loaded = new List<string>();
        try
        {
            for (int i = 0; i < folders.Length; i++)
            {
                AdapterFiles.Load(folders[i], Model, Identity, manifest.Adapters[i].Name);
                loaded.Add(manifest.Adapters[i].Name);
            }
            FusionFiles.Load(dir, Model, Identity, loadAdapters: false);
            loaded.Insert(0, name);
            Model.Active = null;
            Prepare();
        }
        catch
        {
            foreach (var added in loaded) Model.RemoveAdapter(added); // the fusion first, then its adapters
            throw;
        }
        var info = new AdapterInfo
        {
            Name = name,
            Method = "fusion",
            Task = manifest.Task,
            Kind = manifest.Head.Kind,
            Labels = manifest.Head.IsRegression ? null : manifest.Head.Labels,
            TrainableParameters = manifest.TrainableParameters,
            BaseModel = Identity.Id,
            MaxLength = manifest.MaxLength,
            Fuses = manifest.Adapters.Select(a => a.Name).ToArray(),
            Head = manifest.Head,
        };
        adapters = adapters.Add(name, info);
        return info;
    }

    /// <summary>Removes adapter <paramref name="name"/> (a fusion with its adapters); 404 when none is loaded under that name.</summary>
    public void Unload(string name)
    {
        if (!adapters.TryGetValue(name, out var info)) throw new ApiException(StatusCodes.Status404NotFound, $"no adapter named '{name}'");
        adapters = adapters.Remove(name);
        Model.RemoveAdapter(name);
        foreach (var fused in info.Fuses ?? []) Model.RemoveAdapter(fused);
    }

    /// <summary>Makes <paramref name="name"/> (an adapter or a fusion) the one the next forward pass uses.</summary>
    public void Activate(string name)
    {
        if (adapters[name].Fuses is not null) Model.ActivateFusion(name);
        else Model.Active = name;
    }

    public void Dispose() => Model.Dispose();
}
