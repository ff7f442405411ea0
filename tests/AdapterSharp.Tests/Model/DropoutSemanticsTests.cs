using Xunit.Abstractions;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Tests.Model;

/// <summary>TorchSharp's dropout arguments mean what PyTorch's do (p = probability of dropping).</summary>
public class DropoutSemanticsTests(ITestOutputHelper output)
{
    [Fact]
    public void Attention_dropout_drops_a_fraction_p_of_the_probabilities_and_rescales_the_rest()
    {
        manual_seed(0);
        const long time = 256;
        using var q = zeros(1, 1, time, 8);
        using var k = zeros(1, 1, time, 8);
        using var v = eye(time).view(1, 1, time, time); // row i of the output = row i of the attention probabilities
        using var outputs = F.scaled_dot_product_attention(q, k, v, null, 0.1);
        float dropped = (outputs == 0).to_type(ScalarType.Float32).mean().item<float>();
        float rowSum = outputs.sum(-1).mean().item<float>();
        output.WriteLine($"dropped {dropped:F4}, mean row sum {rowSum:F4}");
        Assert.InRange(dropped, 0.09, 0.11);
        Assert.InRange(rowSum, 0.98, 1.02);
    }

    [Fact]
    public void Hidden_dropout_drops_a_fraction_p()
    {
        manual_seed(0);
        using var x = ones(1000, 1000);
        using var dropout = TorchSharp.torch.nn.Dropout(0.1);
        dropout.train();
        using var y = dropout.call(x);
        float dropped = (y == 0).to_type(ScalarType.Float32).mean().item<float>();
        output.WriteLine($"dropped {dropped:F4}, max {y.max().item<float>():F4}");
        Assert.InRange(dropped, 0.095, 0.105);
        Assert.InRange(y.max().item<float>(), 1.11, 1.112);
    }
}
