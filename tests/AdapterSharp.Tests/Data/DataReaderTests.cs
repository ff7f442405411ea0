using System.Text;
using AdapterSharp.Data;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Data;

/// <summary>
/// Bad rows in synthetic TSV, CSV and JSONL files: each is an error at file:line with its reason, or, with
/// skipBadRows, a counted skip while the good rows keep their labels.
/// </summary>
public sealed class DataReaderTests : IDisposable
{
    /// <summary>Stands for the bytes FF FE, which are invalid anywhere in UTF-8.</summary>
    const char Invalid = '\u0001';

    static readonly ColumnSpec Single = new("sentence", null, "label");
    static readonly ColumnSpec Pair = new("s1", "s2", "label");

    readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    string Write(string name, string text)
    {
        var parts = text.Split(Invalid).Select(Encoding.UTF8.GetBytes);
        return _temp.Write(name, parts.Aggregate((a, b) => [.. a, 0xFF, 0xFE, .. b]));
    }

    static void AssertRows(IReadOnlyList<Example> examples, params (string Text, string? Pair, string Label, int Line)[] expected) =>
        Assert.Equal(expected, examples.Select(e => (e.Text, e.TextPair, e.Label, e.Line)));

    // ---- TSV by header ----

    [Theory]
    [InlineData("sentence\tlabel\ngood\t1\nno label here\n", 3, "expected 2 columns as in the header, found 1")]
    [InlineData("sentence\tlabel\ngood\t1\na tab\tin the text\t0\n", 3, "expected 2 columns as in the header, found 3")]
    [InlineData("sentence\tlabel\n \t1\n", 2, "empty text in 'sentence'")]
    [InlineData("sentence\tlabel\ngood\t1\nfine\t \n", 3, "empty label in 'label'")]
    [InlineData("sentence\tlabel\ngood\t1\nbad \u0001 bytes\t0\n", 3, "invalid UTF-8")]
    [InlineData("sentence\tlabel\r\ngood\t1\r\n\r\nbad \u0001\t0\r\n", 4, "invalid UTF-8")]
    public void Bad_tsv_row_is_an_error_at_its_line(string content, int line, string reason)
    {
        var path = Write("data.tsv", content);

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single));

        Assert.Equal($"{path}:{line}: {reason}", error.Message);
    }

    [Fact]
    public void Empty_pair_text_is_an_error_naming_the_pair_column()
    {
        var path = Write("pairs.tsv", "s1\ts2\tlabel\na\tb\t0\nc\t\t1\n");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Pair));

        Assert.Equal($"{path}:3: empty text in 's2'", error.Message);
    }

    [Theory]
    [InlineData("sentence", "s2", "label", "no column 'sentence' (--text-column)")]
    [InlineData("s1", "pair", "label", "no column 'pair' (--text-pair-column)")]
    [InlineData("s1", "s2", "gold", "no column 'gold' (--label-column)")]
    public void Missing_header_column_lists_the_header(string text, string pair, string label, string reason)
    {
        var path = Write("pairs.tsv", "s1\ts2\tlabel\na\tb\t0\n");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, new ColumnSpec(text, pair, label)));

        Assert.Equal($"{path}:1: {reason}; the header has: s1, s2, label", error.Message);
    }

    [Fact]
    public void Bad_tsv_rows_are_skipped_and_counted_and_good_rows_keep_their_labels()
    {
        var path = Write("data.tsv", string.Join('\n',
            "sentence\tlabel",          // 1
            "good one\t1",              // 2
            "no label here",            // 3: too few columns
            " \t0",                     // 4: empty text
            "good two\tneg ",           // 5
            "a tab\tin the text\t0",    // 6: too many columns, the label would be "in the text"
            "",                         // 7: blank, neither a row nor a skip
            "empty label\t",            // 8
            $"bad {Invalid} bytes\t1",  // 9: invalid UTF-8
            "good \"three\"\t0"));      // 10 (no final newline)

        var data = DataReader.Read(path, Single, skipBadRows: true);

        AssertRows(data.Examples, ("good one", null, "1", 2), ("good two", null, "neg", 5), ("good \"three\"", null, "0", 10));
        Assert.Equal(5, data.Skipped);
        Assert.Equal($"{path}:3: expected 2 columns as in the header, found 1", data.FirstSkipReason);
    }

    [Fact]
    public void Bom_and_crlf_are_dropped()
    {
        var path = _temp.Write("bom.tsv", [0xEF, 0xBB, 0xBF, .. Encoding.UTF8.GetBytes("label\tsentence\r\n1\thello\r\n0\tbye\r\n")]);

        var data = DataReader.Read(path, Single);

        AssertRows(data.Examples, ("hello", null, "1", 2), ("bye", null, "0", 3));
    }

    [Fact]
    public void Read_lines_decodes_strictly_and_numbers_every_line()
    {
        var path = Write("lines.txt", $"\uFEFFfirst\r\n\nbad {Invalid}\nlast");

        Assert.Equal(new (int, string, string?)[] { (1, "first", null), (2, "", null), (3, "", "invalid UTF-8"), (4, "last", null) },
            DataReader.ReadLines(path).ToArray());
    }

    [Fact]
    public void Empty_file_has_no_header()
    {
        var path = Write("empty.tsv", "");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single, skipBadRows: true));

        Assert.Equal($"{path}: empty file (expected a header row)", error.Message);
    }

    [Fact]
    public void Invalid_utf8_in_the_header_is_an_error_even_when_skipping()
    {
        var path = Write("header.tsv", $"sent{Invalid}ence\tlabel\na\t1\n");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single, skipBadRows: true));

        Assert.Equal($"{path}:1: invalid UTF-8", error.Message);
    }

    [Theory]
    [InlineData("data.xml", "'.xml'")]
    [InlineData("data", "''")]
    [InlineData("data.tsv.gz", "'.gz'")]
    public void Unknown_extension_is_an_error(string name, string format)
    {
        var path = Write(name, "sentence\tlabel\na\t1\n");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single));

        Assert.Equal($"{path}: unknown data format {format} (expected .tsv, .csv or .jsonl)", error.Message);
    }

    [Theory]
    [InlineData("missing.tsv")]
    [InlineData("missing.csv")]
    [InlineData("missing.jsonl")]
    public void Missing_file_is_an_error(string name)
    {
        var path = _temp.File(name);

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single, skipBadRows: true));

        Assert.Equal($"{path}: file not found", error.Message);
    }

    // ---- TSV by column index (CoLA's layout: source, label, author's mark, sentence) ----

    [Theory]
    [InlineData("gj04\t1\t\tfine.\ngj04\t0\n", 2, "expected at least 4 columns, found 2")]
    [InlineData("gj04\t1\t\t \n", 1, "empty text in column 4")]
    [InlineData("gj04\t\t*\tno label.\n", 1, "empty label in column 2")]
    [InlineData("gj04\t1\t\tfine.\ngj04\t1\t\t\u0001\n", 2, "invalid UTF-8")]
    public void Bad_row_read_by_index_is_an_error_at_its_line(string content, int line, string reason)
    {
        var path = Write("cola.tsv", content);

        var error = Assert.Throws<DataFormatException>(
            () => DataReader.ReadTsvByIndex(path, hasHeader: false, text: 3, pair: null, label: 1, skipBadRows: false));

        Assert.Equal($"{path}:{line}: {reason}", error.Message);
    }

    [Fact]
    public void Rows_read_by_index_skip_bad_rows_and_may_follow_a_header()
    {
        var path = Write("indexed.tsv", "id\tlabel\tmark\ttext\nx\t1\t\tkept.\nx\t0\nx\t\t\tno label.\nx\t0\t*\tbad, kept.");

        var data = DataReader.ReadTsvByIndex(path, hasHeader: true, text: 3, pair: null, label: 1, skipBadRows: true);

        AssertRows(data.Examples, ("kept.", null, "1", 2), ("bad, kept.", null, "0", 5));
        Assert.Equal(2, data.Skipped);
        Assert.Equal($"{path}:3: expected at least 4 columns, found 2", data.FirstSkipReason);
    }

    // ---- CSV (RFC 4180) ----

    [Fact]
    public void Csv_quoted_fields_hold_commas_doubled_quotes_and_newlines()
    {
        var path = Write("data.csv", string.Join("\r\n",
            "text,label",                    // 1
            "\"hello, world\",1",            // 2
            "\"she said \"\"hi\"\"\",0",     // 3
            "\"two",                         // 4: a record over lines 4-5
            "lines\",1",                     // 5
            "plain \"inner\" quotes,0",      // 6: a quote inside an unquoted field is text
            "\"\",1",                        // 7: empty quoted text
            "last,\"1\"",                    // 8
            ""));

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, new ColumnSpec("text", null, "label")));
        Assert.Equal($"{path}:7: empty text in 'text'", error.Message);

        var data = DataReader.Read(path, new ColumnSpec("text", null, "label"), skipBadRows: true);
        AssertRows(data.Examples,
            ("hello, world", null, "1", 2),
            ("she said \"hi\"", null, "0", 3),
            ("two\nlines", null, "1", 4),
            ("plain \"inner\" quotes", null, "0", 6),
            ("last", null, "1", 8));
        Assert.Equal(1, data.Skipped);
    }

    [Fact]
    public void Csv_pair_columns_are_taken_by_name_in_any_order()
    {
        var path = Write("pairs.csv", "label,premise,hypothesis\nentailment,\"A, B\",\"C\"\n");

        var data = DataReader.Read(path, new ColumnSpec("premise", "hypothesis", "label"));

        AssertRows(data.Examples, ("A, B", "C", "entailment", 2));
    }

    [Fact]
    public void Csv_unterminated_quote_is_an_error_at_the_line_where_it_opened()
    {
        var path = Write("open.csv", "text,label\ngood,1\n\"never closed,0\nmore,1\n");
        var spec = new ColumnSpec("text", null, "label");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, spec));
        var data = DataReader.Read(path, spec, skipBadRows: true);

        Assert.Equal($"{path}:3: unterminated quoted field", error.Message);
        AssertRows(data.Examples, ("good", null, "1", 2));
        Assert.Equal(1, data.Skipped);
    }

    [Fact]
    public void Csv_unquoted_comma_in_the_text_is_an_error_not_a_shifted_label()
    {
        var path = Write("commas.csv", "text,label\nhello, world,1\nfine,0\n");
        var spec = new ColumnSpec("text", null, "label");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, spec));
        var data = DataReader.Read(path, spec, skipBadRows: true);

        Assert.Equal($"{path}:2: expected 2 columns as in the header, found 3", error.Message);
        AssertRows(data.Examples, ("fine", null, "0", 3));
    }

    [Fact]
    public void Csv_invalid_utf8_inside_a_quoted_field_spoils_only_that_record()
    {
        var path = Write("bytes.csv", string.Join('\n',
            "text,label",                      // 1
            "\"first line",                    // 2: a record over lines 2-4
            $"bad {Invalid} bytes",            // 3
            "a fragment, not a row\",1",       // 4
            $"\"{Invalid}, quoted\",0",         // 5
            $"{Invalid},0",                     // 6
            "good,1"));                        // 7
        var spec = new ColumnSpec("text", null, "label");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, spec));
        var data = DataReader.Read(path, spec, skipBadRows: true);

        Assert.Equal($"{path}:2: invalid UTF-8 on line 3 (inside a quoted field)", error.Message);
        AssertRows(data.Examples, ("good", null, "1", 7));
        Assert.Equal(3, data.Skipped);
    }

    // ---- JSONL ----

    [Theory]
    [InlineData("{\"text\": \"hi\", \"label\": \"1\"", "invalid JSON: ")]
    [InlineData("{\"text\": 'hi', \"label\": \"1\"}", "invalid JSON: ")]
    [InlineData("[\"hi\", \"1\"]", "expected a JSON object")]
    [InlineData("\"hi\"", "expected a JSON object")]
    [InlineData("{\"text\": \"hi\"}", "missing field \"label\"")]
    [InlineData("{\"text\": \"hi\", \"label\": null}", "missing field \"label\"")]
    [InlineData("{\"label\": 1}", "missing field \"text\"")]
    [InlineData("{\"text\": [\"hi\"], \"label\": 1}", "field \"text\" must be a string or a number")]
    [InlineData("{\"text\": \"hi\", \"label\": {\"id\": 1}}", "field \"label\" must be a string or a number")]
    [InlineData("{\"text\": \" \", \"label\": 1}", "empty \"text\"")]
    [InlineData("{\"text\": \"hi\", \"label\": \"\"}", "empty \"label\"")]
    [InlineData("{\"text\": \"\\ud800\", \"label\": 1}", "invalid JSON string: ")]
    public void Bad_jsonl_line_is_an_error_at_its_line(string badLine, string reason)
    {
        var path = Write("data.jsonl", "{\"text\": \"fine\", \"label\": 0}\n\n" + badLine + "\n");

        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, new ColumnSpec("text", null, "label")));

        if (reason.EndsWith(": ", StringComparison.Ordinal))
        {
            Assert.StartsWith($"{path}:3: {reason}", error.Message, StringComparison.Ordinal);
            Assert.True(error.Message.Length > $"{path}:3: {reason}".Length, "the reason names what is wrong");
            Assert.DoesNotContain("LineNumber", error.Message, StringComparison.Ordinal);
        }
        else Assert.Equal($"{path}:3: {reason}", error.Message);
    }

    [Fact]
    public void Jsonl_reads_strings_numbers_and_booleans_and_skips_bad_lines()
    {
        var path = Write("data.jsonl", string.Join('\n',
            "{\"q\": \"is it?\", \"a\": \"yes\", \"gold\": true, \"extra\": [1]}",  // 1
            "{\"q\": \"how many?\", \"a\": \"two\", \"gold\": 1}",                  // 2
            "{\"q\": \"broken\", ",                                                 // 3
            "   ",                                                                  // 4: blank
            "{\"q\": \"no pair\", \"gold\": \" 0 \"}",                              // 5
            $"{{\"q\": \"{Invalid}\", \"a\": \"x\", \"gold\": 0}}",                 // 6
            "{\"q\": 42, \"a\": \"\\\"quoted\\\"\", \"gold\": \" 0 \"}"));          // 7

        var data = DataReader.Read(path, new ColumnSpec("q", "a", "gold"), skipBadRows: true);

        AssertRows(data.Examples, ("is it?", "yes", "true", 1), ("how many?", "two", "1", 2), ("42", "\"quoted\"", "0", 7));
        Assert.Equal(3, data.Skipped);
        Assert.StartsWith($"{path}:3: invalid JSON: ", data.FirstSkipReason, StringComparison.Ordinal);
    }
}
