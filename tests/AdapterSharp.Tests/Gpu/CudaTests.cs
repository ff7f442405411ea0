using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Benchmarks;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using AdapterSharp.Native;
using AdapterSharp.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Tests.Gpu;

/// <summary>
/// A test that needs a CUDA device: skipped where TorchSharp sees none (CI, and any machine with the CPU
/// libtorch). To run them, put a CUDA libtorch first on the library path (see README, GPU).
/// </summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (!cuda.is_available()) Skip = "needs a CUDA device and a CUDA libtorch";
    }
}

/// <summary>GPU correctness: CUDA-graph steps against eager ones, fused kernels against operators, mixed batches
/// against rows alone.</summary>
[Trait("Category", "Gpu")]
public sealed class CudaTests
{
    static readonly HeadConfig TwoLabels = HeadConfig.Classification(["a", "b"]);

    // Dropout off, so that a replayed step and an eager one compute the same thing.
    static AdapterModel Model(MethodConfig? method = null)
    {
        manual_seed(0);
        var model = new AdapterModel(new BertModel(TinyBert.Config with { HiddenDropoutProb = 0, AttentionProbsDropoutProb = 0 }, addPooler: false));
        model.AddAdapter("task", method ?? BottleneckConfig.Houlsby, TwoLabels);
        model.to(CUDA);
        return model;
    }

