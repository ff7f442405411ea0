using System.Text.Json.Nodes;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// A short <c>bench soak</c> in CI: every category of the fault mix gets only the answers it may get, no well-formed
/// request is lost, and /healthz answers at the end. Memory is judged by the 10-minute run (docs/reliability.md), not
/// here: 30 seconds are too short for a baseline, so the limit is lifted.
/// </summary>
[Collection(nameof(SequentialCollection))]
public sealed class SoakTests
{
    [Fact]
    public void Thirty_seconds_of_mixed_and_hostile_traffic_get_only_expected_answers()
    {
        CliRunner.EnsureMiniLm();
        var result = CliRunner.Run(["bench", "soak", "--duration", "30s", "--warmup", "5s", "--clients", "16", "--max-memory-growth", "100"],
            timeoutSeconds: 300);
        Assert.True(result.ExitCode == 0, result.ToString());
        var report = JsonNode.Parse(result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1])!;
        Assert.True(report["passed"]!.GetValue<bool>());
        Assert.Equal(0, report["lost"]!.GetValue<long>());
        Assert.Equal(200, report["healthz_status"]!.GetValue<int>());
        var categories = report["categories"]!.AsObject();
        Assert.Equal(11, categories.Count);
        foreach (var (name, category) in categories)
        {
            Assert.Equal(0, category!["unexpected"]!.GetValue<long>());
            if (name is not ("idle_socket" or "burst" or "slow_body" or "large_bodies")) Assert.True(category["sent"]!.GetValue<long>() > 0, $"{name} sent nothing");
        }
        Assert.True(report["well_formed_answered"]!.GetValue<long>() > 0);
    }
}
