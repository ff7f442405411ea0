using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Heads;

/// <summary>SQuAD's metric on answers scored by hand, the QA readers, and the windows a long context is cut into.</summary>
public sealed class QuestionAnsweringTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    [Theory]
    [InlineData("The  Denver Broncos!", "denver broncos")]
    [InlineData("an apple a day", "apple day")]
    [InlineData("Theatre, the end.", "theatre end")]
    public void Normalisation_is_the_official_scripts(string text, string expected) => Assert.Equal(expected, SquadMetric.Normalize(text));

    [Fact]
    public void Exact_match_and_f1_take_the_best_gold_answer()
    {
        Assert.Equal(1.0, SquadMetric.ExactMatch("denver broncos", ["Carolina", "The Denver Broncos"]));
        Assert.Equal(0.0, SquadMetric.ExactMatch("Denver", ["Denver Broncos"]));
        // "the Denver" → [denver] against [denver, broncos]: P 1, R 1/2, F1 2/3.
        Assert.Equal(2.0 / 3, SquadMetric.F1("the Denver", ["Denver Broncos"]), 12);
        // Against [denver, broncos, team] the same is P 1, R 1/3, F1 1/2; the best gold wins.
        Assert.Equal(2.0 / 3, SquadMetric.F1("the Denver", ["Denver Broncos team", "Denver Broncos"]), 12);
        Assert.Equal(0.0, SquadMetric.F1("", ["Denver"]));
    }

    [Fact]
    public void The_squad_file_splits_into_the_readmes_train_and_evaluation_articles()
    {
        var data = QaDataReader.Read(Path.Combine(TestPaths.SharedDir, "datasets", "squad", "dev-v1.1.json"));
        // README: 48 articles, 10,570 questions; articles 1-38 hold 8,582 and 39-48 hold 1,988.
        Assert.Equal(48, data.Articles);
        Assert.Equal(10570, data.Examples.Count);
        var (train, eval) = QaTasks.Find("squad")!.Split(data.Examples);
        Assert.Equal((8582, 1988), (train.Count, eval.Count));
        var first = data.Examples[0];
        Assert.Equal("56be4db0acb8001400a502ec", first.Id);
        Assert.Equal(("Denver Broncos", 177), (first.Answers[0].Text, first.Answers[0].Start));
    }

    [Fact]
    public void Answer_starts_count_code_points_and_are_kept_as_utf16_indices()
    {
        var path = Path.Combine(dir.Path, "qa.jsonl");
        File.WriteAllText(path, "{\"question\": \"Where?\", \"context\": \"\U0001F600 Paris is nice\", \"answers\": {\"text\": [\"Paris\"], \"answer_start\": [2]}}\n");
        var example = Assert.Single(QaDataReader.Read(path).Examples);
        Assert.Equal(3, example.Answers[0].Start);
        Assert.Equal("Paris", example.Context.Substring(3, 5));
    }

    [Theory]
    [InlineData("{\"question\": \"q\", \"context\": \"abc def\", \"answers\": {\"text\": [\"def\"], \"answer_start\": [1]}}", "answer 'def' is not at offset 1 of the context")]
    [InlineData("{\"question\": \"q\", \"context\": \"abc\", \"answers\": {\"text\": [], \"answer_start\": []}}", "no answer")]
    [InlineData("{\"question\": \"q\", \"context\": \"abc\", \"answers\": {\"text\": [\"a\"], \"answer_start\": [0, 1]}}", "1 texts but 2 answer_start values")]
    [InlineData("{\"context\": \"abc\", \"answers\": []}", "missing string \"question\"")]
    [InlineData("{\"question\": \"q\", \"context\": \"abc\", \"answers\": [{\"text\": \"a\"}]}", "answers[0]: missing whole number \"answer_start\"")]
    public void A_bad_jsonl_question_is_an_error_at_its_line(string line, string message)
    {
        var path = Path.Combine(dir.Path, "bad.jsonl");
        File.WriteAllText(path, "{\"question\": \"q\", \"context\": \"abc\", \"answers\": [{\"text\": \"abc\", \"answer_start\": 0}]}\n" + line + "\n");
        var e = Assert.Throws<DataFormatException>(() => QaDataReader.Read(path));
        Assert.StartsWith($"{path}:2: ", e.Message);
        Assert.Contains(message, e.Message);
        Assert.Single(QaDataReader.Read(path, skipBadRows: true).Examples);
    }

    [Fact]
    public void A_squad_answer_off_its_offset_names_the_question()
    {
        var path = Path.Combine(dir.Path, "bad.json");
        File.WriteAllText(path, "{\"data\": [{\"title\": \"t\", \"paragraphs\": [{\"context\": \"abc def\", \"qas\": [" +
                                "{\"id\": \"q1\", \"question\": \"x?\", \"answers\": [{\"text\": \"def\", \"answer_start\": 3}]}]}]}]}");
        var e = Assert.Throws<DataFormatException>(() => QaDataReader.Read(path));
        Assert.Equal($"{path}: question q1: answers[0]: answer 'def' is not at offset 3 of the context", e.Message);
    }

    [Fact]
    public void A_long_context_becomes_overlapping_windows_each_labelled_where_it_holds_the_answer()
    {
        var tokenizer = MiniLm.Load().Tokenizer;
        var context = string.Join(' ', Enumerable.Range(0, 40).Select(i => $"word{i}")) + " The Denver Broncos won. " +
                      string.Join(' ', Enumerable.Range(40, 30).Select(i => $"word{i}"));
        int start = context.IndexOf("Denver Broncos", StringComparison.Ordinal);
        var example = new QaExample("x", "Who won?", context, [new QaAnswer("Denver Broncos", start)], "test", 1);
        const int maxLength = 48, stride = 16;

        var data = EncodedDataset.EncodeQa([example], tokenizer, maxLength, stride);

        var contextPieces = tokenizer.EncodeWithOffsets(context);
        int question = tokenizer.EncodeWithOffsets("Who won?").Length - 2;
        int room = maxLength - question - 3;
        // Windows start every room - stride pieces until one reaches the end.
        int expectedWindows = 1 + (int)Math.Ceiling((contextPieces.Length - 2 - room) / (double)(room - stride));
        Assert.Equal(expectedWindows, data.Count);
        int holding = 0;
        for (int row = 0; row < data.Count; row++)
        {
            Assert.True(data.Ids[row].Length <= maxLength);
            Assert.Equal(tokenizer.ClsId, data.Ids[row][0]);
            Assert.Equal(tokenizer.SepId, data.Ids[row][^1]);
            // Consecutive windows share `stride` context pieces.
            if (row > 0)
                Assert.Equal(data.Ids[row - 1][^(stride + 1)..^1], data.Ids[row][(question + 2)..(question + 2 + stride)]);
            var span = data.Spans![row];
            var offsets = data.Qa!.Offsets[row];
            if (span[0] == 0) continue;
            holding++;
            Assert.Equal("Denver Broncos", context[offsets[span[0]].Start..offsets[span[1]].End]);
        }
        Assert.True(holding >= 1);
    }
}
