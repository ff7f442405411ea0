using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Heads;

/// <summary>What a task head predicts: one of named labels, or a single score.</summary>
public sealed record HeadConfig
{
    /// <summary>"classification" or "regression".</summary>
    [JsonPropertyName("kind")] public string Kind { get; init; } = "classification";

    /// <summary>Label names in output order (classification only), kept by name as they appear in the data.</summary>
    [JsonPropertyName("labels")] public string[] Labels { get; init; } = [];

    [JsonIgnore] public bool IsRegression => Kind == "regression";
    [JsonIgnore] public int Outputs => IsRegression ? 1 : Labels.Length;

    public static HeadConfig Classification(IEnumerable<string> labels) => new() { Kind = "classification", Labels = labels.ToArray() };
    public static HeadConfig Regression() => new() { Kind = "regression" };

    public void Validate()
    {
        if (Kind is not ("classification" or "regression"))
            throw new ArgumentException($"head: kind '{Kind}' is not 'classification' or 'regression'");
        if (!IsRegression && Labels.Length < 2)
            throw new ArgumentException($"head: classification needs at least 2 labels, got {Labels.Length}");
        if (Labels.Distinct().Count() != Labels.Length)
            throw new ArgumentException("head: label names repeat");
    }
}

/// <summary>The [CLS] vector of the last layer → dropout → linear: one logit per label, or one score.</summary>
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

    /// <param name="lastHidden">(B, T, d).</param>
    /// <returns>(B, labels) logits, or (B, 1) scores.</returns>
    /// <summary>The classifier's weight (outputs, d) and bias (outputs), for stacking heads of a mixed batch.</summary>
    internal (Tensor Weight, Tensor Bias) Classifier => (classifier.weight!, classifier.bias!);

    public override Tensor forward(Tensor lastHidden) => classifier.call(dropout.call(lastHidden[.., 0]));
}
