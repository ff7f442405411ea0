using System.Diagnostics;
using AdapterSharp.Checkpoints;

namespace AdapterSharp.Tests.Cli;

public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>
/// Runs the real CLI (<c>dotnet AdapterSharp.Cli.dll</c> from the test output) as a child process, as a user
/// would. Children share the test run's converted minilm-l6 unless <c>env</c> says otherwise.
/// </summary>
public static class CliRunner
{
    static readonly string CliDll = Path.Combine(AppContext.BaseDirectory, "AdapterSharp.Cli.dll");

    // The SDK tells test hosts which dotnet started them; use the same one for the child.
    static readonly string Dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";

    static readonly Lazy<string> MiniLmDir = new(() => BuiltInModels.EnsureCached(BuiltInModels.MiniLmL6, MiniLm.Home));

    /// <summary>
    /// Converts the built-in model into the shared test home once, in this process, so that CLI tests running
    /// in parallel do not each convert it.
    /// </summary>
    public static string EnsureMiniLm() => MiniLmDir.Value;

    public static CliResult Run(string[] args, string? stdin = null, IReadOnlyDictionary<string, string>? env = null,
        string? workingDirectory = null, int timeoutSeconds = 120)
    {
        var start = new ProcessStartInfo(Dotnet)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        start.ArgumentList.Add(CliDll);
        foreach (var arg in args) start.ArgumentList.Add(arg);
        start.Environment["ADAPTERSHARP_HOME"] = MiniLm.Home;
        start.Environment["NO_COLOR"] = "1";
        foreach (var (key, value) in env ?? new Dictionary<string, string>()) start.Environment[key] = value;

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null) process.StandardInput.Write(stdin);
        process.StandardInput.Close();
        if (!process.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException(
                $"adaptersharp {string.Join(' ', args)} ran over {timeoutSeconds} s\n{stdout.Result}\n{stderr.Result}");
        }
        return new CliResult(process.ExitCode, stdout.Result, stderr.Result);
    }

    public static CliResult Run(params string[] args) => Run(args, stdin: null);
}

public static class CliAssert
{
    /// <summary>
    /// The CLI's contract for an expected failure: a non-zero exit, exactly one line on stderr that starts
    /// with <c>error: </c> and contains each of <paramref name="fragments"/> (the file and what is wrong), and
    /// no stack trace. Returns that line.
    /// </summary>
    public static string OneLineError(CliResult result, params string[] fragments)
    {
        Assert.True(result.ExitCode != 0, $"expected a non-zero exit\n{result}");
        var lines = result.Stderr.Trim().Split('\n');
        Assert.True(lines.Length == 1, $"expected one line on stderr\n{result}");
        var line = lines[0].TrimEnd('\r');
        Assert.StartsWith("error: ", line);
        Assert.DoesNotContain("   at ", result.Stderr);
        foreach (var fragment in fragments) Assert.Contains(fragment, line);
        return line;
    }
}
