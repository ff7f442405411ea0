using System.CommandLine;
using AdapterSharp.Adapters;

namespace AdapterSharp.Cli;

/// <summary>The options that pick and shape a tuning method, shared by <c>train</c> and <c>params</c>.</summary>
sealed class MethodOptions
{
    public readonly Option<string> Method = new("--method")
    {
        Description = $"Tuning method: {Methods.Names}; fusion (AdapterFusion over --fuse adapters, train only).",
        DefaultValueFactory = _ => "houlsby",
    };
    public readonly Option<int?> AdapterSize = new("--adapter-size") { Description = "Bottleneck size m (per head for multihead). Default 64." };
    public readonly Option<double?> ReductionFactor = new("--reduction-factor") { Description = "m = hidden / factor (below 1 expands, e.g. 0.5 for reverse)." };
    public readonly Option<string?> NonLinearity = new("--non-linearity") { Description = "relu (default), gelu, swish, tanh, identity." };
    public readonly Option<string?> Init = new("--init") { Description = "houlsby (default: truncated normal σ=1e-2), bert (N(0, 0.02)), zero (identity at step 0)." };
    public readonly Option<string?> Layers = new("--layers") { Description = "Layers that get adapters, 0-based: 6-11, 0,2,4 (default all)." };
    public readonly Option<int?> Heads = new("--heads") { Description = "Down-projection heads for multihead (default 4)." };
    public readonly Option<double?> Scaling = new("--scaling") { Description = "Output scaling (parallel default 4)." };
    public readonly Option<int?> TopK = new("--top-k") { Description = "Layers fine-tuned by the top-k baseline (default 2)." };
    public readonly Option<bool> FrozenLayerNorms = new("--freeze-layer-norms") { Description = "Keep LayerNorms frozen (the paper trains them per task)." };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Method, AdapterSize, ReductionFactor, NonLinearity, Init, Layers, Heads, Scaling, TopK, FrozenLayerNorms })
            command.Options.Add(option);
    }

    public AdapterConfig Build(ParseResult parse)
    {
        var config = Methods.Get(parse.GetValue(Method)!);
        if (parse.GetValue(AdapterSize) is { } size) config = config with { AdapterSize = size, ReductionFactor = null };
        else if (parse.GetValue(ReductionFactor) is { } factor) config = config with { AdapterSize = null, ReductionFactor = factor };
        if (parse.GetValue(NonLinearity) is { } f) config = config with { NonLinearity = f };
        if (parse.GetValue(Init) is { } init)
            config = config with
            {
                Init = init switch
                {
                    "houlsby" => AdapterInit.Houlsby,
                    "bert" => AdapterInit.Bert,
                    "zero" => AdapterInit.Zero,
                    _ => throw new UsageException($"--init: unknown init '{init}' (expected houlsby, bert or zero)"),
                },
            };
        if (parse.GetValue(Layers) is { } layers) config = config with { Layers = AdapterConfig.ParseLayers(layers) };
        if (parse.GetValue(Heads) is { } heads) config = config with { Heads = heads };
        if (parse.GetValue(Scaling) is { } scaling) config = config with { Scaling = scaling };
        if (parse.GetValue(TopK) is { } k)
        {
            if (config.Method != "top-k") throw new UsageException("--top-k applies to --method top-k only");
            config = config with { TrainTopLayers = k };
        }
        if (parse.GetValue(FrozenLayerNorms)) config = config with { TrainLayerNorms = false };
        return config;
    }
}
