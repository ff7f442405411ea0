using System.Text.Json.Nodes;
using AdapterSharp.Server;
using AdapterSharp.Tests.Cli;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Server;

/// <summary><c>bench serve</c>: short load tests of the real server over the tiny model.</summary>
[Collection(nameof(ServerCollection))]
public class ServeBenchmarkTests
{
    static ServeBenchmarkOptions Short => new()
    {
        Model = ServerFiles.ModelDir,
        AdapterDirs = [.. ServerFiles.Adapters.Select(a => ServerFiles.AdapterDir(a.Name))],
        Clients = 2,
        Warmup = TimeSpan.FromSeconds(0.3),
        Duration = TimeSpan.FromSeconds(1),
        Texts = [.. ServerFiles.Texts.Select(t => t.Text)],
    };

    [Fact]
    public async Task A_short_run_over_three_adapters_has_no_errors_and_ordered_percentiles()
    {
        var report = await ServeBenchmark.RunAsync(Short with { InputsPerRequest = 2 }, CPU);

        Assert.Empty(report.Errors);
        Assert.Null(report.FirstError);
        Assert.Equal(3, report.Adapters);
        Assert.True(report.Requests > 0, "no request completed in the window");
        Assert.Equal(2 * report.Requests, report.Inputs);
        Assert.InRange(report.DurationS, 0.9, 1.5);
        Assert.True(report.P50Ms > 0);
        Assert.True(report.P50Ms <= report.P90Ms && report.P90Ms <= report.P99Ms && report.P99Ms <= report.MaxMs,
            $"p50 {report.P50Ms}, p90 {report.P90Ms}, p99 {report.P99Ms}, max {report.MaxMs}");
        Assert.True(report.Batches > 0);
        // Two clients of two inputs each: a batch holds at most four.
        Assert.InRange(report.MeanBatch, 2, 4);
        Assert.True(report.WorkingSetStartMb > 0 && report.ManagedHeapEndMb > 0);
    }

    [Fact]
    public async Task An_interrupt_ends_the_window_early_and_still_reports()
    {
        using var interrupt = new CancellationTokenSource(TimeSpan.FromSeconds(2));

        var report = await ServeBenchmark.RunAsync(Short with { Duration = TimeSpan.FromMinutes(5) }, CPU, interrupt: interrupt.Token);

        Assert.True(report.Interrupted);
        // The window was to last five minutes; 0 when the interrupt came during loading or the warm-up.
        Assert.InRange(report.DurationS, 0, 5);
        Assert.Empty(report.Errors);
    }

    [Fact]
    public async Task Requests_for_an_adapter_that_is_not_loaded_are_counted_as_404_errors()
    {
        var report = await ServeBenchmark.RunAsync(Short with { Targets = ["sent", "missing"], Form = RequestForm.OneAdapter }, CPU);

        Assert.True(report.Errors.TryGetValue("404", out long notFound) && notFound > 0, $"errors: {string.Join(", ", report.Errors)}");
        Assert.Equal(notFound, report.ErrorCount);
        Assert.Contains("no adapter named 'missing'", report.FirstError);
        Assert.True(report.Requests > 0, "the requests for 'sent' should still succeed");
    }

    [Fact]
    public void The_command_makes_adapters_and_prints_one_json_line_without_errors()
    {
        var result = CliRunner.Run("bench", "serve", "--model", ServerFiles.ModelDir, "--device", "cpu", "--adapters-count", "3",
            "--clients", "2", "--duration", "1s", "--warmup", "1s", "--form", "mixed");

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = JsonNode.Parse(result.Stdout.Trim())!;
        Assert.Equal(3, report["adapters"]!.GetValue<int>());
        Assert.Equal("mixed", report["form"]!.GetValue<string>());
        Assert.Equal(MixedBatchRunner.DefaultForwardCost(CPU), report["forward_cost"]!.GetValue<int>());
        Assert.Empty(report["errors"]!.AsObject());
        Assert.True(report["requests"]!.GetValue<long>() > 0, result.ToString());
        Assert.Contains("p99", result.Stderr);
    }

    [Fact]
    public void The_command_exits_non_zero_and_names_the_errors_when_requests_fail()
    {
        // The server waits up to --max-wait-ms (5) to fill a batch, so every request outlasts a 1 ms timeout.
        var result = CliRunner.Run("bench", "serve", "--model", ServerFiles.ModelDir, "--device", "cpu", "--adapters-count", "1",
            "--clients", "2", "--duration", "0.5", "--warmup", "0", "--request-timeout", "0.001");

        Assert.Equal(1, result.ExitCode);
        Assert.NotEmpty(result.Stdout.Trim()); // the report still comes
        var last = result.Stderr.Trim().Split('\n')[^1];
        Assert.StartsWith("error: ", last);
        Assert.Contains("requests failed (timeout: ", last);
    }
}
