using AdapterSharp.Native;
using static TorchSharp.torch;

namespace AdapterSharp.Training;

/// <summary>
/// The trainer's CUDA graphs: one per batch shape (B, T), each with fixed input tensors that a step refills
/// before replaying it. All share one memory pool: they never run at the same time, and no tensor made inside
/// one graph is read by another (parameters, gradients, optimizer state and the running loss live outside).
/// </summary>
/// <param name="pool">The memory pool to capture into (several sets of graphs can share one, by the same rule).</param>
sealed class StepGraphs(CudaGraphs.Pool pool) : IDisposable
{
    /// <summary>Batches are padded to a multiple of this many tokens, so that few shapes (graphs) occur.</summary>
    public const int LengthMultiple = 16;

    /// <summary>Steps run eagerly before the first capture: kernel choices, cuBLAS workspaces and autograd's
    /// state are set up outside any graph.</summary>
    public const int EagerSteps = 3;

    readonly Dictionary<(long Batch, long Time), Entry> graphs = [];

    sealed record Entry(Tensor Ids, Tensor Mask, Tensor Types, Tensor Labels, Tensor Scores, CudaGraphs.Graph Graph) : IDisposable
    {
        public void Dispose()
        {
            Graph.Dispose();
            foreach (var t in new[] { Ids, Mask, Types, Labels, Scores }) t.Dispose();
        }
    }

    /// <summary>
    /// The graph of <paramref name="step"/> for this batch's shape, captured the first time the shape occurs, with
    /// its inputs refilled from this batch (device copies): replay it to run the step.
    /// </summary>
    public CudaGraphs.Graph For(Tensor ids, Tensor mask, Tensor types, Tensor labels, Tensor scores,
        Action<Tensor, Tensor, Tensor, Tensor, Tensor> step)
    {
        var key = (ids.shape[0], ids.shape[1]);
        if (!graphs.TryGetValue(key, out var entry))
        {
            // The fixed inputs are made before the capture, from the ordinary allocator.
            entry = new Entry(Fixed(ids), Fixed(mask), Fixed(types), Fixed(labels), Fixed(scores), new CudaGraphs.Graph());
            graphs[key] = entry;
            entry.Graph.Capture(pool, () => step(entry.Ids, entry.Mask, entry.Types, entry.Labels, entry.Scores));
            // Blocks the eager steps left cached go back to the device: replays allocate nothing outside the pool.
            CudaAllocator.EmptyCache();
        }
        entry.Ids.copy_(ids);
        entry.Mask.copy_(mask);
        entry.Types.copy_(types);
        entry.Labels.copy_(labels);
        entry.Scores.copy_(scores);
        return entry.Graph;
    }

    static Tensor Fixed(Tensor t) => t.clone().DetachFromDisposeScope();

    public void Dispose()
    {
        foreach (var entry in graphs.Values) entry.Dispose();
        graphs.Clear();
    }
}
