using AdapterSharp.Fuzz;

// adaptersharp-fuzz TARGET                      under afl-fuzz (SharpFuzz's fork server); once on stdin otherwise
// adaptersharp-fuzz TARGET --replay PATH...      every file under PATH (a corpus, crashes): exit 1 on a violation
// adaptersharp-fuzz --list                       the targets
if (args.Length == 0 || args[0] is "--list" or "-h" or "--help")
{
    foreach (var t in Targets.All) Console.WriteLine($"{t.Name,-16} {t.Description}");
    return args.Length == 0 ? 2 : 0;
}
var target = Targets.Find(args[0]);
if (target is null)
{
    Console.Error.WriteLine($"error: unknown target '{args[0]}' (known: {string.Join(", ", Targets.All.Select(t => t.Name))})");
    return 2;
}
var scratch = new Scratch();
try
{
    if (args.Length > 1 && args[1] == "--replay")
        return Replay(target, args[2..], scratch);
    SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
    {
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        Targets.Check(target, memory.ToArray(), scratch);
    });
    return 0;
}
finally
{
    try
    {
        Directory.Delete(scratch.Root, recursive: true);
    }
    catch (IOException)
    {
    }
}

static int Replay(Target target, string[] paths, Scratch scratch)
{
    var files = paths.SelectMany(p => Directory.Exists(p)
            ? Directory.EnumerateFiles(p, "*", SearchOption.AllDirectories).Where(f => !Path.GetFileName(f).StartsWith('.') && !f.EndsWith("README.txt", StringComparison.Ordinal))
            : [p])
        .Order(StringComparer.Ordinal).ToList();
    int violations = 0;
    var watch = System.Diagnostics.Stopwatch.StartNew();
    foreach (var file in files)
    {
        try
        {
            Targets.Check(target, File.ReadAllBytes(file), scratch);
        }
        catch (ContractViolationException e)
        {
            violations++;
            Console.Error.WriteLine($"{file}: {e.Message}");
            if (e.InnerException is { } inner) Console.Error.WriteLine(inner.ToString());
        }
    }
    Console.WriteLine($"{target.Name}: {files.Count} inputs replayed in {watch.Elapsed.TotalSeconds:F1} s, {violations} contract violations");
    return violations == 0 ? 0 : 1;
}
