using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Model;

/// <summary>
/// The fused sublayer end's arithmetic and its autograd node, through the operator implementation (the CUDA
/// kernels do the same arithmetic; <c>bench kernels</c> compares the two on a GPU): outputs and every gradient
/// equal the unfused modules', and the node frees what it saved.
/// </summary>
[Collection(SequentialCollection.Name)]
public class AddNormTests
{
    const long Rows = 24, Hidden = 16;

    static TorchSharp.Modules.LayerNorm Norm()
    {
        var norm = nn.LayerNorm(Hidden, 1e-12);
        using var noGrad = no_grad();
        norm.weight!.copy_(1 + 0.1 * randn(Hidden));
        norm.bias!.copy_(0.1 * randn(Hidden));
        return norm;
    }

    static Tensor[] Gradients(Tensor[] outputs, Tensor[] gradOutputs, List<Tensor> inputs) =>
        autograd.grad(outputs, inputs, gradOutputs, allow_unused: true).ToArray();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Outputs_and_all_gradients_equal_the_unfused_modules(bool withAdapter)
    {
        manual_seed(1);
        using var scope = NewDisposeScope();
        using var norm = Norm();
        var a = randn(2, Rows / 2, Hidden).requires_grad_();
        var b = withAdapter ? randn(2, Rows / 2, Hidden).requires_grad_() : null;
        var r = randn(2, Rows / 2, Hidden).requires_grad_();
        var gy = randn(2, Rows / 2, Hidden);
        var gLow = randn(2, Rows / 2, Hidden);
        List<Tensor> inputs = b is null ? [a, r, norm.weight!, norm.bias!] : [a, b, r, norm.weight!, norm.bias!];

        var (output, low) = AddNorm.Apply(a, b, r, norm, AddNorm.Backend.Operators);
        var fused = Gradients([output, low], [gy, gLow], inputs);
        var reference = norm.call((b is null ? a : a + b) + r);
        var unfused = Gradients([reference, reference], [gy, gLow], inputs);

        Assert.True(output.allclose(reference, rtol: 1e-5, atol: 1e-5));
        Assert.True(low.allclose(reference, rtol: 1e-5, atol: 1e-5)); // float32 operands: the "low" copy is float32 too
        Assert.Equal(inputs.Count, fused.Length);
        for (int i = 0; i < inputs.Count; i++)
            Assert.True(fused[i].allclose(unfused[i], rtol: 1e-4, atol: 1e-5), $"gradient {i} differs: max |Δ| {(fused[i] - unfused[i]).abs().max().item<float>()}");
    }

    [Fact]
    public void The_low_copy_is_the_output_rounded_to_the_operands_type()
    {
        manual_seed(2);
        using var scope = NewDisposeScope();
        using var norm = Norm();
        var a = randn(Rows, Hidden).to_type(ScalarType.BFloat16);
        var r = randn(Rows, Hidden);
        var (output, low) = AddNorm.Apply(a, null, r, norm, AddNorm.Backend.Operators);
        Assert.Equal(ScalarType.Float32, output.dtype);
        Assert.Equal(ScalarType.BFloat16, low.dtype);
        Assert.True((low == output.to_type(ScalarType.BFloat16)).all().item<bool>());
    }

    [Fact]
    public void An_output_nobody_uses_gets_no_gradient_and_the_other_still_flows()
    {
        manual_seed(3);
        using var scope = NewDisposeScope();
        using var norm = Norm();
        var a = randn(Rows, Hidden).requires_grad_();
        var r = randn(Rows, Hidden).requires_grad_();
        var (output, _) = AddNorm.Apply(a, null, r, norm, AddNorm.Backend.Operators);
        (output * output).sum().backward();
        var expectedA = a.detach().requires_grad_();
        var expectedR = r.detach().requires_grad_();
        var reference = norm.call(expectedA + expectedR);
        (reference * reference).sum().backward();
        Assert.True(a.grad!.allclose(expectedA.grad!, rtol: 1e-4, atol: 1e-5));
        Assert.True(r.grad!.allclose(expectedR.grad!, rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void Without_gradients_the_outputs_have_no_graph()
    {
        manual_seed(4);
        using var scope = NewDisposeScope();
        using var norm = Norm();
        var a = randn(Rows, Hidden).requires_grad_();
        var r = randn(Rows, Hidden);
        using var noGrad = no_grad();
        var (output, low) = AddNorm.Apply(a, null, r, norm, AddNorm.Backend.Operators);
        Assert.False(output.requires_grad);
        Assert.False(low.requires_grad);
        Assert.True(output.allclose(norm.call(a + r), rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void Forward_and_backward_leave_no_tensor_alive()
    {
        manual_seed(5);
        using var norm = Norm();
        using var a = randn(Rows, Hidden).requires_grad_();
        using var b = randn(Rows, Hidden).requires_grad_();
        using var r = randn(Rows, Hidden).requires_grad_();
        void Step()
        {
            using var scope = NewDisposeScope();
            var (output, low) = AddNorm.Apply(a, b, r, norm, AddNorm.Backend.Operators);
            (output.sum() + low.square().sum()).backward();
            a.grad!.zero_();
        }
        Step();
        Step();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long before = Tensor.TotalCount;
        for (int i = 0; i < 10; i++) Step();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.Equal(before, Tensor.TotalCount);
    }

    [Fact]
    public void A_custom_backward_may_hand_an_incoming_gradient_straight_back()
    {
        using var scope = NewDisposeScope();
        var x = randn(Rows, Hidden).requires_grad_();
        Tensor copy;
        using (no_grad()) copy = x.clone();
        var attached = AdapterSharp.Native.AutogradNode.Attach([x], [copy], gradients => [gradients[0]], saved: null);
        (attached[0] * 3).sum().backward();
        Assert.True(x.grad!.allclose(full_like(x, 3.0)));
    }

    [Fact]
    public void The_kernels_are_never_taken_on_the_cpu()
    {
        using var scope = NewDisposeScope();
        using var norm = Norm();
        var a = randn(Rows, Hidden).to_type(ScalarType.BFloat16);
        Assert.False(AddNorm.KernelsTake(a, null, randn(Rows, Hidden), norm, FusedKernels.On));
    }
}
