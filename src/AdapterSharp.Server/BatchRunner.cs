using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Text;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Server;

/// <summary>
/// One input to run through a named adapter: a text or text pair, a question and its context (QA), or a context, an
/// optional prefix and the choices (multiple choice).
/// </summary>
public sealed record BatchInput(string Adapter, string Text, string? TextPair = null, IReadOnlyList<string>? Choices = null)
{
    public PredictInput AsPredictInput() => new(Text, TextPair, Choices);
}

/// <summary>What one input became: its model rows (one, or a question's windows or choices) and each row's outputs.</summary>
public sealed record InputResult(IReadOnlyList<BertEncoding> Rows, float[][] Outputs);

/// <summary>
/// Runs one batch of inputs, possibly for several adapters, on the worker thread that owns the model. Every
/// input's adapter is loaded for the whole call. The HTTP side only sees this interface, so how a mixed batch
/// is computed (a forward per adapter, or one forward that routes each row) can change without touching it.
/// </summary>
public interface IBatchRunner
{
    /// <returns>Per input, in input order: its rows and their outputs (logits per label, a score, or per position).</returns>
    IReadOnlyList<InputResult> Run(IReadOnlyList<BatchInput> inputs);
}

/// <summary>Groups a batch by adapter and runs one forward pass (in chunks of <c>maxBatch</c> rows) per group.</summary>
public sealed class PerAdapterBatchRunner(ModelHost host, int maxBatch) : IBatchRunner
{
    public IReadOnlyList<InputResult> Run(IReadOnlyList<BatchInput> inputs)
    {
        var results = new InputResult[inputs.Count];
        RunGroups(host, maxBatch, inputs, Enumerable.Range(0, inputs.Count), results);
        return results;
    }

    /// <summary>Each input's rows, as its adapter's head kind makes them (<see cref="HeadKind.EncodeInput"/>).</summary>
    internal static IReadOnlyList<BertEncoding> Rows(ModelHost host, BatchInput input)
    {
        var info = host.Adapters[input.Adapter];
        return HeadKind.For(info.Head).EncodeInput(info.Head, input.AsPredictInput(), host.Tokenizer, info.MaxLength);
    }

    /// <summary>The <paramref name="rows"/> of <paramref name="inputs"/>, one forward pass per adapter (or stack, or fusion).</summary>
    internal static void RunGroups(ModelHost host, int maxBatch, IReadOnlyList<BatchInput> inputs, IEnumerable<int> rows, InputResult[] results)
    {
        try
        {
            foreach (var group in rows.GroupBy(i => inputs[i].Adapter, StringComparer.Ordinal))
            {
                var members = group.ToArray();
                var encoded = members.Select(i => Rows(host, inputs[i])).ToArray();
                var data = EncodedDataset.Unlabelled([.. encoded.SelectMany(e => e)]);
                host.Activate(group.Key);
                var outputs = Trainer.Predict(host.Model, data, maxBatch, host.Device);
                int position = 0;
                for (int k = 0; k < members.Length; k++)
                {
                    results[members[k]] = new InputResult(encoded[k], outputs[position..(position + encoded[k].Count)]);
                    position += encoded[k].Count;
                }
            }
        }
        finally
        {
            host.Model.Active = null;
        }
    }
}

/// <summary>
/// Runs a batch whatever its adapters in one encoder pass per chunk of at most <c>maxBatch</c> rows: each row is
/// routed through its own adapter (<see cref="Adapters.AdapterModel.LogitsPerRow"/>), so requests for many adapters
/// share the GPU instead of queuing one forward per adapter. Rows are cut into chunks by length
/// (<see cref="ChunksByLength"/>), so that short texts are not padded to the longest one in the batch.
/// </summary>
/// <param name="forwardCost">
/// What one more forward costs, in padded tokens (default: <see cref="DefaultForwardCost"/> for the host's device).
/// </param>
public sealed class MixedBatchRunner(ModelHost host, int maxBatch, int? forwardCost = null) : IBatchRunner
{
    readonly int forwardCost = forwardCost ?? DefaultForwardCost(host.Device);

