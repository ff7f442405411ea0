using AdapterSharp.Data;
using AdapterSharp.Text;
using static TorchSharp.torch;

namespace AdapterSharp.Heads;

/// <summary>What a head's linear layer reads from the last hidden state.</summary>
public enum HeadInput
{
    /// <summary>The [CLS] vector: (B, d) → (B, outputs).</summary>
    Cls,

    /// <summary>Every position: (B, T, d) → (B, T, outputs).</summary>
    EveryToken,
}

/// <summary>
/// One kind of task head: what its linear layer reads (<see cref="Reads"/>) and how many outputs it has, what its
/// training batches carry as targets (<see cref="Targets"/>), its loss, its metrics, and how its outputs become an
/// answer. The kinds are registered by the name <c>head_config.kind</c> holds (<see cref="For(string)"/>); every head,
/// whatever its kind, is dropout then one linear layer (<c>heads.&lt;adapter&gt;.classifier</c>), so files, mixed
/// batches and CUDA graphs treat them alike.
/// </summary>
public abstract class HeadKind
{
    /// <summary>The name in <c>head_config.kind</c>.</summary>
    public abstract string Name { get; }

    public abstract HeadInput Reads { get; }

    /// <summary>The targets a training batch carries for it.</summary>
    public abstract TargetLayout Targets { get; }

    /// <summary>The metrics reported when the user names none; the first is the one maximised.</summary>
    public abstract string[] DefaultMetrics { get; }

    /// <summary>The linear layer's outputs (labels, 1 score, 2 span ends).</summary>
    public abstract int Outputs(HeadConfig config);

    /// <summary>Refuses a config this kind cannot use (an <see cref="ArgumentException"/> naming the field).</summary>
    public abstract void Validate(HeadConfig config);

    /// <summary>The batch's mean loss.</summary>
    /// <param name="outputs">float32: (B, outputs) for <see cref="HeadInput.Cls"/>, (B, T, outputs) for every token.</param>
    /// <param name="labels">int64 targets as <see cref="Targets"/> lays them out.</param>
    /// <param name="scores">float32 (B) targets of a regression.</param>
    /// <param name="mask">(B, T) attention mask, or null when no row is padded: padding must not change the loss.</param>
    public abstract Tensor Loss(HeadConfig config, Tensor outputs, Tensor labels, Tensor scores, Tensor? mask);

    /// <summary>Scores a data set from the head's outputs for each of its rows (in row order).</summary>
    /// <param name="outputs">Per row: its outputs, or for every-token heads its positions' outputs one after another.</param>
    public abstract Dictionary<string, double> Score(HeadConfig config, EncodedDataset data, float[][] outputs, IReadOnlyList<string> metrics);

    /// <summary>One input's answer from its outputs.</summary>
    /// <param name="input">What was encoded: the text(s) and their encoding, with offsets where <see cref="NeedsOffsets"/>
    /// (heads that read [CLS] need none: null).</param>
    public abstract Prediction Decode(HeadConfig config, float[] outputs, DecodeInput? input);

    /// <summary>Whether decoding needs the encoding's offsets and word ids (<see cref="BertTokenizer.EncodeWithOffsets"/>).</summary>
    public virtual bool NeedsOffsets => Reads == HeadInput.EveryToken;

    /// <summary>Why <paramref name="input"/> cannot be answered by this kind (a missing context, choices where none go), or null.</summary>
    public virtual string? CheckInput(PredictInput input) =>
        input.Choices is not null ? $"choices apply to multiple-choice adapters, not {Name}" : null;

    /// <summary>
    /// The model rows of one input: one encoding for most kinds; a question's windows (QA) or choices (multiple
    /// choice) for the kinds that answer from several rows. <see cref="Answer"/> takes them back with their outputs.
    /// </summary>
    public virtual IReadOnlyList<BertEncoding> EncodeInput(HeadConfig config, PredictInput input, BertTokenizer tokenizer, int maxLength) =>
        [NeedsOffsets ? tokenizer.EncodeWithOffsets(input.Text, input.TextPair, maxLength) : tokenizer.Encode(input.Text, input.TextPair, maxLength)];

    /// <summary>One input's answer from the outputs of its rows (<see cref="EncodeInput"/>), in the same order.</summary>
    public virtual Prediction Answer(HeadConfig config, PredictInput input, IReadOnlyList<BertEncoding> rows, IReadOnlyList<float[]> outputs) =>
        Decode(config, outputs[0], new DecodeInput(input.Text, input.TextPair, rows[0]));

    static readonly Dictionary<string, HeadKind> kinds = new(StringComparer.Ordinal)
    {
        ["classification"] = new ClassificationHead(),
        ["regression"] = new RegressionHead(),
        ["token-classification"] = new TokenClassificationHead(),
        ["question-answering"] = new QuestionAnsweringHead(),
        ["multiple-choice"] = new MultipleChoiceHead(),
    };

    /// <summary>The kinds by name, for messages and options.</summary>
    public static IReadOnlyCollection<string> Names => kinds.Keys;

    public static HeadKind For(string kind) =>
        kinds.TryGetValue(kind, out var head)
            ? head
            : throw new ArgumentException($"head: kind '{kind}' is not one of {string.Join(", ", kinds.Keys.Select(k => $"'{k}'"))}");

    public static HeadKind For(HeadConfig config) => For(config.Kind);
}

/// <summary>How a training batch holds a head's targets.</summary>
public enum TargetLayout
{
    /// <summary>One class index per row (B) int64.</summary>
    RowLabel,

    /// <summary>One score per row (B) float32.</summary>
    RowScore,

    /// <summary>One class index per position (B, T) int64, <see cref="EncodedDataset.Ignored"/> where no loss is taken.</summary>
    TokenLabels,

    /// <summary>An answer's first and last positions per row (B, 2) int64.</summary>
    Span,
}

/// <summary>
/// An input to answer: a text (a question for QA, a context for multiple choice), an optional second text (the context
/// for QA, a prefix of every choice for multiple choice), and the choices of a multiple-choice question.
/// </summary>
public sealed record PredictInput(string Text, string? TextPair = null, IReadOnlyList<string>? Choices = null);

/// <summary>What an input was, for decoding: its text (and pair), and its encoding.</summary>
public sealed record DecodeInput(string Text, string? TextPair, BertEncoding Encoding);
