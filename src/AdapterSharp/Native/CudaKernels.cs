using System.Runtime.InteropServices;
using System.Text;

namespace AdapterSharp.Native;

/// <summary>
/// CUDA kernels of our own, compiled at run time with NVRTC (the compiler library that PyTorch's CUDA wheels
/// install beside libtorch for their own jit kernels) and launched through the CUDA driver API on libtorch's
/// current stream, so they order with its work and are recorded by CUDA graph captures. libtorch's operator set,
/// which is all TorchSharp can call, has no fused kernels such as residual add + LayerNorm; these fill that gap.
/// <para>
/// Nothing here is loaded in a CPU-only process. <see cref="Available"/> is false, with <see cref="Problem"/>
/// saying why, where the driver, NVRTC or the libtorch entry points are missing; callers then keep to
/// libtorch's operators.
/// </para>
/// </summary>
public static unsafe class CudaKernels
{
    const int CuDeviceAttributeMultiprocessorCount = 16, CuDeviceAttributeMajor = 75, CuDeviceAttributeMinor = 76;
    const int CuFuncAttributeMaxDynamicSharedSizeBytes = 8;

    internal sealed class Api
    {
        public delegate* unmanaged<int*, int, int> DeviceGet;
        public delegate* unmanaged<int*, int, int, int> DeviceGetAttribute;
        public delegate* unmanaged<nint*, int> CtxGetCurrent;
        public delegate* unmanaged<nint, int> CtxPushCurrent;
        public delegate* unmanaged<nint*, int> CtxPopCurrent;
        public delegate* unmanaged<nint*, int, int> PrimaryCtxRetain;
        public delegate* unmanaged<nint*, void*, int> ModuleLoadData;
        public delegate* unmanaged<nint*, nint, byte*, int> ModuleGetFunction;
        public delegate* unmanaged<nint, int, int, int> FuncSetAttribute;
        public delegate* unmanaged<int*, nint, int, nuint, int> MaxActiveBlocks;
        public delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> LaunchKernel;
        public delegate* unmanaged<int, byte**, int> GetErrorString;

        public delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int> CreateProgram;
        public delegate* unmanaged<nint, int, byte**, int> CompileProgram;
        public delegate* unmanaged<nint, nuint*, int> GetCubinSize;
        public delegate* unmanaged<nint, byte*, int> GetCubin;
        public delegate* unmanaged<nint, nuint*, int> GetLogSize;
        public delegate* unmanaged<nint, byte*, int> GetLog;
        public delegate* unmanaged<nint*, int> DestroyProgram;

        public delegate* unmanaged<sbyte, CudaGraphs.Stream> CurrentStream;
        public delegate* unmanaged<CudaGraphs.Stream*, nint> RawStream;

        public string NvrtcPath = "";
    }

    static readonly Lazy<(Api? Api, string? Problem)> Loaded = new(Load);
    static readonly Dictionary<(int Device, string Source, string Defines), Module> Modules = [];

    /// <summary>Whether kernels can be compiled and launched (a CUDA libtorch, the driver and NVRTC are present).</summary>
    public static bool Available => Loaded.Value.Api is not null;

    /// <summary>Why kernels cannot be used, or null.</summary>
    public static string? Problem => Loaded.Value.Problem;

    static int unavailableNoted;

    /// <summary>
    /// <see cref="Available"/>, for a caller on a CUDA device: where the kernels are unavailable, says why on standard
    /// error, once per process, so that a slower run is not a mystery.
    /// </summary>
    public static bool AvailableOnCuda()
    {
        if (Available) return true;
        if (Interlocked.Exchange(ref unavailableNoted, 1) == 0) Console.Error.WriteLine($"fused kernels off: {Problem}");
        return false;
    }

