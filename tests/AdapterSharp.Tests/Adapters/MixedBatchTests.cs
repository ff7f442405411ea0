using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Adapters;

/// <summary>Mixed batches: every row through its own adapter in one pass, checked row by row against running it alone.</summary>
public class MixedBatchTests
{
    static readonly int[] Lengths = [7, 3, 9, 5, 9, 2, 6, 8, 4, 9];
    static readonly string?[] Rows = ["h8", null, "pf", "par", "mh", "ln", "h16", null, "h8", "par"];

    /// <summary>
    /// Adapters of every kind that can share a batch: sizes 8/16/12 and multi-head 4×4, serial and parallel,
    /// relu/gelu/tanh/swish, one on layer 1 only, one LayerNorm-only, heads of 2-4 labels and a regression.
    /// Everything an adapter owns is perturbed, so that a row given another row's slice shows.
    /// </summary>
    static AdapterModel Create()
    {
        var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(4);
        Add(model, "h8", BottleneckConfig.Houlsby with { AdapterSize = 8 }, HeadConfig.Classification(["a", "b"]));
        Add(model, "h16", BottleneckConfig.Houlsby with { AdapterSize = 16, Layers = [1] }, HeadConfig.Classification(["a", "b", "c"]));
        Add(model, "pf", BottleneckConfig.Pfeiffer with { AdapterSize = 12, NonLinearity = "gelu" }, HeadConfig.Regression());
        Add(model, "par", BottleneckConfig.ParallelAdapter with { AdapterSize = 8, NonLinearity = "tanh" }, HeadConfig.Classification(["a", "b", "c", "d"]));
        Add(model, "mh", BottleneckConfig.MultiHead with { AdapterSize = 4, Heads = 4, NonLinearity = "swish" }, HeadConfig.Classification(["a", "b"]));
        Add(model, "ln", BaselineConfig.LayerNorm, HeadConfig.Classification(["a", "b", "c"]));
        return model;
    }

