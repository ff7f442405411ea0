using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using AdapterSharp.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Tests.Adapters;

[Collection(SequentialCollection.Name)]
public class DynamicAdapterTests
{
    static readonly HeadConfig TwoLabels = HeadConfig.Classification(["neg", "pos"]);

    static AdapterModel Create(DynamicConfig config)
    {
        var model = new AdapterModel(TinyBert.Create(seed: 3, addPooler: false));
        manual_seed(4);
        model.AddAdapter("task", config, TwoLabels);
        model.Active = "task";
        return model;
    }

    [Fact]
    public void At_inference_only_the_first_round_s_m_units_count()
    {
        using var model = Create(DynamicConfig.Default with { AdapterSize = 8, Init = AdapterInit.Bert, InitialFraction = 0.45 });
        model.eval();
        var adapter = (DynamicAdapter)model.Bert.Encoder.Layers[0].Output.Adapters["task"];
        var parameters = adapter.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        using var noGrad = no_grad();
        using var pass = new ForwardPass();
        using var h = randn(3, 5, 32);
        using var actual = adapter.Delta(h, h, pass)!;
        // The controller starts with zero weights, so s = 0.45 for every input: round(0.45 · 8) = 4 units.
        var down = parameters["down.weight"].narrow(0, 0, 4);
        var downBias = parameters["down.bias"].narrow(0, 0, 4);
        var up = parameters["up.weight"].narrow(1, 0, 4);
        using var expected = F.relu(h.matmul(down.t()) + downBias).matmul(up.t()) + parameters["up.bias"];
        Assert.True((expected - actual).abs().max().item<float>() <= 1e-6f);
        Assert.Equal(4.0, adapter.ReadStatistics()["learned_size"]);
    }

    [Fact]
    public void In_training_units_are_masked_softly_and_the_size_penalty_reaches_the_controller()
    {
        var config = DynamicConfig.Default with { AdapterSize = 8, Init = AdapterInit.Bert, InitialFraction = 0.45, SizePenalty = 0.3, MaskTemperature = 2 };
        using var model = Create(config);
        model.TrainOnly("task");
        model.train();
        var adapter = (DynamicAdapter)model.Bert.Encoder.Layers[0].Output.Adapters["task"];
        var parameters = adapter.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        using var pass = new ForwardPass();
        using var h = randn(3, 5, 32);
        using var actual = adapter.Delta(h, h, pass)!;
        // s = σ(b) = 0.45 for every input (zero controller weights); unit i gets σ((s·8 − i − ½)/τ), τ = 2.
        double s = 0.45;
        using (no_grad())
        {
            using var mask = tensor(Enumerable.Range(0, 8).Select(i => (float)(1 / (1 + Math.Exp(-(s * 8 - i - 0.5) / 2)))).ToArray());
            using var expected = (F.relu(h.matmul(parameters["down.weight"].t()) + parameters["down.bias"]) * mask)
                .matmul(parameters["up.weight"].t()) + parameters["up.bias"];
            Assert.True((expected - actual).abs().max().item<float>() <= 1e-5f);
        }
        // The auxiliary loss is λ·s, and its gradient reaches the controller's bias: λ·s(1 − s).
        var penalty = pass.AuxiliaryLoss()!;
        Assert.Equal(0.3 * s, penalty.item<float>(), 5);
        penalty.backward();
        Assert.Equal(0.3 * s * (1 - s), parameters["controller.bias"].grad!.item<float>(), 5);
    }

    [Fact]
    public void Training_moves_the_controller_and_a_size_penalty_shrinks_the_learned_size()
    {
        var tokenizer = TinyTask.Tokenizer();
        var train = EncodedDataset.Encode(TinyTask.Examples(256, 1), tokenizer, TwoLabels, 32, false, out _);
        var dev = EncodedDataset.Encode(TinyTask.Examples(64, 2), tokenizer, TwoLabels, 32, false, out _);
        double LearnedSize(double penalty)
        {
            using var model = Create(DynamicConfig.Default with { AdapterSize = 16, SizePenalty = penalty, InitialFraction = 0.5 });
            var result = new Trainer(model, "task", new TrainOptions { Epochs = 2, BatchSize = 16, LearningRate = 1e-2, TimeBudget = null }, CPU)
                .Train(train, dev, ["accuracy"]);
            var last = result.History[^1].Metrics;
            // Reported per site and as the mean over sites.
            Assert.Contains("learned_size/encoder.layer.1.output.adapter", last.Keys);
            return last["learned_size"];
        }
        double free = LearnedSize(0), penalised = LearnedSize(100);
        Assert.True(penalised < free, $"learned size {penalised} with a penalty, {free} without");
        Assert.True(penalised < 8, $"the penalty should pull the size below its start (8 of 16), got {penalised}");
    }

    [Fact]
    public void A_dynamic_adapter_cannot_join_a_mixed_batch_and_says_why()
    {
        using var model = Create(DynamicConfig.Default with { AdapterSize = 8 });
        model.eval();
        var (ids, mask, types) = TinyBert.Batch(1, 4, 5);
        using var noGrad = no_grad();
        var error = Assert.Throws<ArgumentException>(() => model.LogitsPerRow(ids, mask, types, ["task", null]));
        Assert.Equal("adapter 'task' (dynamic) cannot join a mixed batch (no per-row form); run it alone (Active = \"task\")", error.Message);
    }
}
