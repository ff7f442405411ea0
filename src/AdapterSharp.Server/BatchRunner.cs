using AdapterSharp.Data;
using AdapterSharp.Training;

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
