using System.Text.Json;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>The methods from the command line: options that shape them, training, <c>eval --merge</c>, and the errors.</summary>
public sealed class MethodCommandTests : IDisposable
{
    readonly TempDirectory dir = new();
    readonly string modelDir = TinyTask.CreateModelDir(seed: 1);

    public void Dispose()
    {
        dir.Dispose();
        Directory.Delete(modelDir, recursive: true);
    }

    string[] Data() =>
    [
        "--model", modelDir,
        "--train", TinyTask.WriteTsv(dir.Path, "train.tsv", TinyTask.Examples(96, 1)),
        "--dev", TinyTask.WriteTsv(dir.Path, "dev.tsv", TinyTask.Examples(32, 2)),
        "--text-column", "sentence", "--label-column", "label", "--max-length", "16",
        "--epochs", "1", "--batch-size", "16", "--time-budget", "none",
    ];

    CliResult Run(params string[] args) => CliRunner.Run(args, workingDirectory: dir.Path);

    string[] Eval(string adapter) => ["eval", "--adapter", adapter, "--dev", Path.Combine(dir.Path, "dev.tsv"), "--text-column", "sentence", "--label-column", "label"];

    [Fact]
    public void Lora_trains_saves_its_config_and_evaluates_the_same_merged()
    {
        var train = Run(["train", .. Data(), "--method", "lora", "--lora-r", "4", "--lora-alpha", "16", "--lora-dropout", "0.1",
            "--lora-targets", "query,value,output", "--lr", "5e-3", "--output", "runs/lora"]);
        Assert.True(train.ExitCode == 0, train.ToString());
        var adapterDir = Path.Combine(dir.Path, "runs/lora/adapter");
        var config = Assert.IsType<LoraConfig>(AdapterFiles.ReadManifest(adapterDir).Config);
        Assert.Equal((4, 16.0, 0.1), (config.Rank, config.Alpha, config.Dropout));
        Assert.Equal(["query", "value", "output"], config.TargetModules);

        var plain = Run(Eval(adapterDir));
        var merged = Run([.. Eval(adapterDir), "--merge"]);
        Assert.True(plain.ExitCode == 0, plain.ToString());
        Assert.True(merged.ExitCode == 0, merged.ToString());
        Assert.Equal(Accuracy(plain.Stdout), Accuracy(merged.Stdout));
        // Probabilities, not only accuracy: a merge that lost or doubled the update would move them.
        string[] texts = ["good w1 w2 w3", "bad w4", "w5 w6 good w7 bad", "w8"];
        var plainPredictions = Probabilities(Run(["predict", "--adapter", adapterDir, .. texts]));
        var mergedPredictions = Probabilities(Run(["predict", "--adapter", adapterDir, "--merge", .. texts]));
        Assert.Equal(texts.Length, plainPredictions.Count);
        for (int i = 0; i < texts.Length; i++)
            Assert.True(Math.Abs(plainPredictions[i] - mergedPredictions[i]) <= 1e-5, $"{texts[i]}: {plainPredictions[i]} vs merged {mergedPredictions[i]}");
    }

    static double Accuracy(string json) => JsonDocument.Parse(json).RootElement.GetProperty("accuracy").GetDouble();

