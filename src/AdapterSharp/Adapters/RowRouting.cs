using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>
/// Mixed batches: which adapter each row runs through, the per-site stacks of adapter weights that let one pass do
/// it (<see cref="RowStack"/>, <see cref="ProjectionRowStack"/>), and the stacked heads. Every loaded adapter that can
/// join a mixed batch gets a slot, so one set of stacks serves every batch until the adapters change.
/// </summary>
sealed class RowRouting(BertModel bert, AdapterSet set) : IDisposable
{
    Built? built; // what the sites' stacks were built for; null: not built

    /// <summary>The rows' slots as a (B) index on the model's device, with the stacks built for them.</summary>
    public RowSelection Select(string?[] adapterPerRow, Tensor inputIds)
    {
        if (adapterPerRow.Length != inputIds.shape[0])
            throw new ArgumentException($"{adapterPerRow.Length} adapter names for a batch of {inputIds.shape[0]} rows", nameof(adapterPerRow));
        var device = bert.Embeddings.LayerNorm.weight!.device;
        var type = bert.MatmulType;
        if (built is not { } stacks || stacks.Device != device.ToString() || stacks.MatmulType != type)
        {
            Invalidate();
            var names = set.Adapters.Where(c => c.Value.RowRoutable && HasRowForm(set.Record(c.Key))).Select(c => c.Key).ToArray();
            foreach (var slot in bert.SublayerSlots()) slot.Site.BuildRowStack(names, slot.LayerNorm, type);
            foreach (var slot in bert.ProjectionSlots()) slot.Site.BuildRowStack(names, type);
            var (weight, bias, unused) = StackHeads(names, device);
            built = stacks = new Built(names, device.ToString(), type, weight, bias, unused);
        }
        var index = adapterPerRow.Select(name => name is null ? 0L : Slot(stacks, name)).ToArray();
        return new RowSelection(tensor(index, device: device), stacks.Names);
    }

    /// <summary>Each row's logits from its own head (see <c>AdapterModel.LogitsPerRow</c>).</summary>
    /// <param name="hidden">(B, T, d) the mixed pass's last hidden state.</param>
    public RowLogits Logits(Tensor hidden, RowSelection rows, string?[] adapterPerRow)
    {
        var stacks = built!;
        var heads = adapterPerRow.Select(n => n is null ? null : set.Head(n).Config).ToArray();
        var outputs = heads.Select(h => h?.Outputs ?? 0).ToArray();
        var everyToken = heads.Select(h => h is not null && Heads.HeadKind.For(h).Reads == Heads.HeadInput.EveryToken).ToArray();
        var index = rows.Index; // (B), the slots the sites used
        // Only [CLS] unless a row's head reads every position; then every row gets every position (a [CLS] head's
        // answer is position 0 of its row), one product for all.
        bool perToken = everyToken.Any(e => e);
        var input = (perToken ? hidden : hidden.narrow(1, 0, 1)).to_type(ScalarType.Float32); // (B, T or 1, d)
        var logits = input.baddbmm(stacks.HeadWeight.index_select(0, index), stacks.HeadBias.index_select(0, index)) // (B, T or 1, max outputs)
            .masked_fill(stacks.HeadUnused.index_select(0, index).unsqueeze(1), float.NegativeInfinity);
        return new RowLogits(perToken ? logits : logits.squeeze(1), outputs, everyToken);
    }

