using AdapterSharp.Data;
using AdapterSharp.Text;
using AdapterSharp.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Heads;

/// <summary>
/// Multiple choice (SWAG-style): each choice is a row — the context paired with the choice — whose [CLS] vector gets one
/// score; a question's scores are softmaxed over its choices (cross-entropy against the right one); accuracy; answered as
/// the best choice and every choice's probability. Training batches hold whole questions
/// (<see cref="EncodedDataset.GroupSize"/> = <see cref="HeadConfig.Choices"/> rows each).
/// </summary>
public sealed class MultipleChoiceHead : HeadKind
{
    public override string Name => "multiple-choice";
    public override HeadInput Reads => HeadInput.Cls;
    public override TargetLayout Targets => TargetLayout.RowLabel;
    public override string[] DefaultMetrics => ["accuracy"];
    public override int Outputs(HeadConfig config) => 1;
    public override bool NeedsOffsets => false;

    public override void Validate(HeadConfig config)
    {
        if (config.Choices is not (>= 2 and <= ChoiceDataReader.MaxChoices))
            throw new ArgumentException($"head: multiple choice needs \"choices\" from 2 to {ChoiceDataReader.MaxChoices}, got {config.Choices?.ToString() ?? "none"}");
        if (config.Labels.Length > 0) throw new ArgumentException("head: multiple choice has no labels");
    }

    /// <param name="outputs">(B·N, 1): a score per choice row, a question's N rows together.</param>
    /// <param name="labels">(B·N): every row of a question holds the right choice's index.</param>
    public override Tensor Loss(HeadConfig config, Tensor outputs, Tensor labels, Tensor scores, Tensor? mask)
    {
        int n = config.Choices!.Value;
        return F.cross_entropy(outputs.view(-1, n), labels.view(-1, n)[.., 0]);
    }

    public override Dictionary<string, double> Score(HeadConfig config, EncodedDataset data, float[][] outputs, IReadOnlyList<string> metrics)
    {
        int n = data.GroupSize;
        var predicted = new List<int>();
        var gold = new List<int>();
        for (int g = 0; g < data.Count / n; g++)
        {
            predicted.Add(ClassificationHead.ArgMax(Enumerable.Range(0, n).Select(k => outputs[g * n + k][0]).ToArray()));
            gold.Add((int)data.Labels[g * n]);
        }
        return metrics.ToDictionary(m => m, m => m switch
        {
            "accuracy" => Metrics.Accuracy(predicted, gold),
            _ => throw new ArgumentException($"metric '{m}' does not apply to multiple choice"),
        });
    }

    /// <summary>A question's answer from its choices' scores: the best choice and the softmax over them.</summary>
    public static (int Choice, double[] Probabilities) Choose(float[] scores)
    {
        Prediction.RequireFinite(scores);
        return (ClassificationHead.ArgMax(scores), ClassificationHead.Softmax(scores));
    }

    public override Prediction Decode(HeadConfig config, float[] outputs, DecodeInput? input) =>
        throw new NotSupportedException("multiple choice answers from a question's choices together: use Answer (or Choose)");

    public override string? CheckInput(PredictInput input) =>
        input.Choices is not { Count: >= 2 and <= ChoiceDataReader.MaxChoices } choices
            ? $"a multiple-choice question needs 2 to {ChoiceDataReader.MaxChoices} \"choices\""
            : choices.FirstOrDefault(c => c.Trim().Length == 0) is not null ? "a choice is empty" : null;

    /// <summary>A row per choice: the context (<see cref="PredictInput.Text"/>) paired with the prefix and the choice.</summary>
    public override IReadOnlyList<BertEncoding> EncodeInput(HeadConfig config, PredictInput input, BertTokenizer tokenizer, int maxLength)
    {
        var example = new ChoiceExample(input.Text, input.TextPair, [.. input.Choices!], -1, "input", 0);
        return Enumerable.Range(0, example.Choices.Length).Select(k =>
        {
            var (text, pair) = example.Pair(k);
            return tokenizer.Encode(text, pair, maxLength);
        }).ToArray();
    }

    public override Prediction Answer(HeadConfig config, PredictInput input, IReadOnlyList<BertEncoding> rows, IReadOnlyList<float[]> outputs)
    {
        var (choice, probabilities) = Choose([.. outputs.Select(o => o[0])]);
        return new Prediction
        {
            Choice = choice, Label = input.Choices![choice], ChoiceProbabilities = [.. probabilities.Select(p => Math.Round(p, 6))],
        };
    }
}