    /// <summary>
    /// <see cref="Compile"/>, or null where compiling fails and the caller did not require the kernels (then with one
    /// line on standard error; the caller keeps to libtorch's operators and remembers the failure).
    /// </summary>
    public static Module? TryCompile(int device, string source, bool required, params string[] defines)
    {
        try
        {
            return Compile(device, source, defines);
        }
        catch (InvalidOperationException e) when (!required)
        {
            Console.Error.WriteLine($"fused kernels off: {e.Message}");
            return null;
        }
    }

    static Api Require() => Loaded.Value.Api ?? throw new InvalidOperationException($"CUDA kernels are unavailable: {Problem}");

    static (Api?, string?) Load()
    {
        if (!CudaLibTorch.TryOpenLoaded("libc10_cuda.so", out var c10Cuda))
            return (null, "libc10_cuda.so is not loaded (CPU-only libtorch)");
        var driver = CudaLibTorch.OpenIfLoaded("libcuda.so.1");
        if (driver == 0 && !NativeLibrary.TryLoad("libcuda.so.1", out driver)) return (null, "no CUDA driver (libcuda.so.1)");
        var (nvrtc, nvrtcPath, searched) = FindNvrtc(c10Cuda);
        if (nvrtc == 0) return (null, $"no NVRTC library (libnvrtc.so); searched {searched}");

        var api = new Api { NvrtcPath = nvrtcPath };
        string? missing = null;
        nint Symbol(nint library, string name)
        {
            if (NativeLibrary.TryGetExport(library, name, out var address)) return address;
            missing ??= name;
            return 0;
        }
        api.DeviceGet = (delegate* unmanaged<int*, int, int>)Symbol(driver, "cuDeviceGet");
        api.DeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)Symbol(driver, "cuDeviceGetAttribute");
        api.CtxGetCurrent = (delegate* unmanaged<nint*, int>)Symbol(driver, "cuCtxGetCurrent");
        api.CtxPushCurrent = (delegate* unmanaged<nint, int>)Symbol(driver, "cuCtxPushCurrent_v2");
        api.CtxPopCurrent = (delegate* unmanaged<nint*, int>)Symbol(driver, "cuCtxPopCurrent_v2");
        api.PrimaryCtxRetain = (delegate* unmanaged<nint*, int, int>)Symbol(driver, "cuDevicePrimaryCtxRetain");
        api.ModuleLoadData = (delegate* unmanaged<nint*, void*, int>)Symbol(driver, "cuModuleLoadData");
        api.ModuleGetFunction = (delegate* unmanaged<nint*, nint, byte*, int>)Symbol(driver, "cuModuleGetFunction");
        api.FuncSetAttribute = (delegate* unmanaged<nint, int, int, int>)Symbol(driver, "cuFuncSetAttribute");
        api.MaxActiveBlocks = (delegate* unmanaged<int*, nint, int, nuint, int>)Symbol(driver, "cuOccupancyMaxActiveBlocksPerMultiprocessor");
        api.LaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)Symbol(driver, "cuLaunchKernel");
        api.GetErrorString = (delegate* unmanaged<int, byte**, int>)Symbol(driver, "cuGetErrorString");
        api.CreateProgram = (delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int>)Symbol(nvrtc, "nvrtcCreateProgram");
        api.CompileProgram = (delegate* unmanaged<nint, int, byte**, int>)Symbol(nvrtc, "nvrtcCompileProgram");
        api.GetCubinSize = (delegate* unmanaged<nint, nuint*, int>)Symbol(nvrtc, "nvrtcGetCUBINSize");
        api.GetCubin = (delegate* unmanaged<nint, byte*, int>)Symbol(nvrtc, "nvrtcGetCUBIN");
        api.GetLogSize = (delegate* unmanaged<nint, nuint*, int>)Symbol(nvrtc, "nvrtcGetProgramLogSize");
        api.GetLog = (delegate* unmanaged<nint, byte*, int>)Symbol(nvrtc, "nvrtcGetProgramLog");
        api.DestroyProgram = (delegate* unmanaged<nint*, int>)Symbol(nvrtc, "nvrtcDestroyProgram");
        api.CurrentStream = (delegate* unmanaged<sbyte, CudaGraphs.Stream>)Symbol(c10Cuda, "_ZN3c104cuda20getCurrentCUDAStreamEa");
        api.RawStream = (delegate* unmanaged<CudaGraphs.Stream*, nint>)Symbol(c10Cuda, "_ZNK3c104cuda10CUDAStream6streamEv");
        return missing is null ? (api, null) : (null, $"missing entry point {missing}");
    }

    /// <summary>
    /// libnvrtc: one the process already has, else the one PyTorch's wheels install (site-packages/nvidia/…/lib,
    /// two levels above torch/lib), else the loader's search path. Its builtins library is loaded first from the
    /// same folder, where NVRTC looks for it by name.
    /// </summary>
    static (nint Handle, string Path, string Searched) FindNvrtc(nint c10Cuda)
    {
        string[] sonames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];
        foreach (var soname in sonames)
        {
            var loaded = CudaLibTorch.OpenIfLoaded(soname);
            if (loaded != 0) return (loaded, soname, "");
        }
        var searched = new List<string>();
        if (NativeLibrary.TryGetExport(c10Cuda, "_ZN3c104cuda20getCurrentCUDAStreamEa", out var anchor) && CudaLibTorch.Mapping(anchor) is { File: { } c10CudaFile })
        {
            var torchLib = Path.GetDirectoryName(c10CudaFile);
            var nvidia = torchLib is null ? null : Path.GetFullPath(Path.Combine(torchLib, "..", "..", "nvidia"));
            if (nvidia is not null && Directory.Exists(nvidia))
            {
                searched.Add(nvidia);
                var candidates = Directory.EnumerateDirectories(nvidia)
                    .Select(d => Path.Combine(d, "lib"))
                    .Where(Directory.Exists)
                    .SelectMany(d => Directory.EnumerateFiles(d, "libnvrtc.so*"))
                    .OrderByDescending(f => f, StringComparer.Ordinal);
                foreach (var file in candidates)
                {
                    var folder = Path.GetDirectoryName(file)!;
                    foreach (var builtins in Directory.EnumerateFiles(folder, "libnvrtc-builtins.so*"))
                        NativeLibrary.TryLoad(builtins, out _);
                    if (NativeLibrary.TryLoad(file, out var handle)) return (handle, file, "");
                }
            }
            else if (nvidia is not null) searched.Add($"{nvidia} (absent)");
        }
        foreach (var soname in sonames)
            if (NativeLibrary.TryLoad(soname, out var handle)) return (handle, soname, "");
        searched.Add("the loader's path (" + string.Join(", ", sonames) + ")");
        return (0, "", string.Join("; ", searched));
    }

    /// <summary>A compiled module for one device, and its kernels by name.</summary>
    public sealed class Module
    {
        readonly Api api;
        readonly nint module;
        readonly Dictionary<string, Kernel> kernels = [];

        internal Module(Api api, nint module, int device, int multiprocessors)
        {
            this.api = api;
            this.module = module;
            Device = device;
            Multiprocessors = multiprocessors;
        }

        public int Device { get; }
        public int Multiprocessors { get; }

        public Kernel this[string name]
        {
            get
            {
                lock (kernels)
                {
                    if (kernels.TryGetValue(name, out var kernel)) return kernel;
                    nint function;
                    var bytes = Encoding.UTF8.GetBytes(name + "\0");
                    bool pushed = EnterContext(api, Device);
                    try
                    {
                        fixed (byte* p = bytes) Check(api, api.ModuleGetFunction(&function, module, p), $"cuModuleGetFunction({name})");
                    }
                    finally
                    {
                        LeaveContext(api, pushed);
                    }
                    return kernels[name] = new Kernel(api, function, name, this);
                }
            }
        }
    }

    /// <summary>One kernel of a module.</summary>
    public sealed class Kernel
    {
        readonly Api api;
        readonly nint function;
        readonly string name;
        readonly Module module;

        internal Kernel(Api api, nint function, string name, Module module)
        {
            this.api = api;
            this.function = function;
            this.name = name;
            this.module = module;
        }

        readonly Dictionary<(int Threads, int SharedBytes), int> residentBlocks = [];

        /// <summary>How many blocks of <paramref name="threads"/> fit on the device at once (all multiprocessors);
        /// asked of the driver once per launch shape.</summary>
        public int ResidentBlocks(int threads, int sharedBytes)
        {
            lock (residentBlocks)
            {
                if (!residentBlocks.TryGetValue((threads, sharedBytes), out var blocks))
                    residentBlocks[(threads, sharedBytes)] = blocks = QueryResidentBlocks(threads, sharedBytes);
                return blocks;
            }
        }

        int QueryResidentBlocks(int threads, int sharedBytes)
        {
            int perMultiprocessor;
            bool pushed = EnterContext(api, module.Device);
            try
            {
                AllowSharedMemory(sharedBytes);
                Check(api, api.MaxActiveBlocks(&perMultiprocessor, function, threads, (nuint)sharedBytes), $"occupancy of {name}");
            }
            finally
            {
                LeaveContext(api, pushed);
            }
            return Math.Max(1, perMultiprocessor) * module.Multiprocessors;
        }

        void AllowSharedMemory(int sharedBytes)
        {
            if (sharedBytes > 48 * 1024) Check(api, api.FuncSetAttribute(function, CuFuncAttributeMaxDynamicSharedSizeBytes, sharedBytes), $"shared memory of {name}");
        }

        /// <summary>
        /// Launches on libtorch's current stream of the module's device. <paramref name="arguments"/> holds a pointer
        /// to each kernel parameter, in order.
        /// </summary>
        public void Launch(long blocks, int threads, int sharedBytes, void** arguments)
        {
            if (blocks <= 0) return;
            if (blocks > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(blocks), $"{name}: {blocks} blocks is more than a launch takes");
            var current = api.CurrentStream((sbyte)module.Device);
            var stream = api.RawStream(&current);
            bool pushed = EnterContext(api, module.Device);
            try
            {
                AllowSharedMemory(sharedBytes);
                Check(api, api.LaunchKernel(function, (uint)blocks, 1, 1, (uint)threads, 1, 1, (uint)sharedBytes, stream, arguments, null), $"launch of {name}");
            }
            finally
            {
                LeaveContext(api, pushed);
            }
        }
    }

    /// <summary>
    /// Compiles <paramref name="source"/> for <paramref name="device"/>'s architecture, with <paramref name="defines"/>
    /// (<c>-DNAME=value</c> options), once per process and device.
    /// </summary>
    public static Module Compile(int device, string source, params string[] defines)
    {
        var api = Require();
        var key = (device, source, string.Join(' ', defines));
        lock (Modules)
        {
            if (Modules.TryGetValue(key, out var cached)) return cached;
            bool pushed = EnterContext(api, device);
            try
            {
                return Modules[key] = Load(api, device, source, defines);
            }
            finally
            {
                LeaveContext(api, pushed);
            }
        }
    }

    /// <summary>Compiles for the device's architecture and loads the result into its (current) context.</summary>
    static Module Load(Api api, int device, string source, string[] defines)
    {
        int cuDevice, major, minor, multiprocessors;
        Check(api, api.DeviceGet(&cuDevice, device), "cuDeviceGet");
        Check(api, api.DeviceGetAttribute(&major, CuDeviceAttributeMajor, cuDevice), "compute capability");
        Check(api, api.DeviceGetAttribute(&minor, CuDeviceAttributeMinor, cuDevice), "compute capability");
        Check(api, api.DeviceGetAttribute(&multiprocessors, CuDeviceAttributeMultiprocessorCount, cuDevice), "multiprocessor count");
        var cubin = CompileToCubin(api, source, [$"-arch=sm_{major}{minor}", "-std=c++17", .. defines]);
        nint module;
        fixed (byte* image = cubin) Check(api, api.ModuleLoadData(&module, image), "cuModuleLoadData");
        return new Module(api, module, device, multiprocessors);
    }

    static byte[] CompileToCubin(Api api, string source, string[] options)
    {
        nint program;
        var sourceBytes = Encoding.UTF8.GetBytes(source + "\0");
        var nameBytes = Encoding.UTF8.GetBytes("adaptersharp_kernels.cu\0");
        fixed (byte* s = sourceBytes, n = nameBytes)
            CheckNvrtc(api.CreateProgram(&program, s, n, 0, null, null), "nvrtcCreateProgram");
        try
        {
            var optionBytes = options.Select(o => Encoding.UTF8.GetBytes(o + "\0")).ToArray();
            var handles = optionBytes.Select(b => GCHandle.Alloc(b, GCHandleType.Pinned)).ToArray();
            int result;
            try
            {
                var pointers = stackalloc byte*[optionBytes.Length];
                for (int i = 0; i < optionBytes.Length; i++) pointers[i] = (byte*)handles[i].AddrOfPinnedObject();
                result = api.CompileProgram(program, optionBytes.Length, pointers);
            }
            finally
            {
                foreach (var h in handles) h.Free();
            }
            if (result != 0)
            {
                nuint logSize;
                api.GetLogSize(program, &logSize);
                var log = new byte[(int)logSize];
                fixed (byte* l = log) api.GetLog(program, l);
                throw new InvalidOperationException(
                    $"NVRTC ({api.NvrtcPath}) could not compile the fused kernels ({string.Join(' ', options)}): {Encoding.UTF8.GetString(log).TrimEnd('\0').Trim()}");
            }
            nuint size;
            CheckNvrtc(api.GetCubinSize(program, &size), "nvrtcGetCUBINSize");
            var cubin = new byte[(int)size];
            fixed (byte* c = cubin) CheckNvrtc(api.GetCubin(program, c), "nvrtcGetCUBIN");
            return cubin;
        }
        finally
        {
            api.DestroyProgram(&program);
        }
    }

    static readonly Dictionary<int, nint> PrimaryContexts = [];

    /// <summary>
    /// Makes <paramref name="device"/>'s primary context (libtorch's) current for a driver call, if another one
    /// or none is: the driver API works on the calling thread's current context, which after libtorch ran an
    /// operation on another GPU can be that GPU's. Returns whether it pushed one, for <see cref="LeaveContext"/>.
    /// </summary>
    static bool EnterContext(Api api, int device)
    {
        nint primary;
        lock (PrimaryContexts)
        {
            if (!PrimaryContexts.TryGetValue(device, out primary))
            {
                int cuDevice;
                Check(api, api.DeviceGet(&cuDevice, device), "cuDeviceGet");
                Check(api, api.PrimaryCtxRetain(&primary, cuDevice), "cuDevicePrimaryCtxRetain");
                PrimaryContexts[device] = primary;
            }
        }
        nint current;
        if (api.CtxGetCurrent(&current) == 0 && current == primary) return false;
        Check(api, api.CtxPushCurrent(primary), "cuCtxPushCurrent");
        return true;
    }

    static void LeaveContext(Api api, bool pushed)
    {
        if (!pushed) return;
        nint popped;
        api.CtxPopCurrent(&popped);
    }

    static void Check(Api api, int result, string what)
    {
        if (result == 0) return;
        byte* message = null;
        api.GetErrorString(result, &message);
        throw new InvalidOperationException($"CUDA driver: {what} failed: {(message is null ? $"error {result}" : Marshal.PtrToStringUTF8((nint)message))}");
    }

    static void CheckNvrtc(int result, string what)
    {
        if (result != 0) throw new InvalidOperationException($"NVRTC: {what} failed with status {result}");
    }
}
