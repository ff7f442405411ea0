using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using AdapterSharp.Tests.Checkpoints;
using AdapterSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Adapters;

/// <summary>Stack and AdapterFusion on the tiny BERT.</summary>
[Collection(SequentialCollection.Name)]
public class CompositionTests
{
    static readonly HeadConfig TwoLabels = HeadConfig.Classification(["neg", "pos"]);

    static readonly BaseModelIdentity TinyIdentity = new()
    {
        Id = "tiny", HiddenSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 64, VocabSize = 100, WeightsSha256 = "abc",
    };

    /// <summary>
    /// The tiny base with adapters a and b, in eval mode. Unless <paramref name="config"/> is given, their weights
    /// are far from the near-identity init (as after training), so that each adapter visibly changes the output.
    /// </summary>
    /// <summary><see cref="TwoAdapters"/> with a fusion "f" over both, and its head.</summary>
    static AdapterModel TwoAdaptersFused()
    {
        var model = TwoAdapters();
        model.AddFusion("f", new FusionConfig { Adapters = ["a", "b"] }, TwoLabels);
        return model;
    }

    static AdapterModel TwoAdapters(MethodConfig? config = null)
    {
        var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(4);
        model.AddAdapter("a", config ?? BottleneckConfig.Houlsby with { AdapterSize = 8 }, TwoLabels);
        model.AddAdapter("b", config ?? BottleneckConfig.Houlsby with { AdapterSize = 8 }, TwoLabels);
        if (config is null)
            using (no_grad())
                foreach (var (name, parameter) in model.named_parameters())
                    if (name.Contains(".adapters.") && !name.Contains("LayerNorm")) parameter.normal_(0, 0.3);
        model.eval();
        return model;
    }

    static Tensor Hidden(AdapterModel model, int seed = 5)
    {
        var batch = TinyBert.Batch(seed, 7, 4);
        return model.Encode(batch.Ids, batch.Mask, batch.Types);
    }

    static float MaxDifference(Tensor x, Tensor y) => (x - y).abs().max().item<float>();

    [Fact]
    public void A_stack_of_two_adapters_at_a_site_equals_applying_them_by_hand()
    {
        using var model = TwoAdapters();
        var output = model.Bert.Encoder.Layers[1].Output;
        manual_seed(9);
        using var sublayer = randn(2, 5, 32);
        using var residual = randn(2, 5, 32);
        using var noGrad = no_grad();
        using var alone = new ForwardPass();
        var a = output.Adapters["a"];
        var b = output.Adapters["b"];
        using var afterA = sublayer + a.Delta(sublayer, residual, alone)!;
        using var afterB = afterA + b.Delta(afterA, residual, alone)!;
        using var expected = b.LayerNorm!.call(afterB + residual); // the last adapter's own LayerNorm

        model.Composition = new Stack("a", "b");
        using var pass = model.NewPass();
        using var actual = output.Adapters.Apply(sublayer, residual, output.LayerNorm, output.Fusion, pass);

        Assert.True(MaxDifference(expected, actual) <= 1e-6f);
    }

    [Fact]
    public void A_stack_of_one_adapter_is_that_adapter_and_order_matters()
    {
        using var model = TwoAdapters();
        using var noGrad = no_grad();
        model.Active = "b";
        using var single = Hidden(model);
        model.Composition = new Stack("b");
        using var stackOfOne = Hidden(model);
        model.Composition = new Stack("a", "b");
        using var ab = Hidden(model);
        model.Composition = new Stack("b", "a");
        using var ba = Hidden(model);

        Assert.Equal(0f, MaxDifference(single, stackOfOne));
        Assert.True(MaxDifference(ab, ba) > 1e-4f);
        Assert.True(MaxDifference(ab, single) > 1e-4f);
    }

    [Fact]
    public void A_stack_of_zero_init_adapters_gives_the_base_model_exactly()
    {
        using var model = TwoAdapters(BottleneckConfig.Houlsby with { AdapterSize = 8, Init = AdapterInit.Zero });
        using var noGrad = no_grad();
        model.Active = null;
        using var expected = Hidden(model);
        model.Composition = new Stack("a", "b");
        using var actual = Hidden(model);
        Assert.True(MaxDifference(expected, actual) <= 1e-6f);
    }

