using System.Globalization;
using AdapterSharp.Heads;
using AdapterSharp.Text;
using static TorchSharp.torch;

namespace AdapterSharp.Data;

/// <summary>
/// Tokenized examples with their targets: a label index (classification), a score (regression), or a label per
/// position (token classification, with each position's word and each sentence's gold tags for scoring).
/// </summary>
public sealed class EncodedDataset
{
    EncodedDataset(int[][] ids, int[][] types, long[] labels, float[] scores,
        int[][]? tokenLabels = null, int[][]? wordIds = null, string[][]? tags = null, int[][]? spans = null, QaWindows? qa = null,
        int groupSize = 1)
    {
        GroupSize = groupSize;
        Spans = spans;
        Qa = qa;
        Ids = ids;
        TypeIds = types;
        Labels = labels;
        Scores = scores;
        TokenLabels = tokenLabels;
        WordIds = wordIds;
        Tags = tags;
    }

    /// <summary>The label of a position that takes no part in the loss (PyTorch's cross-entropy ignore index).</summary>
    public const int Ignored = -100;

    public int[][] Ids { get; }
    public int[][] TypeIds { get; }
    public long[] Labels { get; }
    public float[] Scores { get; }

    /// <summary>Token classification: per row, a label index per position, <see cref="Ignored"/> where no loss is taken.</summary>
    public int[][]? TokenLabels { get; }

    /// <summary>Token classification: per row, each position's word (−1 for [CLS] and [SEP]).</summary>
    public int[][]? WordIds { get; }

    /// <summary>Token classification: per row, the gold tag of every word of the sentence (also those cut by the maximum length).</summary>
    public string[][]? Tags { get; }

    /// <summary>Extractive QA: per row (a window of a context), the answer's first and last positions; [0, 0] ([CLS]) where the window holds none.</summary>
    public int[][]? Spans { get; }

    /// <summary>Extractive QA: which question each row is a window of, and where each position lies in its context.</summary>
    public QaWindows? Qa { get; }

    /// <summary>
    /// Rows that belong together (multiple choice: a question's choices, rows g·G … g·G + G − 1), batched whole; 1 for
    /// every other kind. Every row of a group carries the group's label.
    /// </summary>
    public int GroupSize { get; }

    /// <summary>Multiple choice: a row per choice (the context paired with the choice), grouped per question.</summary>
    public static EncodedDataset EncodeChoices(IReadOnlyList<ChoiceExample> examples, BertTokenizer tokenizer, int maxLength)
    {
        int group = examples.Count > 0 ? examples[0].Choices.Length : 1;
        var ids = new List<int[]>();
        var types = new List<int[]>();
        var labels = new List<long>();
        foreach (var example in examples)
        {
            if (example.Choices.Length != group)
                throw new DataFormatException($"{example.Source}:{example.Line}: {example.Choices.Length} choices where the first question has {group}");
            for (int k = 0; k < group; k++)
            {
                var (text, pair) = example.Pair(k);
                var encoding = tokenizer.Encode(text, pair, maxLength);
                ids.Add(encoding.InputIds);
                types.Add(encoding.TokenTypeIds);
                labels.Add(Math.Max(0, example.Label));
            }
        }
        return new EncodedDataset([.. ids], [.. types], [.. labels], new float[ids.Count], groupSize: group);
    }

