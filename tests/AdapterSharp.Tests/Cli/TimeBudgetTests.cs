using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>The default time budget cuts only runs whose length the user left to it.</summary>
public sealed class TimeBudgetTests : IDisposable
{
    readonly TempDirectory dir = new();
    readonly string modelDir = TinyTask.CreateModelDir(seed: 2);

    public void Dispose()
    {
        dir.Dispose();
        Directory.Delete(modelDir, recursive: true);
    }

    CliResult Train(params string[] options) => CliRunner.Run(
    [
        "train", "--model", modelDir,
        "--train", TinyTask.WriteTsv(dir.Path, "train.tsv", TinyTask.Examples(32, 1)),
        "--dev", TinyTask.WriteTsv(dir.Path, "dev.tsv", TinyTask.Examples(16, 2)),
        "--text-column", "sentence", "--label-column", "label", "--max-length", "16", "--batch-size", "16", .. options,
    ], workingDirectory: dir.Path);

    [Fact]
    public void Explicit_epochs_run_without_the_default_budget()
    {
        var result = Train("--epochs", "2", "--output", "runs/epochs");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("time budget: none (--epochs 2 given; --time-budget to set one)", result.Stderr);
        Assert.Contains("finished all epochs", result.Stdout + result.Stderr);
    }

    [Fact]
    public void Without_epochs_or_a_budget_the_default_ten_minutes_apply_and_an_explicit_budget_wins()
    {
        var defaulted = Train("--output", "runs/default");
        Assert.True(defaulted.ExitCode == 0, defaulted.ToString());
        Assert.Contains("time budget: 10 min, the default", defaulted.Stderr);
        var explicitBudget = Train("--epochs", "1", "--time-budget", "5m", "--output", "runs/explicit");
        Assert.True(explicitBudget.ExitCode == 0, explicitBudget.ToString());
        Assert.DoesNotContain("time budget:", explicitBudget.Stderr);
    }
}
