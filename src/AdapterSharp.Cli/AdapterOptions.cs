using System.CommandLine;
using AdapterSharp.Adapters;
using AdapterSharp.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Cli;

static class AdapterOptions
{
    public static Option<string> Adapter() => new("--adapter", "-a")
    {
        Description = "Adapter folder (adapter_config.json + adapter_model.safetensors), e.g. runs/<run>/adapter.",
        Required = true,
    };

    public static Option<string?> BaseModel() => new("--model", "-m")
    {
        Description = "Base model (default: the one the adapter records).",
    };
}

/// <summary>A base model with one adapter loaded from its folder and made active.</summary>
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

    public static LoadedAdapter Open(string adapterDir, string? baseModel, string? vocab, Device device, string precision = "auto")
    {
        var manifest = AdapterFiles.ReadManifest(adapterDir);
        var encoder = Pretrained.Load(baseModel ?? manifest.BaseModel.Id, vocab, Run.StderrLog);
        var model = AdapterModel.FromPretrained(encoder);
        AdapterFiles.Load(adapterDir, model, BaseModelIdentity.Of(encoder));
        model.Active = manifest.Name;
        model.PrepareForInference(device, Devices.MatmulType(precision, device));
        return new LoadedAdapter(encoder, model, manifest, device);
    }

    public void Dispose() => Model.Dispose();
}