    [Fact]
    public void Training_an_adapter_on_top_of_a_stack_keeps_the_stack_and_freezes_the_lower_adapter()
    {
        using var model = TwoAdapters();
        model.Composition = new Stack("a", "b");
        var trained = model.TrainOnly("b");
        Assert.Equal(new Stack("a", "b").Adapters, model.Composition!.Adapters);
        // What b owns, by where it sits in the model: its modules at the sites and its head; nothing of a's.
        var expected = model.named_parameters().Where(p => p.name.Contains(".adapters.b.") || p.name.StartsWith("heads.b.")).ToList();
        Assert.Equal(expected.Count, trained.Count);
        Assert.All(expected, e => Assert.Contains(trained, t => ReferenceEquals(t.Parameter, e.parameter)));
        Assert.All(model.named_parameters(), p => Assert.Equal(expected.Any(e => e.name == p.name), p.parameter.requires_grad));
    }

    [Fact]
    public void Fusion_layers_sit_under_their_sites_by_name()
    {
        using var model = TwoAdaptersFused();
        var keys = StateDict.Tensors(model).Keys.ToHashSet();

        Assert.Contains("bert.encoder.layer.1.output.fusion.f.query.weight", keys);
        Assert.Contains("bert.encoder.layer.1.output.fusion.f.key.bias", keys);
        Assert.Contains("bert.encoder.layer.1.output.fusion.f.value.weight", keys);
        Assert.Contains("bert.encoder.layer.1.output.fusion.f.LayerNorm.weight", keys);
        Assert.Contains("bert.encoder.layer.0.attention.output.fusion.f.query.weight", keys);
        Assert.DoesNotContain("bert.encoder.layer.1.output.fusion.f.value.bias", keys);
        Assert.Contains("heads.f.classifier.weight", keys);
        model.RemoveAdapter("f");
        Assert.DoesNotContain(StateDict.Tensors(model).Keys, k => k.Contains(".f.") || k.StartsWith("heads.f."));
    }

    [Fact]
    public void Fusion_goes_only_where_every_fused_adapter_has_a_bottleneck()
    {
        using var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        model.AddAdapter("a", BottleneckConfig.Houlsby with { AdapterSize = 8 }, TwoLabels);
        model.AddAdapter("p", BottleneckConfig.Pfeiffer with { AdapterSize = 8 }, TwoLabels); // FFN output only
        model.AddFusion("f", new FusionConfig { Adapters = ["a", "p"] }, TwoLabels);
        var keys = StateDict.Tensors(model).Keys.ToList();
        Assert.Contains("bert.encoder.layer.0.output.fusion.f.query.weight", keys);
        Assert.DoesNotContain(keys, k => k.Contains("attention.output.fusion"));
    }

    [Fact]
    public void A_fusion_starts_as_the_mean_of_its_adapters_outputs()
    {
        using var model = TwoAdaptersFused();
        var output = model.Bert.Encoder.Layers[0].Output;
        var fusion = output.Fusion["f"];
        using var noGrad = no_grad();
        // With the query zeroed every score is equal, so the weights are exactly 1/N; W_V is the identity up to 1e-6.
        foreach (var (name, parameter) in fusion.named_parameters())
            if (name.StartsWith("query.")) parameter.zero_();
        manual_seed(9);
        using var sublayer = randn(2, 5, 32);
        using var residual = randn(2, 5, 32);
        using var alone = new ForwardPass();
        using var oa = sublayer + output.Adapters["a"].Delta(sublayer, residual, alone)!;
        using var ob = sublayer + output.Adapters["b"].Delta(sublayer, residual, alone)!;
        using var expected = fusion.LayerNorm.call((oa + ob) / 2 + residual);

        model.ActivateFusion("f");
        using var pass = model.NewPass();
        using var actual = output.Adapters.Apply(sublayer, residual, output.LayerNorm, output.Fusion, pass);

        Assert.True(MaxDifference(expected, actual) <= 1e-3f, $"max difference {MaxDifference(expected, actual)}");
    }

