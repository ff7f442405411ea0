using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using AdapterSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Tests.Training;

[Collection(SequentialCollection.Name)]
public class FlatAdamWTests
{
    static AdapterModel Model()
    {
        var model = new AdapterModel(TinyBert.Create(seed: 9, addPooler: false));
        manual_seed(10);
        model.AddAdapter("t", BottleneckConfig.Houlsby, HeadConfig.Classification(["a", "b"]));
        model.eval(); // no dropout: both runs see the same function
        return model;
    }

    [Theory]
    [InlineData(FlatAdamW.DefaultChunkElements)] // an adapter set: one gathered chunk
    [InlineData(700L)] // many chunks, and parameters larger than a chunk used as they are
    public void Matches_torch_adamw_with_decay_groups_and_clipping_step_for_step(long chunkElements)
    {
        using var reference = Model();
        using var flat = Model();
        using (no_grad())
        {
            var source = AdapterSharp.Checkpoints.StateDict.Tensors(reference);
            foreach (var (name, target) in AdapterSharp.Checkpoints.StateDict.Tensors(flat)) target.copy_(source[name]);
        }
        var referenceParams = reference.TrainOnly("t");
        var flatParams = flat.TrainOnly("t");
        static bool Decay(string n) => !n.EndsWith(".bias", StringComparison.Ordinal) && !n.Contains("LayerNorm", StringComparison.Ordinal);
        using var adamw = optim.AdamW(
        [
            new AdamW.ParamGroup(referenceParams.Where(p => Decay(p.Key)).Select(p => p.Parameter), new AdamW.Options { weight_decay = 0.01 }),
            new AdamW.ParamGroup(referenceParams.Where(p => !Decay(p.Key)).Select(p => p.Parameter), new AdamW.Options { weight_decay = 0 }),
        ], lr: 1e-3);
        using var optimizer = new FlatAdamW(flatParams.Select(p => (p.Parameter, Decay(p.Key))).ToList(), weightDecay: 0.01,
            chunkElements: chunkElements);

        var (ids, mask, types) = TinyBert.Batch(11, 7, 5, 6, 4);
        using var labels = tensor(new long[] { 0, 1, 1, 0 });
        for (int step = 0; step < 5; step++)
        {
            using (NewDisposeScope())
            {
                adamw.zero_grad();
                F.cross_entropy(reference.call(ids, mask, types), labels).backward();
                nn.utils.clip_grad_norm_(referenceParams.Select(p => p.Parameter), 0.05);
                adamw.step();
            }
            using (NewDisposeScope())
            {
                optimizer.ZeroGrad();
                F.cross_entropy(flat.call(ids, mask, types), labels).backward();
                optimizer.ClipGradNorm(0.05);
                optimizer.Step(1e-3);
            }
        }
        for (int i = 0; i < referenceParams.Count; i++)
        {
            var difference = (referenceParams[i].Parameter - flatParams[i].Parameter).abs().max().item<float>();
            Assert.True(difference < 1e-6, $"{referenceParams[i].Key}: max difference {difference}");
        }
    }

    static readonly (bool Slow, bool Decay)[] Groups = [(false, true), (false, false), (true, true), (true, false)];

