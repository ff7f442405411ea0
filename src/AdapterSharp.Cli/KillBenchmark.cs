using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using AdapterSharp.Checkpoints;
using AdapterSharp.Model;
using AdapterSharp.Text;

namespace AdapterSharp.Cli;

/// <summary>What <c>bench kill</c> runs.</summary>
sealed record KillBenchmarkOptions
{
    public const string AllWriters = "adapter,fusion,cache,convert";

    /// <summary>Kills per writer.</summary>
    public int Trials { get; init; } = 200;

    public IReadOnlyList<string> Writers { get; init; } = AllWriters.Split(',');

    public int Seed { get; init; } = 1;

    /// <summary>Where the runs write (default: a new temporary folder, deleted after).</summary>
    public string? WorkDir { get; init; }

    /// <summary>Also run each writer once with a file-size limit (<c>ulimit -f</c>), as on a full disk.</summary>
    public bool DiskFull { get; init; } = true;
}

/// <summary>
/// <c>adaptersharp bench kill</c>: proves that AdapterSharp's folders survive a writer killed at any moment. For each
/// writer — <c>train</c> saving an adapter over an earlier one, <c>train --method fusion</c> saving a fusion over an
/// earlier one, the first use of the built-in model converting it into the cache, and <c>convert</c> — it starts the
/// real CLI, sends SIGKILL at a random moment (half the trials at a uniformly random time of the run, half at a random
/// time after the writer's staging folder appears), and checks what is left, as the next reader sees it: the folder is
/// the earlier one byte for byte or a complete new one (its config's seal, its weights' hash, every tensor readable;
/// a fusion's adapters found by hash; a converted model's canonical weights hash equal to an unkilled conversion's),
/// or, where there was none, absent; and no staging or old copies are left once the next reader has tidied. With
/// <see cref="KillBenchmarkOptions.DiskFull"/>, each writer also runs under a file-size limit and must fail with one
/// line and leave the earlier folder as it was. Prints a JSON line per writer; the exit code is 1 on any failure.
/// </summary>
static class KillBenchmark
{
    sealed record Writer(string Name, string[] Args, string Target, string? Home, Func<string, string> Verify, bool HasEarlier, TimeSpan WriteWindow);

    static readonly string[] FusedNames = ["a", "b"];

    sealed class Tally
    {
        public int Trials, Killed, Finished, DuringWrite, Earlier, New, Absent;
        public readonly List<string> Failures = [];
    }

