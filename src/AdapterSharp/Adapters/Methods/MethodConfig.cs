using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using AdapterSharp.Model;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// What every method's configuration has: its name (the key that <c>adapter_config.json</c> is read by), the
/// layers it applies to, and what else trains besides the method's own modules: per-task LayerNorm copies, the
/// whole base (full fine-tuning) or its top k layers (the baseline, or adapters plus top-k fine-tuning). Each
/// method derives its own record (<see cref="AdapterMethod"/>); saved verbatim in <c>adapter_config.json</c>.
/// </summary>
public abstract record MethodConfig
{
    /// <summary>The preset it was made from (houlsby, lora, full, …): what <c>adapter_config.json</c> is read by.</summary>
    [JsonPropertyName("method"), JsonPropertyOrder(-1)] public string Method { get; init; } = "";

    /// <summary>0-based layers that get the method's modules (and LayerNorm copies); null: all.</summary>
    [JsonPropertyName("layers")] public int[]? Layers { get; init; }

    /// <summary>Train LayerNorms per task, as in the paper: each adapter carries its own copies.</summary>
    [JsonPropertyName("train_layer_norms")] public bool TrainLayerNorms { get; init; }

    /// <summary>Fine-tune every base parameter too (full fine-tuning).</summary>
    [JsonPropertyName("train_all_base")] public bool TrainAllBase { get; init; }

    /// <summary>Fine-tune the top k layers of the base too (the top-k baseline, or a hybrid with adapters).</summary>
    [JsonPropertyName("train_top_layers")] public int TrainTopLayers { get; init; }

    /// <summary>True when training changes base weights, so the result cannot share a base with other adapters.</summary>
    [JsonIgnore] public bool ModifiesBase => TrainAllBase || TrainTopLayers > 0;

    /// <summary>Whether its rows can share a mixed batch with other adapters' (one pass, each row its own adapter).</summary>
    [JsonIgnore] public virtual bool RowRoutable => !ModifiesBase;

    /// <summary>Whether an AdapterFusion can attend over its output (it adds something at sublayer ends).</summary>
    [JsonIgnore] public virtual bool Fusable => false;

    /// <summary>Whether it can be folded into the base weights for inference (<c>AdapterModel.Merge</c>).</summary>
    [JsonIgnore] public virtual bool Mergeable => false;

    public bool AppliesToLayer(int layer) => Layers is null || Layers.Contains(layer);

    /// <summary>
    /// The <c>adapter_config.json</c> format version a folder of this config needs: 1 where the first format's reader
    /// (before methods became pluggable) loads it correctly — the bottleneck presets and the baselines, without top layers
    /// trained beside LayerNorm copies — and 2 otherwise, so that such a reader refuses it in one line instead of
    /// misreading it.
    /// </summary>
    [JsonIgnore] public virtual int FormatVersion => TrainTopLayers > 0 && TrainLayerNorms ? 2 : 1;

    /// <summary>
    /// Throws <see cref="ArgumentException"/> with a one-line reason if the record is inconsistent or does not fit
    /// <paramref name="model"/> (sizes are bounded by its dimensions, checked before anything is allocated from them).
    /// </summary>
    public virtual void Validate(BertConfig model)
    {
        int numLayers = model.NumHiddenLayers;
        Require(!(TrainAllBase && TrainTopLayers > 0), "train_all_base and train_top_layers exclude each other");
        Require(TrainTopLayers >= 0 && TrainTopLayers <= numLayers,
            $"top-k must be between 1 and the model's {numLayers} layers, got {TrainTopLayers}");
        if (Layers is not null)
        {
            Require(Layers.Length > 0, "layers is empty");
            foreach (var layer in Layers)
                Require(layer >= 0 && layer < numLayers, $"layer {layer} does not exist (the model has layers 0-{numLayers - 1})");
        }
    }

    protected static void Require(bool ok, string problem)
    {
        if (!ok) throw new ArgumentException($"adapter config: {problem}");
    }

    /// <summary>The record as JSON, with its own type's fields (what <c>adapter_config.json</c> holds under "config").</summary>
    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, GetType(), MethodConfigConverter.Plain)!.AsObject();

    /// <summary>
    /// The record with field <paramref name="key"/> set to <paramref name="value"/>, for options that set one field
    /// whatever the method; an <see cref="ArgumentException"/> naming <paramref name="option"/> when this method has no
    /// such field or the value does not fit it.
    /// </summary>
    public MethodConfig With(string key, JsonNode? value, string option)
    {
        var json = ToJson();
        if (!json.ContainsKey(key)) throw new ArgumentException($"{option} does not apply to --method {Method}");
        json[key] = value;
        try
        {
            return (MethodConfig)json.Deserialize(GetType(), MethodConfigConverter.Plain)!;
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"{option}: {e.Message.Split(" Path:")[0]}");
        }
    }

    /// <summary>Parses "6-11", "0,2,4" or "3" into 0-based layer indices.</summary>
    public static int[] ParseLayers(string spec)
    {
        var layers = new SortedSet<int>();
        foreach (var part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var bounds = part.Split('-', StringSplitOptions.TrimEntries);
            if (bounds.Length is < 1 or > 2 || !bounds.All(b => int.TryParse(b, out var v) && v >= 0))
                throw new ArgumentException($"--layers: '{part}' is not a layer number or range like 6-11");
            int from = int.Parse(bounds[0]), to = int.Parse(bounds[^1]);
            if (to < from) throw new ArgumentException($"--layers: range '{part}' runs backwards");
            for (int i = from; i <= to; i++) layers.Add(i);
        }
        if (layers.Count == 0) throw new ArgumentException("--layers: no layers given");
        return [.. layers];
    }
}

/// <summary>
/// Reads a <see cref="MethodConfig"/> as the record type that its <c>"method"</c> names (<see cref="MethodRegistry"/>),
/// and writes it with its own type's fields.
/// </summary>
public sealed class MethodConfigConverter : JsonConverter<MethodConfig>
{
    /// <summary>Options without this converter, for the concrete types.</summary>
    internal static readonly JsonSerializerOptions Plain = new() { AllowDuplicateProperties = false };

    public override MethodConfig? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        using var document = JsonDocument.ParseValue(ref reader);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new JsonException("the adapter config is not an object");
        if (!root.TryGetProperty("method", out var method) || method.ValueKind != JsonValueKind.String)
            throw new JsonException("the adapter config names no \"method\"");
        var type = MethodRegistry.ConfigType(method.GetString()!)
                   ?? throw new JsonException($"unknown method '{method.GetString()}' (known: {MethodRegistry.Names})");
        return (MethodConfig?)root.Deserialize(type, Plain);
    }

    public override void Write(Utf8JsonWriter writer, MethodConfig value, JsonSerializerOptions options) =>
        JsonSerializer.Serialize(writer, value, value.GetType(), Plain);
}
