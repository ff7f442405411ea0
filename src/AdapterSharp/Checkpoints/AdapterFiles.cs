using System.Text.Json;
using System.Text.Json.Serialization;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using AdapterSharp.Model;

namespace AdapterSharp.Checkpoints;

/// <summary>
/// The base model an adapter was trained on: enough to refuse loading it onto another. Besides the sizes and the
/// weights' hash it records what else changes the computation without changing a weight: the activation, the
/// LayerNorm epsilon, the position embedding type and the tokenizer's fingerprint. Those four are absent from
/// folders saved before they were recorded, and then not checked.
/// </summary>
public sealed record BaseModelIdentity
{
    [JsonPropertyName("id")] public string Id { get; init; } = "";
    [JsonPropertyName("architecture")] public string Architecture { get; init; } = "bert";
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; }
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; }
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; }
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; }
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; }
    [JsonPropertyName("weights_sha256")] public string WeightsSha256 { get; init; } = "";

    [JsonPropertyName("hidden_act"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? HiddenAct { get; init; }

    [JsonPropertyName("layer_norm_eps"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? LayerNormEps { get; init; }

    [JsonPropertyName("position_embedding_type"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? PositionEmbeddingType { get; init; }

    /// <summary>See <see cref="Text.BertTokenizer.Sha256"/>.</summary>
    [JsonPropertyName("tokenizer_sha256"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? TokenizerSha256 { get; init; }

    public static BaseModelIdentity Of(PretrainedEncoder encoder) => new()
    {
        Id = encoder.Id,
        HiddenSize = encoder.Config.HiddenSize,
        NumHiddenLayers = encoder.Config.NumHiddenLayers,
        NumAttentionHeads = encoder.Config.NumAttentionHeads,
        IntermediateSize = encoder.Config.IntermediateSize,
        VocabSize = encoder.Config.VocabSize,
        WeightsSha256 = encoder.WeightsSha256(),
        HiddenAct = encoder.Config.HiddenAct,
        LayerNormEps = encoder.Config.LayerNormEps,
        PositionEmbeddingType = encoder.Config.PositionEmbeddingType,
        TokenizerSha256 = encoder.Tokenizer.Sha256(),
    };

    /// <summary>Null when <paramref name="other"/> is the same model, else what differs.</summary>
    public string? Mismatch(BaseModelIdentity other)
    {
        if (HiddenSize != other.HiddenSize || NumHiddenLayers != other.NumHiddenLayers || NumAttentionHeads != other.NumAttentionHeads
            || IntermediateSize != other.IntermediateSize || VocabSize != other.VocabSize)
            return $"it was trained on '{Id}' ({NumHiddenLayers} layers, hidden {HiddenSize}), " +
                   $"not on '{other.Id}' ({other.NumHiddenLayers} layers, hidden {other.HiddenSize})";
        if (!string.Equals(WeightsSha256, other.WeightsSha256, StringComparison.OrdinalIgnoreCase))
            return $"it was trained on '{Id}' (weights sha256 {Short(WeightsSha256)}), " +
                   $"but the loaded base '{other.Id}' has different weights (sha256 {Short(other.WeightsSha256)})";
        if (HiddenAct is not null && other.HiddenAct is not null && HiddenAct != other.HiddenAct)
            return $"it was trained with hidden_act '{HiddenAct}', but the loaded base '{other.Id}' has '{other.HiddenAct}'";
        if (LayerNormEps is { } eps && other.LayerNormEps is { } otherEps && eps != otherEps)
            return $"it was trained with layer_norm_eps {eps:R}, but the loaded base '{other.Id}' has {otherEps:R}";
        if (PositionEmbeddingType is not null && other.PositionEmbeddingType is not null && PositionEmbeddingType != other.PositionEmbeddingType)
            return $"it was trained with position_embedding_type '{PositionEmbeddingType}', but the loaded base '{other.Id}' has '{other.PositionEmbeddingType}'";
        if (TokenizerSha256 is not null && other.TokenizerSha256 is not null
            && !string.Equals(TokenizerSha256, other.TokenizerSha256, StringComparison.OrdinalIgnoreCase))
            return $"it was trained with another tokenizer (sha256 {Short(TokenizerSha256)}) than the loaded base '{other.Id}' has " +
                   $"(sha256 {Short(other.TokenizerSha256)}): its vocabulary or normalisation differs";
        return null;

        static string Short(string hash) => hash.Length > 12 ? hash[..12] + "…" : hash;
    }
}

/// <summary>
/// Another adapter folder that a fusion or a stacked adapter was trained on: its name, where it was, and its
/// weights' hash.
/// </summary>
public sealed record AdapterReference
{
    [JsonPropertyName("name")] public string Name { get; init; } = "";

    /// <summary>The folder relative to the referring folder (tried first, so that moving both together works).</summary>
    [JsonPropertyName("path")] public string Path { get; init; } = "";

    /// <summary>The folder's absolute path when the reference was saved (tried second).</summary>
    [JsonPropertyName("absolute_path")] public string AbsolutePath { get; init; } = "";

    /// <summary>SHA-256 of its <c>adapter_model.safetensors</c>: exactly these weights were trained on.</summary>
    [JsonPropertyName("weights_sha256")] public string WeightsSha256 { get; init; } = "";

    /// <summary>Every reference of a config names its adapter, folders and hash (JSON null would reach here as null).</summary>
    internal static void RequireComplete(AdapterReference?[] references, string path, string field)
    {
        for (int i = 0; i < references.Length; i++)
            if (references[i] is not { Name.Length: > 0, Path: not null, AbsolutePath: not null, WeightsSha256.Length: > 0 })
                throw new ModelFormatException($"{path}: {field}[{i}] lacks its name, path, absolute_path or weights_sha256");
    }

    /// <summary>How a folder to be saved at <paramref name="fromDir"/> records the adapter in <paramref name="adapterDir"/>.</summary>
    public static AdapterReference Describe(string name, string adapterDir, string fromDir) => new()
    {
        Name = name,
        Path = System.IO.Path.GetRelativePath(System.IO.Path.GetFullPath(fromDir), System.IO.Path.GetFullPath(adapterDir)),
        AbsolutePath = System.IO.Path.GetFullPath(adapterDir),
        WeightsSha256 = AdapterFiles.WeightsSha256(adapterDir),
    };

    /// <summary>
    /// The referenced folder, seen from <paramref name="fromDir"/> (relative path first, then absolute), after
    /// checking its weights' hash; a one-line <see cref="ModelFormatException"/> naming it otherwise.
    /// </summary>
    /// <param name="relation">How the referring folder relates to it, for messages: "fuses", "is stacked on".</param>
    /// <param name="subject">The referring folder's kind, for messages: "this fusion", "this adapter".</param>
    public string Find(string fromDir, string relation, string subject)
    {
        var candidates = new[] { System.IO.Path.Combine(fromDir, Path), AbsolutePath }.Where(p => p.Length > 0).Distinct().ToArray();
        foreach (var candidate in candidates) AtomicFolder.Recover(candidate); // a writer killed between its two renames
        var found = candidates.FirstOrDefault(p => File.Exists(System.IO.Path.Combine(p, AdapterFiles.ConfigFile)))
                    ?? throw new ModelFormatException(
                        $"{fromDir}: {relation} adapter '{Name}', but its folder is missing (looked in {string.Join(" and ", candidates)})");
        var hash = AdapterFiles.WeightsSha256(found);
        if (!string.Equals(hash, WeightsSha256, StringComparison.OrdinalIgnoreCase))
            throw new ModelFormatException(
                $"{fromDir}: adapter '{Name}' in {found} is not the one {subject} was trained on (weights sha256 {hash[..12]}…, expected {Short(WeightsSha256)})");
        return found;

        static string Short(string hash) => hash.Length > 12 ? hash[..12] + "…" : hash;
    }
}

/// <summary>Everything <c>adapter_config.json</c> holds.</summary>
public sealed record AdapterManifest
{
    public const string FormatName = "adaptersharp-adapter";

    [JsonPropertyName("format")] public string Format { get; init; } = FormatName;
    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = 1;
    [JsonPropertyName("name")] public string Name { get; init; } = "";
    /// <summary>The method's configuration, read as the record type its <c>"method"</c> names.</summary>
    [JsonPropertyName("config"), JsonConverter(typeof(MethodConfigConverter))]
    public MethodConfig Config { get; init; } = BottleneckConfig.Houlsby;
    [JsonPropertyName("head")] public HeadConfig Head { get; init; } = new();
    [JsonPropertyName("base_model")] public BaseModelIdentity BaseModel { get; init; } = new();
    [JsonPropertyName("task")] public string? Task { get; init; }
    [JsonPropertyName("max_length")] public int MaxLength { get; init; } = 128;
    [JsonPropertyName("metrics")] public Dictionary<string, double>? Metrics { get; init; }
    [JsonPropertyName("trainable_parameters")] public long TrainableParameters { get; init; }

    /// <summary>
    /// Adapters this one was trained on top of, bottom first (<c>train --stack</c>): it runs as
    /// <c>Stack(…StackedOn, Name)</c>, not alone. Absent for a plain adapter.
    /// </summary>
    [JsonPropertyName("stacked_on")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public AdapterReference[]? StackedOn { get; init; }

    /// <summary>SHA-256 of <c>adapter_model.safetensors</c> as saved (checked at load; absent in older folders).</summary>
    [JsonPropertyName("weights_sha256"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? WeightsSha256 { get; init; }

    /// <summary>SHA-256 of this file's content without this field (see <see cref="ConfigSeal"/>; absent in older folders).</summary>
    [JsonPropertyName(ConfigSeal.Field), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ConfigSha256 { get; init; }
}

/// <summary>
/// An adapter folder: <c>adapter_config.json</c> + <c>adapter_model.safetensors</c> holding only what the
/// adapter trained (bottlenecks, LayerNorm copies, head). Written as a whole: a temporary folder is filled
/// and then swapped in, so an existing adapter is never left half-overwritten.
/// </summary>
public static class AdapterFiles
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";

    static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true, AllowDuplicateProperties = false };

    /// <summary>The newest <c>format_version</c> this code reads (see <see cref="MethodConfig.FormatVersion"/>).</summary>
    public const int LatestFormatVersion = 2;

    /// <summary>Writes the folder; its <c>format_version</c> is the one its method's config needs.</summary>
    public static void Save(string dir, AdapterManifest manifest, IReadOnlyDictionary<string, TensorData> tensors)
    {
        manifest = manifest with { FormatVersion = manifest.Config.FormatVersion };
        WriteFolder(dir, ConfigFile, weightsSha256 =>
            {
                var withWeights = manifest with { WeightsSha256 = weightsSha256, ConfigSha256 = null };
                var sha = ConfigSeal.Sha256(JsonSerializer.Serialize(withWeights, JsonOptions));
                return JsonSerializer.Serialize(withWeights with { ConfigSha256 = sha }, JsonOptions);
            },
            WeightsFile, tensors, new Dictionary<string, string> { ["format"] = "pt", ["adapter"] = manifest.Name });
    }

    /// <summary>SHA-256 (hex) of the adapter's weights file: what a fusion records to know it later.</summary>
    public static string WeightsSha256(string dir) => FileSha256(Path.Combine(dir, WeightsFile));

    /// <summary>
    /// Writes a weights file and then a config into <paramref name="dir"/> as a whole (see <see cref="AtomicFolder"/>);
    /// <paramref name="configJson"/> is given the weights file's SHA-256.
    /// </summary>
    internal static void WriteFolder(string dir, string configFile, Func<string, string> configJson, string weightsFile,
        IReadOnlyDictionary<string, TensorData> tensors, Dictionary<string, string> metadata) =>
        AtomicFolder.Write(dir, staging =>
        {
            var weights = Path.Combine(staging, weightsFile);
            Safetensors.Write(weights, tensors, metadata);
            File.WriteAllText(Path.Combine(staging, configFile), configJson(FileSha256(weights)));
        });

    static string FileSha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(stream));
    }

    /// <summary>
    /// The weights file of a folder whose config records <paramref name="expected"/> (null: an older folder, not
    /// checked), or a one-line error when its bytes are not the ones saved.
    /// </summary>
    public static string CheckedWeights(string dir, string weightsFile, string? expected)
    {
        var path = Path.Combine(dir, weightsFile);
        if (expected is null || !File.Exists(path)) return path; // a missing file is named by the reader
        var actual = FileSha256(path);
        if (!string.Equals(actual, expected, StringComparison.OrdinalIgnoreCase))
            throw new ModelFormatException(
                $"{path}: not the weights saved with this folder (sha256 {actual[..12]}…, the config records {(expected.Length > 12 ? expected[..12] + "…" : expected)}): the file is damaged or was replaced");
        return path;
    }

    /// <summary>
    /// The JSON file <paramref name="file"/> of a <paramref name="kind"/> folder ("adapter", "fusion"), or a one-line
    /// error naming the folder or file: not found, not that kind of folder, or invalid JSON.
    /// </summary>
    internal static T? ReadJson<T>(string dir, string file, string kind) where T : class
    {
        var path = Path.Combine(dir, file);
        if (!Directory.Exists(dir)) AtomicFolder.Recover(dir); // a writer killed between its two renames left it aside
        if (!Directory.Exists(dir)) throw new ModelFormatException($"{dir}: {kind} folder not found");
        var article = "aeiou".Contains(kind[0]) ? "an" : "a";
        if (!File.Exists(path)) throw new ModelFormatException($"{path}: file not found (not {article} {kind} folder?)");
        var text = File.ReadAllText(path);
        T? value;
        try
        {
            value = JsonSerializer.Deserialize<T>(text, JsonOptions);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: invalid {kind} config: {e.Message.Split(" Path:")[0]}");
        }
        ConfigSeal.Check(text, path);
        return value;
    }

    public static AdapterManifest ReadManifest(string dir)
    {
        var path = Path.Combine(dir, ConfigFile);
        var manifest = ReadJson<AdapterManifest>(dir, ConfigFile, "adapter");
        if (manifest is null || manifest.Format != AdapterManifest.FormatName)
            throw new ModelFormatException($"{path}: not an AdapterSharp adapter config (format '{manifest?.Format}')");
        if (manifest.FormatVersion is < 1 or > LatestFormatVersion)
            throw new ModelFormatException($"{path}: adapter format version {manifest.FormatVersion} is not supported (expected 1-{LatestFormatVersion})");
        // JSON null reaches the non-nullable properties as null: name each missing part instead of crashing later.
        if (manifest.Config is null) throw new ModelFormatException($"{path}: missing \"config\"");
        if (manifest.Head is null) throw new ModelFormatException($"{path}: missing \"head\"");
        if (manifest.BaseModel is null) throw new ModelFormatException($"{path}: missing \"base_model\"");
        if (manifest.BaseModel.Id is null) throw new ModelFormatException($"{path}: missing \"base_model.id\"");
        if (manifest.BaseModel.WeightsSha256 is null) throw new ModelFormatException($"{path}: missing \"base_model.weights_sha256\"");
        if (manifest.StackedOn is { } stackedOn) AdapterReference.RequireComplete(stackedOn, path, "stacked_on");
        if (manifest.Head.Labels is null) throw new ModelFormatException($"{path}: missing \"head.labels\"");
        if (string.IsNullOrEmpty(manifest.Name)) throw new ModelFormatException($"{path}: missing \"name\"");
        if (manifest.MaxLength < 8 || manifest.MaxLength > 8192)
            throw new ModelFormatException($"{path}: max_length {manifest.MaxLength} is not between 8 and 8192");
        try
        {
            manifest.Head.Validate();
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException($"{path}: {e.Message}");
        }
        return manifest;
    }

    /// <summary>A folder's max_length must fit the base's position table: a longer input would fail in the model.</summary>
    internal static void RequireFits(int maxLength, AdapterModel model, string path)
    {
        if (maxLength > model.Config.MaxPositionEmbeddings)
            throw new ModelFormatException($"{path}: max_length {maxLength} exceeds the base model's {model.Config.MaxPositionEmbeddings} positions");
    }

    /// <summary>
    /// Loads the adapter in <paramref name="dir"/> into <paramref name="model"/> under <paramref name="name"/>
    /// (default: the saved name), after checking that it was trained on <paramref name="baseModel"/>.
    /// </summary>
    public static AdapterManifest Load(string dir, AdapterModel model, BaseModelIdentity baseModel, string? name = null)
    {
        var manifest = ReadManifest(dir);
        if (manifest.BaseModel.Mismatch(baseModel) is { } problem)
            throw new ModelFormatException($"{dir}: cannot load this adapter onto this base: {problem}");
        RequireFits(manifest.MaxLength, model, Path.Combine(dir, ConfigFile));
        var weightsPath = CheckedWeights(dir, WeightsFile, manifest.WeightsSha256);
        var tensors = Safetensors.Read(weightsPath);
        try
        {
            model.LoadAdapter(name ?? manifest.Name, manifest.Config, manifest.Head, tensors, weightsPath);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException($"{dir}: {e.Message}");
        }
        return manifest;
    }
}
