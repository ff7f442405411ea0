using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Adapters;

[Collection(SequentialCollection.Name)]
public class LoraTests
{
    static readonly HeadConfig TwoLabels = HeadConfig.Classification(["neg", "pos"]);

    /// <summary>TinyBert with LoRA "task" (r 4, α 8) whose B matrices are random, so that it changes the model.</summary>
    static AdapterModel Create(LoraConfig? config = null)
    {
        var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(4);
        model.AddAdapter("task", config ?? LoraConfig.Default with { Rank = 4, Alpha = 8 }, TwoLabels);
        using (no_grad())
            foreach (var (name, parameter) in model.named_parameters())
                if (name.Contains(".lora_B.")) parameter.normal_(0, 0.2);
        model.Active = "task";
        model.eval();
        return model;
    }

    static float MaxDifference(Tensor x, Tensor y) => (x - y).abs().max().item<float>();

    [Fact]
    public void Lora_equals_the_base_with_its_update_folded_into_the_weights_by_hand()
    {
        using var model = Create();
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        using var folded = TinyBert.Create(seed: 3, addPooler: false);
        using (no_grad())
            foreach (var (name, weight) in folded.named_parameters())
                foreach (var target in new[] { "query", "value" })
                    if (name.EndsWith($"attention.self.{target}.weight", StringComparison.Ordinal))
                    {
                        var prefix = "bert." + name[..^$"{target}.weight".Length] + $"{target}_adapters.task.";
                        // W + (α/r) B A with α = 8, r = 4.
                        weight.add_(parameters[prefix + "lora_B.weight"].matmul(parameters[prefix + "lora_A.weight"]) * 2.0);
                    }
        var batch = TinyBert.Batch(2, 7, 4, 6);
        using var noGrad = no_grad();
        using var expected = folded.call(batch.Ids, batch.Mask, batch.Types);
        using var actual = model.Encode(batch.Ids, batch.Mask, batch.Types);
        using var bare = model.Bert.call(batch.Ids, batch.Mask, batch.Types);
        Assert.True(MaxDifference(expected, actual) <= 1e-5f, $"max difference {MaxDifference(expected, actual)}");
        Assert.True(MaxDifference(bare, actual) > 1e-2f, "the update should change the output");
    }

    [Fact]
    public void Merged_lora_equals_unmerged_and_unmerging_restores_the_base()
    {
        var config = LoraConfig.Default with { Rank = 4, Alpha = 16, TargetModules = ["query", "key", "value", "attention-output", "intermediate", "output"] };
        using var model = Create(config);
        var batch = TinyBert.Batch(3, 8, 5, 2);
        using var noGrad = no_grad();
        using var baseBefore = model.Bert.call(batch.Ids, batch.Mask, batch.Types);
        using var unmerged = model.Logits(batch.Ids, batch.Mask, batch.Types);

        model.Merge("task");
        Assert.Equal("task", model.Merged);
        using var merged = model.Logits(batch.Ids, batch.Mask, batch.Types);
        Assert.True(MaxDifference(unmerged, merged) <= 1e-5f, $"merged vs unmerged: {MaxDifference(unmerged, merged)}");
        // While merged, the base weights are not the base's: nothing else may run on them.
        model.AddAdapter("other", BottleneckConfig.Houlsby with { AdapterSize = 4 }, TwoLabels);
        Assert.Throws<InvalidOperationException>(() => { model.Active = "other"; model.Logits(batch.Ids, batch.Mask, batch.Types); });
        Assert.Throws<InvalidOperationException>(() => model.LogitsPerRow(batch.Ids, batch.Mask, batch.Types, ["task", "other", null]));
        Assert.Throws<InvalidOperationException>(() => model.TrainOnly("task"));

        model.Unmerge("task");
        Assert.Null(model.Merged);
        using var baseAfter = model.Bert.call(batch.Ids, batch.Mask, batch.Types);
        Assert.True(MaxDifference(baseBefore, baseAfter) <= 1e-5f, $"base after unmerge: {MaxDifference(baseBefore, baseAfter)}");
        model.Active = "task";
        using var again = model.Logits(batch.Ids, batch.Mask, batch.Types);
        Assert.True(MaxDifference(unmerged, again) <= 1e-5f);
    }

