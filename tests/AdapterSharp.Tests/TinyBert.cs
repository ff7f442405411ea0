using AdapterSharp.Model;
using static TorchSharp.torch;

namespace AdapterSharp.Tests;

/// <summary>A 2-layer, hidden-32 random BERT: the shape every model test runs on, for speed.</summary>
static class TinyBert
{
    public static readonly BertConfig Config = new()
    {
        VocabSize = 100,
        HiddenSize = 32,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        IntermediateSize = 64,
        MaxPositionEmbeddings = 64,
        HiddenDropoutProb = 0.1,
        AttentionProbsDropoutProb = 0.1,
    };

    public static BertModel Create(int seed = 0, bool addPooler = true)
    {
        manual_seed(seed);
        var model = new BertModel(Config, addPooler);
        model.eval();
        return model;
    }

    /// <summary>A padded batch: ids (B, T), mask (B, T) and token types (B, T), row i holding lengths[i] tokens.</summary>
    public static (Tensor Ids, Tensor Mask, Tensor Types) Batch(int seed, params int[] lengths)
    {
        var random = new Random(seed);
        int time = lengths.Max();
        var ids = new long[lengths.Length, time];
        var mask = new long[lengths.Length, time];
        var types = new long[lengths.Length, time];
        for (int b = 0; b < lengths.Length; b++)
            for (int t = 0; t < lengths[b]; t++)
            {
                ids[b, t] = random.Next(1, Config.VocabSize);
                mask[b, t] = 1;
                types[b, t] = t > lengths[b] / 2 ? 1 : 0;
            }
        return (tensor(ids), tensor(mask), tensor(types));
    }
}
