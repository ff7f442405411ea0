using System.Runtime.InteropServices;

namespace AdapterSharp.Native;

/// <summary>
/// Gives memory the C allocator holds free back to the operating system. libtorch's CPU tensors come from glibc's
/// malloc, which keeps freed blocks for reuse: after a burst of large batches a server would otherwise keep the
/// burst's peak as its working set for good. Linux with glibc only; elsewhere (or with another C library) a no-op.
/// </summary>
public static class HostMemory
{
    static volatile bool unavailable = !OperatingSystem.IsLinux();

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);

    /// <summary>glibc's <c>malloc_trim(0)</c>: returns free pages of every arena. Takes a few milliseconds at most.</summary>
    public static void Trim()
    {
        if (unavailable) return;
        try
        {
            _ = MallocTrim(0); // 1 if memory was released, 0 if there was none to release: either is fine
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            unavailable = true; // musl and others have no malloc_trim
        }
    }
}