    [Fact]
    public void Merging_into_weights_already_cast_to_bf16_is_refused()
    {
        using var model = Create();
        model.PrepareForInference(CPU, ScalarType.BFloat16);
        var error = Assert.Throws<InvalidOperationException>(() => model.Merge("task"));
        Assert.StartsWith("adapter 'task': encoder.layer.0.attention.self.query is stored in BFloat16; merge before the base is cast", error.Message);
        Assert.Null(model.Merged);
    }

    [Fact]
    public void Only_linear_methods_merge()
    {
        using var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        model.AddAdapter("h", BottleneckConfig.Houlsby with { AdapterSize = 4 }, TwoLabels);
        var error = Assert.Throws<ArgumentException>(() => model.Merge("h"));
        Assert.Equal("adapter 'h' (houlsby) cannot be merged into the base weights: it is not a linear change of them", error.Message);
        Assert.Null(model.Merged);
    }

    [Fact]
    public void Lora_file_keys_are_peft_keys_without_the_prefix()
    {
        using var model = Create();
        var keys = model.AdapterTensors("task").Keys.Order().ToList();
        Assert.Equal(
        [
            "encoder.layer.0.attention.self.query.lora_A.weight", "encoder.layer.0.attention.self.query.lora_B.weight",
            "encoder.layer.0.attention.self.value.lora_A.weight", "encoder.layer.0.attention.self.value.lora_B.weight",
            "encoder.layer.1.attention.self.query.lora_A.weight", "encoder.layer.1.attention.self.query.lora_B.weight",
            "encoder.layer.1.attention.self.value.lora_A.weight", "encoder.layer.1.attention.self.value.lora_B.weight",
            "head.classifier.bias", "head.classifier.weight",
        ], keys);
        Assert.Equal(new long[] { 4, 32 }, model.AdapterTensors("task")["encoder.layer.0.attention.self.query.lora_A.weight"].Shape);
    }

    [Fact]
    public void Lora_starts_with_a_uniform_a_and_a_zero_b_as_peft_does()
    {
        using var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(1);
        model.AddAdapter("task", LoraConfig.Default with { Rank = 32 }, TwoLabels);
        var tensors = model.AdapterTensors("task");
        using var a = StateDict.ToTensor(tensors["encoder.layer.0.attention.self.query.lora_A.weight"]);
        using var b = StateDict.ToTensor(tensors["encoder.layer.0.attention.self.query.lora_B.weight"]);
        double bound = 1 / Math.Sqrt(32);
        Assert.True(a.abs().max().item<float>() <= bound + 1e-7);
        Assert.InRange(a.std().item<float>(), 0.9 * bound / Math.Sqrt(3), 1.1 * bound / Math.Sqrt(3)); // U(−b, b) has σ = b/√3
        Assert.Equal(0f, b.abs().max().item<float>());
    }

    [Fact]
    public void Unknown_targets_and_bad_ranks_are_one_line_errors()
    {
        using var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        var error = Assert.Throws<ArgumentException>(() => model.AddAdapter("x", LoraConfig.Default with { TargetModules = ["query", "dense"] }, TwoLabels));
        Assert.Equal("adapter config: target_modules: 'dense' is not one of query, key, value, attention-output, intermediate, output", error.Message);
        error = Assert.Throws<ArgumentException>(() => model.AddAdapter("x", LoraConfig.Default with { Rank = 0 }, TwoLabels));
        Assert.Equal("adapter config: r must be at least 1, got 0", error.Message);
        Assert.Empty(model.Adapters);
    }
}
