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
    /// 409 when the name is taken; the loader's <see cref="ModelFormatException"/> for a bad folder.
    /// </summary>
    public AdapterInfo Load(string dir, string? name = null)
    {
        var manifest = AdapterFiles.ReadManifest(dir);
        name ??= manifest.Name;
        if (adapters.ContainsKey(name))
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

    /// <summary>Removes adapter <paramref name="name"/>; 404 when none is loaded under that name.</summary>
    public void Unload(string name)
    {
        if (!adapters.ContainsKey(name)) throw new ApiException(StatusCodes.Status404NotFound, $"no adapter named '{name}'");
        adapters = adapters.Remove(name);
        Model.RemoveAdapter(name);
    }

    public void Dispose() => Model.Dispose();
}
