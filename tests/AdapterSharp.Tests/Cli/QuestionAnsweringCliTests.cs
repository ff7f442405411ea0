using System.Text.Json;
using AdapterSharp.Checkpoints;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// <c>train/eval/predict --head question-answering</c> on a task the tiny model can learn: the answer to "good" is the
/// word "bad", wherever it stands in a context long enough to need several windows.
/// </summary>
public sealed class QuestionAnsweringCliTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    static string Jsonl(int count, int seed)
    {
        var random = new Random(seed);
        var lines = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var words = Enumerable.Range(0, random.Next(8, 40)).Select(_ => $"w{random.Next(88)}").ToList();
            words.Insert(random.Next(words.Count), "bad");
            var context = string.Join(' ', words);
            lines.Add(JsonSerializer.Serialize(new { id = $"q{i}", question = "good", context, answers = new { text = new[] { "bad" }, answer_start = new[] { context.IndexOf("bad", StringComparison.Ordinal) } } }));
        }
        return string.Join('\n', lines);
    }

    [Fact]
    public void Train_eval_and_predict_a_question_answering_adapter()
    {
        var model = TinyTask.CreateModelDir(seed: 43);
        var train = Path.Combine(dir.Path, "train.jsonl");
        var dev = Path.Combine(dir.Path, "dev.jsonl");
        File.WriteAllText(train, Jsonl(160, 1));
        File.WriteAllText(dev, Jsonl(40, 2));
        var run = Path.Combine(dir.Path, "run");

        var result = CliRunner.Run(["train", "--model", model, "--head", "question-answering", "--train", train, "--dev", dev,
            "--epochs", "4", "--batch-size", "16", "--lr", "1e-2", "--max-length", "32", "--doc-stride", "8", "-o", run], timeoutSeconds: 300);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("160 training questions in", result.Stderr);
        var manifest = AdapterFiles.ReadManifest(Path.Combine(run, "adapter"));
        Assert.Equal("question-answering", manifest.Head.Kind);
        double f1 = manifest.Metrics!["f1"];
        Assert.True(f1 >= 0.9, $"F1 {f1} on a task whose answer is always the word 'bad'\n{result.Stderr}");

        var eval = CliRunner.Run(["eval", "--model", model, "--adapter", Path.Combine(run, "adapter"), "--dev", dev, "--doc-stride", "8"]);
        Assert.True(eval.ExitCode == 0, eval.ToString());
        using var scores = JsonDocument.Parse(eval.Stdout);
        Assert.Equal(f1, scores.RootElement.GetProperty("f1").GetDouble(), 6);

        const string context = "w1 w2 w3 bad w4 w5";
        var predict = CliRunner.Run(["predict", "--model", model, "--adapter", Path.Combine(run, "adapter")],
            stdin: JsonSerializer.Serialize(new { question = "good", context }) + "\n");
        Assert.True(predict.ExitCode == 0, predict.ToString());
        using var answer = JsonDocument.Parse(predict.Stdout.Trim());
        Assert.Equal("bad", answer.RootElement.GetProperty("answer").GetString());
        Assert.Equal((9, 12), (answer.RootElement.GetProperty("start").GetInt32(), answer.RootElement.GetProperty("end").GetInt32()));
    }
}