    /// <summary>
    /// On the CPU a forward costs about its padded tokens, but small products run less efficiently than large
    /// ones, so a split must save a fair amount: with <c>bench serve</c> on 2 cores (minilm-l6, SST-2 sentences),
    /// 16 or 64 tokens lost throughput to not splitting at 8 clients, 256 kept level there and gained 50-100% at 32
    /// clients. On a GPU tokens are nearly free at these sizes, so only the batch size limit splits a batch there.
    /// </summary>
    public static int DefaultForwardCost(Device device) => device.type == TorchSharp.DeviceType.CPU ? 256 : 1 << 20;

    public IReadOnlyList<InputResult> Run(IReadOnlyList<BatchInput> inputs)
    {
        var results = new InputResult[inputs.Count];
        // A stack or a fusion combines several adapters in every row, which per-row routing does not do, and some methods
        // have no per-row form (a dynamic adapter sizes itself per input): their rows run apart, a pass per adapter.
        var fused = Enumerable.Range(0, inputs.Count).Where(i => host.Adapters[inputs[i].Adapter].RunsApart).ToList();
        if (fused.Count > 0) PerAdapterBatchRunner.RunGroups(host, maxBatch, inputs, fused, results);
        var routed = Enumerable.Range(0, inputs.Count).Except(fused).ToArray();
        if (routed.Length == 0) return results;
        // Each input becomes its rows (a question's windows, its choices), each truncated to its own adapter's max length.
        var encoded = new IReadOnlyList<BertEncoding>[inputs.Count];
        var rows = new List<(int Input, int Row)>();
        foreach (var i in routed)
        {
            encoded[i] = PerAdapterBatchRunner.Rows(host, inputs[i]);
            for (int r = 0; r < encoded[i].Count; r++) rows.Add((i, r));
        }
        var outputs = routed.ToDictionary(i => i, i => new float[encoded[i].Count][]);
        foreach (var part in ChunksByLength(rows.Select(r => encoded[r.Input][r.Row].Length).ToArray(), maxBatch, forwardCost))
        {
            var chunk = part.Select(k => rows[k]).ToArray();
            var data = EncodedDataset.Unlabelled(chunk.Select(r => encoded[r.Input][r.Row]).ToArray());
            var positions = Enumerable.Range(0, chunk.Length).ToArray();
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var (ids, mask, types) = data.Collate(positions);
            var result = host.Model.LogitsPerRow(ids.to(host.Device),
                data.HasPadding(positions) ? mask.to(host.Device) : null,
                types.to(host.Device),
                chunk.Select(r => (string?)inputs[r.Input].Adapter).ToArray());
            var rowOutputs = result.ToArrays(chunk.Select(r => encoded[r.Input][r.Row].Length).ToArray());
            for (int b = 0; b < chunk.Length; b++) outputs[chunk[b].Input][chunk[b].Row] = rowOutputs[b];
        }
        foreach (var i in routed) results[i] = new InputResult(encoded[i], outputs[i]);
        return results;
    }

    /// <summary>
    /// Row indices in chunks of at most <paramref name="maxRows"/> that minimise the padded tokens plus
    /// <paramref name="forwardCost"/> per chunk: rows sorted by length and cut where another forward costs less than
    /// the padding it saves (an exact split of the sorted rows, by dynamic programming; n ≤ a few hundred).
    /// </summary>
    public static List<int[]> ChunksByLength(int[] lengths, int maxRows, int forwardCost)
    {
        var order = Enumerable.Range(0, lengths.Length).OrderBy(i => lengths[i]).ToArray();
        int n = order.Length;
        // best[j]: the least cost of the first j sorted rows; cut[j]: where the last chunk of that split starts.
        var best = new long[n + 1];
        var cut = new int[n + 1];
        for (int j = 1; j <= n; j++)
        {
            best[j] = long.MaxValue;
            long width = lengths[order[j - 1]]; // the longest row of any chunk ending at j
            for (int i = Math.Max(0, j - maxRows); i < j; i++)
            {
                long cost = best[i] + forwardCost + (j - i) * width;
                if (cost < best[j]) (best[j], cut[j]) = (cost, i);
            }
        }
        var chunks = new List<int[]>();
        for (int j = n; j > 0; j = cut[j]) chunks.Add(order[cut[j]..j]);
        chunks.Reverse();
        return chunks;
    }
}