    /// <summary>
    /// Extractive QA features (as HF's run_qa makes them): <c>[CLS] question [SEP] context [SEP]</c>, a long context cut
    /// into windows of the room <paramref name="maxLength"/> leaves, each overlapping the next by <paramref name="docStride"/>
    /// pieces; each window labelled with the first answer's first and last pieces when it holds the whole answer, else
    /// [CLS] (position 0) for both.
    /// </summary>
    public static EncodedDataset EncodeQa(IReadOnlyList<QaExample> examples, BertTokenizer tokenizer, int maxLength, int docStride)
    {
        var ids = new List<int[]>();
        var types = new List<int[]>();
        var spans = new List<int[]>();
        var exampleOf = new List<int>();
        var offsets = new List<(int, int)[]>();
        for (int x = 0; x < examples.Count; x++)
        {
            var example = examples[x];
            int questionLength = tokenizer.EncodeWithOffsets(example.Question.TrimStart()).Length - 2;
            int room = maxLength - questionLength - 3;
            if (room <= docStride)
                throw new DataFormatException(
                    $"{example.Where}: the question takes {questionLength} of the {maxLength} positions (--max-length), leaving {Math.Max(0, room)} for the context, " +
                    $"which must be more than --doc-stride {docStride}");
            foreach (var window in QaWindowsOf(example, tokenizer, maxLength, docStride))
            {
                ids.Add(window.Ids);
                types.Add(window.Types);
                spans.Add(window.Span);
                exampleOf.Add(x);
                offsets.Add(window.Offsets);
            }
        }
        return new EncodedDataset([.. ids], [.. types], new long[ids.Count], new float[ids.Count], spans: [.. spans],
            qa: new QaWindows(examples, [.. exampleOf], [.. offsets]));
    }

    /// <summary>
    /// One question's windows (see <see cref="EncodeQa"/>): ids, token types, each position's range in the context
    /// ((−1, −1) outside it) and the answer's span ([0, 0] where the window does not hold it, or there is no answer).
    /// The caller has checked that the question leaves more than <paramref name="docStride"/> positions.
    /// </summary>
    public static List<(int[] Ids, int[] Types, (int Start, int End)[] Offsets, int[] Span)> QaWindowsOf(QaExample example, BertTokenizer tokenizer,
        int maxLength, int docStride)
    {
        var windows = new List<(int[], int[], (int, int)[], int[])>();
        var question = tokenizer.EncodeWithOffsets(example.Question.TrimStart());
        var context = tokenizer.EncodeWithOffsets(example.Context);
        int questionLength = question.Length - 2, contextLength = context.Length - 2;
        int room = maxLength - questionLength - 3;
        // Questions to answer (prediction) have no answer: every window is labelled [CLS].
        var answer = example.Answers.Count > 0 ? example.Answers[0] : null;
        int answerStart = answer?.Start ?? int.MaxValue, answerEnd = answer is null ? int.MaxValue : answer.Start + answer.Text.Length;
        for (int start = 0; ; start += room - docStride)
        {
            int end = Math.Min(contextLength, start + room); // context pieces [start, end)
            int length = questionLength + 3 + (end - start);
            var rowIds = new int[length];
            var rowTypes = new int[length];
            var rowOffsets = new (int, int)[length];
            Array.Fill(rowOffsets, (-1, -1));
            rowIds[0] = tokenizer.ClsId;
            Array.Copy(question.InputIds, 1, rowIds, 1, questionLength);
            rowIds[questionLength + 1] = tokenizer.SepId;
            int first = questionLength + 2; // the window's first context position
            for (int k = start; k < end; k++)
            {
                rowIds[first + k - start] = context.InputIds[k + 1];
                rowOffsets[first + k - start] = context.Offsets![k + 1];
            }
            rowIds[^1] = tokenizer.SepId;
            rowTypes.AsSpan(first).Fill(1);
            // HF's labelling: the last piece starting at or before the answer's start, the first ending at or after its end.
            int[] span = [0, 0];
            if (answer is not null && end > start && rowOffsets[first].Item1 <= answerStart && rowOffsets[first + end - start - 1].Item2 >= answerEnd)
            {
                int s = first;
                while (s < first + end - start && rowOffsets[s].Item1 <= answerStart) s++;
                int e = first + end - start - 1;
                while (e >= first && rowOffsets[e].Item2 >= answerEnd) e--;
                span = [s - 1, e + 1];
            }
            windows.Add((rowIds, rowTypes, rowOffsets, span));
            if (end >= contextLength) break;
        }
        return windows;
    }
    public int Count => Ids.Length;
    public long TokenCount => Ids.Sum(i => (long)i.Length);

