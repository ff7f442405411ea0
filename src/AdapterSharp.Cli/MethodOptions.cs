using System.CommandLine;
using System.Text.Json.Nodes;
using AdapterSharp.Adapters.Methods;

namespace AdapterSharp.Cli;

/// <summary>
/// The options that pick and shape a tuning method, shared by <c>train</c> and <c>params</c>. <c>--method</c> picks a
/// preset (<see cref="MethodRegistry"/>); every other option sets one field of its configuration by the field's JSON
/// name, so it works for any method that has the field and says so in one line for one that has not.
/// </summary>
sealed class MethodOptions
{
    public readonly Option<string> Method = new("--method")
    {
        Description = $"Tuning method: {MethodRegistry.Names}; fusion (AdapterFusion over --fuse adapters, train only).",
        DefaultValueFactory = _ => "houlsby",
    };
    public readonly Option<int?> AdapterSize = new("--adapter-size") { Description = "Bottleneck size m (per head for multihead). Default 64." };
    public readonly Option<string?> AdapterSizes = new("--adapter-sizes") { Description = "Sizes of a hierarchical adapter's bottlenecks, in the order they apply (default 16,64)." };
    public readonly Option<double?> ReductionFactor = new("--reduction-factor") { Description = "m = hidden / factor (below 1 expands, e.g. 0.5 for reverse)." };
    public readonly Option<string?> NonLinearity = new("--non-linearity") { Description = "relu (default), gelu, swish, tanh, identity." };
    public readonly Option<string?> Init = new("--init") { Description = "houlsby (default: truncated normal σ=1e-2), bert (N(0, 0.02)), zero (identity at step 0)." };
    public readonly Option<string?> Layers = new("--layers") { Description = "Layers that get the method's modules, 0-based: 6-11, 0,2,4 (default all)." };
    public readonly Option<int?> Heads = new("--heads") { Description = "Down-projection heads for multihead (default 4)." };
    public readonly Option<double?> Scaling = new("--scaling") { Description = "Output scaling (parallel default 4)." };
    public readonly Option<double?> SizePenalty = new("--size-penalty") { Description = "dynamic: λ, the loss per unit of the mean fraction of the largest size in use (default 0.01)." };
    public readonly Option<int?> LoraRank = new("--lora-r") { Description = "lora: rank r (default 8)." };
    public readonly Option<double?> LoraAlpha = new("--lora-alpha") { Description = "lora: α; the update is scaled by α/r (default 8)." };
    public readonly Option<double?> LoraDropout = new("--lora-dropout") { Description = "lora: dropout on the update's input (default 0)." };
    public readonly Option<string?> LoraTargets = new("--lora-targets")
    {
        Description = "lora: projections to adapt, among query, key, value, attention-output, intermediate, output (default query,value).",
    };
    public readonly Option<int?> TopK = new("--top-k") { Description = "Layers fine-tuned by the top-k baseline (default 2)." };
    public readonly Option<int?> TrainTopK = new("--train-top-k") { Description = "Also fine-tune the top K layers of the base (adapters plus top-k: a hybrid)." };
    public readonly Option<bool> FrozenLayerNorms = new("--freeze-layer-norms") { Description = "Keep LayerNorms frozen (the paper trains them per task)." };
    public readonly Option<bool> TrainedLayerNorms = new("--train-layer-norms") { Description = "Train a LayerNorm copy per task where the method does not by default (lora)." };

    IEnumerable<Option> All => [Method, AdapterSize, AdapterSizes, ReductionFactor, NonLinearity, Init, Layers, Heads, Scaling, SizePenalty, LoraRank, LoraAlpha, LoraDropout, LoraTargets, TopK, TrainTopK, FrozenLayerNorms, TrainedLayerNorms];

    public void AddTo(Command command)
    {
        foreach (var option in All) command.Options.Add(option);
    }

