using System.Text.Json;

namespace AdapterSharp.Tests.Cli;

/// <summary><c>bench kernels</c> and <c>--fused-kernels</c> on a machine without a GPU, as CI is.</summary>
public sealed class BenchKernelsTests
{
    [Fact]
    public void On_the_cpu_bench_kernels_compares_the_operator_arithmetic_with_the_unfused_modules()
    {
        var result = CliRunner.Run(["bench", "kernels", "--device", "cpu", "--rows", "64", "--hidden", "16", "--steps", "1"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        var records = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var checks = records.Where(r => r.TryGetProperty("check", out _)).ToList();
        Assert.Equal(2, checks.Count); // with and without an adapter's output; no kernels on the CPU
        Assert.All(checks, c => Assert.Equal("operators-vs-unfused", c.GetProperty("pair").GetString()));
        // Without an adapter's output both paths add alike: only float32 rounding apart.
        var plain = checks.Single(c => !c.GetProperty("adapter").GetBoolean());
        Assert.True(plain.GetProperty("y").GetDouble() < 1e-5, plain.ToString());
        Assert.True(plain.GetProperty("dweight").GetDouble() < 1e-5, plain.ToString());
        Assert.Equal(4, records.Count(r => r.TryGetProperty("timing", out _))); // operators and unfused, twice
    }

    [Fact]
    public void Fused_kernels_on_without_a_gpu_is_a_one_line_error()
    {
        CliAssert.OneLineError(CliRunner.Run(["bench", "kernels", "--device", "cpu", "--fused-kernels", "on"]), "--fused-kernels on needs --device cuda");
    }

    [Fact]
    public void Rows_that_are_not_positive_are_a_one_line_error()
    {
        CliAssert.OneLineError(CliRunner.Run(["bench", "kernels", "--device", "cpu", "--rows", "0"]), "--rows", "must be positive");
    }

    [Fact]
    public void An_unknown_fused_kernels_value_is_quoted()
    {
        CliAssert.OneLineError(CliRunner.Run(["bench", "kernels", "--device", "cpu", "--fused-kernels", "maybe"]), "--fused-kernels", "'maybe'");
    }
}
