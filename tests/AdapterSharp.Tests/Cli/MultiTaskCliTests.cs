using System.Globalization;
using System.Text.Json;
using AdapterSharp.Checkpoints;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary><c>train --tasks</c>: one run, one adapter folder per task, each usable on its own; bad combinations refused in one line.</summary>
public sealed class MultiTaskCliTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    // Run in an empty folder, so that a run that did start would have nothing to train on and no runs/ to litter.
    CliResult Train(params string[] options) => CliRunner.Run(["train", .. options], workingDirectory: dir.Path);

    [Theory]
    [InlineData("--tasks and --task cannot be combined", "--tasks", "mrpc,stsb", "--task", "sst2")]
    [InlineData("--tasks takes named tasks only, not --train", "--tasks", "mrpc,stsb", "--train", "t.tsv", "--dev", "d.tsv")]
    [InlineData("--name names a single-task run's adapter", "--tasks", "mrpc,stsb", "--name", "x")]
    [InlineData("--tasks: unknown task 'nosuch' (expected sst2|", "--tasks", "mrpc,nosuch")]
    [InlineData("--tasks: 'mrpc' is listed twice", "--tasks", "mrpc,stsb,MRPC")]
    [InlineData("--tasks: empty task name in 'mrpc,,stsb'", "--tasks", "mrpc,,stsb")]
    [InlineData("--method full changes the base weights, which the tasks' adapters share", "--tasks", "mrpc,stsb", "--method", "full")]
    [InlineData("--method top-k changes the base weights", "--tasks", "mrpc,stsb", "--method", "top-k")]
    [InlineData("--sampling applies to --tasks only", "--task", "mrpc", "--sampling", "uniform")]
    [InlineData("--sampling: 'temperature:0' is not proportional, uniform or temperature:T with T > 0", "--tasks", "mrpc,stsb", "--sampling", "temperature:0")]
    public void Options_a_multi_task_run_cannot_take_are_refused_in_one_line(string message, params string[] options)
    {
        var result = Train(options);

        CliAssert.OneLineError(result, message);
        Assert.Equal("", result.Stdout);
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "runs")));
    }

    [Fact]
    public void Train_tasks_saves_each_adapter_on_its_own_and_each_evaluates_to_its_recorded_score()
    {
        var model = TinyTask.CreateModelDir(seed: 31);
        var glue = Directory.CreateDirectory(Path.Combine(dir.Path, "glue")).FullName;
        WriteGlue(glue, "SST-2", "sentence\tlabel", TinyTask.Examples(96, 1).Select(e => $"{e.Text}\t{(e.Label == "pos" ? 1 : 0)}"),
            TinyTask.Examples(32, 2).Select(e => $"{e.Text}\t{(e.Label == "pos" ? 1 : 0)}"));
        // STS-B-like: the score is how many words the two sentences share.
        static IEnumerable<string> Pairs(int count, int seed)
        {
            var left = TinyTask.Examples(count, seed);
            var right = TinyTask.Examples(count, seed + 100);
            return left.Zip(right, (a, b) =>
                $"{a.Text}\t{b.Text}\t{a.Text.Split(' ').Intersect(b.Text.Split(' ')).Count().ToString(CultureInfo.InvariantCulture)}");
        }
        WriteGlue(glue, "STS-B", "sentence1\tsentence2\tscore", Pairs(64, 3), Pairs(32, 4));
        var run = Path.Combine(dir.Path, "run");

        var result = CliRunner.Run(["train", "--model", model, "--tasks", "sst2,stsb", "--data", glue, "--sampling", "temperature:2",
            "--epochs", "2", "--batch-size", "16", "--max-length", "32", "--time-budget", "none", "-o", run], timeoutSeconds: 300);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("sampling temperature:2: sst2 55.1 %, stsb 44.9 %", result.Stderr); // √96 : √64
        Assert.Contains("stopped: finished all epochs after 20 steps", result.Stdout);
        Assert.Contains($"sst2: ", result.Stdout);
        Assert.Contains($"adapter: {Path.Combine(run, "stsb", "adapter")}", result.Stdout);
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["sst2", "stsb", "sst2", "stsb"], lines.Select(l => l.GetProperty("task").GetString()));
        Assert.Equal([10L, 10, 20, 20], lines.Select(l => l.GetProperty("step").GetInt64()));

        foreach (var (task, folder, metric) in new[] { ("sst2", "SST-2", "accuracy"), ("stsb", "STS-B", "pearson") })
        {
            var adapter = Path.Combine(run, task, "adapter");
            var manifest = AdapterFiles.ReadManifest(adapter);
            Assert.Equal(task, manifest.Name);
            var eval = CliRunner.Run("eval", "--adapter", adapter, "--model", model, "--data", Path.Combine(glue, folder));
            Assert.True(eval.ExitCode == 0, eval.ToString());
            var scores = JsonDocument.Parse(eval.Stdout).RootElement;
            Assert.Equal(Math.Round(manifest.Metrics![metric], 6), scores.GetProperty(metric).GetDouble(), 6);
        }
    }

    [Fact]
    public void Train_tasks_of_different_head_kinds_together()
    {
        var model = TinyTask.CreateModelDir(seed: 33);
        var root = Directory.CreateDirectory(Path.Combine(dir.Path, "data")).FullName;
        WriteGlue(root, "SST-2", "sentence\tlabel", TinyTask.Examples(64, 1).Select(e => $"{e.Text}\t{(e.Label == "pos" ? 1 : 0)}"),
            TinyTask.Examples(16, 2).Select(e => $"{e.Text}\t{(e.Label == "pos" ? 1 : 0)}"));
        // conll2003's layout: train.txt and valid.txt, "good" tagged B-G and every other word O.
        static string Conll(int count, int seed) => string.Join("\n\n", TinyTask.Examples(count, seed)
            .Select(e => string.Join('\n', e.Text.Split(' ').Select(w => $"{w} X X {(w == "good" ? "B-G" : "O")}"))));
        var conll = Directory.CreateDirectory(Path.Combine(root, "conll2003")).FullName;
        File.WriteAllText(Path.Combine(conll, "train.txt"), Conll(64, 3));
        File.WriteAllText(Path.Combine(conll, "valid.txt"), Conll(16, 4));
        var run = Path.Combine(dir.Path, "mixed");

        var result = CliRunner.Run(["train", "--model", model, "--tasks", "sst2,conll2003", "--data", root,
            "--epochs", "1", "--batch-size", "16", "--max-length", "32", "--time-budget", "none", "-o", run], timeoutSeconds: 300);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("classification", AdapterFiles.ReadManifest(Path.Combine(run, "sst2", "adapter")).Head.Kind);
        var tagger = AdapterFiles.ReadManifest(Path.Combine(run, "conll2003", "adapter"));
        Assert.Equal("token-classification", tagger.Head.Kind);
        Assert.Equal(["B-G", "O"], tagger.Head.Labels);
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.True(lines.Single(l => l.GetProperty("task").GetString() == "conll2003").TryGetProperty("f1", out _));
        Assert.True(lines.Single(l => l.GetProperty("task").GetString() == "sst2").TryGetProperty("accuracy", out _));
    }

    static void WriteGlue(string root, string folder, string header, IEnumerable<string> train, IEnumerable<string> dev)
    {
        var path = Directory.CreateDirectory(Path.Combine(root, folder)).FullName;
        File.WriteAllLines(Path.Combine(path, "train.tsv"), [header, .. train]);
        File.WriteAllLines(Path.Combine(path, "dev.tsv"), [header, .. dev]);
    }
}
