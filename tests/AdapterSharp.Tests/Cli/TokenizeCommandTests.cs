using System.Text.Json;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary><c>adaptersharp tokenize</c> with minilm-l6: JSONL in, JSONL out, and one-line errors for bad input.</summary>
public sealed class TokenizeCommandTests : IDisposable
{
    readonly TempDirectory dir = new();

    public TokenizeCommandTests() => CliRunner.EnsureMiniLm();

    public void Dispose() => dir.Dispose();

    static List<JsonElement> ParseLines(string stdout) =>
        stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(line => JsonDocument.Parse(line).RootElement.Clone())
            .ToList();

    static long[] Ids(JsonElement line, string field) => line.GetProperty(field).EnumerateArray().Select(e => e.GetInt64()).ToArray();

    [Fact]
    public void A_file_of_texts_and_pairs_gives_one_line_of_ids_types_and_tokens_each()
    {
        var input = dir.Write("in.jsonl", System.Text.Encoding.UTF8.GetBytes(
            "{\"text\": \"The movie was fantastic!\"}\n\n{\"text\": \"The movie was fantastic!\", \"text_pair\": \"I loved it.\"}\n"));

        var result = CliRunner.Run("tokenize", "--model", "minilm-l6", input);

        Assert.True(result.ExitCode == 0, result.ToString());
        var lines = ParseLines(result.Stdout);
        Assert.Equal(2, lines.Count);
        Assert.Equal([101, 1996, 3185, 2001, 10392, 999, 102], Ids(lines[0], "input_ids"));
        Assert.Equal(new long[7], Ids(lines[0], "token_type_ids"));
        Assert.Equal(["[CLS]", "the", "movie", "was", "fantastic", "!", "[SEP]"],
            lines[0].GetProperty("tokens").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal([101, 1996, 3185, 2001, 10392, 999, 102, 1045, 3866, 2009, 1012, 102], Ids(lines[1], "input_ids"));
        Assert.Equal([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1], Ids(lines[1], "token_type_ids"));
    }

    [Fact]
    public void Max_length_truncates_to_that_many_tokens_keeping_the_special_ones()
    {
        var result = CliRunner.Run(["tokenize", "--max-length", "8"],
            stdin: "{\"text\": \"The movie was fantastic and the acting was even better!\"}\n");

        Assert.True(result.ExitCode == 0, result.ToString());
        var ids = Ids(ParseLines(result.Stdout).Single(), "input_ids");
        Assert.Equal([101, 1996, 3185, 2001, 10392, 1998, 1996, 102], ids);
    }

    [Theory]
    [InlineData("-")]
    [InlineData(null)]
    public void Standard_input_is_read_with_a_dash_or_no_file(string? file)
    {
        string[] args = file is null ? ["tokenize"] : ["tokenize", file];

        var result = CliRunner.Run(args, stdin: "{\"text\": \"The movie was fantastic!\"}\n");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal([101, 1996, 3185, 2001, 10392, 999, 102], Ids(ParseLines(result.Stdout).Single(), "input_ids"));
    }

    [Fact]
    public void Invalid_JSON_names_the_file_and_line()
    {
        var input = dir.Write("bad.jsonl", System.Text.Encoding.UTF8.GetBytes(
            "{\"text\": \"one\"}\n{\"text\": \"two\"}\n{\"text\": \"three\n"));

        CliAssert.OneLineError(CliRunner.Run("tokenize", input), $"error: {input}:3: invalid JSON");
    }

    [Fact]
    public void A_line_without_a_text_field_names_the_place_and_the_field()
    {
        CliAssert.OneLineError(CliRunner.Run(["tokenize", "-"], stdin: "{\"sentence\": \"hello\"}\n"),
            "<stdin>:1", "missing string field \"text\"");
    }

    [Fact]
    public void A_missing_input_file_is_named()
    {
        var missing = dir.File("nope.jsonl");

        CliAssert.OneLineError(CliRunner.Run("tokenize", missing), missing, "file not found");
    }
}
