using System.CommandLine;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Cli;

/// <summary>
/// What opens an adapter (or fusion) folder for inference, shared by <c>eval</c> and <c>predict</c>: <c>--adapter</c>,
/// <c>--model</c>, <c>--vocab</c>, <c>--device</c>, <c>--precision</c>, <c>--batch-size</c> and <c>--merge</c>.
/// </summary>
sealed class AdapterOpenOptions(int defaultBatch)
{
    readonly Option<string> adapter = AdapterOptions.Adapter();
    readonly Option<string?> model = AdapterOptions.BaseModel();
    readonly Option<string?> vocab = CommonOptions.Vocab();
    readonly Option<string> device = CommonOptions.Device();
    readonly Option<string> precision = CommonOptions.Precision();
    readonly Option<int> batch = new("--batch-size") { DefaultValueFactory = _ => defaultBatch };
    readonly Option<bool> merge = new("--merge")
    {
        Description = "Fold the adapter into the base weights first, where its method allows it (lora): a pass then costs what the bare base's does.",
    };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { adapter, model, vocab, device, precision, batch, merge }) command.Options.Add(option);
    }

    /// <summary>The inference batch size, checked.</summary>
    public int BatchSize(ParseResult parse)
    {
        int size = parse.GetValue(batch);
        return size >= 1 ? size : throw new UsageException($"--batch-size must be at least 1, got {size}");
    }

    public LoadedAdapter Open(ParseResult parse) =>
        LoadedAdapter.Open(parse.GetValue(adapter)!, parse.GetValue(model), parse.GetValue(vocab),
            Devices.Resolve(parse.GetValue(device)!, Run.StderrLog), parse.GetValue(precision)!, parse.GetValue(merge));
}

static class AdapterOptions
{
    public static Option<string> Adapter() => new("--adapter", "-a")
    {
        Description = "Adapter folder (adapter_config.json + adapter_model.safetensors), e.g. runs/<run>/adapter; or a fusion folder (fusion_config.json), whose adapters load from the folders it records.",
        Required = true,
    };

    public static Option<string?> BaseModel() => new("--model", "-m")
    {
        Description = "Base model (default: the one the adapter records).",
    };
}

/// <summary>A base model with one adapter (or one fusion and the adapters it fuses) loaded from its folder and made active.</summary>
sealed class LoadedAdapter : IDisposable
{
    LoadedAdapter(PretrainedEncoder encoder, AdapterModel model, AdapterManifest manifest, Device device)
    {
        Encoder = encoder;
        Model = model;
        Manifest = manifest;
        Device = device;
    }

    public PretrainedEncoder Encoder { get; }
    public AdapterModel Model { get; }
    public AdapterManifest Manifest { get; }
    public Device Device { get; }

    public static LoadedAdapter Open(string adapterDir, string? baseModel, string? vocab, Device device, string precision = "auto", bool merge = false)
    {
        if (FusionFiles.IsFusionFolder(adapterDir))
            return merge ? throw new UsageException("--merge: a fusion cannot be merged into the base weights") : OpenFusion(adapterDir, baseModel, vocab, device, precision);
        var manifest = AdapterFiles.ReadManifest(adapterDir);
        if (merge && manifest.StackedOn is { Length: > 0 }) throw new UsageException("--merge: a stacked adapter cannot be merged into the base weights");
        var encoder = Pretrained.Load(baseModel ?? manifest.BaseModel.Id, vocab, Run.StderrLog);
        var model = AdapterModel.FromPretrained(encoder);
        try
        {
            var identity = BaseModelIdentity.Of(encoder);
            // A stacked adapter runs on top of the adapters it was trained on: load them first, checked by hash.
            foreach (var lower in manifest.StackedOn ?? [])
                AdapterFiles.Load(lower.Find(adapterDir, "is stacked on", "this adapter"), model, identity, lower.Name);
            AdapterFiles.Load(adapterDir, model, identity);
            if (manifest.StackedOn is { Length: > 0 } stacked) model.Composition = new Stack([.. stacked.Select(a => a.Name), manifest.Name]);
            else model.Active = manifest.Name;
            if (merge) model.Merge(manifest.Name); // before the base weights are cast to the matmul type
            model.PrepareForInference(device, Devices.MatmulType(precision, device));
            return new LoadedAdapter(encoder, model, manifest, device);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    static LoadedAdapter OpenFusion(string fusionDir, string? baseModel, string? vocab, Device device, string precision)
    {
        var fusion = FusionFiles.ReadManifest(fusionDir);
        var encoder = Pretrained.Load(baseModel ?? fusion.BaseModel.Id, vocab, Run.StderrLog);
        var model = AdapterModel.FromPretrained(encoder);
        FusionFiles.Load(fusionDir, model, BaseModelIdentity.Of(encoder));
        model.PrepareForInference(device, Devices.MatmulType(precision, device));
        // What eval and predict read of a manifest: name, task, head, length, base.
        var manifest = new AdapterManifest
        {
            Name = fusion.Name,
            Config = BaselineConfig.Head with { Method = "fusion" },
            Head = fusion.Head,
            BaseModel = fusion.BaseModel,
            Task = fusion.Task,
            MaxLength = fusion.MaxLength,
            Metrics = fusion.Metrics,
            TrainableParameters = fusion.TrainableParameters,
        };
        return new LoadedAdapter(encoder, model, manifest, device);
    }

    public void Dispose() => Model.Dispose();
}
