using System.Reflection;
using AdapterSharp;
using Xunit;

// Runs every [Fact] (and [CudaFact]) of the GPU test classes, on the CUDA libtorch the CLI would use, and prints one
// line per test: what `dotnet test --filter Category=Gpu` would run, where no .NET SDK is installed. Arguments, if
// any, are substrings of the test names to run. Exit code: the number of failures.
try
{
    Devices.Resolve("cuda", Console.Error.WriteLine); // before anything asks TorchSharp about CUDA
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

var tests = typeof(AdapterSharp.Tests.Gpu.CudaTests).Assembly.GetTypes()
    .Where(t => t.GetCustomAttributes<TraitAttribute>().Any() || t.Namespace == "AdapterSharp.Tests.Gpu")
    .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Instance).Select(m => (Type: t, Method: m)))
    .Select(x => (x.Type, x.Method, Fact: x.Method.GetCustomAttribute<FactAttribute>()))
    .Where(x => x.Fact is not null && (args.Length == 0 || args.Any(a => x.Method.Name.Contains(a, StringComparison.Ordinal))))
    .ToList();

int failed = 0, passed = 0, skipped = 0;
foreach (var (type, method, fact) in tests)
{
    var name = $"{type.Name}.{method.Name}";
    if (fact!.Skip is { } reason)
    {
        Console.WriteLine($"SKIP {name}: {reason}");
        skipped++;
        continue;
    }
    var clock = System.Diagnostics.Stopwatch.StartNew();
    try
    {
        var instance = Activator.CreateInstance(type);
        method.Invoke(instance, null);
        (instance as IDisposable)?.Dispose();
        Console.WriteLine($"PASS {name} ({clock.Elapsed.TotalSeconds:F1} s)");
        passed++;
    }
    catch (TargetInvocationException e)
    {
        Console.WriteLine($"FAIL {name}: {e.InnerException?.GetType().Name}: {e.InnerException?.Message}");
        failed++;
    }
}
Console.WriteLine($"{passed} passed, {failed} failed, {skipped} skipped");
return failed;
