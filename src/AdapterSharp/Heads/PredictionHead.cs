using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Heads;

/// <summary>What a task head predicts: its kind (<see cref="HeadKind"/>) and, where the kind has them, its labels.</summary>
public sealed record HeadConfig
{
    /// <summary>The kind's name: "classification", "regression" or "token-classification" (see <see cref="HeadKind.Names"/>).</summary>
    [JsonPropertyName("kind")] public string Kind { get; init; } = "classification";

    /// <summary>Label (or tag) names in output order, kept by name as they appear in the data; none for a regression.</summary>
    [JsonPropertyName("labels")] public string[] Labels { get; init; } = [];

    /// <summary>Multiple choice: how many choices each training question has (a batch holds whole questions); null otherwise.</summary>
    [JsonPropertyName("choices")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Choices { get; init; }

    [JsonIgnore] public bool IsRegression => Kind == "regression";
    [JsonIgnore] public int Outputs => HeadKind.For(this).Outputs(this);

    public static HeadConfig Classification(IEnumerable<string> labels) => new() { Kind = "classification", Labels = labels.ToArray() };
    public static HeadConfig Regression() => new() { Kind = "regression" };
    public static HeadConfig TokenClassification(IEnumerable<string> tags) => new() { Kind = "token-classification", Labels = tags.ToArray() };
    public static HeadConfig QuestionAnswering() => new() { Kind = "question-answering" };
    public static HeadConfig MultipleChoice(int choices) => new() { Kind = "multiple-choice", Choices = choices };

    public void Validate()
    {
        if (Labels is null) throw new ArgumentException("head: labels is null");
        HeadKind.For(this).Validate(this);
        if (Choices is not null && Kind != "multiple-choice") throw new ArgumentException($"head: \"choices\" applies to multiple-choice heads, not {Kind}");
        if (Labels.Distinct().Count() != Labels.Length)
            throw new ArgumentException("head: label names repeat");
    }
}

/// <summary>
/// The last layer → dropout → linear: from the [CLS] vector one logit per label or one score, or from every position
/// one logit per tag (as the kind reads, <see cref="HeadKind.Reads"/>).
/// </summary>
public sealed class PredictionHead : nn.Module<Tensor, Tensor>
{
    readonly Dropout dropout;
    readonly Linear classifier;

    public PredictionHead(int hidden, double dropoutProb, HeadConfig config) : base(nameof(PredictionHead))
    {
        config.Validate();
        Config = config;
        dropout = nn.Dropout(dropoutProb);
        classifier = nn.Linear(hidden, config.Outputs);
        RegisterComponents();
    }

    public HeadConfig Config { get; }

    /// <summary>The classifier's weight (outputs, d) and bias (outputs), for stacking heads of a mixed batch.</summary>
    internal (Tensor Weight, Tensor Bias) Classifier => (classifier.weight!, classifier.bias!);

    /// <param name="lastHidden">(B, T, d).</param>
    /// <returns>(B, labels) logits or (B, 1) scores from [CLS]; (B, T, tags) logits from every position.</returns>

    /// <summary>What the kind reads (cached: forward runs in every step).</summary>
    HeadInput Reads => reads ??= HeadKind.For(Config).Reads;
    HeadInput? reads;

    public override Tensor forward(Tensor lastHidden) =>
        classifier.call(dropout.call(Reads == HeadInput.Cls ? lastHidden[.., 0] : lastHidden));
}
