using System.Text.Json;
using System.Text.Json.Serialization;
using AdapterSharp.Adapters;
using AdapterSharp.Heads;
using AdapterSharp.Model;

namespace AdapterSharp.Checkpoints;

/// <summary>Everything <c>fusion_config.json</c> holds.</summary>
public sealed record FusionManifest
{
    public const string FormatName = "adaptersharp-fusion";

    [JsonPropertyName("format")] public string Format { get; init; } = FormatName;
    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = 1;
    [JsonPropertyName("name")] public string Name { get; init; } = "";
    [JsonPropertyName("adapters")] public AdapterReference[] Adapters { get; init; } = [];
    [JsonPropertyName("head")] public HeadConfig Head { get; init; } = new();
    [JsonPropertyName("base_model")] public BaseModelIdentity BaseModel { get; init; } = new();
    [JsonPropertyName("task")] public string? Task { get; init; }
    [JsonPropertyName("max_length")] public int MaxLength { get; init; } = 128;
    [JsonPropertyName("metrics")] public Dictionary<string, double>? Metrics { get; init; }
    [JsonPropertyName("trainable_parameters")] public long TrainableParameters { get; init; }

    /// <summary>SHA-256 of <c>fusion_model.safetensors</c> as saved (checked at load; absent in older folders).</summary>
    [JsonPropertyName("weights_sha256"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? WeightsSha256 { get; init; }

    /// <summary>SHA-256 of this file's content without this field (see <see cref="ConfigSeal"/>; absent in older folders).</summary>
    [JsonPropertyName(ConfigSeal.Field), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ConfigSha256 { get; init; }

    [JsonIgnore] public FusionConfig Config => new() { Adapters = Adapters.Select(a => a.Name).ToArray() };
}

/// <summary>
/// A fusion folder: <c>fusion_config.json</c> (which adapters it fuses, by name, folder and weights hash) +
/// <c>fusion_model.safetensors</c> (the fusion layers and the head only; the fused adapters stay in their own
/// folders). Written as a whole, like an adapter folder.
/// </summary>
public static class FusionFiles
{
    public const string ConfigFile = "fusion_config.json";
    public const string WeightsFile = "fusion_model.safetensors";

    static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true, AllowDuplicateProperties = false };

    public static bool IsFusionFolder(string dir) => File.Exists(Path.Combine(dir, ConfigFile));

    public static void Save(string dir, FusionManifest manifest, IReadOnlyDictionary<string, TensorData> tensors) =>
        AdapterFiles.WriteFolder(dir, ConfigFile, weightsSha256 =>
            {
                var withWeights = manifest with { WeightsSha256 = weightsSha256, ConfigSha256 = null };
                var sha = ConfigSeal.Sha256(JsonSerializer.Serialize(withWeights, JsonOptions));
                return JsonSerializer.Serialize(withWeights with { ConfigSha256 = sha }, JsonOptions);
            },
            WeightsFile, tensors, new Dictionary<string, string> { ["format"] = "pt", ["fusion"] = manifest.Name });

    public static FusionManifest ReadManifest(string dir)
    {
        var path = Path.Combine(dir, ConfigFile);
        var manifest = AdapterFiles.ReadJson<FusionManifest>(dir, ConfigFile, "fusion");
        if (manifest is null || manifest.Format != FusionManifest.FormatName)
            throw new ModelFormatException($"{path}: not an AdapterSharp fusion config (format '{manifest?.Format}')");
        if (manifest.FormatVersion != 1)
            throw new ModelFormatException($"{path}: fusion format version {manifest.FormatVersion} is not supported (expected 1)");
        if (manifest.Adapters is null || manifest.Adapters.Any(a => a is null || string.IsNullOrEmpty(a.Name)))
            throw new ModelFormatException($"{path}: missing or unnamed \"adapters\"");
        if (manifest.Head?.Labels is null) throw new ModelFormatException($"{path}: missing \"head\"");
        if (manifest.BaseModel is null) throw new ModelFormatException($"{path}: missing \"base_model\"");
        if (manifest.BaseModel.Id is null || manifest.BaseModel.WeightsSha256 is null)
            throw new ModelFormatException($"{path}: missing \"base_model.id\" or \"base_model.weights_sha256\"");
        AdapterReference.RequireComplete(manifest.Adapters, path, "adapters");
        if (string.IsNullOrEmpty(manifest.Name)) throw new ModelFormatException($"{path}: missing \"name\"");
        try
        {
            manifest.Config.Validate();
            manifest.Head.Validate();
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException($"{path}: {e.Message}");
        }
        return manifest;
    }

    /// <summary>
    /// Loads the fusion in <paramref name="dir"/> into <paramref name="model"/> and activates it. Each adapter it
    /// fuses must be loaded already under its recorded name, or (with <paramref name="loadAdapters"/>) is loaded
    /// from its recorded folder (relative path first, then absolute) after checking its weights' hash.
    /// </summary>
    public static FusionManifest Load(string dir, AdapterModel model, BaseModelIdentity baseModel, bool loadAdapters = true)
    {
        var manifest = ReadManifest(dir);
        if (manifest.BaseModel.Mismatch(baseModel) is { } problem)
            throw new ModelFormatException($"{dir}: cannot load this fusion onto this base: {problem}");
        AdapterFiles.RequireFits(manifest.MaxLength, model, Path.Combine(dir, ConfigFile));
        foreach (var adapter in manifest.Adapters)
        {
            if (model.Adapters.ContainsKey(adapter.Name)) continue;
            if (!loadAdapters)
                throw new ModelFormatException($"{dir}: fuses adapter '{adapter.Name}', which is not loaded (loaded: {string.Join(", ", model.Adapters.Keys)})");
            AdapterFiles.Load(adapter.Find(dir, "fuses", "this fusion"), model, baseModel, adapter.Name);
        }
        var weightsPath = AdapterFiles.CheckedWeights(dir, WeightsFile, manifest.WeightsSha256);
        var tensors = Safetensors.Read(weightsPath);
        try
        {
            model.LoadFusion(manifest.Name, manifest.Config, manifest.Head, tensors, weightsPath);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException($"{dir}: {e.Message}");
        }
        model.ActivateFusion(manifest.Name);
        return manifest;
    }
}
