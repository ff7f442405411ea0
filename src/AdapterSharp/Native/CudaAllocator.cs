using System.Runtime.InteropServices;

namespace AdapterSharp.Native;

/// <summary>
/// libtorch's CUDA caching allocator: its statistics (what <c>torch.cuda.max_memory_allocated</c> reads) and the
/// release of its cached blocks (<c>torch.cuda.empty_cache</c>). TorchSharp 0.107 exposes neither, and libtorch 2.11
/// exports no plain function for them: they are virtual methods of <c>c10::cuda::CUDACachingAllocator::CUDAAllocator</c>,
/// whose live instance sits behind the exported <c>c10::cuda::CUDACachingAllocator::allocator</c> pointer.
/// <para>
/// The methods' vtable slots are not hard-coded: libtorch_cuda exports another subclass of the same base,
/// <c>torch::cuda::CUDAPluggableAllocator::CUDAPluggableAllocator</c>, with its vtable and its overrides of these
/// methods, so each slot is found by looking the exported override up in that vtable. Both classes inherit the slot
/// layout from <c>CUDAAllocator</c>. Every entry used is checked to point into libc10_cuda before it is called.
/// Checked against PyTorch 2.11 (cu130) on an H100, against <c>torch.cuda.max_memory_allocated</c> in the same process.
/// </para>
/// </summary>
public static unsafe class CudaAllocator
{
    /// <summary>Aggregate figures of <c>DeviceStats</c>, in bytes.</summary>
    public readonly record struct Stats(long Allocated, long PeakAllocated, long Reserved, long PeakReserved);

    // DeviceStats starts with nine StatArrays (std::array<Stat, 3>, Stat = {current, peak, allocated, freed} int64):
    // allocation, segment, active, inactive_split, allocated_bytes, reserved_bytes, … Index 0 of each is the aggregate.
    const int StatBytes = 4 * sizeof(long), StatArrayBytes = 3 * StatBytes;
    const int AllocatedBytesOffset = 4 * StatArrayBytes, ReservedBytesOffset = 5 * StatArrayBytes;
    const int DeviceStatsBufferBytes = 16 * 1024; // sizeof(DeviceStats) is about 1 KB in 2.11

    const string VtableSymbol = "_ZTVN5torch4cuda22CUDAPluggableAllocator22CUDAPluggableAllocatorE";
    const string MethodPrefix = "_ZN5torch4cuda22CUDAPluggableAllocator22CUDAPluggableAllocator";

    sealed class Api
    {
        public nint Instance; // &c10::cuda::CUDACachingAllocator::allocator, an std::atomic<CUDAAllocator*>
        public nint LibraryBase; // where libc10_cuda is mapped, to tell its code apart
        public int EmptyCacheSlot, DeviceStatsSlot, ResetPeakSlot;
    }

    static readonly Lazy<(Api? Api, string? Problem)> Loaded = new(Load);

    /// <summary>Whether the allocator can be read and emptied.</summary>
    public static bool Available => Loaded.Value.Api is not null;

    /// <summary>Why not, or null.</summary>
    public static string? Problem => Loaded.Value.Problem;

    /// <summary>
    /// Releases the cached, unused blocks of the default pool to the device (a CUDA graph's pool stays), after waiting for
    /// all the device's queued work. With expandable segments, emptyCache unmaps the pages of free blocks, and it waits
    /// only for the legacy default stream: a block freed by the host while kernels queued on a side stream (where
    /// training runs, non-blocking) still use it would be unmapped under them, an illegal memory access (seen on hybrid
    /// runs, whose eager steps free large gradient blocks just before the first capture's emptyCache).
    /// </summary>
    public static void EmptyCache()
    {
        if (Method(api => api.EmptyCacheSlot) is not ({ } self, { } fn)) return;
        TorchSharp.torch.cuda.synchronize();
        ((delegate* unmanaged<nint, ulong, ulong, void>)fn)(self, 0, 0); // emptyCache(MempoolId_t {0, 0})
    }

