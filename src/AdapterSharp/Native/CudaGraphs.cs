using System.Runtime.InteropServices;

namespace AdapterSharp.Native;

/// <summary>
/// CUDA graphs, through the C++ API of the CUDA libtorch that <see cref="CudaLibTorch"/> loaded (TorchSharp 0.107
/// exposes none): a training step is captured once, on a side stream, and then replayed with one launch, so
/// the host's per-operation cost (managed dispatch, autograd bookkeeping: ~35 ms for a bert-base adapter step,
/// more than the GPU's work) leaves the step loop. The same mechanism as PyTorch's <c>torch.cuda.graph</c>.
/// <para>
/// The entry points are C++ symbols of <c>at::cuda::CUDAGraph</c> and <c>c10::cuda</c>'s stream functions,
/// called with the Itanium x86-64 ABI: <c>CUDAStream</c> (16 bytes: device type, device index, stream id) and
/// <c>MempoolId_t</c> (two 64-bit ids) are trivially copyable and travel in two registers. They were checked
/// against PyTorch 2.11 (cu130) on an H100 (training and benchmarks); <see cref="Available"/> is false where a symbol
/// is missing. A layout change in another version could fail or crash the first capture; --cuda-graphs off avoids them.
/// </para>
/// </summary>
public static unsafe class CudaGraphs
{
    /// <summary>A <c>c10::cuda::CUDAStream</c> by value.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public readonly struct Stream
    {
        readonly long device; // DeviceType (int8) and DeviceIndex (int8), then padding
        readonly long id;
    }

    /// <summary>A <c>MempoolId_t</c>: graphs captured into one pool share its memory.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public readonly struct Pool
    {
        readonly ulong first;
        readonly ulong second;
    }

    sealed class Api
    {
        public delegate* unmanaged<nint, byte, void> Construct;
        public delegate* unmanaged<nint, void> Destruct;
        public delegate* unmanaged<nint, Pool, int, void> CaptureBegin;
        public delegate* unmanaged<nint, void> CaptureEnd;
        public delegate* unmanaged<nint, void> Replay;
        public delegate* unmanaged<Pool> PoolHandle;
        public delegate* unmanaged<byte, sbyte, Stream> StreamFromPool;
        public delegate* unmanaged<sbyte, Stream> CurrentStream;
        public delegate* unmanaged<Stream, void> SetCurrentStream;
    }

    static readonly Lazy<(Api? Api, string? Problem)> Loaded = new(Load);

    /// <summary>Whether graphs can be used: a CUDA libtorch with the expected C++ entry points is loaded.</summary>
    public static bool Available => Loaded.Value.Api is not null;

    /// <summary>Why graphs cannot be used, or null.</summary>
    public static string? Problem => Loaded.Value.Problem;

    static Api Require() => Loaded.Value.Api ?? throw new InvalidOperationException($"CUDA graphs are unavailable: {Problem}");

    static (Api?, string?) Load()
    {
        if (!CudaLibTorch.TryOpenLoaded("libtorch_cuda.so", out var torchCuda) || !CudaLibTorch.TryOpenLoaded("libc10_cuda.so", out var c10Cuda))
            return (null, "libtorch_cuda.so / libc10_cuda.so are not loaded (CPU-only libtorch)");
        var api = new Api();
        string? missing = null;
        nint Symbol(nint library, string name)
        {
            if (NativeLibrary.TryGetExport(library, name, out var address)) return address;
            missing ??= name;
            return 0;
        }
        api.Construct = (delegate* unmanaged<nint, byte, void>)Symbol(torchCuda, "_ZN2at4cuda9CUDAGraphC1Eb");
        api.Destruct = (delegate* unmanaged<nint, void>)Symbol(torchCuda, "_ZN2at4cuda9CUDAGraphD1Ev");
        api.CaptureBegin = (delegate* unmanaged<nint, Pool, int, void>)Symbol(torchCuda,
            "_ZN2at4cuda9CUDAGraph13capture_beginESt4pairIyyE21cudaStreamCaptureMode");
        api.CaptureEnd = (delegate* unmanaged<nint, void>)Symbol(torchCuda, "_ZN2at4cuda9CUDAGraph11capture_endEv");
        api.Replay = (delegate* unmanaged<nint, void>)Symbol(torchCuda, "_ZN2at4cuda9CUDAGraph6replayEv");
        api.PoolHandle = (delegate* unmanaged<Pool>)Symbol(torchCuda, "_ZN2at4cuda17graph_pool_handleEv");
        api.StreamFromPool = (delegate* unmanaged<byte, sbyte, Stream>)Symbol(c10Cuda, "_ZN3c104cuda17getStreamFromPoolEba");
        api.CurrentStream = (delegate* unmanaged<sbyte, Stream>)Symbol(c10Cuda, "_ZN3c104cuda20getCurrentCUDAStreamEa");
        api.SetCurrentStream = (delegate* unmanaged<Stream, void>)Symbol(c10Cuda, "_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE");
        return missing is null ? (api, null) : (null, $"this libtorch lacks {missing}");
    }

