using AdapterSharp.Checkpoints;
using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Model;

public class BertTests
{
    [Fact]
    public void Native_backend_loads_and_computes()
    {
        using var a = tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        using var product = a.matmul(a);
        Assert.Equal(new float[] { 7, 10, 15, 22 }, product.data<float>().ToArray());
    }

    [Theory]
    [InlineData(new long[] { 5, 7 }, true)]
    [InlineData(new long[] { 2, 3, 7 }, true)]
    [InlineData(new long[] { 2, 3, 7 }, false)]
    public void Project_equals_a_linear_layer(long[] shape, bool withBias)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var linear = nn.Linear(7, 4, hasBias: withBias);
        var x = randn(shape);
        var expected = linear.call(x);
        using var pass = new ForwardPass();
        var actual = pass.Project(linear, x);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True((expected - actual).abs().max().item<float>() < 1e-6f);
    }

    [Fact]
    public void The_encoder_frees_the_hidden_states_it_made_but_not_the_callers_input()
    {
        using var model = TinyBert.Create(seed: 1, addPooler: false);
        model.eval();
        var (ids, _, types) = TinyBert.Batch(2, 6, 6);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var pass = model.BarePass();
        var input = randn(2, 6, TinyBert.Config.HiddenSize);
        int alive = scope.DisposablesCount;
        var output = model.Encoder.call(input, null, pass);
        // The caller's input is still usable, and only the output joined the caller's scope: the hidden states
        // between layers (and every layer's intermediates) were disposed on the way.
        Assert.Equal(input.shape, output.shape);
        Assert.Equal(alive + 1, scope.DisposablesCount);
        Assert.False(input.IsInvalid);
        Assert.True(model.Encode(ids, null, types, pass).shape.SequenceEqual(new long[] { 2, 6, TinyBert.Config.HiddenSize }));
    }

    [CpuOnlyFact]
    public void The_cuda_allocator_says_why_it_is_unavailable_on_a_cpu_libtorch()
    {
        Assert.False(AdapterSharp.Native.CudaAllocator.Available);
        Assert.Contains("not loaded", AdapterSharp.Native.CudaAllocator.Problem);
        Assert.Null(AdapterSharp.Native.CudaAllocator.Read(0));
        AdapterSharp.Native.CudaAllocator.EmptyCache(); // does nothing, does not throw
    }

    [Fact]
    public void State_dict_keys_equal_huggingface_bert_model_keys()
    {
        using var model = TinyBert.Create();
        var expected = new List<string>
        {
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.LayerNorm.bias",
        };
        for (int i = 0; i < TinyBert.Config.NumHiddenLayers; i++)
        {
            foreach (var part in new[]
                     {
                         "attention.self.query", "attention.self.key", "attention.self.value",
                         "attention.output.dense", "attention.output.LayerNorm",
                         "intermediate.dense", "output.dense", "output.LayerNorm",
                     })
            {
                expected.Add($"encoder.layer.{i}.{part}.weight");
                expected.Add($"encoder.layer.{i}.{part}.bias");
            }
        }
        expected.Add("pooler.dense.weight");
        expected.Add("pooler.dense.bias");

        Assert.Equal(expected.Order(), StateDict.Tensors(model).Keys.Order());
    }

    [Fact]
    public void Forward_gives_batch_time_hidden_and_pooler_gives_batch_hidden()
    {
        using var model = TinyBert.Create();
        var (ids, mask, types) = TinyBert.Batch(1, 5, 3);
        using var hidden = model.call(ids, mask, types);
        Assert.Equal(new long[] { 2, 5, 32 }, hidden.shape);
        using var pooled = model.Pool(hidden);
        Assert.Equal(new long[] { 2, 32 }, pooled.shape);
    }

    [Fact]
    public void A_row_padded_inside_a_batch_equals_the_row_alone()
    {
        using var model = TinyBert.Create();
        var (ids, mask, types) = TinyBert.Batch(2, 9, 4, 7);
        using var batched = model.call(ids, mask, types);
        for (int row = 0; row < 3; row++)
        {
            long length = mask[row].sum().item<long>();
            using var alone = model.call(ids[row..(row + 1), ..(int)length], mask[row..(row + 1), ..(int)length],
                types[row..(row + 1), ..(int)length]);
            var difference = (alone[0] - batched[row, ..(int)length]).abs().max().item<float>();
            Assert.True(difference <= 1e-5, $"row {row}: max difference {difference}");
        }
    }

    [Fact]
    public void Weights_saved_from_one_model_load_into_another_identically()
    {
        using var source = TinyBert.Create(seed: 1);
        using var target = TinyBert.Create(seed: 2);
        var weights = StateDict.Tensors(source).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value));
        StateDict.Load(target, weights, "test");
        var (ids, mask, types) = TinyBert.Batch(3, 6, 6);
        using var expected = source.call(ids, mask, types);
        using var actual = target.call(ids, mask, types);
        Assert.Equal(0f, (expected - actual).abs().max().item<float>());
    }

    [Fact]
    public void Loading_weights_of_the_wrong_shape_names_the_tensor_and_both_shapes()
    {
        using var model = TinyBert.Create();
        var weights = StateDict.Tensors(model).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value));
        weights["encoder.layer.1.intermediate.dense.weight"] = TensorData.FromFloats([65, 32], new float[65 * 32]);
        var error = Assert.Throws<ModelFormatException>(() => StateDict.Load(model, weights, "some/model.safetensors"));
        Assert.Equal("some/model.safetensors: weights do not match the config: 'encoder.layer.1.intermediate.dense.weight' " +
                     "has shape [65, 32], the config needs [64, 32]", error.Message);
    }

    [Fact]
    public void Loading_weights_with_a_missing_or_unexpected_tensor_fails_clearly()
    {
        using var model = TinyBert.Create();
        var weights = StateDict.Tensors(model).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value));
        var missing = new Dictionary<string, TensorData>(weights);
        missing.Remove("encoder.layer.0.attention.self.key.bias");
        Assert.Contains("missing 'encoder.layer.0.attention.self.key.bias'",
            Assert.Throws<ModelFormatException>(() => StateDict.Load(model, missing, "m")).Message);
        var extra = new Dictionary<string, TensorData>(weights) { ["encoder.layer.2.output.dense.bias"] = weights["pooler.dense.bias"] };
        Assert.Contains("unexpected tensor 'encoder.layer.2.output.dense.bias'",
            Assert.Throws<ModelFormatException>(() => StateDict.Load(model, extra, "m")).Message);
    }

    [Fact]
    public void Task_checkpoint_names_are_normalized_to_encoder_names()
    {
        var t = TensorData.FromFloats([1], [1f]);
        var normalized = StateDict.NormalizeBertKeys(new Dictionary<string, TensorData>
        {
            ["bert.embeddings.LayerNorm.gamma"] = t,
            ["bert.embeddings.position_ids"] = t,
            ["bert.pooler.dense.bias"] = t,
            ["classifier.weight"] = t,
            ["cls.predictions.bias"] = t,
        });
        Assert.Equal(new[] { "embeddings.LayerNorm.weight", "pooler.dense.bias" }, normalized.Keys.Order());
    }

    [Fact]
    public void Config_validation_names_the_source_and_the_problem()
    {
        var bad = TinyBert.Config with { HiddenSize = 30 };
        var error = Assert.Throws<ModelFormatException>(() => bad.Validate("x/config.json"));
        Assert.Equal("x/config.json: hidden_size 30 is not a multiple of num_attention_heads 4", error.Message);
    }

    [Fact]
    public void Config_reads_huggingface_json_names()
    {
        var dir = Directory.CreateTempSubdirectory();
        var path = Path.Combine(dir.FullName, "config.json");
        File.WriteAllText(path, """
            {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
             "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu", "vocab_size": 30522,
             "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
             "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
            """);
        var config = BertConfig.Load(path);
        Assert.Equal(384, config.HiddenSize);
        Assert.Equal(32, config.HeadSize);
        Assert.Equal(1e-12, config.LayerNormEps);
        dir.Delete(true);
    }
}
