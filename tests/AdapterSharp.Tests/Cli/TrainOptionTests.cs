using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary><c>train</c> options that cannot work are refused in one line before any model or data is loaded.</summary>
public sealed class TrainOptionTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    // Run in an empty folder, so that a run that did start would have nothing to train on and no runs/ to litter.
    CliResult Train(params string[] options) => CliRunner.Run(["train", .. options], workingDirectory: dir.Path);

    [Fact]
    public void Train_without_dev_says_they_go_together()
    {
        CliAssert.OneLineError(Train("--train", "train.tsv", "--text-column", "s", "--label-column", "l"), "--train and --dev go together");
    }

    [Fact]
    public void A_time_budget_that_is_not_a_duration_is_quoted()
    {
        CliAssert.OneLineError(Train("--time-budget", "abc"), "--time-budget", "'abc'", "not a duration");
    }

    [Fact]
    public void A_negative_learning_rate_is_refused()
    {
        CliAssert.OneLineError(Train("--lr", "-1"), "--lr must be positive, got -1");
    }

    [Fact]
    public void An_unknown_task_lists_the_GLUE_tasks()
    {
        CliAssert.OneLineError(Train("--task", "nosuch"), "--task", "'nosuch'", "sst2");
    }

    [Fact]
    public void A_missing_data_folder_is_named()
    {
        CliAssert.OneLineError(Train("--data", "/no/such"), "/no/such", "data folder not found");
    }

    [Fact]
    public void A_value_of_the_wrong_type_is_one_line_not_the_help_text()
    {
        var result = Train("--epochs", "abc");

        CliAssert.OneLineError(result, "'abc'", "--epochs");
        Assert.Equal("", result.Stdout);
    }

    [Fact]
    public void Cuda_graphs_on_without_cuda_is_refused()
    {
        CliAssert.OneLineError(Train("--device", "cpu", "--cuda-graphs", "on"), "--cuda-graphs on needs --device cuda");
    }

    [Fact]
    public void An_unknown_cuda_graphs_value_is_quoted()
    {
        CliAssert.OneLineError(Train("--cuda-graphs", "maybe"), "--cuda-graphs must be auto, on or off", "'maybe'");
    }
}