    /// <summary>Each predicted line's probability of <paramref name="label"/>.</summary>
    static List<double> Probabilities(CliResult result, string label = "pos")
    {
        Assert.True(result.ExitCode == 0, result.ToString());
        return result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => JsonDocument.Parse(line).RootElement.GetProperty("probabilities").GetProperty(label).GetDouble()).ToList();
    }

    [Fact]
    public void A_hybrid_trains_its_adapters_and_the_top_layer_and_merge_is_refused_for_it()
    {
        var train = Run(["train", .. Data(), "--method", "houlsby", "--adapter-size", "4", "--train-top-k", "1", "--base-lr", "1e-4", "--output", "runs/hybrid"]);
        Assert.True(train.ExitCode == 0, train.ToString());
        var adapterDir = Path.Combine(dir.Path, "runs/hybrid/adapter");
        Assert.Equal(1, AdapterFiles.ReadManifest(adapterDir).Config.TrainTopLayers);
        Assert.Contains("encoder.layer.1.intermediate.dense.weight", Safetensors.Read(Path.Combine(adapterDir, AdapterFiles.WeightsFile)).Keys);
        CliAssert.OneLineError(Run([.. Eval(adapterDir), "--merge"]), "cannot be merged into the base weights");
    }

    [Fact]
    public void Dynamic_training_reports_the_learned_sizes()
    {
        var train = Run(["train", .. Data(), "--method", "dynamic", "--adapter-size", "8", "--size-penalty", "0.5", "--output", "runs/dynamic"]);
        Assert.True(train.ExitCode == 0, train.ToString());
        var line = JsonDocument.Parse(File.ReadAllLines(Path.Combine(dir.Path, "runs/dynamic/metrics.jsonl"))[^1]).RootElement;
        // One figure per site (2 layers × 2 sites), each a size between 0 and 8 units, and their mean.
        var sites = line.EnumerateObject().Where(p => p.Name.StartsWith("learned_size/", StringComparison.Ordinal)).Select(p => p.Value.GetDouble()).ToList();
        Assert.Equal(4, sites.Count);
        Assert.All(sites, size => Assert.InRange(size, 0, 8));
        Assert.Equal(sites.Average(), line.GetProperty("learned_size").GetDouble(), 5);
        var eval = Run(Eval(Path.Combine(dir.Path, "runs/dynamic/adapter")));
        Assert.True(eval.ExitCode == 0, eval.ToString());
        Assert.Contains("\"learned_size\":", eval.Stdout);
    }

    [Theory]
    [InlineData(new[] { "--method", "houlsby", "--lora-r", "4" }, "--lora-r does not apply to --method houlsby")]
    [InlineData(new[] { "--method", "lora", "--adapter-size", "4" }, "--adapter-size does not apply to --method lora")]
    [InlineData(new[] { "--method", "lora", "--lora-targets", "query,dense" }, "target_modules: 'dense' is not one of query, key, value, attention-output, intermediate, output")]
    [InlineData(new[] { "--method", "hierarchical", "--adapter-sizes", "16,x" }, "--adapter-sizes: '16,x' is not a comma-separated list")]
    [InlineData(new[] { "--method", "shared", "--reduction-factor", "4" }, "--reduction-factor does not apply to --method shared")]
    [InlineData(new[] { "--method", "dynamic", "--size-penalty", "-1" }, "size_penalty must be non-negative, got -1")]
    [InlineData(new[] { "--method", "houlsby", "--train-top-k", "3" }, "top-k must be between 1 and the model's 2 layers, got 3")]
    [InlineData(new[] { "--method", "nosuch" }, "--method: unknown method 'nosuch'")]
    public void Options_a_method_cannot_take_are_one_line_errors(string[] options, string message)
    {
        CliAssert.OneLineError(Run(["params", "--model", modelDir, .. options]), message);
    }

    [Fact]
    public void A_base_learning_rate_without_base_layers_to_train_is_refused()
    {
        CliAssert.OneLineError(Run(["train", .. Data(), "--method", "lora", "--base-lr", "1e-4"]),
            "--base-lr applies where base layers train (--train-top-k, full, top-k), not to --method lora alone");
    }

    [Fact]
    public void Folders_of_methods_the_first_format_did_not_know_are_written_as_version_2()
    {
        var lora = Run(["train", .. Data(), "--method", "lora", "--output", "runs/v-lora"]);
        var houlsby = Run(["train", .. Data(), "--adapter-size", "4", "--output", "runs/v-houlsby"]);
        Assert.True(lora.ExitCode == 0 && houlsby.ExitCode == 0, lora + "\n" + houlsby);
        Assert.Equal(2, AdapterFiles.ReadManifest(Path.Combine(dir.Path, "runs/v-lora/adapter")).FormatVersion);
        Assert.Equal(1, AdapterFiles.ReadManifest(Path.Combine(dir.Path, "runs/v-houlsby/adapter")).FormatVersion);
    }
}
