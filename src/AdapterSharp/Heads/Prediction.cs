namespace AdapterSharp.Heads;

/// <summary>One input's answer: the label and its probabilities, or the score.</summary>
public sealed record Prediction
{
    /// <summary>Set when a request mixes adapters.</summary>
    public string? Adapter { get; init; }
    public string? Label { get; init; }
    public IReadOnlyDictionary<string, double>? Probabilities { get; init; }
    public float? Score { get; init; }

    /// <summary>A head's raw outputs as an answer: softmax over the labels, or the regression score.</summary>
    public static Prediction From(HeadConfig head, float[] outputs)
    {
        if (outputs.Any(o => !float.IsFinite(o)))
            throw new InvalidDataException("the model produced a non-finite output (a broken adapter or base?)");
        if (head.IsRegression) return new Prediction { Score = outputs[0] };
        int best = Array.IndexOf(outputs, outputs.Max());
        var exp = outputs.Select(o => Math.Exp(o - outputs[best])).ToArray(); // softmax, shifted for range
        double sum = exp.Sum();
        return new Prediction
        {
            Label = head.Labels[best],
            Probabilities = head.Labels.Select((label, k) => (label, k)).ToDictionary(p => p.label, p => Math.Round(exp[p.k] / sum, 6)),
        };
    }
}
