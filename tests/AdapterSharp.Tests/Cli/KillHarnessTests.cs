using System.Text.Json.Nodes;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// CI's share of the crash-safety proof: <c>bench kill</c> with 20 SIGKILLs per writer (the benchmark command runs 200),
/// and each writer once under a file-size limit. The harness checks every folder itself; this reads its report.
/// </summary>
[Collection(nameof(SequentialCollection))]
public sealed class KillHarnessTests
{
    [Fact]
    public void Twenty_kills_per_writer_leave_only_the_earlier_folder_or_a_complete_new_one()
    {
        CliRunner.EnsureMiniLm();
        var result = CliRunner.Run(["bench", "kill", "--trials", "20", "--seed", "7"], timeoutSeconds: 1500);
        Assert.True(result.ExitCode == 0, result.ToString());
        var reports = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => JsonNode.Parse(line)!).ToList();
        Assert.Equal(["adapter", "fusion", "cache", "convert"], reports.Select(r => r["writer"]!.GetValue<string>()));
        foreach (var report in reports)
        {
            var writer = report["writer"]!.GetValue<string>();
            Assert.Equal(20, report["trials"]!.GetValue<int>());
            Assert.Equal(0, report["failures"]!.GetValue<int>());
            Assert.True(report["killed"]!.GetValue<int>() >= 10, $"{writer}: too few runs were killed: {report}");
            Assert.True(report["killed_while_staging"]!.GetValue<int>() >= 5, $"{writer}: too few kills fell while it wrote: {report}");
            Assert.StartsWith("ok: error: ", report["disk_full"]!.GetValue<string>());
            Assert.Contains("EFBIG", report["disk_full"]!.GetValue<string>());
        }
    }
}
