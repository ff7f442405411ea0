using AdapterSharp.Checkpoints;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// <c>train --method fusion --fuse …</c> and <c>train --stack …</c> end to end on the tiny model and task, then
/// <c>eval</c> on what they saved.
/// </summary>
public sealed class CompositionCommandTests : IDisposable
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

    CliResult Train(params string[] options) => CliRunner.Run(["train", .. Data(), .. options], workingDirectory: dir.Path);

    [Fact]
    public void Fusion_trains_over_two_adapter_folders_saves_a_fusion_folder_and_evaluates()
    {
        foreach (var name in new[] { "a", "b" })
        {
            var adapter = Train("--name", name, "--adapter-size", "8", "--output", $"runs/{name}");
            Assert.True(adapter.ExitCode == 0, adapter.ToString());
        }

        var fusion = Train("--method", "fusion", "--fuse", "runs/a/adapter,runs/b/adapter", "--lr", "1e-3", "--output", "runs/fusion");
        Assert.True(fusion.ExitCode == 0, fusion.ToString());
        Assert.Contains("fusion 'train-fusion' over a", fusion.Stderr);
        var fusionDir = Path.Combine(dir.Path, "runs/fusion/adapter");
        var manifest = FusionFiles.ReadManifest(fusionDir);
        Assert.Equal(["a", "b"], manifest.Adapters.Select(a => a.Name));
        Assert.Equal(Path.Combine("..", "..", "a", "adapter"), manifest.Adapters[0].Path);

        var eval = CliRunner.Run(["eval", "--adapter", fusionDir, "--dev", Path.Combine(dir.Path, "dev.tsv"),
            "--text-column", "sentence", "--label-column", "label"], workingDirectory: dir.Path);
        Assert.True(eval.ExitCode == 0, eval.ToString());
        Assert.Contains("\"adapter\":\"train-fusion\"", eval.Stdout);
        Assert.Contains("\"accuracy\":", eval.Stdout);
        var predict = CliRunner.Run(["predict", "--adapter", fusionDir, "good w1 w2"], workingDirectory: dir.Path);
        Assert.True(predict.ExitCode == 0, predict.ToString());
        Assert.Contains("\"probabilities\":", predict.Stdout);

        Directory.Delete(Path.Combine(dir.Path, "runs/b"), recursive: true);
        var missing = CliRunner.Run(["eval", "--adapter", fusionDir, "--dev", Path.Combine(dir.Path, "dev.tsv"),
            "--text-column", "sentence", "--label-column", "label"], workingDirectory: dir.Path);
        CliAssert.OneLineError(missing, "fuses adapter 'b'", "missing");
    }

    [Fact]
    public void Stack_trains_a_new_adapter_on_top_of_a_frozen_one_and_eval_loads_both()
    {
        var a = Train("--name", "a", "--adapter-size", "8", "--output", "runs/a");
        Assert.True(a.ExitCode == 0, a.ToString());
        var b = Train("--name", "b", "--adapter-size", "8", "--stack", "runs/a/adapter", "--output", "runs/b");
        Assert.True(b.ExitCode == 0, b.ToString());
        Assert.Contains("stack 'b' over a", b.Stderr);
        var adapterDir = Path.Combine(dir.Path, "runs/b/adapter");
        Assert.Equal("a", Assert.Single(AdapterFiles.ReadManifest(adapterDir).StackedOn!).Name);

        string[] evalB = ["eval", "--adapter", adapterDir, "--dev", Path.Combine(dir.Path, "dev.tsv"), "--text-column", "sentence", "--label-column", "label"];
        var eval = CliRunner.Run(evalB, workingDirectory: dir.Path);
        Assert.True(eval.ExitCode == 0, eval.ToString());
        Assert.Contains("\"adapter\":\"b\"", eval.Stdout);

        Directory.Delete(Path.Combine(dir.Path, "runs/a"), recursive: true);
        CliAssert.OneLineError(CliRunner.Run(evalB, workingDirectory: dir.Path), "is stacked on adapter 'a'", "missing");
    }

    [Fact]
    public void Method_fusion_without_fuse_and_fuse_without_method_fusion_are_refused()
    {
        CliAssert.OneLineError(Train("--method", "fusion"), "--method fusion needs --fuse");
        CliAssert.OneLineError(Train("--fuse", "x,y"), "--fuse goes with --method fusion");
    }

    [Fact]
    public void Fusing_a_folder_that_is_not_an_adapter_names_it()
    {
        CliAssert.OneLineError(Train("--method", "fusion", "--fuse", "nowhere/a,nowhere/b"), "nowhere/a", "adapter folder not found");
    }
}
