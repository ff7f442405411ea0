using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Adapters;

/// <summary>What the bottleneck family does beyond the method theory (<see cref="MethodTheory"/>).</summary>
public class AdapterMethodTests
{
    public static TheoryData<string> BottleneckMethods => new(MethodRegistry.Presets.OfType<BottleneckConfig>().Select(m => m.Method));

    static readonly HeadConfig TwoLabels = HeadConfig.Classification(["neg", "pos"]);

    static AdapterModel Create(MethodConfig config, string name = "task")
    {
        var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(4);
        model.AddAdapter(name, config, TwoLabels);
        model.Active = name;
        model.eval();
        return model;
    }

    [Theory]
    [MemberData(nameof(BottleneckMethods))]
    public void Houlsby_init_stays_within_one_percent_of_the_base_model(string method)
    {
        var config = (BottleneckConfig)MethodRegistry.Get(method) with { Init = AdapterInit.Houlsby };
        using var model = Create(config);
        var batch = TinyBert.Batch(6, 9, 9);
        using var noGrad = no_grad();
        using var expected = model.Bert.call(batch.Ids, batch.Mask, batch.Types);
        using var actual = model.Encode(batch.Ids, batch.Mask, batch.Types);
        var relative = ((expected - actual).norm() / expected.norm()).item<float>();
        // A parallel adapter's output is scaled by s (4) on purpose, so its bar is s times wider.
        Assert.True(relative <= 1e-2 * config.Scaling, $"relative difference {relative}");
        Assert.True(relative > 0, "the adapter should not be an exact identity with houlsby init");
    }

