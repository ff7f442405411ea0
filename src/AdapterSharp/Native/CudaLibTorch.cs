using System.Diagnostics;
using System.Runtime.InteropServices;

namespace AdapterSharp.Native;

/// <summary>
/// Finds a CUDA-capable libtorch for TorchSharp. The libtorch CUDA NuGet packages are not available to us, so
/// the route to a GPU is an existing PyTorch install: <c>$ADAPTERSHARP_LIBTORCH</c> (a directory holding
/// libtorch_cuda.so), else the <c>torch/lib</c> of the <c>python3</c> on PATH. Its libraries are loaded by full
/// path, in dependency order, before TorchSharp loads its own native library, whose references to libtorch
/// then resolve to these by soname. This must happen before the first TorchSharp call.
/// </summary>
public static class CudaLibTorch
{
    // c10 and the CPU half first, then their CUDA halves, then the umbrella library TorchSharp links against.
    static readonly string[] LoadOrder = ["libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so"];

    static string? loadedFrom;

    /// <summary>The directory the CUDA libtorch was loaded from, if any.</summary>
    public static string? LoadedFrom => loadedFrom;

    /// <summary>
    /// Loads the CUDA libtorch once. Returns null on success, else what was searched and why it failed.
    /// Does nothing (and succeeds) when the process already has libtorch_cuda loaded, e.g. through LD_LIBRARY_PATH.
    /// </summary>
    public static string? TryLoad()
    {
        if (loadedFrom is not null) return null;
        var searched = new List<string>();
        foreach (var (origin, dir) in Candidates())
        {
            if (dir is null)
            {
                searched.Add(origin);
                continue;
            }
            var cudaLibrary = Path.Combine(dir, "libtorch_cuda.so");
            if (!File.Exists(cudaLibrary))
            {
                searched.Add($"{origin}: {dir} has no libtorch_cuda.so");
                continue;
            }
            UseExpandableSegments();
            foreach (var name in LoadOrder)
            {
                var path = Path.Combine(dir, name);
                if (!File.Exists(path)) continue;
                try
                {
                    NativeLibrary.Load(path);
                }
                catch (DllNotFoundException e)
                {
                    return $"{path}: cannot load: {e.Message.Split('\n')[0]}";
                }
            }
            loadedFrom = dir;
            return null;
        }
        return "no CUDA libtorch found; searched " + string.Join("; ", searched);
    }

    /// <summary>
    /// Unless the user configured the CUDA caching allocator, lets it grow segments in place
    /// (<c>expandable_segments</c>) rather than keep many fixed-size ones: a captured training step's pool then
    /// reserves about what the step allocates (measured on an H100: bert-base full fine-tuning b64, 5.86 → 4.84 GB
    /// reserved for 4.66 GB allocated; same step time). Set in the native environment, where libtorch reads it
    /// at its first CUDA allocation (.NET's own environment block is not the native one on Linux).
    /// </summary>
    static void UseExpandableSegments()
    {
        // PYTORCH_ALLOC_CONF is the newer, device-generic name; either one set means the user configured it.
        if (Environment.GetEnvironmentVariable("PYTORCH_ALLOC_CONF") is not null) return;
        const string name = "PYTORCH_CUDA_ALLOC_CONF";
        // A failure (out of memory for the environment) leaves the allocator's default: nothing to report.
        if (Environment.GetEnvironmentVariable(name) is null) _ = SetEnv(name, "expandable_segments:True", overwrite: 0);
    }

    /// <summary>
    /// A handle to one of libtorch's libraries if the process has it loaded already: from the folder this class
    /// loaded, else by soname without loading anything new (a CPU-only process never pulls in a CUDA libtorch).
    /// </summary>
    internal static bool TryOpenLoaded(string name, out nint handle)
    {
        if (loadedFrom is { } dir && NativeLibrary.TryLoad(Path.Combine(dir, name), out handle)) return true;
        handle = OpenIfLoaded(name);
        return handle != 0;
    }

    /// <summary>A handle to the library of this soname if the process has it loaded already, else 0 (nothing is loaded).</summary>
    internal static nint OpenIfLoaded(string soname)
    {
        const int RtldNow = 2, RtldNoLoad = 4; // glibc
        return DlOpen(soname, RtldNow | RtldNoLoad);
    }

    /// <summary>The file and load address of the loaded library that holds <paramref name="address"/>, or null.</summary>
    internal static (string? File, nint Base)? Mapping(nint address) =>
        DlAddr(address, out var info) == 0 ? null : (Marshal.PtrToStringUTF8(info.FileName), info.FileBase);

    [StructLayout(LayoutKind.Sequential)]
    struct DlInfo
    {
        public nint FileName, FileBase, SymbolName, SymbolAddress;
    }

    [DllImport("libc", EntryPoint = "dladdr")]
    static extern int DlAddr(nint address, out DlInfo info);

    [DllImport("libc", EntryPoint = "dlopen")]
    static extern nint DlOpen([MarshalAs(UnmanagedType.LPUTF8Str)] string name, int flags);

    [DllImport("libc", EntryPoint = "setenv")]
    static extern int SetEnv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    static IEnumerable<(string Origin, string? Dir)> Candidates()
    {
        var configured = Environment.GetEnvironmentVariable("ADAPTERSHARP_LIBTORCH");
        if (!string.IsNullOrWhiteSpace(configured)) yield return ("$ADAPTERSHARP_LIBTORCH", configured);
        else yield return ("$ADAPTERSHARP_LIBTORCH (not set)", null);
        var pythonLib = PythonTorchLib(out var problem);
        yield return (pythonLib is null ? $"python3's torch ({problem})" : "python3's torch", pythonLib);
    }

    static string? PythonTorchLib(out string problem)
    {
        problem = "";
        try
        {
            var start = new ProcessStartInfo("python3", ["-c", "import torch, os; print(os.path.dirname(torch.__file__))"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            using var process = Process.Start(start)!;
            var output = process.StandardOutput.ReadToEnd().Trim();
            process.StandardError.ReadToEnd();
            if (!process.WaitForExit(60_000)) process.Kill();
            if (process.ExitCode != 0 || output.Length == 0)
            {
                problem = "python3 has no torch module";
                return null;
            }
            return Path.Combine(output, "lib");
        }
        catch (System.ComponentModel.Win32Exception)
        {
            problem = "no python3 on PATH";
            return null;
        }
    }
}