    public MethodConfig Build(ParseResult parse)
    {
        var config = MethodRegistry.Get(parse.GetValue(Method)!);
        if (parse.GetValue(AdapterSize) is { } size) config = Set(config, "--adapter-size", "adapter_size", size, ("reduction_factor", null));
        else if (parse.GetValue(ReductionFactor) is { } factor) config = Set(config, "--reduction-factor", "reduction_factor", factor, ("adapter_size", null));
        if (parse.GetValue(AdapterSizes) is { } sizes) config = Set(config, "--adapter-sizes", "adapter_sizes", new JsonArray([.. ParseSizes(sizes).Select(n => (JsonNode)n)]));
        if (parse.GetValue(NonLinearity) is { } f) config = Set(config, "--non-linearity", "non_linearity", f);
        if (parse.GetValue(Init) is { } init)
        {
            if (init is not ("houlsby" or "bert" or "zero")) throw new UsageException($"--init: unknown init '{init}' (expected houlsby, bert or zero)");
            config = Set(config, "--init", "init", init);
        }
        if (parse.GetValue(Layers) is { } layers)
            config = Set(config, "--layers", "layers", new JsonArray([.. MethodConfig.ParseLayers(layers).Select(l => (JsonNode)l)]));
        if (parse.GetValue(Heads) is { } heads) config = Set(config, "--heads", "heads", heads);
        if (parse.GetValue(Scaling) is { } scaling) config = Set(config, "--scaling", "scaling", scaling);
        if (parse.GetValue(SizePenalty) is { } penalty) config = Set(config, "--size-penalty", "size_penalty", penalty);
        if (parse.GetValue(LoraRank) is { } rank) config = Set(config, "--lora-r", "r", rank);
        if (parse.GetValue(LoraAlpha) is { } alpha) config = Set(config, "--lora-alpha", "lora_alpha", alpha);
        if (parse.GetValue(LoraDropout) is { } dropout) config = Set(config, "--lora-dropout", "lora_dropout", dropout);
        if (parse.GetValue(LoraTargets) is { } targets)
            config = Set(config, "--lora-targets", "target_modules",
                new JsonArray([.. targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t => (JsonNode)t)]));
        if (parse.GetValue(TopK) is { } k)
        {
            if (config.Method != "top-k") throw new UsageException("--top-k applies to --method top-k only (for adapters plus top-k layers, --train-top-k)");
            config = Set(config, "--top-k", "train_top_layers", k);
        }
        if (parse.GetValue(TrainTopK) is { } trainTop) config = Set(config, "--train-top-k", "train_top_layers", trainTop);
        if (parse.GetValue(FrozenLayerNorms) && parse.GetValue(TrainedLayerNorms))
            throw new UsageException("--freeze-layer-norms and --train-layer-norms exclude each other");
        if (parse.GetValue(FrozenLayerNorms)) config = Set(config, "--freeze-layer-norms", "train_layer_norms", false);
        if (parse.GetValue(TrainedLayerNorms)) config = Set(config, "--train-layer-norms", "train_layer_norms", true);
        return config;
    }

    static int[] ParseSizes(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0 || !parts.All(p => int.TryParse(p, out var n) && n > 0))
            throw new UsageException($"--adapter-sizes: '{text}' is not a comma-separated list of positive sizes like 16,64,256");
        return parts.Select(int.Parse).ToArray();
    }

    /// <summary>
    /// <paramref name="config"/> with its field <paramref name="key"/> set (and each of <paramref name="also"/> where the
    /// method has it): a one-line error naming <paramref name="option"/> when the method has no field <paramref name="key"/>.
    /// </summary>
    static MethodConfig Set(MethodConfig config, string option, string key, JsonNode? value, params (string Key, JsonNode? Value)[] also)
    {
        config = config.With(key, value, option);
        foreach (var (otherKey, otherValue) in also)
            if (config.ToJson().ContainsKey(otherKey)) config = config.With(otherKey, otherValue, option);
        return config;
    }
}
