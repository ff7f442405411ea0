using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Native;

/// <summary>
/// A custom autograd node: outputs computed outside autograd (by our own kernels) are attached to the graph with
/// a backward function of ours, as PyTorch's <c>torch.autograd.Function</c> does. Built on the native node that
/// TorchSharp 0.107 exports for its own <c>autograd.Function</c>, not on that class: its wrapper keeps an
/// <c>empty_like</c> of every output alive until the graph is freed (to fill undefined gradients with zeros),
/// which for a fused LayerNorm over a bert-base b256 batch would be 3.6 GB. Here an output whose gradient is
/// undefined reaches the backward as null.
/// </summary>
public static unsafe class AutogradNode
{
    /// <summary>The gradients of the inputs (null where none) from the gradients of the outputs (null where
    /// undefined). Called once, on the autograd engine's thread.</summary>
    public delegate Tensor?[] Backward(Tensor?[] outputGradients);

    [StructLayout(LayoutKind.Sequential)]
    struct TensorArray
    {
        public nint Array;
        public long Size;
    }

    [StructLayout(LayoutKind.Sequential)]
    struct NodePtr
    {
        public nint Shared;
        public nint Weak;
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    delegate TensorArray ApplyCallback(nint* gradients, int count);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    delegate void DeleteCallback();

    [DllImport("LibTorchSharp")]
    static extern NodePtr THSAutograd_CSharpNode_ctor(nint apply, nint delete);

    [DllImport("LibTorchSharp")]
    static extern void THSAutograd_CSharpNode_disposeSharedPtr(NodePtr node);

    [DllImport("LibTorchSharp")]
    static extern void THSAutograd_CSharpNode_disposeWeakPtr(NodePtr node);

    [DllImport("LibTorchSharp")]
    static extern void THSAutograd_CSharpNode_setNextEdges(NodePtr node, TensorArray inputs, [MarshalAs(UnmanagedType.U1)] bool isExecutable);

    [DllImport("LibTorchSharp")]
    static extern void THSAutograd_CSharpNode_clearInputMetadata(NodePtr node);

    [DllImport("LibTorchSharp")]
    static extern void THSAutograd_Function_wrapOutputs(TensorArray inputs, TensorArray nonDifferentiable, TensorArray dirty,
        TensorArray outputs, NodePtr node, delegate* unmanaged<nuint, nint*> allocate);

    [DllImport("LibTorchSharp")]
    static extern nint THSTorch_get_and_reset_last_err();

    [DllImport("LibTorchSharp")]
    static extern nint THSTensor_data(nint tensor);

    /// <summary>The address of a tensor's first element (its storage offset included).</summary>
    public static nint DataPointer(Tensor tensor)
    {
        var address = THSTensor_data(tensor.Handle);
        ThrowIfNativeError();
        return address;
    }

    // Nodes the native graph still refers to: their callbacks must outlive every call from it.
    static readonly HashSet<Node> Alive = [];

    // Gradients this thread handed to the engine in its last backward call. The engine copies them after the
    // callback returns, on the same thread, so they are let go at this thread's next backward call or node
    // deletion, never from another thread (which could get there before the copy). At most one node's
    // gradients per thread stay alive that way; a node's own list would keep every node's until the graph goes.
    [ThreadStatic] static List<Tensor>? handed;

    [ThreadStatic] static nint* allocated;
    [ThreadStatic] static nuint allocatedCount;

    /// <summary>
    /// <paramref name="outputs"/>, made from <paramref name="inputs"/> without autograd, as tensors whose
    /// gradients flow back through <paramref name="backward"/>. Where gradients are off or no input requires
    /// one, the outputs come back as they are and <paramref name="saved"/> is disposed at once. Otherwise
    /// <paramref name="saved"/> (what the backward reads) is disposed after the backward, or when the graph is
    /// dropped without one. The returned tensors replace <paramref name="outputs"/>, which are disposed.
    /// </summary>
    public static Tensor[] Attach(Tensor[] inputs, Tensor[] outputs, Backward backward, IDisposable? saved)
    {
        if (!is_grad_enabled() || !inputs.Any(t => t.requires_grad))
        {
            saved?.Dispose();
            return outputs;
        }
        var node = new Node(backward, saved, inputs.Length);
        var handles = stackalloc nint[inputs.Length];
        for (int i = 0; i < inputs.Length; i++) handles[i] = inputs[i].Handle;
        var inputArray = new TensorArray { Array = (nint)handles, Size = inputs.Length };
        var outputHandles = stackalloc nint[outputs.Length];
        for (int i = 0; i < outputs.Length; i++) outputHandles[i] = outputs[i].Handle;
        lock (Alive) Alive.Add(node);
        try
        {
            THSAutograd_CSharpNode_setNextEdges(node.Handle, inputArray, true);
            ThrowIfNativeError();
            THSAutograd_CSharpNode_clearInputMetadata(node.Handle);
            ThrowIfNativeError();
            allocated = null;
            var none = new TensorArray();
            THSAutograd_Function_wrapOutputs(inputArray, none, none, new TensorArray { Array = (nint)outputHandles, Size = outputs.Length },
                node.Handle, &Allocate);
            ThrowIfNativeError();
            if (allocated is null || allocatedCount != (nuint)outputs.Length)
                throw new InvalidOperationException("autograd returned no outputs for a custom node");
            var wrapped = new Tensor[outputs.Length];
            for (int i = 0; i < wrapped.Length; i++) wrapped[i] = Tensor.UnsafeCreateTensor(allocated[i]);
            foreach (var output in outputs) output.Dispose();
            return wrapped;
        }
        finally
        {
            if (allocated is not null) NativeMemory.Free(allocated);
            allocated = null;
            // The graph now holds the node through its outputs' grad_fn; drop this side's strong reference.
            node.ReleaseShared();
        }
    }

