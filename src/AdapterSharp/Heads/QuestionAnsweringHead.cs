using System.Text;
using System.Text.RegularExpressions;
using AdapterSharp.Data;
using AdapterSharp.Text;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Heads;

/// <summary>
/// Extractive question answering (SQuAD): a start and an end logit per position; the loss is the mean of the two
/// cross-entropies against the answer's first and last positions ([CLS] for a window without the answer); an answer is
/// the context span whose start and end logits sum highest over the question's windows, among the
/// <see cref="NBest"/> best starts and ends, at most <see cref="MaxAnswerPieces"/> pieces long; scored by the official
/// SQuAD v1.1 exact match and F1 (<see cref="SquadMetric"/>).
/// </summary>
public sealed class QuestionAnsweringHead : HeadKind
{
    public override string Name => "question-answering";
    public override HeadInput Reads => HeadInput.EveryToken;
    public override TargetLayout Targets => TargetLayout.Span;
    public override string[] DefaultMetrics => ["f1", "exact_match"];
    public override int Outputs(HeadConfig config) => 2;

    /// <summary>Starts and ends considered per window (HF's n_best_size).</summary>
    public const int NBest = 20;

    /// <summary>The longest answer, in pieces (HF's max_answer_length).</summary>
    public const int MaxAnswerPieces = 30;

    public override void Validate(HeadConfig config)
    {
        if (config.Labels.Length > 0) throw new ArgumentException("head: question answering has no labels");
    }

    public override Tensor Loss(HeadConfig config, Tensor outputs, Tensor labels, Tensor scores, Tensor? mask)
    {
        var start = outputs[.., .., 0]; // (B, T)
        var end = outputs[.., .., 1];
        if (mask is not null)
        {
            // Padding is not a place an answer can start or end: without this the loss would depend on how far a batch is padded.
            var padding = mask.eq(0);
            start = start.masked_fill(padding, float.NegativeInfinity);
            end = end.masked_fill(padding, float.NegativeInfinity);
        }
        return (F.cross_entropy(start, labels[.., 0]) + F.cross_entropy(end, labels[.., 1])) / 2;
    }

    public override Dictionary<string, double> Score(HeadConfig config, EncodedDataset data, float[][] outputs, IReadOnlyList<string> metrics)
    {
        var qa = data.Qa ?? throw new ArgumentException("question answering is scored on QA windows (EncodedDataset.EncodeQa)");
        var answers = Answers(qa, outputs);
        double exact = 0, f1 = 0;
        for (int x = 0; x < qa.Examples.Count; x++)
        {
            var gold = qa.Examples[x].Answers.Select(a => a.Text).ToArray();
            exact += SquadMetric.ExactMatch(answers[x].Text, gold);
            f1 += SquadMetric.F1(answers[x].Text, gold);
        }
        int count = Math.Max(1, qa.Examples.Count);
        return metrics.ToDictionary(m => m, m => m switch
        {
            "f1" => f1 / count,
            "exact_match" => exact / count,
            _ => throw new ArgumentException($"metric '{m}' does not apply to question answering"),
        });
    }

    /// <summary>Each question's best answer over its windows: its text, its place in the context, and its score (start + end logit).</summary>
    public static QaPrediction[] Answers(QaWindows qa, float[][] outputs)
    {
        var best = new QaPrediction?[qa.Examples.Count];
        for (int row = 0; row < outputs.Length; row++)
        {
            int x = qa.Example[row];
            var offsets = qa.Offsets[row];
            var values = outputs[row];
            int positions = Math.Min(offsets.Length, values.Length / 2);
            var starts = Top(values, positions, 0);
            var ends = Top(values, positions, 1);
            foreach (int s in starts)
            {
                if (offsets[s].Start < 0) continue; // not context
                foreach (int e in ends)
                {
                    if (offsets[e].Start < 0 || e < s || e - s + 1 > MaxAnswerPieces) continue;
                    double score = values[2 * s] + values[2 * e + 1];
                    if (best[x] is { } current && current.Score >= score) continue;
                    var context = qa.Examples[x].Context;
                    best[x] = new QaPrediction(context[offsets[s].Start..offsets[e].End], offsets[s].Start, offsets[e].End, score);
                }
            }
        }
        return best.Select(b => b ?? new QaPrediction("", 0, 0, double.NegativeInfinity)).ToArray();
    }

