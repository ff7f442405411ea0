using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Tests.Cli;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Adapters;

/// <summary>
/// One case of the method theory: a method as the command line picks it, its configuration, the configuration
/// whose start is exactly the base model (null where the method has none), which model tensors training must
/// change (written out here, not read from the model's ownership record), and its trainable parameter count on
/// TinyBert (a formula written out here), of which <paramref name="OfBase"/> are base parameters it fine-tunes.
/// </summary>
public sealed record MethodCase(string Name, string[] Cli, MethodConfig Config, MethodConfig? IdentityStart, IReadOnlyList<string> Trained, long Parameters,
    long OfBase = 0)
{
    public override string ToString() => Name;
}

/// <summary>
/// Every method through the same assertions, on TinyBert (2 layers, d = 32, FFN 64, vocabulary 100, 64 positions,
/// 2 token types) with a 2-label head and adapter name "task": an identity start equals the base model; training
/// changes exactly the method's tensors; save → load predicts identically; <c>params</c> counts what a formula says.
/// </summary>
[Collection(SequentialCollection.Name)]
public class MethodTheory
{
    const int D = 32, L = 2, I = 64, V = 100, P = 64, T = 2;
    const long Head = D * 2 + 2;
    const long LayerNorm = 2 * D;

    /// <summary>A bottleneck d → heads·m → d: down (heads·m × d + heads·m), up (d × m + d).</summary>
    static long Bottleneck(long m, long heads = 1) => heads * m * D + heads * m + m * D + D;

    static readonly string[] BaseLayerParts =
    [
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "attention.output.LayerNorm",
        "intermediate.dense", "output.dense", "output.LayerNorm",
    ];

    const long BaseLayer = 4 * (D * D + D) + LayerNorm + (D * I + I) + (I * D + D) + LayerNorm;
    const long BaseEmbeddings = (V + P + T) * D + LayerNorm;

    static IEnumerable<string> WeightAndBias(string prefix) => [$"{prefix}.weight", $"{prefix}.bias"];

    static IEnumerable<string> HeadKeys => WeightAndBias("heads.task.classifier");

    /// <summary>Adapter parts at the attention-output ("attention.output") or FFN-output ("output") site of a layer.</summary>
    static IEnumerable<string> AtSite(int layer, string site, params string[] parts) =>
        parts.SelectMany(p => WeightAndBias($"bert.encoder.layer.{layer}.{site}.adapters.task.{p}"));

    static IEnumerable<string> EmbeddingLayerNorm => WeightAndBias("bert.embeddings.adapters.task.LayerNorm");

    static IEnumerable<string> BaseLayerKeys(int layer) => BaseLayerParts.SelectMany(p => WeightAndBias($"bert.encoder.layer.{layer}.{p}"));

    static IEnumerable<string> BaseEmbeddingKeys =>
    [
        "bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight",
        .. WeightAndBias("bert.embeddings.LayerNorm"),
    ];

    static IEnumerable<int> Layers => Enumerable.Range(0, L);

