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
    }

    static double Accuracy(string json) => JsonDocument.Parse(json).RootElement.GetProperty("accuracy").GetDouble();

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
        Assert.InRange(line.GetProperty("learned_size").GetDouble(), 0, 8);
        Assert.True(line.TryGetProperty("learned_size/encoder.layer.0.attention.output.adapter", out _), line.ToString());
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
}