    [Fact]
    public void Parameters_with_their_own_learning_rate_match_torch_adamw_parameter_groups()
    {
        using var reference = Model();
        using var flat = Model();
        using (no_grad())
        {
            var source = AdapterSharp.Checkpoints.StateDict.Tensors(reference);
            foreach (var (name, target) in AdapterSharp.Checkpoints.StateDict.Tensors(flat)) target.copy_(source[name]);
        }
        var referenceParams = reference.TrainOnly("t");
        var flatParams = flat.TrainOnly("t");
        // The up-projections as a group of their own at a tenth of the rate, weight decay scaled with it (PyTorch's groups).
        static bool Slow(string key) => key.Contains(".up.", StringComparison.Ordinal);
        static bool Decay(string n) => !n.EndsWith(".bias", StringComparison.Ordinal) && !n.Contains("LayerNorm", StringComparison.Ordinal);
        const double lr = 1e-3;
        using var adamw = optim.AdamW(
        [
            .. Groups.Select(g => new AdamW.ParamGroup(
                referenceParams.Where(p => Slow(p.Key) == g.Slow && Decay(p.Key) == g.Decay).Select(p => p.Parameter),
                new AdamW.Options { LearningRate = g.Slow ? lr / 10 : lr, weight_decay = g.Decay ? 5.0 : 0 })),
        ], lr);
        // A large decay, so that decay scaled with the rate (or not) shows far above float32 rounding.
        using var optimizer = new FlatAdamW(flatParams.Select(p => (p.Parameter, Decay(p.Key), Slow(p.Key) ? 0.1 : 1.0)).ToList(), weightDecay: 5.0);
        var (ids, mask, types) = TinyBert.Batch(3, 7, 5, 6);
        using var labels = tensor(new long[] { 0, 1, 1 });
        for (int step = 0; step < 6; step++)
        {
            using (NewDisposeScope())
            {
                adamw.zero_grad();
                F.cross_entropy(reference.call(ids, mask, types), labels).backward();
                adamw.step();
            }
            using (NewDisposeScope())
            {
                optimizer.ZeroGrad();
                F.cross_entropy(flat.call(ids, mask, types), labels).backward();
                optimizer.Step(lr);
            }
        }
        for (int i = 0; i < referenceParams.Count; i++)
        {
            var difference = (referenceParams[i].Parameter - flatParams[i].Parameter).abs().max().item<float>();
            Assert.True(difference < 1e-6, $"{referenceParams[i].Key}: max difference {difference}");
        }
        // The slow group exists (at one rate for all, its updates would be ten times torch's, far outside 1e-6).
        Assert.Contains(flatParams, p => Slow(p.Key));
    }

    [Fact]
    public void Gradients_exist_only_between_a_backward_and_ZeroGrad_and_accumulate_until_then()
    {
        // Compared as gradients, not as updated weights: clipping and Adam's invariance to the gradient's scale
        // would make the update from 2g equal the one from g, so a test of weights could not tell them apart.
        using var single = Model();
        using var twice = Model();
        using (no_grad())
        {
            var source = AdapterSharp.Checkpoints.StateDict.Tensors(single);
            foreach (var (name, target) in AdapterSharp.Checkpoints.StateDict.Tensors(twice)) target.copy_(source[name]);
        }
        static List<(Parameter, bool)> Trained(AdapterModel model) => model.TrainOnly("t").Select(p => (p.Parameter, true)).ToList();
        using var singleOptimizer = new FlatAdamW(Trained(single), weightDecay: 0);
        using var twiceOptimizer = new FlatAdamW(Trained(twice), weightDecay: 0);
        Assert.All(single.TrainOnly("t"), p => Assert.Null(p.Parameter.grad));

        var (ids, mask, types) = TinyBert.Batch(11, 7, 5, 6, 4);
        using var labels = tensor(new long[] { 0, 1, 1, 0 });
        using (NewDisposeScope())
        {
            F.cross_entropy(single.call(ids, mask, types), labels).backward();
            // Two backward passes without ZeroGrad between them: the gradients add up, as in PyTorch.
            F.cross_entropy(twice.call(ids, mask, types), labels).backward();
            F.cross_entropy(twice.call(ids, mask, types), labels).backward();
        }
        var once = single.TrainOnly("t").ToDictionary(p => p.Key, p => p.Parameter);
        int compared = 0;
        foreach (var (name, parameter, _, _) in twice.TrainOnly("t"))
        {
            using var g = once[name].grad!;
            using var accumulated = parameter.grad!;
            var scale = g.abs().max().item<float>();
            if (scale == 0) continue;
            Assert.True((accumulated - 2 * g).abs().max().item<float>() <= 1e-5f * scale, $"{name}: not twice the single gradient");
            compared++;
        }
        Assert.True(compared > 10, $"only {compared} parameters had gradients");

        twiceOptimizer.ClipGradNorm(0.05);
        twiceOptimizer.Step(1e-3);
        twiceOptimizer.ZeroGrad();
        Assert.All(twice.TrainOnly("t"), p => Assert.Null(p.Parameter.grad));
    }
}
