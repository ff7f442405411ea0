using System.Text.Json.Serialization;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Adapters;

// The example of docs/architecture.md ("Adding a method"), as written there: a Houlsby bottleneck after the FFN of the
// top layers only, defined outside the library.
public sealed record FfnOnlyConfig : MethodConfig                     // the record: adapter_config.json's "config"
{ [JsonPropertyName("adapter_size")] public int AdapterSize { get; init; } = 64; }
public sealed class FfnOnlyMethod : AdapterMethod<FfnOnlyConfig>      // its presets and its injector
{
    public override IReadOnlyList<MethodConfig> Presets { get; } = [new FfnOnlyConfig { Method = "ffn-only", Layers = [10, 11], TrainLayerNorms = true }];
    protected override void Inject(FfnOnlyConfig config, AdapterInjection injection)
    {
        foreach (var slot in injection.SublayerSlotsOf(config, attention: false, ffn: true))
            injection.Place(slot, new BottleneckAdapter(injection.Config.HiddenSize, BottleneckConfig.Pfeiffer with { AdapterSize = config.AdapterSize }, config.TrainLayerNorms ? slot.LayerNorm : null));
        injection.AddLayerNormCopies(config);
    }
}

/// <summary>A method from outside the library goes through the seam: nothing else needs to know of it.</summary>
[Collection(SequentialCollection.Name)]
public class SeamTests
{
    static readonly Lazy<bool> Registered = new(() =>
    {
        MethodRegistry.Register(new FfnOnlyMethod());
        return true;
    });

