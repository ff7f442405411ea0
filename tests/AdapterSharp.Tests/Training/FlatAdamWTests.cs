using AdapterSharp.Adapters;
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
        model.AddAdapter("t", Methods.Houlsby, HeadConfig.Classification(["a", "b"]));
        model.eval(); // no dropout: both runs see the same function
        return model;
    }

    [Fact]
    public void Matches_torch_adamw_with_decay_groups_and_clipping_step_for_step()
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
            new AdamW.ParamGroup(referenceParams.Where(p => Decay(p.Name)).Select(p => p.Parameter), new AdamW.Options { weight_decay = 0.01 }),
            new AdamW.ParamGroup(referenceParams.Where(p => !Decay(p.Name)).Select(p => p.Parameter), new AdamW.Options { weight_decay = 0 }),
        ], lr: 1e-3);
        using var optimizer = new FlatAdamW(flatParams.Select(p => (p.Parameter, Decay(p.Name))).ToList(), weightDecay: 0.01);

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
            Assert.True(difference < 1e-6, $"{referenceParams[i].Name}: max difference {difference}");
        }
    }
}
