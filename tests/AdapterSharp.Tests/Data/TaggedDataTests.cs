using AdapterSharp.Data;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Data;

/// <summary>The CoNLL and JSONL readers of token-classification data: what they keep, and every bad sentence at file:line.</summary>
public sealed class TaggedDataTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    string Write(string name, string content)
    {
        var path = Path.Combine(dir.Path, name);
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void Conll_sentences_split_at_blank_lines_with_docstart_skipped_and_the_tag_from_the_last_column()
    {
        var path = Write("train.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\nPeter\tB-PER\nBlackburn I-PER");

        var data = TaggedDataReader.Read(path);

        Assert.Equal(2, data.Sentences.Count);
        Assert.Equal(["EU", "rejects", "German"], data.Sentences[0].Tokens);
        Assert.Equal(["B-ORG", "O", "B-MISC"], data.Sentences[0].Tags);
        Assert.Equal(3, data.Sentences[0].Line);
        Assert.Equal(["Peter", "Blackburn"], data.Sentences[1].Tokens);
        Assert.Equal(["B-PER", "I-PER"], data.Sentences[1].Tags);
        Assert.Equal(8, data.Sentences[1].Line);
    }

    [Fact]
    public void The_shared_conll2003_files_have_the_documented_counts()
    {
        var folder = Path.Combine(TestPaths.SharedDir, "datasets", "conll2003");
        // The README's counts: sentences 14041 / 3250 / 3453, tokens 203621 / 51362 / 46435.
        foreach (var (file, sentences, tokens) in new[] { ("train.txt", 14041, 203621), ("valid.txt", 3250, 51362), ("test.txt", 3453, 46435) })
        {
            var data = TaggedDataReader.Read(Path.Combine(folder, file));
            Assert.Equal(sentences, data.Sentences.Count);
            Assert.Equal(tokens, data.Sentences.Sum(s => s.Tokens.Length));
        }
    }

    [Theory]
    [InlineData("EU B-ORG\nrejects\n", "bad.txt:2: expected a word and its tag")]
    [InlineData("EU B-ORG\nx B-\u0001\n", "bad.txt:2: tag 'B-\\u0001' contains a control character")]
    public void A_bad_conll_line_is_an_error_at_its_line(string content, string message)
    {
        var path = Write("bad.txt", content);
        var e = Assert.Throws<DataFormatException>(() => TaggedDataReader.Read(path));
        Assert.StartsWith(Path.Combine(dir.Path, message.Split(':')[0]), e.Message);
        Assert.Contains(message[(message.IndexOf(':') + 1)..], e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void With_skip_bad_rows_a_bad_sentence_is_left_out_whole_and_counted()
    {
        var path = Write("skip.txt", "a O\nb\nc O\n\nd B-X\ne I-X\n");
        var data = TaggedDataReader.Read(path, skipBadRows: true);
        Assert.Single(data.Sentences);
        Assert.Equal(["d", "e"], data.Sentences[0].Tokens);
        Assert.Equal(1, data.Skipped);
        Assert.Contains("skip.txt:2:", data.FirstSkipReason);
    }

    [Fact]
    public void Jsonl_reads_tokens_and_tags_with_class_numbers_as_text()
    {
        var path = Write("train.jsonl", "{\"tokens\": [\"EU\", \"rejects\"], \"tags\": [\"B-ORG\", \"O\"]}\n\n{\"tokens\": [\"x\"], \"tags\": [3]}\n");
        var data = TaggedDataReader.Read(path);
        Assert.Equal(2, data.Sentences.Count);
        Assert.Equal(["B-ORG", "O"], data.Sentences[0].Tags);
        Assert.Equal(["3"], data.Sentences[1].Tags);
        Assert.Equal(3, data.Sentences[1].Line);
    }

    [Theory]
    [InlineData("{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}", "2 tokens but 1 tags")]
    [InlineData("{\"tokens\": [\"a\"]}", "missing field \"tags\"")]
    [InlineData("{\"tokens\": \"a b\", \"tags\": [\"O\"]}", "field \"tokens\" must be a list")]
    [InlineData("{\"tokens\": [\"a b\"], \"tags\": [\"O\"]}", "tokens[0] is more than one word")]
    [InlineData("{\"tokens\": [1], \"tags\": [\"O\"]}", "tokens[0] must be a string")]
    [InlineData("{\"tokens\": [], \"tags\": []}", "\"tokens\" is empty")]
    [InlineData("{\"tokens\": [\"a\"], \"tags\": [\"O\"], \"tags\": [\"B\"]}", "Duplicate property 'tags'")]
    [InlineData("[1]", "expected a JSON object")]
    [InlineData("{\"tokens\": [\"a\"", "invalid JSON")]
    public void A_bad_jsonl_line_is_an_error_at_its_line(string line, string message)
    {
        var path = Write("bad.jsonl", "{\"tokens\": [\"ok\"], \"tags\": [\"O\"]}\n" + line + "\n");
        var e = Assert.Throws<DataFormatException>(() => TaggedDataReader.Read(path));
        Assert.StartsWith($"{path}:2: ", e.Message);
        Assert.Contains(message, e.Message);
    }
}
