using System.Text;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Tests.Checkpoints;
using AdapterSharp.Tests.Cli;

namespace AdapterSharp.Tests.Data;

/// <summary>Data files written to confuse: one class written several ways, unbalanced quotes, repeated columns, CR-only line ends, endless lines.</summary>
public sealed class HostileDataTests : IDisposable
{
    static readonly ColumnSpec Single = new("sentence", null, "label");

    readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    string Write(string name, string text) => temp.Write(name, Encoding.UTF8.GetBytes(text));

    [Fact]
    public void One_number_written_several_ways_is_one_class()
    {
        var path = Write("data.tsv", "sentence\tlabel\na\t1\nb\t1.0\nc\t 01 \nd\t1e0\ne\t0\nf\t0.00\n");
        var examples = DataReader.Read(path, Single).Examples;
        Assert.Equal(["1", "1", "1", "1", "0", "0"], examples.Select(e => e.Label));
        Assert.Equal(["0", "1"], EncodedDataset.HeadFor(examples, regression: false).Labels);
    }

    [Fact]
    public void Jsonl_numbers_and_strings_of_one_label_agree_and_booleans_beside_numbers_are_refused()
    {
        var agree = Write("agree.jsonl", "{\"sentence\": \"a\", \"label\": 1}\n{\"sentence\": \"b\", \"label\": \"1.0\"}\n{\"sentence\": \"c\", \"label\": 0}\n");
        Assert.Equal(["1", "1", "0"], DataReader.Read(agree, Single).Examples.Select(e => e.Label));

        var mixed = Write("mixed.jsonl", "{\"sentence\": \"a\", \"label\": true}\n{\"sentence\": \"b\", \"label\": 1}\n{\"sentence\": \"c\", \"label\": 0}\n");
        var error = Assert.Throws<DataFormatException>(() => EncodedDataset.HeadFor(DataReader.Read(mixed, Single).Examples, regression: false));
        Assert.Equal($"{mixed}: labels mix numbers (0, 1) and booleans (true), which would be different classes: write them one way", error.Message);
    }

    [Fact]
    public void A_label_with_a_control_character_is_a_bad_row()
    {
        var path = Write("data.jsonl", "{\"sentence\": \"a\", \"label\": \"1\\u0000\"}\n");
        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single));
        Assert.Equal($"{path}:1: label '1\\u0000' contains a control character", error.Message);
    }

    [Fact]
    public void An_unbalanced_quote_in_a_csv_is_an_error_not_merged_records()
    {
        // Line 3 opens a quote it never closes; line 4's quoted field closes it, and what follows is not a comma.
        var path = Write("data.csv", "sentence,label\nfine,1\n\"broken, 0\nnext,\"quoted\",1\nlast,0\n");
        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single));
        Assert.Equal($"{path}:3: text after the closing quote of field 1 (an unbalanced quote from line 3?)", error.Message);
        var skipped = DataReader.Read(path, Single, skipBadRows: true);
        Assert.Equal(["fine", "last"], skipped.Examples.Select(e => e.Text));
    }

    [Fact]
    public void A_column_named_twice_in_the_header_is_an_error()
    {
        var path = Write("data.tsv", "label\tsentence\tlabel\n1\ta\t0\n");
        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single));
        Assert.Equal($"{path}:1: column 'label' (--label-column) appears 2 times in the header (columns 1, 3)", error.Message);
    }

    [Fact]
    public void Cr_only_line_endings_are_named_in_a_short_message()
    {
        var path = Write("data.tsv", "sentence\tlabel\r" + string.Concat(Enumerable.Range(0, 5000).Select(i => $"text {i}\t{i % 2}\r")));
        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(path, Single));
        Assert.Equal($"{path}:1: a carriage return inside the line: the file's line endings are CR only? (write them as LF or CRLF)", error.Message);
    }

    [Fact]
    public void A_file_without_line_breaks_stops_at_the_line_limit_instead_of_filling_memory()
    {
        var zero = Path.Combine(temp.Path, "zero.tsv");
        File.CreateSymbolicLink(zero, "/dev/zero");
        var error = Assert.Throws<DataFormatException>(() => DataReader.Read(zero, Single));
        Assert.Equal($"{zero}:1: line longer than 1 MiB (not a text file, or no line breaks?)", error.Message);
        var endless = Path.Combine(temp.Path, "endless.tsv");
        File.WriteAllBytes(endless, Encoding.UTF8.GetBytes("sentence\tlabel\n" + new string('x', DataReader.MaxLineBytes + 10)));
        error = Assert.Throws<DataFormatException>(() => DataReader.Read(endless, Single));
        Assert.Equal($"{endless}:2: line longer than 1 MiB (not a text file, or no line breaks?)", error.Message);
    }

    [Fact]
    public void Predict_reading_dev_zero_is_a_one_line_error()
    {
        var model = TinyTask.CreateModelDir(seed: 3);
        var adapterDir = Path.Combine(temp.Path, "adapter");
        var encoder = AdapterSharp.Checkpoints.Pretrained.Load(model);
        using (var adapterModel = AdapterSharp.Training.TrainingJob.CreateModel(encoder, "t", AdapterSharp.Adapters.Methods.BaselineConfig.Head,
                   HeadConfig.Classification(["neg", "pos"]), seed: 1))
            AdapterSharp.Checkpoints.AdapterFiles.Save(adapterDir, new AdapterSharp.Checkpoints.AdapterManifest
            {
                Name = "t", Config = AdapterSharp.Adapters.Methods.BaselineConfig.Head, Head = HeadConfig.Classification(["neg", "pos"]),
                BaseModel = AdapterSharp.Checkpoints.BaseModelIdentity.Of(encoder), MaxLength = 16,
            }, adapterModel.AdapterTensors("t"));
        CliAssert.OneLineError(CliRunner.Run(["predict", "--adapter", adapterDir, "--model", model, "--input", "/dev/zero"]),
            "/dev/zero:1: line longer than 1 Mi characters");
    }
}
