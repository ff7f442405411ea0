using AdapterSharp.Checkpoints;

namespace AdapterSharp.Cli;

static class ParameterCounts
{
    /// <summary>Parameter counts grouped by what they do, in model order.</summary>
    public static List<KeyValuePair<string, long>> ByComponent(IReadOnlyDictionary<string, TensorData> weights)
    {
        var order = new[] { "embeddings", "attention (q, k, v, out)", "feed-forward", "LayerNorms", "pooler", "other" };
        var sums = order.ToDictionary(k => k, _ => 0L);
        foreach (var (name, tensor) in weights)
            sums[Component(name)] += tensor.ElementCount;
        return order.Where(k => sums[k] > 0).Select(k => new KeyValuePair<string, long>(k, sums[k])).ToList();
    }

    static string Component(string name) => name switch
    {
        _ when name.Contains("LayerNorm", StringComparison.Ordinal) => "LayerNorms",
        _ when name.StartsWith("embeddings.", StringComparison.Ordinal) => "embeddings",
        _ when name.Contains(".attention.", StringComparison.Ordinal) => "attention (q, k, v, out)",
        _ when name.Contains(".intermediate.", StringComparison.Ordinal) || name.Contains(".output.dense", StringComparison.Ordinal) => "feed-forward",
        _ when name.StartsWith("pooler.", StringComparison.Ordinal) => "pooler",
        _ => "other",
    };

    public static string Humanize(long count) => count switch
    {
        >= 1_000_000_000 => $"{count / 1e9:F1}B",
        >= 1_000_000 => $"{count / 1e6:F1}M",
        >= 1_000 => $"{count / 1e3:F1}K",
        _ => count.ToString(),
    };
}