    static void Add(AdapterModel model, string name, MethodConfig config, HeadConfig head)
    {
        model.AddAdapter(name, config is BottleneckConfig bottleneck ? bottleneck with { Init = AdapterInit.Bert } : config, head);
        using var noGrad = no_grad();
        foreach (var tensor in model.Record(name).Tensors)
            tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.05);
        model.FreezeAll();
        model.eval();
    }

    /// <summary>Row <paramref name="row"/> alone, cut to its own length, with its adapter active.</summary>
    static (Tensor Hidden, Tensor? Logits) Alone(AdapterModel model, (Tensor Ids, Tensor Mask, Tensor Types) batch, int row, string? name)
    {
        int length = Lengths[row];
        Tensor Cut(Tensor t) => t.narrow(0, row, 1).narrow(1, 0, length);
        model.Active = name;
        try
        {
            var hidden = model.Encode(Cut(batch.Ids), Cut(batch.Mask), Cut(batch.Types)); // (1, length, d)
            var logits = name is null ? null : model.Logits(Cut(batch.Ids), Cut(batch.Mask), Cut(batch.Types)); // (1, labels)
            return (hidden[0], logits?[0]);
        }
        finally
        {
            model.Active = null;
        }
    }

    static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    static void AssertRowsMatchAlone(AdapterModel model, string?[] rows)
    {
        var batch = TinyBert.Batch(11, Lengths);
        using var scope = NewDisposeScope();
        var hidden = model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, rows);
        var logits = model.LogitsPerRow(batch.Ids, batch.Mask, batch.Types, rows);
        Assert.Equal([Lengths.Length, 4], logits.Logits.shape);
        for (int row = 0; row < rows.Length; row++)
        {
            var alone = Alone(model, batch, row, rows[row]);
            var hiddenDiff = MaxDiff(hidden[row].narrow(0, 0, Lengths[row]), alone.Hidden);
            Assert.True(hiddenDiff <= 1e-5f, $"row {row} ({rows[row] ?? "none"}): hidden differs by {hiddenDiff}");
            int outputs = logits.Outputs[row];
            Assert.Equal(alone.Logits?.shape[0] ?? 0, outputs);
            if (alone.Logits is { } expected)
            {
                var logitDiff = MaxDiff(logits.Logits[row].narrow(0, 0, outputs), expected);
                Assert.True(logitDiff <= 1e-5f, $"row {row} ({rows[row]}): logits differ by {logitDiff}");
            }
            var padding = logits.Logits[row].narrow(0, outputs, 4 - outputs);
            Assert.True(padding.eq(float.NegativeInfinity).all().item<bool>(), $"row {row}: padding is not -inf");
        }
    }

    [Fact]
    public void Mixed_rows_each_equal_running_that_row_alone_with_its_adapter()
    {
        using var model = Create();
        using var noGrad = no_grad();
        AssertRowsMatchAlone(model, Rows);
    }

    [Fact]
    public void Rows_without_an_adapter_equal_the_base_model()
    {
        using var model = Create();
        var batch = TinyBert.Batch(12, Lengths);
        using var noGrad = no_grad();
        using var mixed = model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, Rows);
        using var plain = model.Bert.call(batch.Ids, batch.Mask, batch.Types);
        using var allNone = model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, new string?[Rows.Length]);
        for (int row = 0; row < Rows.Length; row++)
            if (Rows[row] is null)
                Assert.True(MaxDiff(mixed[row], plain[row]) <= 1e-6f, $"row {row}: {MaxDiff(mixed[row], plain[row])}");
        Assert.True(MaxDiff(allNone, plain) <= 1e-6f, $"all-none batch: {MaxDiff(allNone, plain)}");
    }

    [Fact]
    public void Bottleneck_only_sites_give_none_rows_the_base_model_bit_for_bit()
    {
        // Without LayerNorm copies the sites keep the base's fused LayerNorm, and a none row's delta is exactly 0.
        using var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        Add(model, "pf", BottleneckConfig.Pfeiffer with { AdapterSize = 12, TrainLayerNorms = false }, HeadConfig.Regression());
        var batch = TinyBert.Batch(13, 5, 8, 3);
        using var noGrad = no_grad();
        using var mixed = model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, [null, "pf", null]);
        using var plain = model.Bert.call(batch.Ids, batch.Mask, batch.Types);
        Assert.Equal(0f, MaxDiff(mixed[0], plain[0]));
        Assert.Equal(0f, MaxDiff(mixed[2], plain[2]));
        Assert.True(MaxDiff(mixed[1], plain[1]) > 1e-3f);
    }

    [Fact]
    public void Removing_and_adding_adapters_between_batches_rebuilds_the_stacks()
    {
        using var model = Create();
        using var noGrad = no_grad();
        AssertRowsMatchAlone(model, Rows);

        model.RemoveAdapter("pf"); // shifts the slots of the adapters after it
        var batch = TinyBert.Batch(11, Lengths);
        var error = Assert.Throws<ArgumentException>(() => model.LogitsPerRow(batch.Ids, batch.Mask, batch.Types, Rows));
        Assert.Contains("'pf'", error.Message);
        var withoutPf = Rows.Select(r => r == "pf" ? "mh" : r).ToArray();
        AssertRowsMatchAlone(model, withoutPf);

        Add(model, "new", BottleneckConfig.Pfeiffer with { AdapterSize = 24, NonLinearity = "identity" }, HeadConfig.Classification(["x", "y"]));
        AssertRowsMatchAlone(model, withoutPf.Select(r => r == "h8" ? "new" : r).ToArray());
    }

    [Fact]
    public void Changing_adapter_weights_is_seen_after_invalidating_the_stacks()
    {
        using var model = Create();
        using var noGrad = no_grad();
        AssertRowsMatchAlone(model, Rows);
        foreach (var tensor in model.Record("par").Tensors)
            tensor.Parameter.add_(0.1);
        model.InvalidateRowStacks();
        AssertRowsMatchAlone(model, Rows);
    }

    [Fact]
    public void Adapters_that_change_the_base_cannot_share_the_model()
    {
        // Full and top-k write into the shared base, so they are refused as soon as other adapters are loaded:
        // they never reach a mixed batch.
        using var model = Create();
        var error = Assert.Throws<ArgumentException>(() => model.AddAdapter("ft", BaselineConfig.Full, HeadConfig.Classification(["a", "b"])));
        Assert.Contains("'ft' (full) changes base weights", error.Message);
        Assert.DoesNotContain("ft", model.Adapters.Keys);
        AssertRowsMatchAlone(model, Rows);
    }

    [Fact]
    public void Unknown_names_and_wrong_row_counts_are_rejected_and_leave_no_selection_behind()
    {
        using var model = Create();
        var batch = TinyBert.Batch(11, Lengths);
        using var noGrad = no_grad();
        var rows = Rows.Select(r => r == "ln" ? "nope" : r).ToArray();
        Assert.Contains("no adapter named 'nope'", Assert.Throws<ArgumentException>(() => model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, rows)).Message);
        Assert.Throws<ArgumentException>(() => model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, ["h8"]));
        using var hidden = model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, Rows);
        AssertRowsMatchAlone(model, Rows);
    }

    [Fact]
    public void Repeated_mixed_batches_leave_the_live_tensor_count_flat()
    {
        using var model = Create();
        var batch = TinyBert.Batch(11, Lengths);
        using var noGrad = no_grad();
        model.LogitsPerRow(batch.Ids, batch.Mask, batch.Types, Rows).Logits.Dispose(); // builds the stacks
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++)
            model.LogitsPerRow(batch.Ids, batch.Mask, batch.Types, Rows).Logits.Dispose();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void Bfloat16_products_run_per_row_too()
    {
        using var model = Create();
        model.UseMatmulType(ScalarType.BFloat16);
        var batch = TinyBert.Batch(11, Lengths);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var hidden = model.EncodePerRow(batch.Ids, batch.Mask, batch.Types, Rows);
        Assert.Equal(ScalarType.Float32, hidden.dtype);
        for (int row = 0; row < Rows.Length; row++)
        {
            var alone = Alone(model, batch, row, Rows[row]);
            var diff = MaxDiff(hidden[row].narrow(0, 0, Lengths[row]), alone.Hidden);
            Assert.True(diff <= 5e-2f, $"row {row}: {diff}");
        }
    }

    [Fact]
    public void Bench_mixed_check_finds_each_row_equal_to_the_row_alone()
    {
        // bench mixed --check: random padding, heads of three sizes, every 7th row on no adapter.
        var records = AdapterSharp.Benchmarks.MixedBatchBenchmark.Check("bert-base-ops", batch: 8, seq: 6, adapterCounts: [1, 4], CPU, "fp32").ToList();

        Assert.Equal(new[] { 1, 4 }, records.Select(r => (int)r["adapters"]));
        Assert.All(records, r => Assert.InRange((double)r["max_abs_diff"], 0, 1e-5));
    }
}
