namespace AdapterSharp.Heads;

/// <summary>
/// One input's answer: the label and its probabilities (classification), the score (regression), or the entities
/// found (token classification).
/// </summary>
public sealed record Prediction
{
    /// <summary>Set when a request mixes adapters.</summary>
    public string? Adapter { get; init; }
    public string? Label { get; init; }
    public IReadOnlyDictionary<string, double>? Probabilities { get; init; }
    public float? Score { get; init; }

    /// <summary>Token classification: the chunks of the predicted tags, in text order.</summary>
    public IReadOnlyList<Entity>? Entities { get; init; }

    /// <summary>Question answering: the answer found in the context.</summary>
    public QaPrediction? Answer { get; init; }

    /// <summary>Multiple choice: the chosen choice's index (its text is <see cref="Label"/>).</summary>
    public int? Choice { get; init; }

    /// <summary>Multiple choice: every choice's probability, in the question's order.</summary>
    public IReadOnlyList<double>? ChoiceProbabilities { get; init; }

    /// <summary>
    /// A head's raw outputs as an answer (see <see cref="HeadKind.Decode"/>): softmax over the labels, the regression
    /// score, or the entities, for which <paramref name="input"/> must hold the encoding with offsets.
    /// </summary>
    public static Prediction From(HeadConfig head, float[] outputs, DecodeInput? input = null) => HeadKind.For(head).Decode(head, outputs, input);

    internal static void RequireFinite(float[] outputs)
    {
        foreach (var o in outputs)
            if (!float.IsFinite(o))
                throw new InvalidDataException("the model produced a non-finite output (a broken adapter or base?)");
    }
}

/// <summary>
/// A named entity: its type, its text as written in the input, where it is (<see cref="Start"/> to <see cref="End"/>,
/// UTF-16 units of the input text, end exclusive), and the mean probability of its words' tags.
/// </summary>
public sealed record Entity(string Type, string Text, int Start, int End, double Score);
