using AdapterSharp.Checkpoints;
using Microsoft.AspNetCore.Http;

namespace AdapterSharp.Server;

/// <summary>
/// The one folder that run-time loads may read from. A requested path is made absolute against the root, every
/// symbolic link along it is resolved, and containment is checked on the result, which is also the path that
/// gets loaded: what was checked is what is read. The adapter's (or fusion's) two files are checked the same way,
/// since a link there could point anywhere.
/// </summary>
public sealed class AdaptersRoot
{
    const int MaxLinks = 40; // as Linux's ELOOP limit

    public AdaptersRoot(string root)
    {
        if (!Directory.Exists(root)) throw new ArgumentException($"--adapters-root {root}: folder not found");
        Folder = RealPath(root);
    }

    /// <summary>The root, absolute and free of links.</summary>
    public string Folder { get; }

    /// <summary>The real folder that <paramref name="requested"/> names; 403 when it lies outside the root.</summary>
    public string Resolve(string requested)
    {
        if (string.IsNullOrWhiteSpace(requested)) throw new ApiException(StatusCodes.Status400BadRequest, "path: required");
        if (requested.Contains('\0')) throw new ApiException(StatusCodes.Status400BadRequest, "path: contains a NUL character");
        try
        {
            var real = RealPath(Path.GetFullPath(requested, Folder));
            if (!Contains(real))
                throw new ApiException(StatusCodes.Status403Forbidden, $"path '{requested}' is outside the adapters root");
            foreach (var file in new[] { AdapterFiles.ConfigFile, AdapterFiles.WeightsFile, FusionFiles.ConfigFile, FusionFiles.WeightsFile })
                if (!Contains(RealPath(Path.Combine(real, file))))
                    throw new ApiException(StatusCodes.Status403Forbidden, $"path '{requested}': {file} links outside the adapters root");
            return real;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ApiException(StatusCodes.Status400BadRequest, $"path '{requested}': {e.Message}");
        }
    }

    /// <summary>
    /// The folder of an adapter that the fusion or stacked adapter in <paramref name="fromDir"/> refers to: where it
    /// recorded it (relative first, then absolute), taken only inside the root, and checked to hold the weights it
    /// was trained with. 403 when no recorded place is inside the root.
    /// </summary>
    public string FindReferenced(string fromDir, AdapterReference reference)
    {
        string[] candidates = [.. new[] { Path.Combine(fromDir, reference.Path), reference.AbsolutePath }.Where(p => p.Length > 0).Distinct()];
        var inside = new List<string>();
        foreach (var candidate in candidates)
        {
            try
            {
                inside.Add(Resolve(candidate));
            }
            catch (ApiException e) when (e.Status is StatusCodes.Status403Forbidden or StatusCodes.Status400BadRequest)
            {
                // outside the root, or unreadable: try the other recorded place
            }
        }
        if (inside.Count == 0)
            throw new ApiException(StatusCodes.Status403Forbidden,
                $"{fromDir}: refers to adapter '{reference.Name}', whose folder is not inside the adapters root (looked in {string.Join(" and ", candidates)})");
        // Find reads and hashes only what was resolved inside the root; it says which folder is missing or differs.
        var found = inside.FirstOrDefault(real => File.Exists(Path.Combine(real, AdapterFiles.ConfigFile))) ?? inside[0];
        return (reference with { Path = found, AbsolutePath = found }).Find(fromDir, "refers to", "it");
    }

    bool Contains(string real) => real == Folder || real.StartsWith(Path.TrimEndingDirectorySeparator(Folder) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>
    /// <paramref name="path"/> made absolute with every symbolic link in it replaced by its target, component by
    /// component (as realpath(3)); components that do not exist are kept as they are.
    /// </summary>
    public static string RealPath(string path) => RealPath(path, 0);

    static string RealPath(string path, int links)
    {
        var full = Path.GetFullPath(path);
        var root = Path.GetPathRoot(full)!;
        var current = root;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            var next = Path.Combine(current, part);
            if (new FileInfo(next).LinkTarget is { } target)
            {
                if (++links > MaxLinks) throw new IOException("too many levels of symbolic links");
                next = RealPath(Path.Combine(current, target), links); // Combine keeps an absolute target as it is
            }
            current = next;
        }
        return current;
    }
}
