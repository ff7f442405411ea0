using System.Text.Json.Serialization;

namespace AdapterSharp.Adapters;

/// <summary>How adapter weights start.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<AdapterInit>))]
public enum AdapterInit
{
    /// <summary>Houlsby et al.: weights truncated normal, σ = 1e-2 cut at ±2σ, biases 0: near identity.</summary>
    [JsonStringEnumMemberName("houlsby")] Houlsby,

    /// <summary>BERT's initializer: weights N(0, 0.02), biases 0.</summary>
    [JsonStringEnumMemberName("bert")] Bert,

    /// <summary>Down-projection as <see cref="Houlsby"/>, up-projection zero: exactly the base model at step 0.</summary>
    [JsonStringEnumMemberName("zero")] Zero,
}

/// <summary>
/// One record describes every tuning method: bottleneck adapters (where, how big, which non-linearity, how
/// initialised, in which layers) and the baselines (which base parameters train). Houlsby, Pfeiffer,
/// Parallel, Reverse, MultiHead and the baselines are presets of it (<see cref="Methods"/>). Saved verbatim in
/// <c>adapter_config.json</c>.
/// </summary>
public sealed record AdapterConfig
{
    /// <summary>The preset it was made from (houlsby, pfeiffer, …, full, top-k, layernorm, head).</summary>
    [JsonPropertyName("method")] public string Method { get; init; } = "houlsby";

    /// <summary>An adapter after the attention output projection (before its residual + LayerNorm).</summary>
    [JsonPropertyName("attention_adapter")] public bool AttentionAdapter { get; init; }

    /// <summary>An adapter after the feed-forward output projection (before its residual + LayerNorm).</summary>
    [JsonPropertyName("ffn_adapter")] public bool FfnAdapter { get; init; }

    /// <summary>
    /// Parallel placement (He et al. 2022): the adapter reads the sublayer's input and its scaled output is
    /// added to the sublayer's output, instead of transforming that output in series.
    /// </summary>
    [JsonPropertyName("parallel")] public bool Parallel { get; init; }

    /// <summary>Bottleneck size m (per head for multi-head adapters); null: use <see cref="ReductionFactor"/>.</summary>
    [JsonPropertyName("adapter_size")] public int? AdapterSize { get; init; }

    /// <summary>m = hidden / reduction factor when no size is given; below 1 it expands (reverse adapters).</summary>
    [JsonPropertyName("reduction_factor")] public double? ReductionFactor { get; init; }

    [JsonPropertyName("non_linearity")] public string NonLinearity { get; init; } = "relu";
    [JsonPropertyName("init")] public AdapterInit Init { get; init; } = AdapterInit.Houlsby;

    /// <summary>Multiplies the adapter's output (parallel adapters use 4).</summary>
    [JsonPropertyName("scaling")] public double Scaling { get; init; } = 1.0;

    /// <summary>Down-projection heads H; their activations are averaged before the shared up-projection.</summary>
    [JsonPropertyName("heads")] public int Heads { get; init; } = 1;

    /// <summary>0-based layers that get adapters (and per-task LayerNorms); null: all.</summary>
    [JsonPropertyName("layers")] public int[]? Layers { get; init; }

    /// <summary>Train LayerNorms per task, as in the paper: each adapter carries its own copies.</summary>
    [JsonPropertyName("train_layer_norms")] public bool TrainLayerNorms { get; init; }

    /// <summary>Baselines: fine-tune every base parameter.</summary>
    [JsonPropertyName("train_all_base")] public bool TrainAllBase { get; init; }

    /// <summary>Baselines: fine-tune the top k layers of the base.</summary>
    [JsonPropertyName("train_top_layers")] public int TrainTopLayers { get; init; }

    [JsonIgnore] public bool HasBottleneck => AttentionAdapter || FfnAdapter;

    /// <summary>True when training changes base weights, so the result cannot share a base with other adapters.</summary>
    [JsonIgnore] public bool ModifiesBase => TrainAllBase || TrainTopLayers > 0;

