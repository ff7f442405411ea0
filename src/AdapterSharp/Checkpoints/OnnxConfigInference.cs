using AdapterSharp.Model;

namespace AdapterSharp.Checkpoints;

public static partial class OnnxWeights
{
    /// <summary>
    /// A BERT config for an ONNX export that came without its config.json. Sizes come from the weights'
    /// shapes; the head count from the graph: the exporter reshapes the key projection to
    /// (batch, time, heads, head size) with a shape built by a Concat whose constant operands are the last
    /// two. LayerNorm epsilon and the activation are not recoverable from the weights: BERT's 1e-12 and exact
    /// GELU are assumed (a config.json beside the file overrides all of this).
    /// </summary>
    public static BertConfig InferBertConfig(OnnxModel model, IReadOnlyDictionary<string, TensorData> weights)
    {
        TensorData Need(string key) => weights.TryGetValue(key, out var t)
            ? t
            : throw new CheckpointException($"{model.Source}: not a BERT encoder graph: no tensor for '{key}'");

        var words = Need("embeddings.word_embeddings.weight");
        int hidden = (int)words.Shape[1];
        int layers = 0;
        while (weights.ContainsKey($"encoder.layer.{layers}.attention.self.query.weight")) layers++;
        int heads = InferHeads(model, hidden)
                    ?? throw new CheckpointException(
                        $"{model.Source}: cannot tell the number of attention heads from the graph; put a config.json beside the file");
        var config = new BertConfig
        {
            VocabSize = (int)words.Shape[0],
            HiddenSize = hidden,
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            IntermediateSize = (int)Need("encoder.layer.0.intermediate.dense.weight").Shape[0],
            MaxPositionEmbeddings = (int)Need("embeddings.position_embeddings.weight").Shape[0],
            TypeVocabSize = (int)Need("embeddings.token_type_embeddings.weight").Shape[0],
        };
        config.Validate(model.Source);
        return config;
    }

    static int? InferHeads(OnnxModel model, int hidden)
    {
        var producers = new Dictionary<string, OnnxNode>();
        foreach (var node in model.Nodes)
            foreach (var output in node.Outputs)
                producers[output] = node;

        foreach (var reshape in model.Nodes.Where(n => n.OpType == "Reshape" && n.Inputs.Count == 2))
        {
            var constants = new List<long>();
            if (model.Initializers.TryGetValue(reshape.Inputs[1], out var shape) && shape.DType == TensorDType.I64)
                constants.AddRange(Int64s(shape));
            else if (producers.TryGetValue(reshape.Inputs[1], out var concat) && concat.OpType == "Concat")
                foreach (var input in concat.Inputs)
                    if (model.Initializers.TryGetValue(input, out var part) && part.DType == TensorDType.I64 && part.ElementCount == 1)
                        constants.AddRange(Int64s(part));
            if (constants.Count >= 2)
            {
                long heads = constants[^2], headSize = constants[^1];
                if (heads > 0 && headSize > 0 && heads * headSize == hidden) return (int)heads;
            }
        }
        return null;
    }

    static IEnumerable<long> Int64s(TensorData tensor)
    {
        for (int i = 0; i < tensor.ElementCount; i++) yield return BitConverter.ToInt64(tensor.Bytes, 8 * i);
    }
}
