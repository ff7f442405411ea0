using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Heads;

/// <summary>
/// Every-position heads (token classification, question answering) in the model: per-position logits, alone and in
/// mixed batches beside [CLS] heads (classification, regression) and rows without an adapter.
/// </summary>
public sealed class TokenClassificationTests
{
    static readonly int[] Lengths = [7, 3, 9, 5, 9, 2];
    static readonly string?[] Rows = ["tags", "cls", null, "qa", "reg", "tags"];

    static AdapterModel Create()
    {
        var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(5);
        void Add(string name, MethodConfig config, HeadConfig head)
        {
            model.AddAdapter(name, config is BottleneckConfig b ? b with { Init = AdapterInit.Bert } : config, head);
            using var noGrad = no_grad();
            foreach (var tensor in model.Record(name).Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.05);
        }
        Add("tags", BottleneckConfig.Houlsby with { AdapterSize = 8 }, HeadConfig.TokenClassification(["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]));
        Add("cls", BottleneckConfig.Pfeiffer with { AdapterSize = 4 }, HeadConfig.Classification(["a", "b", "c"]));
        Add("reg", BottleneckConfig.Houlsby with { AdapterSize = 4 }, HeadConfig.Regression());
        Add("qa", BottleneckConfig.ParallelAdapter with { AdapterSize = 8 }, HeadConfig.QuestionAnswering());
        model.FreezeAll();
        model.eval();
        return model;
    }

    [Fact]
    public void A_token_head_gives_logits_for_every_position()
    {
        using var model = Create();
        model.Active = "tags";
        var batch = TinyBert.Batch(1, 4, 6);
        using var noGrad = no_grad();
        Assert.Equal([2L, 6, 5], model.Logits(batch.Ids, batch.Mask, batch.Types).shape);
    }

    [Fact]
    public void A_mixed_batch_of_token_qa_and_cls_heads_equals_each_row_alone()
    {
        using var model = Create();
        var batch = TinyBert.Batch(11, Lengths);
        using var noGrad = no_grad();
        var mixed = model.LogitsPerRow(batch.Ids, batch.Mask, batch.Types, Rows);
        Assert.Equal([Lengths.Length, Lengths.Max(), 5], mixed.Logits.shape);
        var rows = mixed.ToArrays(Lengths);
        for (int row = 0; row < Rows.Length; row++)
        {
            if (Rows[row] is not { } name)
            {
                Assert.Empty(rows[row]);
                continue;
            }
            Tensor Cut(Tensor t) => t.narrow(0, row, 1).narrow(1, 0, Lengths[row]);
            model.Active = name;
            var alone = model.Logits(Cut(batch.Ids), Cut(batch.Mask), Cut(batch.Types)).to_type(ScalarType.Float32).flatten().data<float>().ToArray();
            model.Active = null;
            Assert.Equal(alone.Length, rows[row].Length);
            float diff = alone.Zip(rows[row], (a, b) => Math.Abs(a - b)).Max();
            Assert.True(diff <= 1e-5f, $"row {row} ({name}): differs by {diff}");
        }
    }
}

/// <summary>Each head kind saved with its adapter and loaded again gives the same outputs, bit for bit.</summary>
public sealed class HeadRoundTripTests : IDisposable
{
    readonly AdapterSharp.Tests.Checkpoints.TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    public static TheoryData<string> Kinds() => ["classification", "regression", "token-classification", "question-answering"];

    static HeadConfig Head(string kind) => kind switch
    {
        "classification" => HeadConfig.Classification(["a", "b", "c"]),
        "regression" => HeadConfig.Regression(),
        "token-classification" => HeadConfig.TokenClassification(["B-X", "I-X", "O"]),
        _ => HeadConfig.QuestionAnswering(),
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Save_then_load_gives_identical_outputs(string kind)
    {
        var modelDir = TinyTask.CreateModelDir(seed: 9);
        var encoder = AdapterSharp.Checkpoints.Pretrained.Load(modelDir);
        var identity = AdapterSharp.Checkpoints.BaseModelIdentity.Of(encoder);
        var head = Head(kind);
        var data = AdapterSharp.Data.EncodedDataset.Unlabelled([("good w1 w2 bad", null), ("w3", "w4 w5 good")], encoder.Tokenizer, 32);
        float[][] before;
        var folder = Path.Combine(dir.Path, kind);
        using (var model = AdapterSharp.Training.TrainingJob.CreateModel(encoder, "x", BottleneckConfig.Houlsby with { AdapterSize = 4 }, head, 3))
        {
            using (no_grad())
                foreach (var tensor in model.Record("x").Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.3);
            before = AdapterSharp.Training.Trainer.Predict(model, data, 8, CPU);
            AdapterSharp.Checkpoints.AdapterFiles.Save(folder, new AdapterSharp.Checkpoints.AdapterManifest
            {
                Name = "x", Config = model.Adapters["x"], Head = head, BaseModel = identity, MaxLength = 32,
            }, model.AdapterTensors("x"));
        }
        using var loaded = AdapterModel.FromPretrained(encoder);
        var manifest = AdapterSharp.Checkpoints.AdapterFiles.Load(folder, loaded, identity);
        Assert.Equal(kind, manifest.Head.Kind);
        Assert.Equal(head.Labels, manifest.Head.Labels);
        loaded.Active = "x";
        var after = AdapterSharp.Training.Trainer.Predict(loaded, data, 8, CPU);
        Assert.Equal(before.Length, after.Length);
        for (int i = 0; i < before.Length; i++) Assert.Equal(before[i], after[i]);
    }
}

/// <summary>AdapterFusion and Stack end in heads of every kind: a fusion or a stacked adapter with a token or QA head.</summary>
public sealed class CompositionHeadTests
{
    [Fact]
    public void A_fusion_and_a_stack_with_every_position_heads_give_per_position_outputs()
    {
        using var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(6);
        model.AddAdapter("a", BottleneckConfig.Houlsby with { AdapterSize = 4 }, HeadConfig.Classification(["x", "y"]));
        model.AddAdapter("b", BottleneckConfig.Houlsby with { AdapterSize = 4 }, HeadConfig.Classification(["x", "y"]));
        model.AddFusion("f", new FusionConfig { Adapters = ["a", "b"] }, HeadConfig.TokenClassification(["B-X", "I-X", "O"]));
        model.AddAdapter("top", BottleneckConfig.Houlsby with { AdapterSize = 4 }, HeadConfig.QuestionAnswering());
        model.eval();
        var batch = TinyBert.Batch(2, 5, 7);
        using var noGrad = no_grad();

        model.ActivateFusion("f");
        Assert.Equal([2L, 7, 3], model.Logits(batch.Ids, batch.Mask, batch.Types).shape);
        model.Composition = new Stack(["a", "top"]);
        Assert.Equal([2L, 7, 2], model.Logits(batch.Ids, batch.Mask, batch.Types).shape);
    }
}
