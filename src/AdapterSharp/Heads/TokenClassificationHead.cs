using AdapterSharp.Data;
using AdapterSharp.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Heads;

/// <summary>
/// A tag per word (named entities, say), from every position: cross-entropy over the positions that carry a label
/// (a word's first piece, or all its pieces with <c>--label-all-pieces</c>); scored per word, its tag read at its first
/// piece, by conlleval's entity precision, recall and F1 (<see cref="ChunkMetrics"/>) and tag accuracy; answered as the
/// entities the tags make, with their text and character offsets.
/// </summary>
public sealed class TokenClassificationHead : HeadKind
{
    public override string Name => "token-classification";
    public override HeadInput Reads => HeadInput.EveryToken;
    public override TargetLayout Targets => TargetLayout.TokenLabels;
    public override string[] DefaultMetrics => ["f1", "precision", "recall", "accuracy"];
    public override int Outputs(HeadConfig config) => config.Labels.Length;

    /// <summary>The tag of a word the model gave no piece to (cut by the maximum length, or nothing but dropped characters).</summary>
    public const string Outside = "O";

    public override void Validate(HeadConfig config)
    {
        if (config.Labels.Length < 2) throw new ArgumentException($"head: token classification needs at least 2 tags, got {config.Labels.Length}");
    }

    public override Tensor Loss(HeadConfig config, Tensor outputs, Tensor labels, Tensor scores, Tensor? mask) =>
        F.cross_entropy(outputs.reshape(-1, outputs.shape[^1]), labels.reshape(-1), ignore_index: EncodedDataset.Ignored);

    public override Dictionary<string, double> Score(HeadConfig config, EncodedDataset data, float[][] outputs, IReadOnlyList<string> metrics)
    {
        var gold = data.Tags ?? throw new ArgumentException("token classification is scored on tagged sentences (EncodedDataset.EncodeTagged)");
        var sentences = new List<(IReadOnlyList<string>, IReadOnlyList<string>)>(data.Count);
        for (int row = 0; row < data.Count; row++)
            sentences.Add((gold[row], WordTags(config, outputs[row], data.WordIds![row], gold[row].Length).Select(t => t.Tag).ToArray()));
        var scores = ChunkMetrics.Evaluate(sentences);
        return metrics.ToDictionary(m => m, m => m switch
        {
            "f1" => scores.F1,
            "precision" => scores.Precision,
            "recall" => scores.Recall,
            "accuracy" => scores.Accuracy,
            _ => throw new ArgumentException($"metric '{m}' does not apply to token classification"),
        });
    }

    /// <summary>
    /// Each word's tag and its probability, read at the word's first piece; a word without a piece is
    /// <see cref="Outside"/> with probability 0.
    /// </summary>
    /// <param name="outputs">The positions' outputs one after another (positions × tags).</param>
    /// <param name="wordIds">Each position's word (−1: none).</param>
    internal static (string Tag, double Probability)[] WordTags(HeadConfig config, float[] outputs, int[] wordIds, int words)
    {
        int width = config.Labels.Length;
        var tags = new (string, double)[words];
        Array.Fill(tags, (Outside, 0.0));
        int previous = -1;
        for (int position = 0; position < wordIds.Length && (position + 1) * width <= outputs.Length; position++)
        {
            int word = wordIds[position];
            if (word < 0 || word == previous || word >= words)
            {
                previous = word;
                continue;
            }
            previous = word;
            var values = outputs.AsSpan(position * width, width);
            int best = ClassificationHead.ArgMax(values);
            tags[word] = (config.Labels[best], ClassificationHead.Softmax(values)[best]);
        }
        return tags;
    }

    public override Prediction Decode(HeadConfig config, float[] outputs, DecodeInput? input)
    {
        Prediction.RequireFinite(outputs);
        var encoding = input?.Encoding;
        if (encoding?.Offsets is not { } offsets || encoding.WordIds is not { } wordIds)
            throw new ArgumentException("token classification decodes an encoding with offsets (BertTokenizer.EncodeWithOffsets)");
        // The words of the first text (a pair's second text is context, not tagged).
        int words = 0;
        var firstPosition = new List<int>();
        var lastPosition = new List<int>();
        for (int position = 0; position < wordIds.Length && encoding.TokenTypeIds[position] == 0; position++)
        {
            int word = wordIds[position];
            if (word < 0) continue;
            while (words <= word)
            {
                firstPosition.Add(position);
                lastPosition.Add(position);
                words++;
            }
            lastPosition[word] = position;
        }
        var tags = WordTags(config, outputs, wordIds, words);
        var entities = new List<Entity>();
        foreach (var (type, first, last) in ChunkMetrics.Chunks(tags.Select(t => t.Tag).ToArray()))
        {
            int start = offsets[firstPosition[first]].Start, end = offsets[lastPosition[last]].End;
            double score = Enumerable.Range(first, last - first + 1).Average(w => tags[w].Probability);
            entities.Add(new Entity(type, input!.Text[start..end], start, end, Math.Round(score, 6)));
        }
        return new Prediction { Entities = entities };
    }
}