    /// <summary>A new memory pool id: graphs captured into it share memory (safe when none runs concurrently and
    /// no tensor made inside one graph is read by another).</summary>
    public static Pool NewPool() => Require().PoolHandle();

    /// <summary>
    /// Makes a stream from libtorch's pool the calling thread's current stream (capture needs a non-default one)
    /// until disposed, when the previous stream comes back. Every operation of the thread runs on it meanwhile.
    /// The device is synchronised at both switches, so work queued on one stream is done before the other reads it.
    /// </summary>
    public static IDisposable UseSideStream(TorchSharp.torch.Device device)
    {
        var api = Require();
        var index = (sbyte)Math.Max(0, (int)device.index);
        TorchSharp.torch.cuda.synchronize(device);
        var previous = api.CurrentStream(index);
        api.SetCurrentStream(api.StreamFromPool(0, index));
        return new Restore(() =>
        {
            TorchSharp.torch.cuda.synchronize(device);
            api.SetCurrentStream(previous);
        });
    }

    sealed class Restore(Action action) : IDisposable
    {
        Action? pending = action;

        public void Dispose()
        {
            pending?.Invoke();
            pending = null;
        }
    }

    /// <summary>One captured graph: <see cref="Capture"/> once, then <see cref="Replay"/>.</summary>
    public sealed class Graph : IDisposable
    {
        // sizeof(at::cuda::CUDAGraph) is a few hundred bytes in PyTorch 2.11; the allocation leaves ample room.
        const int ObjectBytes = 16 * 1024;
        readonly Api api;
        nint self;
        bool captured;

        public Graph()
        {
            api = Require();
            self = Marshal.AllocHGlobal(ObjectBytes);
            NativeMemory.Clear((void*)self, ObjectBytes);
            api.Construct(self, 0);
        }

        /// <summary>
        /// Records <paramref name="work"/>'s GPU work on the current (side) stream instead of running it. Tensors it
        /// allocates come from <paramref name="pool"/> and keep their addresses on every replay, so its inputs must
        /// be tensors made before the capture and refilled in place; its outputs are read the same way. Dropout's
        /// random numbers advance on each replay (libtorch registers the default generator with the graph).
        /// </summary>
        public void Capture(Pool pool, Action work)
        {
            if (captured) throw new InvalidOperationException("this graph is already captured");
            // Tensors that .NET's finalizers would free in the middle of a capture are freed now instead.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            api.CaptureBegin(self, pool, 1); // cudaStreamCaptureModeThreadLocal
            try
            {
                work();
            }
            catch (Exception e)
            {
                // The stream is still capturing and libtorch's capture_end would throw a C++ exception through
                // this frame, so there is no clean way back: stop here.
                throw new InvalidOperationException(
                    $"capturing a CUDA graph failed ({e.Message.Split('\n')[0]}); run with --cuda-graphs off", e);
            }
            api.CaptureEnd(self);
            captured = true;
        }

        /// <summary>Launches the captured work on the current stream.</summary>
        public void Replay()
        {
            if (!captured) throw new InvalidOperationException("replay before capture");
            api.Replay(self);
        }

        public void Dispose()
        {
            if (self == 0) return;
            api.Destruct(self);
            Marshal.FreeHGlobal(self);
            self = 0;
        }
    }
}