    public int BottleneckSize(int hidden) =>
        AdapterSize ?? Math.Max(1, (int)Math.Round(hidden / (ReductionFactor ?? throw new InvalidOperationException("no adapter size"))));

    public bool AppliesToLayer(int layer) => Layers is null || Layers.Contains(layer);

    static readonly string[] NonLinearities = ["relu", "gelu", "swish", "silu", "tanh", "identity"];

    /// <summary>Throws <see cref="ArgumentException"/> with a one-line reason if the record is inconsistent.</summary>
    public void Validate(int numLayers)
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new ArgumentException($"adapter config: {problem}");
        }

        Require(!(TrainAllBase && TrainTopLayers > 0), "train_all_base and train_top_layers exclude each other");
        if (HasBottleneck)
        {
            Require(AdapterSize is > 0 || ReductionFactor is > 0,
                "a bottleneck needs adapter_size > 0 or reduction_factor > 0");
            Require(NonLinearities.Contains(NonLinearity),
                $"non_linearity '{NonLinearity}' is not one of {string.Join(", ", NonLinearities)}");
            Require(Heads >= 1, $"heads must be at least 1, got {Heads}");
            Require(Scaling is > 0 and < 1e6, $"scaling must be positive, got {Scaling}");
        }
        Require(TrainTopLayers >= 0 && TrainTopLayers <= numLayers,
            $"top-k must be between 1 and the model's {numLayers} layers, got {TrainTopLayers}");
        if (Layers is not null)
        {
            Require(Layers.Length > 0, "layers is empty");
            foreach (var layer in Layers)
                Require(layer >= 0 && layer < numLayers, $"layer {layer} does not exist (the model has layers 0-{numLayers - 1})");
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

/// <summary>The presets: each method is a configuration, not a class.</summary>
public static class Methods
{
    /// <summary>Houlsby et al. 2019: adapters after attention-out and FFN-out, m = 64, LayerNorms per task.</summary>
    public static readonly AdapterConfig Houlsby = new()
    {
        Method = "houlsby",
        AttentionAdapter = true,
        FfnAdapter = true,
        AdapterSize = 64,
        TrainLayerNorms = true,
    };

    /// <summary>Pfeiffer et al. 2021: one adapter per layer, after the FFN output.</summary>
    public static readonly AdapterConfig Pfeiffer = Houlsby with { Method = "pfeiffer", AttentionAdapter = false };

    /// <summary>He et al. 2022: a scaled bottleneck in parallel with the FFN.</summary>
    public static readonly AdapterConfig Parallel = Houlsby with
    {
        Method = "parallel",
        AttentionAdapter = false,
        Parallel = true,
        Scaling = 4.0,
    };

    /// <summary>Expansion adapter: inner size twice the hidden size.</summary>
    public static readonly AdapterConfig Reverse = Houlsby with { Method = "reverse", AdapterSize = null, ReductionFactor = 0.5 };

    /// <summary>H down-projections averaged into one shared up-projection.</summary>
    public static readonly AdapterConfig MultiHead = Houlsby with { Method = "multihead", Heads = 4 };

    public static readonly AdapterConfig Full = new() { Method = "full", TrainAllBase = true };
    public static readonly AdapterConfig TopK = new() { Method = "top-k", TrainTopLayers = 2 };
    public static readonly AdapterConfig LayerNorm = new() { Method = "layernorm", TrainLayerNorms = true };
    public static readonly AdapterConfig Head = new() { Method = "head" };

    public static IReadOnlyList<AdapterConfig> All { get; } = [Houlsby, Pfeiffer, Parallel, Reverse, MultiHead, Full, TopK, LayerNorm, Head];

    public static string Names => string.Join(", ", All.Select(m => m.Method));

    public static AdapterConfig Get(string name) =>
        All.FirstOrDefault(m => m.Method.Equals(name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"--method: unknown method '{name}' (expected one of {Names})");
}
