using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Heads;

/// <summary>Token-classification heads in the model: per-position logits, alone and in mixed batches beside [CLS] heads.</summary>
public sealed class TokenClassificationTests
{
    static readonly int[] Lengths = [7, 3, 9, 5, 9, 2];
    static readonly string?[] Rows = ["tags", "cls", null, "tags", "reg", "tags"];

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
    public void A_mixed_batch_of_token_and_cls_heads_equals_each_row_alone()
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
