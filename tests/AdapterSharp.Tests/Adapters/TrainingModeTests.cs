using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Heads;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Adapters;

public class TrainingModeTests
{
    [Fact]
    public void Dropout_is_active_in_training_mode_and_off_in_eval_mode_everywhere_including_heads_and_adapters()
    {
        using var model = new AdapterModel(TinyBert.Create(seed: 1, addPooler: false));
        model.AddAdapter("t", BottleneckConfig.Houlsby with { Init = AdapterInit.Bert }, HeadConfig.Classification(["a", "b"]));
        model.Active = "t";
        var (ids, mask, types) = TinyBert.Batch(3, 6, 4);
        using var noGrad = no_grad();

        model.train();
        Assert.All(model.modules(), m => Assert.True(m.training, $"{m.GetName()} not in training mode"));
        using var first = model.call(ids, mask, types);
        using var second = model.call(ids, mask, types);
        Assert.True((first - second).abs().max().item<float>() > 0, "two training-mode passes should differ (dropout)");

        model.eval();
        Assert.All(model.modules(), m => Assert.False(m.training, $"{m.GetName()} still in training mode"));
        using var third = model.call(ids, mask, types);
        using var fourth = model.call(ids, mask, types);
        Assert.Equal(0f, (third - fourth).abs().max().item<float>());
    }
}