    [CudaFact]
    public void A_captured_training_step_replays_as_the_eager_step_runs()
    {
        using var eager = Model();
        using var graphed = Model();
        var (ids, mask, types) = TinyBert.Batch(1, 9, 7, 9, 3);
        using var onDevice = NewDisposeScope();
        var (x, m, t) = (ids.to(CUDA), mask.to(CUDA), types.to(CUDA));
        var y = tensor(new long[] { 0, 1, 1, 0 }).to(CUDA);

        FlatAdamW Optimizer(AdapterModel model) =>
            new(model.TrainOnly("task").Select(p => (p.Parameter, p.Decay)).ToList(), weightDecay: 0.01);
        using var eagerOptimizer = Optimizer(eager);
        using var graphedOptimizer = Optimizer(graphed);
        void Work(AdapterModel model, FlatAdamW optimizer)
        {
            using var scope = NewDisposeScope();
            F.cross_entropy(model.Logits(x, m, t), y).backward();
            optimizer.ClipGradNorm(1.0);
            optimizer.Apply();
            optimizer.ZeroGrad();
        }

        double[] rates = [1e-3, 8e-4, 6e-4, 4e-4, 2e-4];
        foreach (var lr in rates)
        {
            eagerOptimizer.Prepare(lr);
            Work(eager, eagerOptimizer);
        }
        using (CudaGraphs.UseSideStream(CUDA))
        {
            graphedOptimizer.Prepare(rates[0]);
            Work(graphed, graphedOptimizer); // the eager warm-up step
            using var graph = new CudaGraphs.Graph();
            graph.Capture(CudaGraphs.NewPool(), () => Work(graphed, graphedOptimizer));
            foreach (var lr in rates.Skip(1))
            {
                graphedOptimizer.Prepare(lr);
                graph.Replay();
            }
        }

        var expected = eager.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, parameter) in graphed.named_parameters())
            Assert.True((parameter - expected[name]).abs().max().item<float>() <= 1e-5f, name);
        // And the steps did train: the adapters moved away from their initial values.
        using var fresh = Model();
        var moved = fresh.named_parameters().Where(p => p.name.Contains(".adapters.task.down.", StringComparison.Ordinal))
            .Max(p => (p.parameter - expected[p.name]).abs().max().item<float>());
        Assert.True(moved > 1e-4f, $"largest change {moved}");
    }

    [CudaFact]
    public void With_fused_kernels_the_model_gives_the_unfused_logits_and_gradients()
    {
        Assert.True(CudaKernels.Available, CudaKernels.Problem);
        var (ids, mask, types) = TinyBert.Batch(2, 9, 7, 9, 3);
        (Tensor Logits, Dictionary<string, Tensor> Gradients) Run(bool fused)
        {
            // A smooth non-linearity: with ReLU, the down-projections' gradients jump where a pre-activation near
            // zero changes sign, which the fused path's more exact sum can do (36% on one of them, as the same
            // arithmetic in operators gives on the CPU; 0.7% with swish there).
            using var model = Model(BottleneckConfig.Houlsby with { NonLinearity = "swish" });
            model.Bert.Kernels = fused ? FusedKernels.On : FusedKernels.Off;
            var trained = model.TrainOnly("task"); // as training does: the base frozen, then stored in bf16
            model.UseMatmulType(ScalarType.BFloat16);
            long passes = AddNorm.KernelPasses;
            using var scope = NewDisposeScope();
            var logits = model.Logits(ids.to(CUDA), mask.to(CUDA), types.to(CUDA)).to_type(ScalarType.Float32);
            logits.square().sum().backward();
            Assert.Equal(fused, AddNorm.KernelPasses > passes); // 2 layers × 2 sites each way
            var gradients = trained.ToDictionary(p => p.Key, p => p.Parameter.grad!.cpu().DetachFromDisposeScope());
            return (logits.cpu().DetachFromDisposeScope(), gradients);
        }
        var (fusedLogits, fusedGradients) = Run(fused: true);
        var (logits, gradients) = Run(fused: false);
        // bf16 products: the fused path sums a + b + residual in fp32 where the unfused one rounds a + b to bf16.
        static double Relative(Tensor x, Tensor reference) =>
            (x - reference).abs().max().item<float>() / Math.Max(reference.abs().max().item<float>(), 1e-12);
        Assert.True(Relative(fusedLogits, logits) <= 2e-2, $"logits: {Relative(fusedLogits, logits)}");
        Assert.Equal(gradients.Keys.Order(), fusedGradients.Keys.Order());
        foreach (var (name, gradient) in gradients)
            Assert.True(Relative(fusedGradients[name], gradient) <= 2e-2, $"{name}: {Relative(fusedGradients[name], gradient)}");
    }

    [CudaFact]
    public void The_fused_add_layer_norm_kernels_match_the_same_arithmetic_in_operators()
    {
        var checks = KernelBenchmark.AddNormRecords(CUDA, rows: 4096, hidden: 768, steps: 1, seed: 0)
            .Where(r => r.ContainsKey("check") && (string)r["pair"] == "kernels-vs-operators").ToList();
        Assert.True(checks.Count == 2, $"the kernels did not run: {CudaKernels.Problem ?? "switched off"}"); // with and without an adapter's output
        foreach (var record in checks)
        {
            foreach (var name in new[] { "y", "dr", "dweight", "dbias" }) // float32
                Assert.True((double)record[name] <= 1e-5, $"{name}: {record[name]}");
            foreach (var name in new[] { "y_low", "da" }) // bfloat16: one rounding step of the largest value at most
                Assert.True((double)record[name] <= 1.0 / 128, $"{name}: {record[name]}");
        }
    }

    [CudaFact]
    public void Mixed_batches_on_the_gpu_equal_each_row_alone_in_fp32()
    {
        foreach (var record in MixedBatchBenchmark.Check("minilm-l6", batch: 32, seq: 32, adapterCounts: [1, 8, 32], CUDA, "fp32"))
            Assert.True((double)record["max_abs_diff"] <= 1e-5, $"K = {record["adapters"]}: {record["max_abs_diff"]}");
    }

    [CudaFact]
    public void Mixed_batches_of_lora_houlsby_and_none_rows_on_the_gpu_equal_each_row_alone_in_fp32()
    {
        foreach (var record in MixedBatchBenchmark.Check("minilm-l6", batch: 32, seq: 32, adapterCounts: [2, 8, 32], CUDA, "fp32", ["lora", "houlsby"]))
            Assert.True((double)record["max_abs_diff"] <= 1e-5, $"K = {record["adapters"]}: {record["max_abs_diff"]}");
    }

    [CudaFact]
    public void A_mixed_batch_of_token_qa_and_cls_heads_on_the_gpu_equals_each_row_alone_in_fp32()
    {
        int[] lengths = [7, 3, 9, 5, 9, 2];
        string?[] rows = ["tags", "cls", null, "qa", "reg", "tags"];
        using var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(5);
        foreach (var (name, head) in new[] { ("tags", HeadConfig.TokenClassification(["B-X", "I-X", "O"])), ("cls", HeadConfig.Classification(["a", "b", "c"])),
                     ("reg", HeadConfig.Regression()), ("qa", HeadConfig.QuestionAnswering()) })
        {
            model.AddAdapter(name, BottleneckConfig.Houlsby with { AdapterSize = 8, Init = AdapterInit.Bert }, head);
            using var noGrad = no_grad();
            foreach (var tensor in model.Record(name).Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.05);
        }
        model.PrepareForInference(CUDA, ScalarType.Float32);
        var (ids, mask, types) = TinyBert.Batch(11, lengths);
        using var scope = NewDisposeScope();
        using var noGradients = no_grad();
        var (x, m, t) = (ids.to(CUDA), mask.to(CUDA), types.to(CUDA));
        var mixed = model.LogitsPerRow(x, m, t, rows).ToArrays(lengths);
        for (int row = 0; row < rows.Length; row++)
        {
            if (rows[row] is not { } name) continue;
            Tensor Cut(Tensor v) => v.narrow(0, row, 1).narrow(1, 0, lengths[row]);
            model.Active = name;
            var alone = model.Logits(Cut(x), Cut(m), Cut(t)).to_type(ScalarType.Float32).flatten().cpu().data<float>().ToArray();
            model.Active = null;
            Assert.Equal(alone.Length, mixed[row].Length);
            float diff = alone.Zip(mixed[row], (a, b) => Math.Abs(a - b)).Max();
            Assert.True(diff <= 1e-5f, $"row {row} ({name}): differs by {diff}");
        }
    }

    /// <summary>
    /// Per-position labels (token classification) and answer spans (QA) go through the captured steps' fixed inputs:
    /// training with CUDA graphs ends where eager training does (dropout off; the graphs pad batches to 16 positions,
    /// which masked positions and ignored labels make no difference to, up to rounding).
    /// </summary>
    [CudaFact]
    public void Token_and_span_targets_train_the_same_with_cuda_graphs_as_eagerly()
    {
        var tokenizer = AdapterSharp.Text.BertTokenizer.FromVocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", .. Enumerable.Range(0, 95).Select(i => $"w{i}")]);
        var random = new Random(3);
        string Words(int n) => string.Join(' ', Enumerable.Range(0, n).Select(_ => $"w{random.Next(95)}"));
        var tagged = Enumerable.Range(0, 48).Select(i =>
        {
            var words = Words(random.Next(3, 20)).Split(' ');
            return new AdapterSharp.Data.TaggedSentence(words, [.. words.Select(w => w.EndsWith('7') ? "B-X" : "O")], "synthetic", i + 1);
        }).ToList();
        var questions = Enumerable.Range(0, 48).Select(i =>
        {
            var context = Words(random.Next(5, 40));
            var answer = context.Split(' ')[random.Next(context.Split(' ').Length)];
            return new AdapterSharp.Data.QaExample($"q{i}", Words(2), context, [new AdapterSharp.Data.QaAnswer(answer, context.IndexOf(answer, StringComparison.Ordinal))], "synthetic", 1);
        }).ToList();
        var tagHead = HeadConfig.TokenClassification(["B-X", "O"]);
        var tokenData = AdapterSharp.Data.EncodedDataset.EncodeTagged(tagged, tokenizer, tagHead, 32, labelAllPieces: false, skipBadRows: false, out _);
        var spanData = AdapterSharp.Data.EncodedDataset.EncodeQa(questions, tokenizer, maxLength: 32, docStride: 8);
        foreach (var (head, data, metric) in new[] { (tagHead, tokenData, "f1"), (HeadConfig.QuestionAnswering(), spanData, "f1") })
        {
            (Dictionary<string, Tensor> Parameters, double Score, double[] Losses) Train(bool graphs)
            {
                manual_seed(0);
                using var model = new AdapterModel(new BertModel(TinyBert.Config with { HiddenDropoutProb = 0, AttentionProbsDropoutProb = 0 }, addPooler: false));
                model.AddAdapter("task", BottleneckConfig.Houlsby with { AdapterSize = 8 }, head);
                model.to(CUDA);
                var options = new TrainOptions { Epochs = 3, BatchSize = 8, LearningRate = 1e-3, Seed = 1, CudaGraphs = graphs, WarmupRatio = 0 };
                var result = new Trainer(model, "task", options, CUDA).Train(data, data, [metric]);
                var parameters = model.Record("task").Tensors.ToDictionary(p => p.Key, p => p.Parameter.detach().cpu().clone());
                return (parameters, result.History[^1].Metrics[metric], [.. result.History.Select(h => h.Loss)]);
            }
            var eager = Train(graphs: false);
            var graphed = Train(graphs: true);
            // The mean training loss of each epoch: a loss that saw the padding would differ by far more than rounding.
            for (int epoch = 0; epoch < eager.Losses.Length; epoch++)
                Assert.True(Math.Abs(eager.Losses[epoch] - graphed.Losses[epoch]) <= 1e-3 * Math.Abs(eager.Losses[epoch]),
                    $"{head.Kind} epoch {epoch + 1}: loss {graphed.Losses[epoch]} with graphs, {eager.Losses[epoch]} eagerly");
            // AdamW moves a weight by about the learning rate whatever its gradient's size, so where a gradient is near zero
            // rounding can flip a step's sign: weights may differ by a few steps' worth (1e-3 each) and no more.
            foreach (var (key, value) in eager.Parameters)
            {
                float diff = (graphed.Parameters[key] - value).abs().max().item<float>();
                Assert.True(diff <= 1e-2f, $"{head.Kind} {key}: graphs and eager differ by {diff}");
            }
            Assert.True(Math.Abs(eager.Score - graphed.Score) <= 0.02, $"{head.Kind}: {metric} {graphed.Score} with graphs, {eager.Score} eagerly");
        }
    }

    [CudaFact]
    public void Merged_lora_on_the_gpu_equals_unmerged_in_fp32()
    {
        manual_seed(0);
        using var model = new AdapterModel(new BertModel(TinyBert.Config with { HiddenDropoutProb = 0, AttentionProbsDropoutProb = 0 }, addPooler: false));
        model.AddAdapter("task", LoraConfig.Default with { TargetModules = ["query", "key", "value", "attention-output", "intermediate", "output"] }, TwoLabels);
        using (no_grad())
            foreach (var tensor in model.Record("task").Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.1);
        model.Active = "task";
        model.PrepareForInference(CUDA, ScalarType.Float32);
        var (ids, mask, types) = TinyBert.Batch(4, 9, 5, 7);
        using var noGrad = no_grad();
        using var unmerged = model.Logits(ids.to(CUDA), mask.to(CUDA), types.to(CUDA)).cpu();
        model.Merge("task");
        using var merged = model.Logits(ids.to(CUDA), mask.to(CUDA), types.to(CUDA)).cpu();
        Assert.True((merged - unmerged).abs().max().item<float>() <= 1e-5f, $"{(merged - unmerged).abs().max().item<float>()}");
    }

    [CudaFact]
    public void The_allocator_reports_what_is_allocated_and_releases_its_cache()
    {
        Assert.True(CudaAllocator.Available, CudaAllocator.Problem);
        // Blocks cached by earlier tests in this process would take the allocation below without reserving more.
        using (zeros(1, device: CUDA)) { } // the allocator is set up by a first allocation
        CudaAllocator.EmptyCache();
        var before = CudaAllocator.Read(0)!.Value;
        using (var big = zeros(256L << 20, ScalarType.Byte, CUDA)) // 256 MiB
        {
            var during = CudaAllocator.Read(0)!.Value;
            Assert.Equal(256L << 20, during.Allocated - before.Allocated);
            Assert.True(during.PeakAllocated >= during.Allocated);
        }
        var cached = CudaAllocator.Read(0)!.Value;
        Assert.True(cached.Reserved >= before.Reserved + (256L << 20), "freed blocks stay cached");
        CudaAllocator.EmptyCache();
        Assert.True(CudaAllocator.Read(0)!.Value.Reserved <= cached.Reserved - (256L << 20), "the cache went back");
    }
}
