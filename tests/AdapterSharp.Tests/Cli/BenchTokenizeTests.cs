using System.Text.Json;

namespace AdapterSharp.Tests.Cli;

/// <summary><c>bench tokenize</c>: the tokenizer's speed, measured outside the tests.</summary>
public sealed class BenchTokenizeTests
{
    [Fact]
    public void Bench_tokenize_counts_the_sentences_and_pieces_of_a_file()
    {
        var dir = TinyTask.CreateModelDir(seed: 1);
        var texts = Path.Combine(dir, "texts.txt");
        File.WriteAllLines(texts, ["good w1 w2", "", "bad"]);
        var result = CliRunner.Run(["bench", "tokenize", "--model", dir, "--input", texts, "--repeats", "1"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        var record = JsonDocument.Parse(result.Stdout).RootElement;
        Assert.Equal(2, record.GetProperty("sentences").GetInt32()); // the empty line is not a sentence
        Assert.Equal(5 + 3, record.GetProperty("pieces").GetInt64()); // [CLS] good w1 w2 [SEP], [CLS] bad [SEP]
    }

    [Fact]
    public void A_missing_input_file_is_a_one_line_error()
    {
        var dir = TinyTask.CreateModelDir(seed: 1);
        CliAssert.OneLineError(CliRunner.Run(["bench", "tokenize", "--model", dir, "--input", Path.Combine(dir, "none.txt")]), "--input", "not found");
    }
}