    /// <summary>
    /// The head a training set calls for: its distinct labels sorted by name (ordinal), or regression.
    /// </summary>
    public static HeadConfig HeadFor(IReadOnlyList<Example> training, bool regression)
    {
        if (regression) return HeadConfig.Regression();
        var labels = training.Select(e => e.Label).Distinct().Order(StringComparer.Ordinal).ToArray();
        var booleans = labels.Where(l => bool.TryParse(l, out _)).ToArray();
        var numbers = labels.Where(l => decimal.TryParse(l, NumberStyles.Float, CultureInfo.InvariantCulture, out _)).ToArray();
        if (booleans.Length > 0 && numbers.Length > 0)
            throw new DataFormatException(
                $"{(training.Count > 0 ? training[0].Source : "training data")}: labels mix numbers ({string.Join(", ", numbers)}) and booleans " +
                $"({string.Join(", ", booleans)}), which would be different classes: write them one way");
        if (labels.Length < 2)
            throw new DataFormatException(
                $"{(training.Count > 0 ? training[0].Source : "training data")}: needs at least two distinct labels, found {labels.Length}");
        return HeadConfig.Classification(labels);
    }

    /// <summary>
    /// Tokenizes <paramref name="examples"/> and maps labels through <paramref name="head"/>. A label the head
    /// does not know, or a score that is not a number, is an error at file:line, or a skipped row when
    /// <paramref name="skipBadRows"/> is set (counted in <paramref name="skipped"/>).
    /// </summary>
    public static EncodedDataset Encode(IReadOnlyList<Example> examples, BertTokenizer tokenizer, HeadConfig head,
        int maxLength, bool skipBadRows, out int skipped)
    {
        // Keyed by the canonical form, as the readers keep labels: a head saved from "1.0" labels still takes "1".
        var index = new Dictionary<string, long>(StringComparer.Ordinal);
        for (int i = 0; i < head.Labels.Length; i++) index.TryAdd(AdapterSharp.Data.Labels.Canonical(head.Labels[i]).Label ?? head.Labels[i], i);
        var ids = new List<int[]>(examples.Count);
        var types = new List<int[]>(examples.Count);
        var labels = new List<long>(examples.Count);
        var scores = new List<float>(examples.Count);
        skipped = 0;
        foreach (var example in examples)
        {
            long label = 0;
            float score = 0;
            string? problem = null;
            if (head.IsRegression)
            {
                if (!float.TryParse(example.Label, NumberStyles.Float, CultureInfo.InvariantCulture, out score) || !float.IsFinite(score))
                    problem = $"score '{example.Label}' is not a number";
            }
            else if (!index.TryGetValue(example.Label, out label))
            {
                problem = $"label '{example.Label}' does not occur in the training labels ({string.Join(", ", head.Labels)})";
            }
            if (problem is not null)
            {
                if (!skipBadRows) throw new DataFormatException($"{example.Source}:{example.Line}: {problem}");
                skipped++;
                continue;
            }
            var encoding = tokenizer.Encode(example.Text, example.TextPair, maxLength);
            ids.Add(encoding.InputIds);
            types.Add(encoding.TokenTypeIds);
            labels.Add(label);
            scores.Add(score);
        }
        return new EncodedDataset([.. ids], [.. types], [.. labels], [.. scores]);
    }

    /// <summary>The head a tagged training set calls for: its distinct tags sorted by name (ordinal).</summary>
    public static HeadConfig TokenHeadFor(IReadOnlyList<TaggedSentence> training)
    {
        var tags = training.SelectMany(s => s.Tags).Distinct().Order(StringComparer.Ordinal).ToArray();
        if (tags.Length < 2)
            throw new DataFormatException(
                $"{(training.Count > 0 ? training[0].Source : "training data")}: needs at least two distinct tags, found {tags.Length}");
        return HeadConfig.TokenClassification(tags);
    }