    /// <summary>The allocator's current and peak figures for a device, or null where unavailable.</summary>
    public static Stats? Read(int device)
    {
        if (!Ready(device) || Method(api => api.DeviceStatsSlot) is not ({ } self, { } fn)) return null;
        var buffer = (byte*)NativeMemory.AllocZeroed(DeviceStatsBufferBytes);
        try
        {
            // DeviceStats is returned through a hidden pointer, passed before `this` (Itanium x86-64 ABI).
            ((delegate* unmanaged<byte*, nint, sbyte, void>)fn)(buffer, self, (sbyte)device);
            long At(int offset) => *(long*)(buffer + offset);
            return new Stats(At(AllocatedBytesOffset), At(AllocatedBytesOffset + sizeof(long)),
                At(ReservedBytesOffset), At(ReservedBytesOffset + sizeof(long)));
        }
        finally
        {
            NativeMemory.Free(buffer);
        }
    }

    /// <summary>Starts the peak figures afresh from the current ones.</summary>
    public static void ResetPeak(int device)
    {
        if (!Ready(device) || Method(api => api.ResetPeakSlot) is not ({ } self, { } fn)) return;
        ((delegate* unmanaged<nint, sbyte, void>)fn)(self, (sbyte)device);
    }

    /// <summary>
    /// Whether <paramref name="device"/> exists and the allocator is set up for it. Its stats methods throw a C++
    /// exception (which would abort the process, crossing into .NET) before the first CUDA allocation sets it up,
    /// so one byte is allocated first.
    /// </summary>
    static bool Ready(int device)
    {
        if (!Available || device < 0 || device >= TorchSharp.torch.cuda.device_count()) return false;
        using var warm = TorchSharp.torch.empty(1, TorchSharp.torch.ScalarType.Byte, new TorchSharp.torch.Device(TorchSharp.DeviceType.CUDA, device));
        return true;
    }

    static (nint Self, nint Function)? Method(Func<Api, int> slot)
    {
        if (Loaded.Value.Api is not { } api) return null;
        var self = *(nint*)api.Instance;
        if (self == 0) return null;
        var function = (*(nint**)self)[slot(api)];
        return function != 0 && CudaLibTorch.Mapping(function)?.Base == api.LibraryBase ? (self, function) : null;
    }

    static (Api?, string?) Load()
    {
        if (!CudaLibTorch.TryOpenLoaded("libc10_cuda.so", out var c10Cuda) || !CudaLibTorch.TryOpenLoaded("libtorch_cuda.so", out var torchCuda))
            return (null, "libc10_cuda.so / libtorch_cuda.so are not loaded (CPU-only libtorch)");
        if (!NativeLibrary.TryGetExport(c10Cuda, "_ZN3c104cuda20CUDACachingAllocator9allocatorE", out var instance))
            return (null, "libc10_cuda.so exports no CUDACachingAllocator::allocator");
        if (!NativeLibrary.TryGetExport(torchCuda, VtableSymbol, out var vtable))
            return (null, "libtorch_cuda.so exports no CUDAPluggableAllocator vtable to find the allocator's methods by");
        if (CudaLibTorch.Mapping(instance) is not { } library) return (null, "libc10_cuda.so: cannot locate its mapping");
        var api = new Api { Instance = instance, LibraryBase = library.Base };
        string? missing = null;
        int Slot(string method)
        {
            if (!NativeLibrary.TryGetExport(torchCuda, MethodPrefix + method, out var address))
            {
                missing ??= method;
                return -1;
            }
            // A vtable symbol covers the offset-to-top and type-info words, then the virtual functions in slot order.
            var words = (nint*)vtable;
            for (int i = 2; i < 256; i++)
                if (words[i] == address) return i - 2;
            missing ??= method + " (not in the vtable)";
            return -1;
        }
        api.EmptyCacheSlot = Slot("10emptyCacheESt4pairIyyE");
        api.DeviceStatsSlot = Slot("14getDeviceStatsEa");
        api.ResetPeakSlot = Slot("14resetPeakStatsEa");
        if (missing is not null) return (null, $"libtorch_cuda.so: no usable CUDAPluggableAllocator::{missing}");
        return (api, null);
    }
}