    public static IEnumerable<MethodCase> Cases()
    {
        var houlsby = BottleneckConfig.Houlsby;
        yield return new MethodCase("houlsby", ["--method", "houlsby"], houlsby, houlsby with { Init = AdapterInit.Zero },
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => AtSite(l, "attention.output", "down", "up", "LayerNorm").Concat(AtSite(l, "output", "down", "up", "LayerNorm"))), .. HeadKeys],
            2 * L * Bottleneck(64) + (2 * L + 1) * LayerNorm + Head);

        var pfeiffer = BottleneckConfig.Pfeiffer with { AdapterSize = 16 };
        yield return new MethodCase("pfeiffer", ["--method", "pfeiffer", "--adapter-size", "16"], pfeiffer, pfeiffer with { Init = AdapterInit.Zero },
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => AtSite(l, "attention.output", "LayerNorm").Concat(AtSite(l, "output", "down", "up", "LayerNorm"))), .. HeadKeys],
            L * Bottleneck(16) + (2 * L + 1) * LayerNorm + Head);

        var parallel = BottleneckConfig.ParallelAdapter with { AdapterSize = 8 };
        yield return new MethodCase("parallel", ["--method", "parallel", "--adapter-size", "8"], parallel, parallel with { Init = AdapterInit.Zero },
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => AtSite(l, "attention.output", "LayerNorm").Concat(AtSite(l, "output", "down", "up", "LayerNorm"))), .. HeadKeys],
            L * Bottleneck(8) + (2 * L + 1) * LayerNorm + Head);

        var reverse = BottleneckConfig.Reverse; // m = d / 0.5
        yield return new MethodCase("reverse", ["--method", "reverse"], reverse, reverse with { Init = AdapterInit.Zero },
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => AtSite(l, "attention.output", "down", "up", "LayerNorm").Concat(AtSite(l, "output", "down", "up", "LayerNorm"))), .. HeadKeys],
            2 * L * Bottleneck(2 * D) + (2 * L + 1) * LayerNorm + Head);

        var multihead = BottleneckConfig.MultiHead with { AdapterSize = 8 }; // 4 heads
        yield return new MethodCase("multihead", ["--method", "multihead", "--adapter-size", "8"], multihead, multihead with { Init = AdapterInit.Zero },
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => AtSite(l, "attention.output", "down", "up", "LayerNorm").Concat(AtSite(l, "output", "down", "up", "LayerNorm"))), .. HeadKeys],
            2 * L * Bottleneck(8, heads: 4) + (2 * L + 1) * LayerNorm + Head);

        var lastLayers = BottleneckConfig.Houlsby with { AdapterSize = 8, Layers = [1], TrainLayerNorms = false };
        yield return new MethodCase("houlsby-layer-1-frozen-norms", ["--method", "houlsby", "--adapter-size", "8", "--layers", "1", "--freeze-layer-norms"],
            lastLayers, lastLayers with { Init = AdapterInit.Zero },
            [.. AtSite(1, "attention.output", "down", "up"), .. AtSite(1, "output", "down", "up"), .. HeadKeys],
            2 * Bottleneck(8) + Head);

        var hybrid = BottleneckConfig.Houlsby with { AdapterSize = 8, TrainTopLayers = 1 };
        yield return new MethodCase("hybrid (houlsby + top-1)", ["--method", "houlsby", "--adapter-size", "8", "--train-top-k", "1"], hybrid,
            hybrid with { Init = AdapterInit.Zero },
            // Layer 1's base LayerNorms stay: the adapter's own copies replace them there.
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => AtSite(l, "attention.output", "down", "up", "LayerNorm").Concat(AtSite(l, "output", "down", "up", "LayerNorm"))),
                .. BaseLayerKeys(1).Where(k => !k.Contains("LayerNorm")), .. HeadKeys],
            2 * L * Bottleneck(8) + (2 * L + 1) * LayerNorm + BaseLayer - 2 * LayerNorm + Head, OfBase: BaseLayer - 2 * LayerNorm);

        var hierarchical = HierarchicalConfig.Default with { AdapterSizes = [4, 8] };
        yield return new MethodCase("hierarchical", ["--method", "hierarchical", "--adapter-sizes", "4,8"], hierarchical, hierarchical with { Init = AdapterInit.Zero },
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => new[] { "attention.output", "output" }.SelectMany(site =>
                AtSite(l, site, "levels.0.down", "levels.0.up", "levels.1.down", "levels.1.up", "LayerNorm"))), .. HeadKeys],
            2 * L * (Bottleneck(4) + Bottleneck(8)) + (2 * L + 1) * LayerNorm + Head);

        var shared = SharedConfig.Default with { AdapterSize = 8 };
        yield return new MethodCase("shared", ["--method", "shared", "--adapter-size", "8"], shared, shared with { Init = AdapterInit.Zero },
            // One bottleneck for the whole model, stored once under shared.task; a LayerNorm copy at every site.
            [.. WeightAndBias("shared.task.down"), .. WeightAndBias("shared.task.up"), .. EmbeddingLayerNorm,
                .. Layers.SelectMany(l => AtSite(l, "attention.output", "LayerNorm").Concat(AtSite(l, "output", "LayerNorm"))), .. HeadKeys],
            Bottleneck(8) + (2 * L + 1) * LayerNorm + Head);

        var dynamic = DynamicConfig.Default with { AdapterSize = 8 };
        yield return new MethodCase("dynamic", ["--method", "dynamic", "--adapter-size", "8"], dynamic, dynamic with { Init = AdapterInit.Zero },
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => new[] { "attention.output", "output" }.SelectMany(site =>
                AtSite(l, site, "down", "up", "controller", "LayerNorm"))), .. HeadKeys],
            2 * L * (Bottleneck(8) + D + 1) + (2 * L + 1) * LayerNorm + Head);

        var lora = LoraConfig.Default with { Rank = 4, Alpha = 8 };
        yield return new MethodCase("lora", ["--method", "lora", "--lora-r", "4", "--lora-alpha", "8"], lora, lora,
            // Inside the query and value projections of every layer; LayerNorms frozen, as PEFT has it.
            [.. Layers.SelectMany(l => new[] { "query", "value" }.SelectMany(p => new[] { "lora_A", "lora_B" }
                .Select(part => $"bert.encoder.layer.{l}.attention.self.{p}_adapters.task.{part}.weight"))), .. HeadKeys],
            L * 2 * (4 * D + D * 4) + Head);

        var loraEverywhere = LoraConfig.Default with
        {
            Rank = 2, Dropout = 0.1, Layers = [1], TrainLayerNorms = true,
            TargetModules = ["query", "key", "value", "attention-output", "intermediate", "output"],
        };
        yield return new MethodCase("lora on every projection of layer 1, LayerNorms trained",
            ["--method", "lora", "--lora-r", "2", "--lora-dropout", "0.1", "--layers", "1", "--train-layer-norms",
                "--lora-targets", "query,key,value,attention-output,intermediate,output"], loraEverywhere, loraEverywhere with { Dropout = 0 },
            [.. new[] { "attention.self.query_adapters", "attention.self.key_adapters", "attention.self.value_adapters", "attention.output.dense_adapters",
                    "intermediate.dense_adapters", "output.dense_adapters" }
                .SelectMany(site => new[] { "lora_A", "lora_B" }.Select(part => $"bert.encoder.layer.1.{site}.task.{part}.weight")),
                .. AtSite(1, "attention.output", "LayerNorm"), .. AtSite(1, "output", "LayerNorm"), .. HeadKeys],
            // Four d×d projections (A r×d, B d×r), then d→I (A r×d, B I×r) and I→d (A r×I, B d×r).
            4 * (2 * D + D * 2) + 2 * (2 * D + I * 2) + 2 * LayerNorm + Head);

        yield return new MethodCase("full", ["--method", "full"], BaselineConfig.Full, BaselineConfig.Full,
            [.. BaseEmbeddingKeys, .. Layers.SelectMany(BaseLayerKeys), .. HeadKeys],
            BaseEmbeddings + L * BaseLayer + Head, OfBase: BaseEmbeddings + L * BaseLayer);

        var topK = BaselineConfig.TopK with { TrainTopLayers = 1 };
        yield return new MethodCase("top-k", ["--method", "top-k", "--top-k", "1"], topK, topK,
            [.. BaseLayerKeys(1), .. HeadKeys],
            BaseLayer + Head, OfBase: BaseLayer);

        yield return new MethodCase("layernorm", ["--method", "layernorm"], BaselineConfig.LayerNorm, BaselineConfig.LayerNorm,
            [.. EmbeddingLayerNorm, .. Layers.SelectMany(l => AtSite(l, "attention.output", "LayerNorm").Concat(AtSite(l, "output", "LayerNorm"))), .. HeadKeys],
            (2 * L + 1) * LayerNorm + Head);

        yield return new MethodCase("head", ["--method", "head"], BaselineConfig.Head, BaselineConfig.Head, [.. HeadKeys], Head);
    }

    public static TheoryData<MethodCase> All => new(Cases());

    static readonly HeadConfig TwoLabels = HeadConfig.Classification(["neg", "pos"]);

    static readonly Lazy<string> ModelDir = new(() => TinyTask.CreateModelDir(seed: 3));

    static AdapterModel Create(MethodConfig config)
    {
        var model = TrainingJob.CreateModel(Pretrained.Load(ModelDir.Value), "task", config, TwoLabels, seed: 4);
        model.eval();
        return model;
    }

    static (EncodedDataset Train, EncodedDataset Dev) Data()
    {
        var tokenizer = TinyTask.Tokenizer();
        return (EncodedDataset.Encode(TinyTask.Examples(128, 1), tokenizer, TwoLabels, 32, false, out _),
            EncodedDataset.Encode(TinyTask.Examples(32, 2), tokenizer, TwoLabels, 32, false, out _));
    }

    static readonly TrainOptions OneEpoch = new() { Epochs = 1, BatchSize = 16, LearningRate = 1e-3, TimeBudget = null };

    [Fact]
    public void Every_registered_method_has_a_case()
    {
        var covered = Cases().Select(c => c.Config.Method).ToHashSet();
        // The library's own (tests may register methods of their own: SeamTests).
        Assert.All(MethodRegistry.Presets.Where(p => p.GetType().Assembly == typeof(MethodConfig).Assembly), p => Assert.Contains(p.Method, covered));
    }

    [Theory]
    [MemberData(nameof(All))]
    public void An_identity_start_gives_the_base_model_outputs(MethodCase method)
    {
        if (method.IdentityStart is null) return;
        using var model = Create(method.IdentityStart);
        var batch = TinyBert.Batch(5, 7, 4, 9);
        using var noGrad = no_grad();
        using var expected = model.Bert.call(batch.Ids, batch.Mask, batch.Types);
        using var actual = model.Encode(batch.Ids, batch.Mask, batch.Types);
        var difference = (expected - actual).abs().max().item<float>();
        Assert.True(difference <= 1e-6f, $"{method}: max difference {difference}");
    }

    [Theory]
    [MemberData(nameof(All))]
    public void Training_changes_exactly_the_methods_tensors(MethodCase method)
    {
        using var model = Create(method.Config);
        var (train, dev) = Data();
        var before = StateDict.Tensors(model).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value).Bytes);
        new Trainer(model, "task", OneEpoch, CPU).Train(train, dev, ["accuracy"]);
        var after = StateDict.Tensors(model).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value).Bytes);

        var changed = before.Keys.Where(k => !before[k].AsSpan().SequenceEqual(after[k])).Order().ToList();
        Assert.Equal(method.Trained.Order(), changed);
    }

    [Theory]
    [MemberData(nameof(All))]
    public void Save_then_load_gives_identical_predictions(MethodCase method)
    {
        var encoder = Pretrained.Load(ModelDir.Value);
        var (train, dev) = Data();
        var dir = Path.Combine(Directory.CreateTempSubdirectory("adaptersharp-theory-").FullName, "adapter");
        float[][] expected;
        using (var model = Create(method.Config))
        {
            new Trainer(model, "task", OneEpoch, CPU).Train(train, dev, ["accuracy"]);
            AdapterFiles.Save(dir, new AdapterManifest { Name = "task", Config = method.Config, Head = TwoLabels, BaseModel = BaseModelIdentity.Of(encoder), MaxLength = 32 },
                model.AdapterTensors("task"));
            expected = Trainer.Predict(model, dev, 8, CPU);
        }
        using var fresh = AdapterModel.FromPretrained(encoder);
        var manifest = AdapterFiles.Load(dir, fresh, BaseModelIdentity.Of(encoder));
        Assert.Equal(method.Config.ToJson().ToJsonString(), manifest.Config.ToJson().ToJsonString());
        fresh.Active = "task";
        var actual = Trainer.Predict(fresh, dev, 8, CPU);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i]);
    }

    [Theory]
    [MemberData(nameof(All))]
    public void In_a_mixed_batch_each_row_equals_that_row_alone_or_the_method_says_it_cannot_join(MethodCase method)
    {
        using var model = Create(method.Config);
        if (!method.Config.ModifiesBase)
            model.AddAdapter("other", BottleneckConfig.Houlsby with { AdapterSize = 8, Init = AdapterInit.Bert }, HeadConfig.Classification(["a", "b", "c"]));
        using (no_grad())
            foreach (var tensor in model.Record("task").Tensors) // off the identity start, so that every part counts
                tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.1);
        model.FreezeAll();
        model.eval();
        int[] lengths = [6, 9, 4, 7];
        string?[] rows = method.Config.ModifiesBase ? ["task", "task", "task", "task"] : ["task", "other", null, "task"];
        var batch = TinyBert.Batch(8, lengths);
        using var noGrad = no_grad();
        if (!method.Config.RowRoutable)
        {
            var error = Assert.Throws<ArgumentException>(() => model.LogitsPerRow(batch.Ids, batch.Mask, batch.Types, rows));
            Assert.Contains("run it alone", error.Message);
            return;
        }
        var mixed = model.LogitsPerRow(batch.Ids, batch.Mask, batch.Types, rows);
        var hidden = model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, rows);
        for (int row = 0; row < rows.Length; row++)
        {
            if (rows[row] is not { } name)
            {
                // A row of no adapter is the bare base model's, whatever the other rows' projection or sublayer stacks hold.
                var rowIds = batch.Ids.narrow(0, row, 1).narrow(1, 0, lengths[row]);
                using var bare = model.Bert.call(rowIds, ones_like(rowIds), batch.Types.narrow(0, row, 1).narrow(1, 0, lengths[row]));
                var difference = (hidden[row].narrow(0, 0, lengths[row]) - bare[0]).abs().max().item<float>();
                Assert.True(difference <= 1e-5f, $"{method}: row {row} (none) differs from the base by {difference}");
                continue;
            }
            model.Active = name;
            var ids = batch.Ids.narrow(0, row, 1).narrow(1, 0, lengths[row]);
            var alone = model.Logits(ids, null, batch.Types.narrow(0, row, 1).narrow(1, 0, lengths[row]))[0]; // (labels)
            var logitDifference = (mixed.Logits[row].narrow(0, 0, mixed.Outputs[row]) - alone).abs().max().item<float>();
            Assert.True(logitDifference <= 1e-5f, $"{method}: row {row} ({name}) differs by {logitDifference}");
        }
    }

    [Theory]
    [MemberData(nameof(All))]
    public void Params_counts_what_the_formula_says(MethodCase method)
    {
        var result = CliRunner.Run(["params", "--model", ModelDir.Value, .. method.Cli]);
        Assert.True(result.ExitCode == 0, result.ToString());
        long all = BaseEmbeddings + L * BaseLayer; // the base without its pooler
        long total = all + method.Parameters - method.OfBase;
        Assert.StartsWith($"trainable params: {method.Parameters:N0} || all params: {total:N0} ||", result.Stdout.Trim());
    }
}
