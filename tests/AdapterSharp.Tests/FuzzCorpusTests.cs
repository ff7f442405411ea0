using AdapterSharp.Fuzz;

namespace AdapterSharp.Tests;

/// <summary>
/// Every committed fuzzing input (fuzz/corpus: the seeds; fuzz/regressions: what afl-fuzz found and was fixed) holds the
/// fuzzing contract when run through the harness without instrumentation: loaded, or refused with a documented
/// exception of one line, and no allocation out of proportion. scripts/fuzz.sh does the fuzzing itself.
/// </summary>
public sealed class FuzzCorpusTests
{
    static readonly string FuzzDir = FindFuzzDir();

    public static TheoryData<string> TargetNames => [.. Targets.All.Select(t => t.Name)];

    [Theory]
    [MemberData(nameof(TargetNames))]
    public void Every_committed_input_holds_the_contract(string name)
    {
        var target = Targets.Find(name)!;
        var files = new[] { "corpus", "regressions" }
            .Select(kind => Path.Combine(FuzzDir, kind, name))
            .Where(Directory.Exists)
            .SelectMany(Directory.EnumerateFiles)
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.NotEmpty(files);
        var scratch = new Scratch();
        try
        {
            var violations = new List<string>();
            foreach (var file in files)
            {
                try
                {
                    Targets.Check(target, File.ReadAllBytes(file), scratch);
                }
                catch (ContractViolationException e)
                {
                    violations.Add($"{Path.GetRelativePath(FuzzDir, file)}: {e.Message}");
                }
            }
            Assert.True(violations.Count == 0, string.Join("\n", violations));
        }
        finally
        {
            Directory.Delete(scratch.Root, recursive: true);
        }
    }

    [Fact]
    public void Every_target_has_a_committed_corpus()
    {
        foreach (var target in Targets.All)
            Assert.True(Directory.Exists(Path.Combine(FuzzDir, "corpus", target.Name)), $"fuzz/corpus/{target.Name} is missing");
    }

    static string FindFuzzDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "fuzz", "AdapterSharp.Fuzz", "AdapterSharp.Fuzz.csproj")))
                return Path.Combine(dir.FullName, "fuzz");
        throw new DirectoryNotFoundException($"no fuzz/ folder above {AppContext.BaseDirectory}");
    }
}