    [Fact]
    public void Training_a_fusion_changes_only_the_fusion_and_its_head_and_leaves_base_and_adapters_bit_identical()
    {
        using var model = TwoAdaptersFused();
        var tokenizer = TinyTask.Tokenizer();
        var train = EncodedDataset.Encode(TinyTask.Examples(64, 1), tokenizer, TwoLabels, 32, false, out _);
        var dev = EncodedDataset.Encode(TinyTask.Examples(16, 2), tokenizer, TwoLabels, 32, false, out _);
        var before = Snapshot(model);

        new Trainer(model, "f", new TrainOptions { Epochs = 1, BatchSize = 16, LearningRate = 1e-3, TimeBudget = null }, CPU)
            .Train(train, dev, ["accuracy"]);

        var after = Snapshot(model);
        foreach (var (name, bytes) in before)
        {
            bool changed = !bytes.AsSpan().SequenceEqual(after[name]);
            bool fusionOrHead = name.Contains(".fusion.f.") || name.StartsWith("heads.f.");
            Assert.True(changed == fusionOrHead, $"'{name}' {(changed ? "changed" : "did not change")}");
        }
        Assert.IsType<Fuse>(model.Composition);
    }

    [Fact]
    public void A_saved_fusion_loads_with_its_adapters_and_predicts_identically()
    {
        using var dir = new TempDirectory();
        using var model = TwoAdaptersFused();
        model.eval();
        RandomizeFusion(model);
        var fusionDir = SaveAll(model, dir.Path);
        var batch = TinyBert.Batch(11, 9, 5);
        using var noGrad = no_grad();
        model.ActivateFusion("f");
        using var expected = model.Logits(batch.Ids, batch.Mask, batch.Types);

        using var loaded = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        var manifest = FusionFiles.Load(fusionDir, loaded, TinyIdentity);
        loaded.eval(); // after loading: new modules start in training mode (dropout)
        using var actual = loaded.Logits(batch.Ids, batch.Mask, batch.Types);

        Assert.Equal(["a", "b"], manifest.Adapters.Select(a => a.Name));
        Assert.Equal(0f, MaxDifference(expected, actual));
        Assert.IsType<Fuse>(loaded.Composition);
    }