    [UnmanagedCallersOnly]
    static nint* Allocate(nuint count)
    {
        allocated = (nint*)NativeMemory.AllocZeroed(Math.Max(count, 1), (nuint)sizeof(nint));
        allocatedCount = count;
        return allocated;
    }

    static void ThrowIfNativeError()
    {
        var error = THSTorch_get_and_reset_last_err();
        if (error != 0) throw new InvalidOperationException("libtorch: " + Marshal.PtrToStringAnsi(error));
    }

    sealed class Node
    {
        readonly ApplyCallback apply;
        readonly DeleteCallback delete;
        readonly Backward backward;
        readonly int inputCount;
        IDisposable? saved;
        readonly bool savedAtStart;
        NodePtr handle;
        nint* returned;

        public Node(Backward backward, IDisposable? saved, int inputCount)
        {
            this.backward = backward;
            this.saved = saved;
            savedAtStart = saved is not null;
            this.inputCount = inputCount;
            apply = Apply;
            delete = Delete;
            handle = THSAutograd_CSharpNode_ctor(Marshal.GetFunctionPointerForDelegate(apply), Marshal.GetFunctionPointerForDelegate(delete));
            ThrowIfNativeError();
        }

        public NodePtr Handle => handle;

        public void ReleaseShared()
        {
            if (handle.Shared == 0) return;
            THSAutograd_CSharpNode_disposeSharedPtr(handle);
            handle.Shared = 0;
        }

        TensorArray Apply(nint* gradients, int count)
        {
            try
            {
                ReleaseHanded();
                if (saved is null && savedAtStart)
                    throw new InvalidOperationException(
                        "a second backward through the same graph: the fused kernels free what they saved after the first (retain_graph is not supported; run with --fused-kernels off)");
                var outputGradients = new Tensor?[count];
                for (int i = 0; i < count; i++) outputGradients[i] = gradients[i] == 0 ? null : Tensor.UnsafeCreateTensor(gradients[i]);
                Tensor?[] inputGradients;
                try
                {
                    inputGradients = backward(outputGradients);
                }
                finally
                {
                    saved?.Dispose();
                    saved = null;
                }
                if (inputGradients.Length != inputCount)
                    throw new InvalidOperationException($"a custom backward returned {inputGradients.Length} gradients for {inputCount} inputs");
                // An incoming gradient passed straight through stays alive until the engine has copied it.
                foreach (var g in outputGradients)
                    if (g is not null && !inputGradients.Any(r => ReferenceEquals(r, g))) g.Dispose();
                if (returned is not null) NativeMemory.Free(returned);
                returned = (nint*)NativeMemory.AllocZeroed((nuint)Math.Max(inputCount, 1), (nuint)sizeof(nint));
                handed ??= [];
                for (int i = 0; i < inputCount; i++)
                {
                    if (inputGradients[i] is not { } g) continue;
                    returned[i] = g.Handle;
                    handed.Add(g);
                }
                return new TensorArray { Array = (nint)returned, Size = inputCount };
            }
            catch (Exception e)
            {
                // An exception cannot cross the autograd engine's native frames, and returning no gradient would
                // train on wrong ones without a word: stop here, saying why (out of GPU memory, for one).
                Environment.FailFast($"AdapterSharp: the backward of a fused kernel failed: {e.Message}", e);
                return default;
            }
        }

        void Delete()
        {
            ReleaseHanded();
            saved?.Dispose();
            saved = null;
            if (returned is not null) NativeMemory.Free(returned);
            returned = null;
            if (handle.Weak != 0)
            {
                THSAutograd_CSharpNode_disposeWeakPtr(handle);
                handle.Weak = 0;
            }
            lock (Alive) Alive.Remove(this);
        }

        static void ReleaseHanded()
        {
            if (handed is not { Count: > 0 } list) return;
            var tensors = list.ToArray();
            list.Clear(); // before disposing: a dispose that reached back in here would find it empty
            foreach (var t in tensors) t.Dispose();
        }
    }
}
