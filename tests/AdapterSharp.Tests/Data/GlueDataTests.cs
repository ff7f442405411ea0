using System.Collections.Concurrent;
using System.Globalization;
using AdapterSharp.Data;

namespace AdapterSharp.Tests.Data;

/// <summary>The real GLUE files in shared/datasets/glue: row and label counts are those of its README.</summary>
public class GlueDataTests
{
    static readonly ConcurrentDictionary<(string Task, string File), LoadedData> Loaded = new();

    static LoadedData Load(string task, string file) => Loaded.GetOrAdd((task, file), key =>
    {
        var glue = GlueTasks.Get(key.Task);
        return GlueTasks.Read(glue, TestPaths.GlueFile(glue.Folder, key.File), skipBadRows: false);
    });

    [Theory]
    [InlineData("sst2", "train.tsv", 67349, "0", 29780, "1", 37569)]
    [InlineData("sst2", "dev.tsv", 872, "0", 428, "1", 444)]
    [InlineData("cola", "train.tsv", 8551, "0", 2528, "1", 6023)]
    [InlineData("cola", "dev.tsv", 1043, "0", 322, "1", 721)]
    [InlineData("mrpc", "train.tsv", 3668, "0", 1194, "1", 2474)]
    [InlineData("mrpc", "dev.tsv", 408, "0", 129, "1", 279)]
    [InlineData("wnli", "train.tsv", 635, "0", 323, "1", 312)]
    [InlineData("wnli", "dev.tsv", 71, "0", 40, "1", 31)]
    [InlineData("qnli", "dev.tsv", 5463, "entailment", 2702, "not_entailment", 2761)]
    public void Classification_task_loads_every_row_with_its_label(
        string task, string file, int rows, string label0, int count0, string label1, int count1)
    {
        var data = Load(task, file);

        Assert.Equal(rows, data.Examples.Count);
        Assert.Equal(0, data.Skipped);
        Assert.Null(data.FirstSkipReason);
        var counts = data.Examples.GroupBy(e => e.Label).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(new Dictionary<string, int> { [label0] = count0, [label1] = count1 }, counts);

        bool isPair = GlueTasks.Get(task).PairColumn is not null;
        Assert.All(data.Examples, e =>
        {
            Assert.False(string.IsNullOrWhiteSpace(e.Text));
            Assert.Equal(isPair, e.TextPair is not null);
        });
        // Data rows are numbered as file lines: after the header (line 1) where there is one.
        int firstLine = GlueTasks.Get(task).HasHeader ? 2 : 1;
        Assert.Equal(Enumerable.Range(firstLine, rows), data.Examples.Select(e => e.Line));
    }

    [Theory]
    [InlineData("train.tsv", 5749)]
    [InlineData("dev.tsv", 1500)]
    public void Stsb_scores_parse_as_floats_from_0_to_5(string file, int rows)
    {
        var data = Load("stsb", file);

        Assert.Equal(rows, data.Examples.Count);
        Assert.Equal(0, data.Skipped);
        var scores = data.Examples.Select(e => double.Parse(e.Label, NumberStyles.Float, CultureInfo.InvariantCulture)).ToArray();
        Assert.All(scores, s => Assert.InRange(s, 0.0, 5.0));
        Assert.Equal(0.0, scores.Min());
        Assert.Equal(5.0, scores.Max());
        Assert.True(scores.Distinct().Count() > 20, "scores are continuous, not a handful of classes");
    }

    [Fact]
    public void Stsb_reads_sentence1_sentence2_and_score_of_its_ten_columns()
    {
        // 0 main-captions MSRvid 2012test 0000 none none <sentence1> <sentence2> 5.000
        var first = Load("stsb", "dev.tsv").Examples[0];

        Assert.Equal("A man with a hard hat is dancing.", first.Text);
        Assert.Equal("A man wearing a hard hat is dancing.", first.TextPair);
        Assert.Equal("5", first.Label); // 5.000, in the canonical form the readers keep numbers in
    }

    [Fact]
    public void Mrpc_header_is_found_despite_its_byte_order_mark()
    {
        var path = TestPaths.GlueFile("MRPC", "dev.tsv");
        Assert.Equal(new byte[] { 0xEF, 0xBB, 0xBF, (byte)'Q' }, File.ReadAllBytes(path)[..4]);

        var first = Load("mrpc", "dev.tsv").Examples[0];

        Assert.Equal("1", first.Label);
        Assert.Equal("He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .", first.Text);
        Assert.Equal("\" The foodservice pie business does not fit our long-term growth strategy .", first.TextPair);
        Assert.Equal(2, first.Line);
    }