    public static int Run(KillBenchmarkOptions options, Action<string> log)
    {
        var work = options.WorkDir is null
            ? Directory.CreateTempSubdirectory("adaptersharp-kill-").FullName
            : Directory.CreateDirectory(options.WorkDir).FullName;
        var rng = new Random(options.Seed);
        bool failed = false;
        try
        {
            var data = WriteData(Path.Combine(work, "data.tsv"));
            foreach (var name in options.Writers)
            {
                var writer = Setup(name, work, data, log);
                var watch = Stopwatch.StartNew();
                var full = Stopwatch.StartNew();
                var (code, stderr) = RunToEnd(writer, writer.Args);
                if (code != 0) throw new InvalidOperationException($"{name}: an unkilled run failed (exit {code}): {stderr}");
                var fullRun = full.Elapsed;
                writer.Verify(writer.Target); // the unkilled run's folder is complete
                var tally = new Tally();
                for (int trial = 0; trial < options.Trials; trial++)
                {
                    if (!writer.HasEarlier) Reset(writer);
                    var before = writer.HasEarlier ? Fingerprint(writer.Target) : null;
                    bool atStaging = trial % 2 == 1;
                    var (killed, duringWrite) = KillAt(writer, rng, fullRun, atStaging);
                    tally.Trials++;
                    if (killed) tally.Killed++;
                    else tally.Finished++;
                    if (duringWrite) tally.DuringWrite++;
                    var problem = Check(writer, before, tally);
                    if (problem is not null) tally.Failures.Add($"trial {trial} ({(atStaging ? "at staging" : "uniform")}): {problem}");
                }
                string? diskFull = null;
                if (options.DiskFull)
                {
                    if (!writer.HasEarlier) Reset(writer); // it must then fail and leave nothing
                    diskFull = DiskFull(writer);
                    if (diskFull is not null && !diskFull.StartsWith("ok", StringComparison.Ordinal)) tally.Failures.Add($"disk full: {diskFull}");
                }
                failed |= tally.Failures.Count > 0;
                foreach (var failure in tally.Failures.Take(10)) log($"{name}: FAIL {failure}");
                Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
                {
                    ["writer"] = name,
                    ["trials"] = tally.Trials,
                    ["killed"] = tally.Killed,
                    ["finished_before_kill"] = tally.Finished,
                    ["killed_while_staging"] = tally.DuringWrite,
                    ["left_earlier"] = tally.Earlier,
                    ["left_new"] = tally.New,
                    ["left_absent"] = tally.Absent,
                    ["failures"] = tally.Failures.Count,
                    ["disk_full"] = diskFull,
                    ["unkilled_run_s"] = Math.Round(fullRun.TotalSeconds, 2),
                    ["seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1),
                }));
            }
        }
        finally
        {
            if (options.WorkDir is null) TryDelete(work);
        }
        return failed ? 1 : 0;
    }

    /// <summary>A labelled file small enough that a run takes seconds, with a few evaluations (each may save).</summary>
    static string WriteData(string path)
    {
        string[] good = ["great", "lovely", "moving", "witty", "superb", "charming"], bad = ["dull", "awful", "boring", "flat", "tedious", "weak"];
        var lines = new List<string> { "sentence\tlabel" };
        for (int i = 0; i < 96; i++)
        {
            bool positive = i % 2 == 0;
            var words = positive ? good : bad;
            lines.Add($"a {words[i % 6]} film , {words[(i / 6) % 6]} at times\t{(positive ? 1 : 0)}");
        }
        File.WriteAllLines(path, lines);
        return path;
    }

    static string[] TrainArgs(string data, string output, string name, int seed) =>
    [
        "train", "--train", data, "--dev", data, "--text-column", "sentence", "--label-column", "label", "--name", name,
        "--epochs", "2", "--batch-size", "16", "--max-length", "16", "--eval-steps", "2", "--seed", seed.ToString(CultureInfo.InvariantCulture),
        "--output", output,
    ];

    static Writer Setup(string name, string work, string data, Action<string> log)
    {
        var dir = Path.Combine(work, name);
        TryDelete(dir);
        Directory.CreateDirectory(dir);
        log($"{name}: setting up in {dir}");
        switch (name)
        {
            case "adapter":
                return new Writer(name, TrainArgs(data, Path.Combine(dir, "run"), "kill", seed: 2), Path.Combine(dir, "run", "adapter"),
                    null, VerifyAdapter, HasEarlier: true, TimeSpan.FromMilliseconds(40));
            case "fusion":
            {
                var sources = FusedNames.Select((n, i) =>
                {
                    var run = Path.Combine(dir, n);
                    var (code, stderr) = RunCli(TrainArgs(data, run, n, seed: 10 + i), null);
                    if (code != 0) throw new InvalidOperationException($"fusion: training adapter {n} failed: {stderr}");
                    return Path.Combine(run, "adapter");
                }).ToArray();
                var args = TrainArgs(data, Path.Combine(dir, "run"), "fused", seed: 3)
                    .Concat(["--method", "fusion", "--fuse", string.Join(',', sources)]).ToArray();
                return new Writer(name, args, Path.Combine(dir, "run", "adapter"), null, VerifyFusion, HasEarlier: true, TimeSpan.FromMilliseconds(40));
            }
            case "cache":
            {
                // The first use of the built-in model converts it into <home>/models/minilm-l6: `info` is the shortest such use.
                var home = Path.Combine(dir, "home");
                var target = Path.Combine(home, "models", BuiltInModels.MiniLmL6.Id);
                return new Writer(name, ["info", "--model", BuiltInModels.MiniLmL6.Id], target, home, VerifyModel(log), HasEarlier: false,
                    TimeSpan.FromSeconds(3));
            }
            case "convert":
            {
                var target = Path.Combine(dir, "minilm-f16");
                return new Writer(name, ["convert", "--model", BuiltInModels.MiniLmL6.Id, "--dtype", "f16", "--output", target], target, null,
                    VerifyModel(log), HasEarlier: false, TimeSpan.FromSeconds(2));
            }
            default:
                throw new UsageException($"--writers: unknown writer '{name}' (known: {KillBenchmarkOptions.AllWriters})");
        }
    }

    /// <summary>Starts the writer, kills it (SIGKILL) at the chosen moment, and waits for it to be gone.</summary>
    static (bool Killed, bool DuringWrite) KillAt(Writer writer, Random rng, TimeSpan fullRun, bool atStaging)
    {
        using var process = Start(writer, writer.Args);
        var parent = Path.GetDirectoryName(writer.Target)!;
        var stagingPattern = $".{Path.GetFileName(writer.Target)}.tmp-{process.Id}-*";
        var clock = Stopwatch.StartNew();
        if (atStaging)
        {
            // Poll for this writer's staging folder; then wait a random part of a write's length.
            while (!process.HasExited && !Staging(parent, stagingPattern) && clock.Elapsed < fullRun * 3) Thread.SpinWait(2000);
            Thread.Sleep(TimeSpan.FromMilliseconds(rng.NextDouble() * writer.WriteWindow.TotalMilliseconds));
        }
        else
        {
            var at = TimeSpan.FromMilliseconds(rng.NextDouble() * fullRun.TotalMilliseconds * 1.05);
            while (!process.HasExited && clock.Elapsed < at) Thread.Sleep(1);
        }
        bool duringWrite = Staging(parent, stagingPattern);
        bool killed = false;
        if (!process.HasExited)
        {
            try
            {
                process.Kill(); // SIGKILL on Unix
                killed = true;
            }
            catch (InvalidOperationException)
            {
                // It ended first.
            }
        }
        process.WaitForExit();
        return (killed, duringWrite);
    }

    static bool Staging(string parent, string pattern)
    {
        try
        {
            return Directory.Exists(parent) && Directory.EnumerateDirectories(parent, pattern).Any();
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>What the next reader sees after a kill; null when it is as promised.</summary>
    static string? Check(Writer writer, Dictionary<string, string>? before, Tally tally)
    {
        AtomicFolder.Recover(writer.Target); // what every reader and writer does first
        var parent = Path.GetDirectoryName(writer.Target)!;
        var name = Path.GetFileName(writer.Target);
        if (Directory.Exists(parent))
        {
            var left = Directory.EnumerateDirectories(parent, $".{name}.*").Select(Path.GetFileName).ToList();
            if (left.Count > 0) return $"left behind after recovery: {string.Join(", ", left)}";
        }
        if (!Directory.Exists(writer.Target))
        {
            if (before is not null) return "the earlier folder is gone";
            tally.Absent++;
            return null;
        }
        if (before is not null && SameFiles(before, Fingerprint(writer.Target)))
        {
            tally.Earlier++;
            return null;
        }
        try
        {
            writer.Verify(writer.Target);
            tally.New++;
            return null;
        }
        catch (Exception e)
        {
            return $"{writer.Target} is neither the earlier folder nor a complete new one: {e.GetType().Name}: {e.Message}";
        }
    }

    static string VerifyAdapter(string dir)
    {
        var manifest = AdapterFiles.ReadManifest(dir);
        if (manifest.WeightsSha256 is null || manifest.ConfigSha256 is null) throw new InvalidDataException("the config is not sealed");
        AdapterFiles.CheckedWeights(dir, AdapterFiles.WeightsFile, manifest.WeightsSha256);
        Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile));
        return "adapter";
    }

    static string VerifyFusion(string dir)
    {
        var manifest = FusionFiles.ReadManifest(dir);
        if (manifest.WeightsSha256 is null || manifest.ConfigSha256 is null) throw new InvalidDataException("the config is not sealed");
        AdapterFiles.CheckedWeights(dir, FusionFiles.WeightsFile, manifest.WeightsSha256);
        Safetensors.Read(Path.Combine(dir, FusionFiles.WeightsFile));
        foreach (var adapter in manifest.Adapters) VerifyAdapter(adapter.Find(dir, "fuses", "this fusion"));
        return "fusion";
    }

    /// <summary>A converted model folder: loads, and its weights are those of an unkilled conversion (the first one checked).</summary>
    static Func<string, string> VerifyModel(Action<string> log)
    {
        string? reference = null;
        return dir =>
        {
            BertConfig.Load(Path.Combine(dir, "config.json"));
            BertTokenizer.FromVocabFile(Path.Combine(dir, "vocab.txt"));
            using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
            var weights = Safetensors.Read(Path.Combine(dir, "model.safetensors"));
            foreach (var key in weights.Keys.Order(StringComparer.Ordinal))
            {
                hash.AppendData(System.Text.Encoding.UTF8.GetBytes($"{key}|{weights[key].DType}|{string.Join(',', weights[key].Shape)}|"));
                hash.AppendData(weights[key].Bytes);
            }
            var sha = Convert.ToHexStringLower(hash.GetHashAndReset());
            if (reference is null)
            {
                reference = sha;
                log($"{dir}: reference weights sha256 {sha[..12]}…");
            }
            else if (sha != reference) throw new InvalidDataException($"weights sha256 {sha[..12]}… differs from an unkilled conversion's {reference[..12]}…");
            return "model";
        };
    }

    /// <summary>Runs the writer with a file-size limit far below what it writes (SIGXFSZ ignored, so writes fail with EFBIG as on a full disk).</summary>
    static string DiskFull(Writer writer)
    {
        if (!File.Exists("/bin/bash")) return "skipped: no /bin/bash";
        var before = Directory.Exists(writer.Target) ? Fingerprint(writer.Target) : null;
        var (code, stderr) = RunCli(writer.Args, writer.Home, limitKb: 256);
        var lines = stderr.Trim().Split('\n');
        var last = lines[^1];
        if (code != 1) return $"exit {code}, expected 1: {last}";
        if (!last.StartsWith("error: ", StringComparison.Ordinal)) return $"no one-line error: {last}";
        AtomicFolder.Recover(writer.Target);
        var parent = Path.GetDirectoryName(writer.Target)!;
        if (Directory.Exists(parent) && Directory.EnumerateDirectories(parent, $".{Path.GetFileName(writer.Target)}.*").Any())
            return "staging folders left behind";
        if (before is not null && (!Directory.Exists(writer.Target) || !SameFiles(before, Fingerprint(writer.Target))))
            return "the earlier folder changed";
        if (before is null && Directory.Exists(writer.Target)) return "a folder appeared although the write failed";
        return $"ok: {last}";
    }

    static void Reset(Writer writer)
    {
        TryDelete(writer.Target);
        var parent = Path.GetDirectoryName(writer.Target)!;
        if (Directory.Exists(parent))
            foreach (var hidden in Directory.EnumerateDirectories(parent, $".{Path.GetFileName(writer.Target)}.*")) TryDelete(hidden);
    }

    static Dictionary<string, string> Fingerprint(string dir) =>
        Directory.EnumerateFiles(dir).ToDictionary(f => Path.GetFileName(f), f =>
        {
            using var stream = File.OpenRead(f);
            return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(stream));
        })!;

    static bool SameFiles(Dictionary<string, string> a, Dictionary<string, string> b) =>
        a.Count == b.Count && a.All(kv => b.TryGetValue(kv.Key, out var v) && v == kv.Value);

    static (int Code, string Stderr) RunToEnd(Writer writer, string[] args) => RunCli(args, writer.Home);

    static (int Code, string Stderr) RunCli(string[] args, string? home, int? limitKb = null)
    {
        using var process = Start(args, home, limitKb, captureStderr: true);
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, stderr.Result);
    }

    static Process Start(Writer writer, string[] args) => Start(args, writer.Home, null, captureStderr: false);

    /// <summary>This program again (the apphost, or <c>dotnet AdapterSharp.Cli.dll</c>), optionally under a file-size limit.</summary>
    static Process Start(string[] args, string? home, int? limitKb, bool captureStderr)
    {
        var self = Environment.ProcessPath!;
        var command = new List<string>();
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") command.AddRange([self, Environment.GetCommandLineArgs()[0]]);
        else command.Add(self);
        command.AddRange(args);
        ProcessStartInfo start;
        if (limitKb is { } kb)
        {
            start = new ProcessStartInfo("/bin/bash");
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add($"trap '' XFSZ; ulimit -f {kb}; exec \"$@\"");
            start.ArgumentList.Add("bash");
        }
        else
        {
            start = new ProcessStartInfo(command[0]);
            command.RemoveAt(0);
        }
        foreach (var part in command) start.ArgumentList.Add(part);
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        start.UseShellExecute = false;
        start.Environment["NO_COLOR"] = "1";
        if (home is not null) start.Environment["ADAPTERSHARP_HOME"] = home;
        // The runtime double-maps its code memory through a file the size limit applies to; without this it cannot start.
        if (limitKb is not null) start.Environment["DOTNET_EnableWriteXorExecute"] = "0";
        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        if (!captureStderr)
        {
            process.ErrorDataReceived += (_, _) => { };
            process.BeginErrorReadLine();
        }
        return process;
    }

    static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