    /// <summary>
    /// Tokenizes tagged sentences word by word (<see cref="BertTokenizer.EncodeWords"/>) and labels each word's first
    /// piece with its tag; the other pieces are <see cref="Ignored"/>, or, with <paramref name="labelAllPieces"/>,
    /// labelled too (with the tag's <c>I-</c> form after a <c>B-</c> first piece, where the head has it). A tag the head
    /// does not know is an error at file:line, or a skipped sentence when <paramref name="skipBadRows"/> is set.
    /// </summary>
    public static EncodedDataset EncodeTagged(IReadOnlyList<TaggedSentence> sentences, BertTokenizer tokenizer, HeadConfig head,
        int maxLength, bool labelAllPieces, bool skipBadRows, out int skipped)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < head.Labels.Length; i++) index.TryAdd(head.Labels[i], i);
        var ids = new List<int[]>(sentences.Count);
        var types = new List<int[]>(sentences.Count);
        var tokenLabels = new List<int[]>(sentences.Count);
        var wordIds = new List<int[]>(sentences.Count);
        var tags = new List<string[]>(sentences.Count);
        skipped = 0;
        foreach (var sentence in sentences)
        {
            var unknown = sentence.Tags.Select((tag, k) => (tag, k)).FirstOrDefault(t => !index.ContainsKey(t.tag));
            if (unknown.tag is not null)
            {
                var problem = $"{sentence.Source}:{sentence.Line + unknown.k}: tag '{unknown.tag}' does not occur in the training tags ({string.Join(", ", head.Labels)})";
                if (!skipBadRows) throw new DataFormatException(problem);
                skipped++;
                continue;
            }
            var encoding = tokenizer.EncodeWords(sentence.Tokens, maxLength);
            var labels = new int[encoding.Length];
            Array.Fill(labels, Ignored);
            var words = encoding.WordIds!;
            for (int position = 0; position < words.Length; position++)
            {
                int word = words[position];
                if (word < 0) continue;
                var tag = sentence.Tags[word];
                bool first = position == 0 || words[position - 1] != word;
                if (first) labels[position] = index[tag];
                else if (labelAllPieces)
                    labels[position] = tag.StartsWith("B-", StringComparison.Ordinal) && index.TryGetValue("I-" + tag[2..], out int inside)
                        ? inside : index[tag];
            }
            ids.Add(encoding.InputIds);
            types.Add(encoding.TokenTypeIds);
            tokenLabels.Add(labels);
            wordIds.Add(words);
            tags.Add(sentence.Tags);
        }
        return new EncodedDataset([.. ids], [.. types], new long[ids.Count], new float[ids.Count], [.. tokenLabels], [.. wordIds], [.. tags]);
    }

    /// <summary>Inputs without labels (prediction).</summary>
    public static EncodedDataset Unlabelled(IEnumerable<(string Text, string? Pair)> inputs, BertTokenizer tokenizer, int maxLength) =>
        Unlabelled(inputs.Select(i => tokenizer.Encode(i.Text, i.Pair, maxLength)).ToArray());

    /// <summary>Inputs without labels, already tokenized (each may have been truncated to its own length).</summary>
    public static EncodedDataset Unlabelled(IReadOnlyList<BertEncoding> encodings) =>
        new(encodings.Select(e => e.InputIds).ToArray(), encodings.Select(e => e.TokenTypeIds).ToArray(),
            new long[encodings.Count], new float[encodings.Count]);

    /// <summary>
    /// Training order: shuffled, then sorted by length within pools of 50 batches and cut into batches whose
    /// order is shuffled again, so each batch pads little while epochs still see varied batches. With groups
    /// (<see cref="GroupSize"/>) the groups are ordered and a batch holds <paramref name="batchSize"/> whole groups.
    /// </summary>
    public List<int[]> ShuffledBatches(int batchSize, Random random, bool bucketByLength = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var order = Enumerable.Range(0, Count / GroupSize).ToArray();
        random.Shuffle(order);
        if (!bucketByLength) return order.Chunk(batchSize).Select(Rows).ToList();
        var batches = new List<int[]>();
        int pool = batchSize * 50;
        for (int start = 0; start < order.Length; start += pool)
        {
            var chunk = order.AsSpan(start, Math.Min(pool, order.Length - start)).ToArray();
            Array.Sort(chunk, (a, b) => GroupLength(a).CompareTo(GroupLength(b)));
            for (int i = 0; i < chunk.Length; i += batchSize)
                batches.Add(Rows(chunk[i..Math.Min(i + batchSize, chunk.Length)]));
        }
        var shuffled = batches.ToArray();
        random.Shuffle(shuffled);
        return [.. shuffled];
    }

    /// <summary>Evaluation order: sorted by length, whole groups together (results are put back in input order by the caller).</summary>
    public List<int[]> SortedBatches(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var order = Enumerable.Range(0, Count / GroupSize).OrderBy(GroupLength).ToArray();
        var batches = new List<int[]>();
        for (int i = 0; i < order.Length; i += batchSize) batches.Add(Rows(order[i..Math.Min(i + batchSize, order.Length)]));
        return batches;
    }

    /// <summary>The rows of <paramref name="groups"/>, in order.</summary>
    int[] Rows(int[] groups) =>
        GroupSize == 1 ? groups : groups.SelectMany(g => Enumerable.Range(g * GroupSize, GroupSize)).ToArray();

    int GroupLength(int group)
    {
        int longest = 0;
        for (int k = 0; k < GroupSize; k++) longest = Math.Max(longest, Ids[group * GroupSize + k].Length);
        return longest;
    }

    /// <summary>The rows of one batch, padded to its longest row: ids, attention mask and token types (B, T), on CPU.</summary>
    public (Tensor Ids, Tensor Mask, Tensor Types) Collate(int[] rows, int padId = 0)
    {
        int time = rows.Max(r => Ids[r].Length);
        var ids = new long[rows.Length * time];
        var mask = new long[rows.Length * time];
        var types = new long[rows.Length * time];
        for (int b = 0; b < rows.Length; b++)
        {
            var rowIds = Ids[rows[b]];
            var rowTypes = TypeIds[rows[b]];
            int offset = b * time;
            for (int t = 0; t < time; t++)
            {
                bool real = t < rowIds.Length;
                ids[offset + t] = real ? rowIds[t] : padId;
                mask[offset + t] = real ? 1 : 0;
                types[offset + t] = real ? rowTypes[t] : 0;
            }
        }
        long[] shape = [rows.Length, time];
        return (tensor(ids).view(shape), tensor(mask).view(shape), tensor(types).view(shape));
    }

    /// <summary>Whether the rows differ in length, so that a padded batch needs an attention mask.</summary>
    public bool HasPadding(int[] rows)
    {
        int length = Ids[rows[0]].Length;
        foreach (var row in rows)
            if (Ids[row].Length != length) return true;
        return false;
    }

    public Tensor LabelTensor(int[] rows) => tensor(rows.Select(r => Labels[r]).ToArray());
    public Tensor ScoreTensor(int[] rows) => tensor(rows.Select(r => Scores[r]).ToArray());
}

/// <summary>
/// Extractive QA windows: the questions, which question each row is a window of, and each position's range in that
/// question's context (UTF-16 units; (−1, −1) for the question, [CLS] and [SEP]).
/// </summary>
public sealed record QaWindows(IReadOnlyList<QaExample> Examples, int[] Example, (int Start, int End)[][] Offsets);
