using System.Text.Json;
using AdapterSharp.Checkpoints;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// <c>train/eval/predict --head token-classification</c> on a tagging task the tiny model learns in seconds: "good" is
/// a one-word entity of type G, "bad" one of type B, every other word O.
/// </summary>
public sealed class TokenClassificationCliTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    static readonly string[] Filler = [.. Enumerable.Range(0, 88).Select(i => $"w{i}")];

    static string Conll(int count, int seed)
    {
        var random = new Random(seed);
        var lines = new List<string> { "-DOCSTART- -X- -X- O", "" };
        for (int s = 0; s < count; s++)
        {
            for (int w = 0, n = random.Next(3, 10); w < n; w++)
            {
                int pick = random.Next(6);
                var (word, tag) = pick == 0 ? ("good", "B-G") : pick == 1 ? ("bad", "B-B") : (Filler[random.Next(Filler.Length)], "O");
                lines.Add($"{word} X X {tag}");
            }
            lines.Add("");
        }
        return string.Join('\n', lines);
    }

    [Fact]
    public void Train_eval_and_predict_a_token_classification_adapter()
    {
        var model = TinyTask.CreateModelDir(seed: 41);
        var train = Path.Combine(dir.Path, "train.txt");
        var dev = Path.Combine(dir.Path, "dev.txt");
        File.WriteAllText(train, Conll(160, 1));
        File.WriteAllText(dev, Conll(40, 2));
        var run = Path.Combine(dir.Path, "run");

        var result = CliRunner.Run(["train", "--model", model, "--head", "token-classification", "--train", train, "--dev", dev,
            "--epochs", "4", "--batch-size", "16", "--lr", "1e-2", "--max-length", "32", "-o", run], timeoutSeconds: 300);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("tags B-B, B-G, O", result.Stderr);
        var manifest = AdapterFiles.ReadManifest(Path.Combine(run, "adapter"));
        Assert.Equal("token-classification", manifest.Head.Kind);
        Assert.Equal(["B-B", "B-G", "O"], manifest.Head.Labels);
        double recorded = manifest.Metrics!["f1"];
        Assert.True(recorded >= 0.95, $"entity F1 {recorded} on a task that is one word per entity");

        // eval on the same file gives the recorded figures: the saved adapter is the one that was scored.
        var eval = CliRunner.Run(["eval", "--model", model, "--adapter", Path.Combine(run, "adapter"), "--dev", dev]);
        Assert.True(eval.ExitCode == 0, eval.ToString());
        using var scores = JsonDocument.Parse(eval.Stdout);
        Assert.Equal(recorded, scores.RootElement.GetProperty("f1").GetDouble(), 6);
        Assert.Equal(40, scores.RootElement.GetProperty("examples").GetInt32());

        // predict answers entities with their text and places in the input.
        const string text = "w1  good w2, bad";
        var predict = CliRunner.Run(["predict", "--model", model, "--adapter", Path.Combine(run, "adapter"), text]);
        Assert.True(predict.ExitCode == 0, predict.ToString());
        using var row = JsonDocument.Parse(predict.Stdout.Trim());
        var entities = row.RootElement.GetProperty("entities").EnumerateArray()
            .Select(e => (e.GetProperty("type").GetString(), e.GetProperty("text").GetString(), e.GetProperty("start").GetInt32(), e.GetProperty("end").GetInt32()))
            .ToArray();
        Assert.Equal([("G", "good", 4, 8), ("B", "bad", 13, 16)], entities);
    }

    [Theory]
    [InlineData("--regression and --head token-classification exclude each other", "--regression")]
    [InlineData("--eval-split test: GLUE's test sets have no labels", "--task", "sst2", "--eval-split", "test")]
    public void Options_that_do_not_fit_are_refused_in_one_line(string message, params string[] options)
    {
        string[] head = options.Contains("--task") ? [] : ["--head", "token-classification", "--train", "a.txt", "--dev", "b.txt"];
        var result = CliRunner.Run(["train", .. head, .. options], workingDirectory: dir.Path);
        CliAssert.OneLineError(result, message);
    }

    [Fact]
    public void A_dev_tag_missing_from_training_is_an_error_at_its_line()
    {
        var model = TinyTask.CreateModelDir(seed: 41);
        var train = Path.Combine(dir.Path, "train.txt");
        var dev = Path.Combine(dir.Path, "dev.txt");
        File.WriteAllText(train, "good B-G\nw1 O\n\nbad B-B\n");
        File.WriteAllText(dev, "w2 O\n\nw3 O\ngood B-NEW\n");
        var result = CliRunner.Run(["train", "--model", model, "--head", "token-classification", "--train", train, "--dev", dev,
            "--epochs", "1", "--max-length", "32", "-o", Path.Combine(dir.Path, "run")]);
        CliAssert.OneLineError(result, $"{dev}:4: tag 'B-NEW' does not occur in the training tags (B-B, B-G, O)");
    }
}
