using System.Diagnostics;

namespace AdapterSharp;

/// <summary>
/// Writes a folder so that readers see the old folder or the new one, never a partial one: the content goes into a
/// staging folder beside the target (<c>.NAME.tmp-PID-GUID</c>), and a complete staging folder replaces the target by
/// two renames (the old one first to <c>.NAME.old-PID-GUID</c>, deleted after). A writer killed part way leaves at most
/// those hidden folders; <see cref="Recover"/> (which every write and every read of such a folder runs first) removes
/// the staging folders of writers that are gone and, where a kill fell between the two renames, moves the old folder
/// back.
/// </summary>
public static class AtomicFolder
{
    /// <summary>
    /// Fills a staging folder with <paramref name="fill"/>, then puts it at <paramref name="target"/>, replacing a
    /// folder there (or, with <paramref name="replace"/> false, keeping one that appeared meanwhile and dropping ours).
    /// </summary>
    public static void Write(string target, Action<string> fill, bool replace = true)
    {
        target = Path.GetFullPath(target.TrimEnd(Path.DirectorySeparatorChar));
        var parent = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(parent);
        Recover(target);
        var staging = Hidden(target, "tmp");
        Directory.CreateDirectory(staging);
        try
        {
            fill(staging);
            if (!Directory.Exists(target))
            {
                try
                {
                    Directory.Move(staging, target);
                    return;
                }
                catch (IOException) when (Directory.Exists(target))
                {
                    // Another writer got there first.
                }
            }
            if (!replace)
            {
                Directory.Delete(staging, recursive: true);
                return;
            }
            var old = Hidden(target, "old");
            Directory.Move(target, old);
            Directory.Move(staging, target);
            Directory.Delete(old, recursive: true);
        }
        catch (Exception e)
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
            if (AtomicFile.TooLarge(e)) throw new IOException($"{target}: cannot write: {AtomicFile.TooLargeMessage}", e);
            throw;
        }
    }

    /// <summary>
    /// Tidies what killed writers left beside <paramref name="target"/>: their staging folders go; where the target is
    /// missing but an old copy of it is there (a kill between the two renames), the newest old copy comes back; old
    /// copies left beside a present target go. Folders of writers still running are left alone.
    /// </summary>
    public static void Recover(string target)
    {
        target = Path.GetFullPath(target.TrimEnd(Path.DirectorySeparatorChar));
        var parent = Path.GetDirectoryName(target);
        if (parent is null || !Directory.Exists(parent)) return;
        var name = Path.GetFileName(target);
        try
        {
            foreach (var staging in Directory.EnumerateDirectories(parent, $".{name}.tmp-*"))
                if (Abandoned(staging, name, "tmp")) TryDelete(staging);
            var olds = Directory.EnumerateDirectories(parent, $".{name}.old-*").Where(o => Abandoned(o, name, "old"))
                .OrderByDescending(Directory.GetLastWriteTimeUtc).ToList();
            if (olds.Count > 0 && !Directory.Exists(target))
            {
                Directory.Move(olds[0], target);
                olds.RemoveAt(0);
            }
            foreach (var old in olds) TryDelete(old);
        }
        catch (IOException)
        {
            // Another process tidies at the same moment; what is left is its to finish.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    static string Hidden(string target, string kind) =>
        Path.Combine(Path.GetDirectoryName(target)!, $".{Path.GetFileName(target)}.{kind}-{Environment.ProcessId}-{Guid.NewGuid():N}");

    /// <summary>
    /// Whether the writer that made <paramref name="folder"/> is gone: its process id (in the name) no longer runs, or
    /// the folder is a day old (a reused id, or a name from before ids were written into it).
    /// </summary>
    static bool Abandoned(string folder, string name, string kind)
    {
        var suffix = Path.GetFileName(folder)[$".{name}.{kind}-".Length..];
        int dash = suffix.IndexOf('-', StringComparison.Ordinal);
        bool old = DateTime.UtcNow - Directory.GetLastWriteTimeUtc(folder) > TimeSpan.FromDays(1);
        if (dash <= 0 || !int.TryParse(suffix[..dash], out int pid)) return old;
        if (pid == Environment.ProcessId) return false;
        return old || !Running(pid);
    }

    static bool Running(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    static void TryDelete(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