    [Fact]
    public void A_fusion_whose_adapter_folder_is_gone_names_it_in_one_line()
    {
        using var dir = new TempDirectory();
        using var model = TwoAdaptersFused();
        var fusionDir = SaveAll(model, dir.Path);
        Directory.Delete(Path.Combine(dir.Path, "b"), recursive: true);

        using var loaded = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        var error = Assert.Throws<ModelFormatException>(() => FusionFiles.Load(fusionDir, loaded, TinyIdentity));
        Assert.Contains("fuses adapter 'b'", error.Message);
        Assert.Contains("missing", error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void A_fusion_whose_own_config_or_weights_changed_after_saving_is_refused()
    {
        using var dir = new TempDirectory();
        using var model = TwoAdaptersFused();
        var fusionDir = SaveAll(model, dir.Path);
        var configPath = Path.Combine(fusionDir, FusionFiles.ConfigFile);
        var original = File.ReadAllText(configPath);
        Assert.Contains("\"max_length\": 32", original);

        File.WriteAllText(configPath, original.Replace("\"max_length\": 32", "\"max_length\": 16"));
        using (var loaded = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false)))
        {
            var error = Assert.Throws<ModelFormatException>(() => FusionFiles.Load(fusionDir, loaded, TinyIdentity));
            Assert.StartsWith($"{configPath}: the file was changed after it was saved", error.Message);
        }

        File.WriteAllText(configPath, original);
        var weights = Path.Combine(fusionDir, FusionFiles.WeightsFile);
        var bytes = File.ReadAllBytes(weights);
        bytes[^3] ^= 0x40;
        File.WriteAllBytes(weights, bytes);
        using (var loaded = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false)))
        {
            var error = Assert.Throws<ModelFormatException>(() => FusionFiles.Load(fusionDir, loaded, TinyIdentity));
            Assert.StartsWith($"{weights}: not the weights saved with this folder", error.Message);
        }
    }

    [Fact]
    public void A_fusion_refuses_an_adapter_that_changed_since_it_was_trained()
    {
        using var dir = new TempDirectory();
        using var model = TwoAdaptersFused();
        var fusionDir = SaveAll(model, dir.Path);
        using (no_grad()) model.Bert.Encoder.Layers[0].Output.Adapters["a"].parameters().First().add_(1);
        AdapterFiles.Save(Path.Combine(dir.Path, "a"), new AdapterManifest { Name = "a", Head = TwoLabels, BaseModel = TinyIdentity, Config = model.Adapters["a"], MaxLength = 32 },
            model.AdapterTensors("a"));

        using var loaded = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        var error = Assert.Throws<ModelFormatException>(() => FusionFiles.Load(fusionDir, loaded, TinyIdentity));
        Assert.Contains("adapter 'a'", error.Message);
        Assert.Contains("not the one this fusion was trained on", error.Message);
    }

    [Fact]
    public void A_fusion_over_an_adapter_that_is_not_loaded_is_refused()
    {
        using var model = TwoAdapters();
        var error = Assert.Throws<ArgumentException>(() => model.AddFusion("f", new FusionConfig { Adapters = ["a", "c"] }, TwoLabels));
        Assert.Contains("fuses adapter 'c', which is not loaded", error.Message);

        using var dir = new TempDirectory();
        model.AddFusion("f", new FusionConfig { Adapters = ["a", "b"] }, TwoLabels);
        var fusionDir = SaveAll(model, dir.Path);
        using var bare = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        var notLoaded = Assert.Throws<ModelFormatException>(() => FusionFiles.Load(fusionDir, bare, TinyIdentity, loadAdapters: false));
        Assert.Contains("fuses adapter 'a', which is not loaded", notLoaded.Message);
    }

    [Fact]
    public void A_fused_adapter_cannot_be_removed_before_its_fusion()
    {
        using var model = TwoAdaptersFused();
        var error = Assert.Throws<ArgumentException>(() => model.RemoveAdapter("a"));
        Assert.Contains("fused by 'f'", error.Message);
        model.RemoveAdapter("f");
        model.RemoveAdapter("a");
        Assert.Equal(["b"], model.Adapters.Keys);
    }

    static Dictionary<string, byte[]> Snapshot(nn.Module model) =>
        StateDict.Tensors(model).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value).Bytes);

    static void RandomizeFusion(AdapterModel model)
    {
        using var noGrad = no_grad();
        manual_seed(12);
        foreach (var (name, parameter) in model.named_parameters())
            if (name.Contains(".fusion.f.") || name.StartsWith("heads.f."))
                parameter.add_(randn_like(parameter) * 0.1);
    }

    /// <summary>Saves adapters a and b to <c>root/a</c>, <c>root/b</c> and fusion f to <c>root/run/fusion</c>; returns the fusion folder.</summary>
    static string SaveAll(AdapterModel model, string root)
    {
        foreach (var name in new[] { "a", "b" })
            AdapterFiles.Save(Path.Combine(root, name),
                new AdapterManifest { Name = name, Config = model.Adapters[name], Head = TwoLabels, BaseModel = TinyIdentity, MaxLength = 32 },
                model.AdapterTensors(name));
        var fusionDir = Path.Combine(root, "run", "fusion");
        FusionFiles.Save(fusionDir, new FusionManifest
        {
            Name = "f",
            Adapters = new[] { "a", "b" }.Select(n => AdapterReference.Describe(n, Path.Combine(root, n), fusionDir)).ToArray(),
            Head = TwoLabels,
            BaseModel = TinyIdentity,
            MaxLength = 32,
        }, model.AdapterTensors("f"));
        return fusionDir;
    }
}