    /// <summary>The positions of the <see cref="NBest"/> largest of every other value from <paramref name="channel"/>.</summary>
    static int[] Top(float[] values, int positions, int channel) =>
        Enumerable.Range(0, positions).OrderByDescending(p => values[2 * p + channel]).Take(NBest).ToArray();

    public override Prediction Decode(HeadConfig config, float[] outputs, DecodeInput? input) =>
        throw new NotSupportedException("question answering answers from a question's windows together: use Answer (or Answers)");

    public override bool NeedsOffsets => true;

    public override string? CheckInput(PredictInput input) =>
        input.Choices is not null ? "choices apply to multiple-choice adapters, not question-answering"
        : input.TextPair is not { Length: > 0 } ? "a question needs its context (\"context\", or the pair's second text)"
        : null;

    /// <summary>
    /// A question's windows, as in training (<see cref="EncodedDataset.QaWindowsOf"/>), overlapping by up to 128 pieces;
    /// a question longer than half of <paramref name="maxLength"/> is cut to that half so that its context has room.
    /// Offsets outside the context are (−1, −1).
    /// </summary>
    public override IReadOnlyList<BertEncoding> EncodeInput(HeadConfig config, PredictInput input, BertTokenizer tokenizer, int maxLength)
    {
        var example = Example(input, tokenizer, maxLength);
        int room = maxLength - (tokenizer.EncodeWithOffsets(example.Question.TrimStart()).Length - 2) - 3;
        return EncodedDataset.QaWindowsOf(example, tokenizer, maxLength, Math.Min(128, room / 2))
            .Select(w => new BertEncoding(w.Ids, w.Types, Array.ConvertAll(w.Ids, tokenizer.IdToToken), w.Offsets))
            .ToArray();
    }

    public override Prediction Answer(HeadConfig config, PredictInput input, IReadOnlyList<BertEncoding> rows, IReadOnlyList<float[]> outputs)
    {
        foreach (var row in outputs) Prediction.RequireFinite(row);
        var example = new QaExample("input", input.Text, input.TextPair!, [], "input", 0);
        var windows = new QaWindows([example], new int[rows.Count], [.. rows.Select(r => r.Offsets!)]);
        return new Prediction { Answer = Answers(windows, [.. outputs])[0] };
    }

    /// <summary>The question as an example to window, cut to half the positions where it is longer.</summary>
    static QaExample Example(PredictInput input, BertTokenizer tokenizer, int maxLength)
    {
        var question = input.Text;
        var encoded = tokenizer.EncodeWithOffsets(question.TrimStart());
        int half = maxLength / 2;
        if (encoded.Length - 2 > half) question = question.TrimStart()[..encoded.Offsets![half].End];
        return new QaExample("input", question, input.TextPair ?? "", [], "input", 0);
    }
}

/// <summary>An answer found in a context: its text, where it is (UTF-16 units, end exclusive), and its score.</summary>
public sealed record QaPrediction(string Text, int Start, int End, double Score);

/// <summary>
/// The official SQuAD v1.1 evaluation (evaluate-v1.1.py): answers normalised by lowercasing, removing ASCII punctuation,
/// the articles a/an/the, and extra white space; exact match and token-overlap F1, each the best over the gold answers.
/// </summary>
public static partial class SquadMetric
{
    const string Punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"; // Python's string.punctuation

    [GeneratedRegex(@"\b(a|an|the)\b")]
    private static partial Regex Articles();

    public static string Normalize(string text)
    {
        var lower = text.ToLowerInvariant();
        var kept = new StringBuilder(lower.Length);
        foreach (char c in lower) if (!Punctuation.Contains(c)) kept.Append(c);
        var noArticles = Articles().Replace(kept.ToString(), " ");
        return string.Join(' ', noArticles.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
    }

    public static double ExactMatch(string prediction, IReadOnlyList<string> gold) =>
        gold.Max(g => Normalize(prediction) == Normalize(g) ? 1.0 : 0.0);

    public static double F1(string prediction, IReadOnlyList<string> gold) => gold.Max(g => F1(prediction, g));

    static double F1(string prediction, string gold)
    {
        var predicted = Normalize(prediction).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var truth = Normalize(gold).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var counts = truth.GroupBy(t => t).ToDictionary(g => g.Key, g => g.Count());
        int common = 0;
        foreach (var token in predicted)
            if (counts.TryGetValue(token, out int n) && n > 0)
            {
                common++;
                counts[token] = n - 1;
            }
        if (common == 0) return 0;
        double precision = (double)common / predicted.Length, recall = (double)common / truth.Length;
        return 2 * precision * recall / (precision + recall);
    }
}