    /// <summary>Whether every module the adapter placed has a per-row form (a method can leave one out).</summary>
    static bool HasRowForm(AdapterRecord record)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return record.Placements.All(p => p.Module switch
        {
            SublayerAdapter sublayer => sublayer.RowStages is not null,
            ProjectionAdapter projection => projection.LowRank is not null,
            _ => true,
        });
    }

    /// <summary>Drops the stacks; the next mixed batch rebuilds them.</summary>
    public void Invalidate()
    {
        if (built is null) return;
        foreach (var slot in bert.SublayerSlots()) slot.Site.ClearRowStack();
        foreach (var slot in bert.ProjectionSlots()) slot.Site.ClearRowStack();
        built.Dispose();
        built = null;
    }

    public void Dispose() => Invalidate();

    long Slot(Built stacks, string name)
    {
        if (stacks.Slots.TryGetValue(name, out var slot)) return slot;
        if (set.Adapters.TryGetValue(name, out var config))
            throw new ArgumentException(config.ModifiesBase
                ? $"adapter '{name}' ({config.Method}) changes base weights, so it cannot share a batch with other adapters; run it alone (Active = \"{name}\")"
                : $"adapter '{name}' ({config.Method}) cannot join a mixed batch (no per-row form); run it alone (Active = \"{name}\")");
        if (set.Fusions.ContainsKey(name))
            throw new ArgumentException($"'{name}' is a fusion, which combines several adapters in every row; run it alone (ActivateFusion(\"{name}\"))");
        throw new ArgumentException($"no adapter named '{name}' (loaded: {set.Loaded})");
    }

    /// <summary>
    /// The heads of <paramref name="names"/> in slots 1..N (slot 0: no adapter, no head), padded to the largest:
    /// weights (N+1, d, max outputs) transposed for <c>baddbmm</c>, biases (N+1, 1, max outputs), and which
    /// outputs a slot lacks (N+1, max outputs).
    /// </summary>
    (Tensor Weight, Tensor Bias, Tensor Unused) StackHeads(string[] names, Device device)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int width = Math.Max(1, names.Select(n => set.Head(n).Config.Outputs).DefaultIfEmpty(1).Max());
        var weight = zeros([names.Length + 1, bert.Config.HiddenSize, width], ScalarType.Float32, device);
        var bias = zeros([names.Length + 1, 1, width], ScalarType.Float32, device);
        var unused = ones([names.Length + 1, width], ScalarType.Bool, device);
        for (int slot = 1; slot <= names.Length; slot++)
        {
            var (w, b) = set.Head(names[slot - 1]).Classifier; // (outputs, d), (outputs)
            int outputs = (int)w.shape[0];
            weight[slot].narrow(1, 0, outputs).copy_(w.t());
            bias[slot, 0].narrow(0, 0, outputs).copy_(b);
            unused[slot].narrow(0, 0, outputs).fill_(false);
        }
        // Kept until the stacks are invalidated, whatever scope the first mixed batch ran in.
        return (weight.DetachFromDisposeScope(), bias.DetachFromDisposeScope(), unused.DetachFromDisposeScope());
    }

    sealed record Built(string[] Names, string Device, ScalarType MatmulType, Tensor HeadWeight, Tensor HeadBias, Tensor HeadUnused) : IDisposable
    {
        public readonly Dictionary<string, long> Slots = Names.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i + 1L, StringComparer.Ordinal);

        public void Dispose()
        {
            HeadWeight.Dispose();
            HeadBias.Dispose();
            HeadUnused.Dispose();
        }
    }
}

/// <summary>
/// Per-row logits of a mixed batch (<see cref="AdapterModel.LogitsPerRow"/>). When no row's head reads every position,
/// row i's are <c>Logits[i, ..Outputs[i]]</c> of the (B, max labels) float32 tensor; otherwise the tensor is
/// (B, T, max labels), a [CLS] head's row reads position 0 and an every-position head's row (<see cref="EveryToken"/>)
/// all of its positions. The rest of each row is −∞ (so softmax and argmax over a whole row see only its own labels).
/// Rows without an adapter have no head: 0 outputs. The caller owns <paramref name="Logits"/>.
/// </summary>
public sealed record RowLogits(Tensor Logits, int[] Outputs, bool[] EveryToken)
{
    /// <summary>
    /// Each row's outputs on the host, as <c>Trainer.Predict</c> gives them: a [CLS] head's labels, or an every-position
    /// head's first <paramref name="lengths"/>[i] positions' labels one after another.
    /// </summary>
    public float[][] ToArrays(IReadOnlyList<int> lengths)
    {
        using var host = Logits.to_type(ScalarType.Float32).cpu();
        var values = host.data<float>().ToArray();
        long rows = host.shape[0], width = host.shape[^1], time = host.dim() == 3 ? host.shape[1] : 1;
        var result = new float[rows][];
        for (int b = 0; b < rows; b++)
        {
            int start = (int)(b * time * width), count = Outputs[b];
            if (!EveryToken[b])
            {
                result[b] = values.AsSpan(start, count).ToArray();
                continue;
            }
            result[b] = new float[lengths[b] * count];
            for (int t = 0; t < lengths[b]; t++)
                values.AsSpan(start + (int)(t * width), count).CopyTo(result[b].AsSpan(t * count));
        }
        return result;
    }
}