    [Fact]
    public void Cola_text_is_its_fourth_column_and_the_last_line_without_newline_is_read()
    {
        // gj04 <TAB> 1 <TAB> (empty author's mark) <TAB> sentence
        var train = Load("cola", "train.tsv").Examples;
        Assert.Equal("Our friends won't buy this analysis, let alone the next one we propose.", train[0].Text);
        Assert.Equal("1", train[0].Label);
        Assert.Null(train[0].TextPair);

        var path = TestPaths.GlueFile("CoLA", "dev.tsv");
        Assert.NotEqual((byte)'\n', File.ReadAllBytes(path)[^1]);
        var last = Load("cola", "dev.tsv").Examples[^1];
        Assert.Equal("John talked to Bill about himself.", last.Text);
        Assert.Equal(1043, last.Line);
    }

    [Fact]
    public void Quotes_in_tsv_fields_stay_literal()
    {
        // QNLI dev line 660: the sentence field starts with a stray '" ' (a CSV reader would eat it and the tabs after it).
        var row = Load("qnli", "dev.tsv").Examples.Single(e => e.Line == 660);

        Assert.Equal("Missing self desribes cells that only have small amounts of what cell-surface marker?", row.Text);
        Assert.StartsWith("\" This term describes cells with low levels", row.TextPair, StringComparison.Ordinal);
        Assert.Equal("entailment", row.Label);

        var mrpc = Load("mrpc", "train.tsv").Examples[0];
        Assert.Contains(" \" the witness \" ", mrpc.Text, StringComparison.Ordinal);
    }

    [Fact]
    public void Sst2_keeps_the_trailing_space_before_the_tab()
    {
        Assert.All(Load("sst2", "dev.tsv").Examples.Take(20), e => Assert.EndsWith(" ", e.Text, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("sst2", "SST-2")]
    [InlineData("SST-2", "SST-2")]
    [InlineData("CoLA", "CoLA")]
    [InlineData("sts-b", "STS-B")]
    [InlineData("QNLI", "QNLI")]
    public void Tasks_are_found_by_name_or_folder_ignoring_case(string name, string folder)
    {
        Assert.Equal(folder, GlueTasks.Get(name).Folder);
    }

    [Fact]
    public void Unknown_task_lists_the_known_ones()
    {
        var error = Assert.Throws<ArgumentException>(() => GlueTasks.Get("nosuch"));
        Assert.Equal("--task: unknown task 'nosuch' (expected sst2|cola|mrpc|stsb|qnli|rte|wnli|mnli|qqp|conll2003|squad)", error.Message);
    }

    [Fact]
    public void Only_stsb_is_regression()
    {
        Assert.Equal(new[] { "stsb" }, GlueTasks.All.Where(t => t.IsRegression).Select(t => t.Name));
        Assert.Equal("pearson", GlueTasks.Get("stsb").PrimaryMetric);
        Assert.Equal("mcc", GlueTasks.Get("cola").PrimaryMetric);
        Assert.Equal("f1", GlueTasks.Get("mrpc").PrimaryMetric);
    }

    [Fact]
    public void Missing_glue_file_names_the_path()
    {
        var path = TestPaths.GlueFile("QNLI", "train.tsv"); // not in shared/datasets (see its README)
        Assert.False(File.Exists(path));

        var error = Assert.Throws<DataFormatException>(() => GlueTasks.Read(GlueTasks.Get("qnli"), path, skipBadRows: true));
        Assert.Equal($"{path}: file not found", error.Message);

        var cola = Path.Combine(Path.GetTempPath(), $"adaptersharp-missing-{Guid.NewGuid():N}.tsv");
        error = Assert.Throws<DataFormatException>(() => GlueTasks.Read(GlueTasks.Get("cola"), cola, skipBadRows: false));
        Assert.Equal($"{cola}: file not found", error.Message);
    }
}

/// <summary>Tests that set process-wide environment variables run alone, after the parallel ones.</summary>
[CollectionDefinition(nameof(EnvironmentVariables), DisableParallelization = true)]
public sealed class EnvironmentVariables;

[Collection(nameof(EnvironmentVariables))]
public class GlueDirectoryTests
{
    [Fact]
    public void Default_directory_is_the_shared_glue_folder_found_above_the_test_binaries()
    {
        if (Environment.GetEnvironmentVariable("ADAPTERSHARP_DATA") is { Length: > 0 }) return;

        var dir = GlueTasks.DefaultDirectory(GlueTasks.Get("mrpc"));

        Assert.Equal(Path.GetFullPath(Path.Combine(TestPaths.GlueDir, "MRPC")), Path.GetFullPath(dir));
    }

    [Fact]
    public void Adaptersharp_data_overrides_the_default_directory()
    {
        var saved = Environment.GetEnvironmentVariable("ADAPTERSHARP_DATA");
        try
        {
            Environment.SetEnvironmentVariable("ADAPTERSHARP_DATA", "/data/root");
            Assert.Equal(Path.Combine("/data/root", "glue", "STS-B"), GlueTasks.DefaultDirectory(GlueTasks.Get("stsb")));
        }
        finally
        {
            Environment.SetEnvironmentVariable("ADAPTERSHARP_DATA", saved);
        }
    }
}
