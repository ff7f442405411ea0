using System.Text.Json;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// Multiple choice through the CLI on a task the tiny model learns: of four choices, the right one holds "good", the
/// others "bad"; and the reader's bad rows.
/// </summary>
public sealed class MultipleChoiceCliTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    static string Jsonl(int count, int seed)
    {
        var random = new Random(seed);
        string Words(int n) => string.Join(' ', Enumerable.Range(0, n).Select(_ => $"w{random.Next(88)}"));
        var lines = new List<string>();
        for (int i = 0; i < count; i++)
        {
            int label = random.Next(4);
            var choices = Enumerable.Range(0, 4).Select(k => $"{Words(random.Next(1, 4))} {(k == label ? "good" : "bad")} {Words(random.Next(0, 3))}".Trim()).ToArray();
            lines.Add(JsonSerializer.Serialize(new { context = Words(random.Next(3, 8)), choices, label }));
        }
        return string.Join('\n', lines);
    }

    [Fact]
    public void Train_eval_and_predict_a_multiple_choice_adapter()
    {
        var model = TinyTask.CreateModelDir(seed: 47);
        var train = Path.Combine(dir.Path, "train.jsonl");
        var dev = Path.Combine(dir.Path, "dev.jsonl");
        File.WriteAllText(train, Jsonl(200, 1));
        File.WriteAllText(dev, Jsonl(50, 2));
        var run = Path.Combine(dir.Path, "run");

        var result = CliRunner.Run(["train", "--model", model, "--head", "multiple-choice", "--train", train, "--dev", dev,
            "--epochs", "4", "--batch-size", "8", "--lr", "1e-2", "--max-length", "32", "-o", run], timeoutSeconds: 300);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("200 training and 50 evaluation questions of 4 choices", result.Stderr);
        var manifest = AdapterFiles.ReadManifest(Path.Combine(run, "adapter"));
        Assert.Equal(("multiple-choice", (int?)4), (manifest.Head.Kind, manifest.Head.Choices));
        double accuracy = manifest.Metrics!["accuracy"];
        Assert.True(accuracy >= 0.9, $"accuracy {accuracy} where the right choice always holds 'good'\n{result.Stderr}");

        var eval = CliRunner.Run(["eval", "--model", model, "--adapter", Path.Combine(run, "adapter"), "--dev", dev]);
        Assert.True(eval.ExitCode == 0, eval.ToString());
        using var scores = JsonDocument.Parse(eval.Stdout);
        Assert.Equal(accuracy, scores.RootElement.GetProperty("accuracy").GetDouble(), 6);

        // A question of three choices, though training had four: a question's choices are scored against each other.
        var question = JsonSerializer.Serialize(new { context = "w1 w2", choices = new[] { "w3 bad", "w4 good w5", "bad w6" } });
        var predict = CliRunner.Run(["predict", "--model", model, "--adapter", Path.Combine(run, "adapter")], stdin: question + "\n");
        Assert.True(predict.ExitCode == 0, predict.ToString());
        using var answer = JsonDocument.Parse(predict.Stdout.Trim());
        Assert.Equal(1, answer.RootElement.GetProperty("choice").GetInt32());
        Assert.Equal("w4 good w5", answer.RootElement.GetProperty("text").GetString());
        var probabilities = answer.RootElement.GetProperty("probabilities").EnumerateArray().Select(p => p.GetDouble()).ToArray();
        Assert.Equal(3, probabilities.Length);
        Assert.Equal(1.0, probabilities.Sum(), 5);
    }

    [Theory]
    [InlineData("{\"context\": \"c\", \"choices\": [\"a\", \"b\", \"c\"], \"label\": 0}", "3 choices where line 1 has 2")]
    [InlineData("{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"label\": 2}", "label 2 is not a choice index (0 to 1)")]
    [InlineData("{\"context\": \"c\", \"choices\": [\"a\", \"\"], \"label\": 0}", "choices[1] must be a non-empty string")]
    [InlineData("{\"context\": \"c\", \"choices\": [\"a\", \"b\"]}", "missing \"label\"")]
    [InlineData("{\"choices\": [\"a\", \"b\"], \"label\": 0}", "missing or empty string \"context\"")]
    public void A_bad_question_is_an_error_at_its_line(string line, string message)
    {
        var path = Path.Combine(dir.Path, "bad.jsonl");
        File.WriteAllText(path, "{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"label\": 1}\n" + line + "\n");
        var e = Assert.Throws<DataFormatException>(() => ChoiceDataReader.Read(path));
        Assert.StartsWith($"{path}:2: {message}", e.Message);
        Assert.Single(ChoiceDataReader.Read(path, skipBadRows: true).Examples);
    }
}
