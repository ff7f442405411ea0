using static TorchSharp.torch;

namespace AdapterSharp.Data;

/// <summary>
/// An <see cref="EncodedDataset"/> held on the training device, padded to its longest row, so that a step
/// gathers its batch there instead of copying it from the host: a copy from pageable host memory makes the
/// host wait for the device, and with one per step the host and the GPU would take turns rather than overlap.
/// A batch order is uploaded once per epoch (<see cref="Plan"/>); each step then only slices and gathers.
/// </summary>
public sealed class DeviceBatches : IDisposable
{
    readonly EncodedDataset data;
    readonly Tensor ids;      // (N, Lmax)
    readonly Tensor types;    // (N, Lmax)
    readonly Tensor lengths;  // (N)
    readonly Tensor labels;   // (N) int64, (N, Lmax) for token labels, (N, 2) for answer spans
    readonly bool tokenLabels;
    readonly Tensor scores;   // (N) float32
    readonly Tensor positions; // (Lmax)
    readonly int lengthMultiple;
    Tensor? order;
    List<int[]> batches = [];
    long[] offsets = [];

    /// <param name="data">The examples.</param>
    /// <param name="device">Where to hold them.</param>
    /// <param name="padId">The padding token id.</param>
    /// <param name="lengthMultiple">Pad each batch to a multiple of this many tokens, and always return a mask:
    /// few distinct shapes, for steps replayed as CUDA graphs (one graph per shape). 1: pad to the longest row.</param>
    public DeviceBatches(EncodedDataset data, Device device, int padId = 0, int lengthMultiple = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(lengthMultiple, 1);
        this.data = data;
        this.lengthMultiple = lengthMultiple;
        int n = data.Count, width = RoundUp(n == 0 ? 1 : Math.Max(1, data.Ids.Max(i => i.Length)));
        var idValues = new long[n * width];
        var typeValues = new long[n * width];
        Array.Fill(idValues, padId);
        for (int r = 0; r < n; r++)
            for (int t = 0; t < data.Ids[r].Length; t++)
            {
                idValues[r * width + t] = data.Ids[r][t];
                typeValues[r * width + t] = data.TypeIds[r][t];
            }
        // Host-side staging tensors die with the scope; only the device copies are kept.
        using var scope = NewDisposeScope();
        ids = tensor(idValues).view(n, width).to(device).DetachFromDisposeScope();
        types = tensor(typeValues).view(n, width).to(device).DetachFromDisposeScope();
        lengths = tensor(data.Ids.Select(i => (long)i.Length).ToArray()).to(device).DetachFromDisposeScope();
        tokenLabels = data.TokenLabels is not null;
        if (data.TokenLabels is { } perToken)
        {
            var labelValues = new long[n * width];
            Array.Fill(labelValues, EncodedDataset.Ignored);
            for (int r = 0; r < n; r++)
                for (int t = 0; t < perToken[r].Length; t++) labelValues[r * width + t] = perToken[r][t];
            labels = tensor(labelValues).view(n, width).to(device).DetachFromDisposeScope();
        }
        else if (data.Spans is { } spans)
            labels = tensor(spans.SelectMany(span => span.Select(p => (long)p)).ToArray()).view(n, 2).to(device).DetachFromDisposeScope();
        else labels = tensor(data.Labels).to(device).DetachFromDisposeScope();
        scores = tensor(data.Scores).to(device).DetachFromDisposeScope();
        positions = arange(width, dtype: ScalarType.Int64, device: device).DetachFromDisposeScope();
    }

    /// <summary>Uploads the order of this pass's batches (one host-to-device copy).</summary>
    public void Plan(List<int[]> batchRows)
    {
        batches = batchRows;
        offsets = new long[batchRows.Count];
        var flat = new long[batchRows.Sum(b => b.Length)];
        long offset = 0;
        for (int b = 0; b < batchRows.Count; b++)
        {
            offsets[b] = offset;
            foreach (var row in batchRows[b]) flat[offset++] = row;
        }
        order?.Dispose();
        using var scope = NewDisposeScope();
        order = tensor(flat).to(ids.device).DetachFromDisposeScope();
    }

    public int Count => batches.Count;

    public int[] Rows(int batch) => batches[batch];

    /// <summary>
    /// Batch <paramref name="batch"/> of the plan, cut to its longest row: ids and token types (B, T), and the
    /// attention mask (B, T), or null when no row is padded; labels (B), (B, T) per position (padding ignored), or (B, 2)
    /// answer spans.
    /// </summary>
    public (Tensor Ids, Tensor? Mask, Tensor Types, Tensor Labels, Tensor Scores) Get(int batch)
    {
        var rows = batches[batch];
        var index = order!.narrow(0, offsets[batch], rows.Length);
        int time = RoundUp(rows.Max(r => data.Ids[r].Length));
        var batchIds = ids.index_select(0, index).narrow(1, 0, time);
        var batchTypes = types.index_select(0, index).narrow(1, 0, time);
        Tensor? mask = lengthMultiple > 1 || data.HasPadding(rows)
            ? positions.narrow(0, 0, time).unsqueeze(0) < lengths.index_select(0, index).unsqueeze(1) // (B, T)
            : null;
        var batchLabels = tokenLabels ? labels.index_select(0, index).narrow(1, 0, time) : labels.index_select(0, index);
        return (batchIds, mask, batchTypes, batchLabels, scores.index_select(0, index));
    }

    int RoundUp(int length) => (length + lengthMultiple - 1) / lengthMultiple * lengthMultiple;

    public void Dispose()
    {
        foreach (var t in new[] { ids, types, lengths, labels, scores, positions }) t.Dispose();
        order?.Dispose();
    }
}