    [Theory]
    [MemberData(nameof(BottleneckMethods))]
    public void Houlsby_init_perturbs_the_pretrained_model_by_a_few_percent_at_most(string method)
    {
        // On minilm-l6 each site adds about σ²·√(d·m/2)·|h| ≈ 1.1% of its input (σ = 1e-2, d = 384, m = 64), and
        // twelve sites compound: measured 1.2% (multihead) to 9% (parallel, scaled by 4) at the last layer.
        using var model = AdapterModel.FromPretrained(MiniLm.Load());
        manual_seed(4);
        model.AddAdapter("task", (BottleneckConfig)MethodRegistry.Get(method) with { Init = AdapterInit.Houlsby }, TwoLabels);
        model.eval();
        var encoding = MiniLm.Load().Tokenizer.Encode("a charming and often affecting journey");
        using var ids = tensor(encoding.InputIds.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var mask = ones_like(ids);
        using var types = zeros_like(ids);
        using var noGrad = no_grad();
        using var expected = model.Bert.call(ids, mask, types);
        model.Active = "task";
        using var actual = model.Encode(ids, mask, types);
        var relative = ((expected - actual).norm() / expected.norm()).item<float>();
        Assert.InRange(relative, 1e-3, 0.15);
    }

    [Fact]
    public void Adapter_keys_sit_under_their_site_and_removing_the_adapter_removes_them()
    {
        using var model = Create(BottleneckConfig.Houlsby, "sst2");
        var keys = StateDict.Tensors(model).Keys.ToHashSet();
        Assert.Contains("bert.encoder.layer.0.attention.output.adapters.sst2.down.weight", keys);
        Assert.Contains("bert.encoder.layer.1.output.adapters.sst2.up.bias", keys);
        Assert.Contains("bert.encoder.layer.1.output.adapters.sst2.LayerNorm.weight", keys);
        Assert.Contains("bert.embeddings.adapters.sst2.LayerNorm.bias", keys);
        Assert.Contains("heads.sst2.classifier.weight", keys);
        model.RemoveAdapter("sst2");
        Assert.DoesNotContain(StateDict.Tensors(model).Keys, k => k.Contains("sst2"));
    }

    [Fact]
    public void Adapter_file_keys_drop_the_adapter_name_and_the_bert_prefix()
    {
        using var model = Create(BottleneckConfig.Pfeiffer with { AdapterSize = 8 }, "sst2");
        var keys = model.AdapterTensors("sst2").Keys.ToHashSet();
        Assert.Contains("encoder.layer.0.output.adapter.down.weight", keys);
        Assert.Contains("encoder.layer.0.attention.output.adapter.LayerNorm.weight", keys); // a LayerNorm copy alone
        Assert.Contains("embeddings.adapter.LayerNorm.bias", keys);
        Assert.Contains("head.classifier.weight", keys);
        Assert.DoesNotContain(keys, k => k.Contains("sst2") || k.StartsWith("bert.", StringComparison.Ordinal));
    }

    [Fact]
    public void Multihead_averages_heads_through_one_shared_up_projection()
    {
        var config = BottleneckConfig.MultiHead with { AdapterSize = 8, Heads = 4, Init = AdapterInit.Bert };
        using var model = Create(config);
        var tensors = model.AdapterTensors("task");
        Assert.Equal(new long[] { 32, 32 }, tensors["encoder.layer.0.output.adapter.down.weight"].Shape); // H·m × d
        Assert.Equal(new long[] { 32, 8 }, tensors["encoder.layer.0.output.adapter.up.weight"].Shape);   // d × m
    }

    [Fact]
    public void Reverse_adapters_expand_to_twice_the_hidden_size()
    {
        using var model = Create(BottleneckConfig.Reverse);
        var tensors = model.AdapterTensors("task");
        Assert.Equal(new long[] { 64, 32 }, tensors["encoder.layer.0.output.adapter.down.weight"].Shape);
    }

    [Fact]
    public void A_shared_adapter_is_saved_once_and_every_site_uses_it()
    {
        using var model = Create(SharedConfig.Default with { AdapterSize = 8, Init = AdapterInit.Bert });
        var keys = model.AdapterTensors("task").Keys.ToList();
        Assert.Single(keys, k => k.EndsWith(".down.weight", StringComparison.Ordinal));
        Assert.Contains("shared.down.weight", keys);
        // Two sites in different layers add the same for the same input: one set of weights.
        using var noGrad = no_grad();
        var output = model.Bert.Encoder.Layers[0].Output;
        var attention = model.Bert.Encoder.Layers[1].Attention.Output;
        using var pass = new AdapterSharp.Model.ForwardPass();
        using var h = randn(2, 5, 32);
        using var fromOutput = output.Adapters["task"].Delta(h, h, pass)!;
        using var fromAttention = attention.Adapters["task"].Delta(h, h, pass)!;
        Assert.Equal(0f, (fromOutput - fromAttention).abs().max().item<float>());
    }

    [Fact]
    public void Weight_decay_skips_biases_and_layer_norms()
    {
        using var model = Create(BottleneckConfig.Houlsby);
        var trained = model.TrainOnly("task");
        Assert.All(trained, p => Assert.Equal(!(p.Key.EndsWith(".bias", StringComparison.Ordinal) || p.Key.Contains("LayerNorm", StringComparison.Ordinal)), p.Decay));
    }
}

public class AdapterInitTests
{
    [Fact]
    public void Houlsby_init_is_a_truncated_normal_with_distinct_units_not_a_constant()
    {
        using var weight = TorchSharp.torch.empty(256, 384);
        TorchSharp.torch.manual_seed(0);
        AdapterSharp.Adapters.Init.TruncatedNormal(weight, std: 1e-2);
        double std = weight.std().item<float>();
        double max = weight.abs().max().item<float>();
        double mean = weight.mean().item<float>();
        // A N(0, σ²) cut at ±2σ has standard deviation 0.8796σ.
        Assert.InRange(std, 0.85e-2, 0.90e-2);
        Assert.True(max <= 2e-2 + 1e-9, $"max |w| {max}");
        Assert.InRange(mean, -5e-4, 5e-4);
        Assert.True((weight[0] - weight[1]).abs().max().item<float>() > 1e-3, "rows must differ");
    }
}
