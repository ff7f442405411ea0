using AdapterSharp.Training;

namespace AdapterSharp.Tests.Heads;

/// <summary>
/// conlleval's chunk rules on sequences whose chunks were counted by hand (the expected figures are those counts, not
/// the code's).
/// </summary>
public sealed class ChunkMetricsTests
{
    static ChunkScores Score(params (string Gold, string Predicted)[][] sentences) =>
        ChunkMetrics.Evaluate(sentences.Select(s => ((IReadOnlyList<string>)s.Select(t => t.Gold).ToArray(),
            (IReadOnlyList<string>)s.Select(t => t.Predicted).ToArray())));

    [Fact]
    public void Iob2_one_right_chunk_and_one_of_the_wrong_type()
    {
        // Gold chunks: PER[0-1], LOC[3]. Predicted: PER[0-1], ORG[3]. One of two right either way.
        var scores = Score([("B-PER", "B-PER"), ("I-PER", "I-PER"), ("O", "O"), ("B-LOC", "B-ORG")]);
        Assert.Equal((1L, 2L, 2L, 4L), (scores.CorrectChunks, scores.PredictedChunks, scores.GoldChunks, scores.Tokens));
        Assert.Equal(0.5, scores.Precision);
        Assert.Equal(0.5, scores.Recall);
        Assert.Equal(0.5, scores.F1);
        Assert.Equal(0.75, scores.Accuracy);
    }

    [Fact]
    public void Iob1_b_splits_two_chunks_of_one_type_and_a_merged_prediction_matches_neither()
    {
        // IOB1 gold: PER[0-1] then PER[2] (B- only between same-type neighbours). Predicted one PER[0-2].
        var scores = Score([("I-PER", "I-PER"), ("I-PER", "I-PER"), ("B-PER", "I-PER"), ("O", "O")]);
        Assert.Equal((0L, 1L, 2L), (scores.CorrectChunks, scores.PredictedChunks, scores.GoldChunks));
        Assert.Equal(0, scores.F1);
        Assert.Equal(0.75, scores.Accuracy);
    }

    [Fact]
    public void An_i_tag_after_another_type_starts_a_chunk()
    {
        // Gold I-PER I-LOC (IOB1: two chunks); predicted B-PER B-LOC (IOB2: the same two chunks). Tags differ, chunks agree.
        var scores = Score([("I-PER", "B-PER"), ("I-LOC", "B-LOC")]);
        Assert.Equal((2L, 2L, 2L), (scores.CorrectChunks, scores.PredictedChunks, scores.GoldChunks));
        Assert.Equal(1.0, scores.F1);
        Assert.Equal(0.0, scores.Accuracy);
    }

    [Fact]
    public void A_prediction_that_stops_early_is_wrong_and_a_sentence_break_ends_every_chunk()
    {
        // Sentence 1: gold ORG[0-2], predicted ORG[0-1]: wrong. Sentence 2 starts with I-PER in both: the break ended
        // sentence 1's chunks, so it is a new (right) chunk in each.
        var scores = Score(
            [("B-ORG", "B-ORG"), ("I-ORG", "I-ORG"), ("I-ORG", "O")],
            [("I-PER", "I-PER")]);
        Assert.Equal((1L, 2L, 2L, 4L), (scores.CorrectChunks, scores.PredictedChunks, scores.GoldChunks, scores.Tokens));
        Assert.Equal(0.5, scores.F1);
    }

    [Fact]
    public void Nothing_predicted_scores_zero_not_nan()
    {
        var scores = Score([("B-PER", "O"), ("O", "O")]);
        Assert.Equal((0.0, 0.0, 0.0), (scores.Precision, scores.Recall, scores.F1));
        Assert.Equal(0.5, scores.Accuracy);
    }

    [Fact]
    public void Chunks_are_read_by_the_same_rules()
    {
        Assert.Equal(
            new List<(string, int, int)> { ("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("MISC", 5, 6) },
            ChunkMetrics.Chunks(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-MISC", "I-MISC", "O"]));
    }

    [Fact]
    public void Sentences_of_different_lengths_are_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => ChunkMetrics.Evaluate([(["O", "O"], ["O"])]));
        Assert.Contains("2 gold tags but 1 predicted", e.Message);
    }
}