    [Fact]
    public void A_registered_method_trains_exactly_its_tensors_saves_and_loads_by_its_method_key()
    {
        _ = Registered.Value;
        var head = HeadConfig.Classification(["neg", "pos"]);
        var encoder = Pretrained.Load(TinyTask.CreateModelDir(seed: 5));
        var config = (FfnOnlyConfig)MethodRegistry.Get("ffn-only") with { AdapterSize = 4, Layers = [1] }; // TinyBert has layers 0 and 1
        var tokenizer = TinyTask.Tokenizer();
        var train = EncodedDataset.Encode(TinyTask.Examples(64, 1), tokenizer, head, 32, false, out _);
        var dir = Path.Combine(Directory.CreateTempSubdirectory("adaptersharp-seam-").FullName, "adapter");
        float[][] expected;
        using (var model = TrainingJob.CreateModel(encoder, "ffn", config, head, seed: 1))
        {
            var before = StateDict.Tensors(model).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value).Bytes);
            new Trainer(model, "ffn", new TrainOptions { Epochs = 1, BatchSize = 16, TimeBudget = null }, CPU).Train(train, train, ["accuracy"]);
            var changed = StateDict.Tensors(model).Where(kv => !before[kv.Key].AsSpan().SequenceEqual(StateDict.FromTensor(kv.Value).Bytes))
                .Select(kv => kv.Key).Order().ToList();
            Assert.Equal(
            [
                "bert.encoder.layer.1.attention.output.adapters.ffn.LayerNorm.bias", "bert.encoder.layer.1.attention.output.adapters.ffn.LayerNorm.weight",
                "bert.encoder.layer.1.output.adapters.ffn.LayerNorm.bias", "bert.encoder.layer.1.output.adapters.ffn.LayerNorm.weight",
                "bert.encoder.layer.1.output.adapters.ffn.down.bias", "bert.encoder.layer.1.output.adapters.ffn.down.weight",
                "bert.encoder.layer.1.output.adapters.ffn.up.bias", "bert.encoder.layer.1.output.adapters.ffn.up.weight",
                "heads.ffn.classifier.bias", "heads.ffn.classifier.weight",
            ], changed);
            AdapterFiles.Save(dir, new AdapterManifest { Name = "ffn", Config = config, Head = head, BaseModel = BaseModelIdentity.Of(encoder), MaxLength = 32 },
                model.AdapterTensors("ffn"));
            expected = Trainer.Predict(model, train, 16, CPU);
        }
        Assert.Contains("\"method\": \"ffn-only\"", File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile)));
        using var fresh = AdapterModel.FromPretrained(encoder);
        var manifest = AdapterFiles.Load(dir, fresh, BaseModelIdentity.Of(encoder));
        Assert.Equal(4, Assert.IsType<FfnOnlyConfig>(manifest.Config).AdapterSize);
        fresh.Active = "ffn";
        var actual = Trainer.Predict(fresh, train, 16, CPU);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i]);
    }

    /// <summary>A method whose module adds something but gives no per-row form.</summary>
    sealed record OpaqueConfig : MethodConfig
    {
        public static readonly OpaqueConfig Default = new() { Method = "opaque-seam-test" };
    }

    sealed class OpaqueAdapter() : SublayerAdapter(nameof(OpaqueAdapter))
    {
        public override bool AddsToOutput => true;

        public override Tensor? Delta(Tensor sublayer, Tensor residual, AdapterSharp.Model.ForwardPass pass) => sublayer * 0.5;
    }

    sealed class OpaqueMethod : AdapterMethod<OpaqueConfig>
    {
        public override IReadOnlyList<MethodConfig> Presets { get; } = [OpaqueConfig.Default];

        protected override void Inject(OpaqueConfig config, AdapterInjection injection) =>
            injection.Place(injection.SublayerSlots.First(s => s.Kind == SlotKind.FfnOutput), new OpaqueAdapter());
    }

    static readonly Lazy<bool> OpaqueRegistered = new(() =>
    {
        MethodRegistry.Register(new OpaqueMethod());
        return true;
    });

    [Fact]
    public void A_module_without_a_per_row_form_keeps_its_adapter_out_of_mixed_batches_and_says_so()
    {
        _ = OpaqueRegistered.Value;
        using var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        model.AddAdapter("opaque", OpaqueConfig.Default, HeadConfig.Classification(["a", "b"]));
        model.AddAdapter("h", BottleneckConfig.Houlsby with { AdapterSize = 4 }, HeadConfig.Classification(["a", "b"]));
        model.eval();
        var (ids, mask, types) = TinyBert.Batch(1, 4, 5);
        using var noGrad = no_grad();
        var error = Assert.Throws<ArgumentException>(() => model.LogitsPerRow(ids, mask, types, ["opaque", "h"]));
        Assert.Contains("'opaque' (opaque-seam-test) cannot join a mixed batch", error.Message);
        using var logits = model.LogitsPerRow(ids, mask, types, ["h", null]).Logits; // the others still mix
    }

    [Fact]
    public void A_taken_method_name_cannot_be_registered_again()
    {
        var error = Assert.Throws<ArgumentException>(() => MethodRegistry.Register(new BottleneckMethod()));
        Assert.StartsWith("method name 'houlsby' is empty or taken", error.Message);
    }

    [Fact]
    public void An_adapter_config_naming_an_unknown_method_is_a_one_line_error()
    {
        var dir = Directory.CreateTempSubdirectory("adaptersharp-seam-").FullName;
        File.WriteAllText(Path.Combine(dir, AdapterFiles.ConfigFile),
            """{"format": "adaptersharp-adapter", "format_version": 1, "name": "x", "config": {"method": "nosuch"}, "head": {"kind": "regression"}, "base_model": {}}""");
        var error = Assert.Throws<ModelFormatException>(() => AdapterFiles.ReadManifest(dir));
        Assert.StartsWith($"{Path.Combine(dir, AdapterFiles.ConfigFile)}: invalid adapter config: unknown method 'nosuch' (known: houlsby,", error.Message);
        File.WriteAllText(Path.Combine(dir, AdapterFiles.ConfigFile),
            """{"format": "adaptersharp-adapter", "format_version": 1, "name": "x", "config": {"r": 4}, "head": {"kind": "regression"}, "base_model": {}}""");
        Assert.EndsWith("invalid adapter config: the adapter config names no \"method\"", Assert.Throws<ModelFormatException>(() => AdapterFiles.ReadManifest(dir)).Message);
    }
}
