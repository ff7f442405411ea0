namespace AdapterSharp;

/// <summary>
/// Writes files so that readers see the old content or the new, never a partial file: the data goes to a
/// temporary file in the same directory, which is then renamed over the target.
/// </summary>
public static class AtomicFile
{
    public static void WriteAllText(string path, string contents) =>
        Write(path, stream =>
        {
            using var writer = new StreamWriter(stream, new System.Text.UTF8Encoding(false), leaveOpen: true);
            writer.Write(contents);
        });

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray();
        Write(path, stream => stream.Write(copy));
    }

    public static void Write(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        try
        {
            using (var stream = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch (Exception e)
        {
            TryDelete(tmp);
            if (TooLarge(e)) throw new IOException($"cannot write {full}: {TooLargeMessage}", e);
            throw;
        }
    }

    internal const string TooLargeMessage = "the file is larger than the file system or the process's file-size limit allows (EFBIG)";

    /// <summary>
    /// Whether <paramref name="e"/> is .NET's form of EFBIG (a file beyond the file system's or <c>ulimit -f</c>'s limit),
    /// which it reports as an <see cref="ArgumentOutOfRangeException"/> on the stream's length, not as an IOException.
    /// </summary>
    internal static bool TooLarge(Exception e) => e is ArgumentOutOfRangeException { ParamName: "value" };

    static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}
