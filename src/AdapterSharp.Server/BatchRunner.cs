using AdapterSharp.Data;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Server;

/// <summary>One text (or text pair) to run through a named adapter.</summary>
public sealed record BatchInput(string Adapter, string Text, string? TextPair = null);

/// <summary>
/// Runs one batch of inputs, possibly for several adapters, on the worker thread that owns the model. Every
/// input's adapter is loaded for the whole call. The HTTP side only sees this interface, so how a mixed batch
/// is computed (a forward per adapter, or one forward that routes each row) can change without touching it.
/// </summary>
public interface IBatchRunner
{
    /// <returns>Per input, in input order: the head's logits (one per label) or its score.</returns>
    float[][] Run(IReadOnlyList<BatchInput> inputs);
}

/// <summary>Groups a batch by adapter and runs one forward pass (in chunks of <c>maxBatch</c>) per group.</summary>
public sealed class PerAdapterBatchRunner(ModelHost host, int maxBatch) : IBatchRunner
{
    public float[][] Run(IReadOnlyList<BatchInput> inputs)
    {
        var outputs = new float[inputs.Count][];
        foreach (var group in Enumerable.Range(0, inputs.Count).GroupBy(i => inputs[i].Adapter, StringComparer.Ordinal))
        {
            var rows = group.ToArray();
            var data = EncodedDataset.Unlabelled(rows.Select(i => (inputs[i].Text, inputs[i].TextPair)), host.Tokenizer,
                host.Adapters[group.Key].MaxLength);
            host.Model.Active = group.Key;
            var groupOutputs = Trainer.Predict(host.Model, data, maxBatch, host.Device);
            for (int k = 0; k < rows.Length; k++) outputs[rows[k]] = groupOutputs[k];
        }
        return outputs;
    }
}

/// <summary>
/// Runs a batch whatever its adapters in one encoder pass per chunk of <c>maxBatch</c> rows: each row is routed
/// through its own adapter (<see cref="Adapters.AdapterModel.LogitsPerRow"/>), so requests for many adapters
/// share the GPU instead of queuing one forward per adapter.
/// </summary>
public sealed class MixedBatchRunner(ModelHost host, int maxBatch) : IBatchRunner
{
    public float[][] Run(IReadOnlyList<BatchInput> inputs)
    {
        var outputs = new float[inputs.Count][];
        for (int start = 0; start < inputs.Count; start += maxBatch)
        {
            var chunk = Enumerable.Range(start, Math.Min(maxBatch, inputs.Count - start)).ToArray();
            // Each row is truncated to the max length its own adapter was trained with.
            var data = EncodedDataset.Unlabelled(chunk.Select(i => host.Tokenizer.Encode(inputs[i].Text, inputs[i].TextPair,
                host.Adapters[inputs[i].Adapter].MaxLength)).ToArray());
            var rows = Enumerable.Range(0, chunk.Length).ToArray();
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var (ids, mask, types) = data.Collate(rows);
            var result = host.Model.LogitsPerRow(ids.to(host.Device),
                data.HasPadding(rows) ? mask.to(host.Device) : null,
                types.to(host.Device),
                chunk.Select(i => (string?)inputs[i].Adapter).ToArray());
            var logits = result.Logits.to_type(ScalarType.Float32).cpu();
            var values = logits.data<float>().ToArray();
            int width = (int)logits.shape[1];
            for (int b = 0; b < chunk.Length; b++)
                outputs[chunk[b]] = values.AsSpan(b * width, result.Outputs[b]).ToArray();
        }
        return outputs;
    }
}
