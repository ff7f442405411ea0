using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Training;

/// <summary>
/// AdamW over one flat buffer. Every trainable parameter is re-pointed at a slice of a single float32 tensor,
/// and its gradient at a slice of a second one, so that clipping and the update are a handful of kernels
/// whatever the number of tensors (an adapter set has hundreds of small ones; a per-tensor optimizer would
/// launch thousands of kernels per step). The gradient norm stays on the device: no host synchronisation.
/// </summary>
public sealed class FlatAdamW : IDisposable
{
    readonly Tensor values;
    readonly Tensor gradients;
    readonly Tensor exp_avg;
    readonly Tensor exp_avg_sq;
    readonly Tensor decayMask;
    readonly double beta1, beta2, eps, weightDecay;
    long steps;

    /// <param name="parameters">Trainable parameters, each with whether weight decay applies to it.</param>
    public FlatAdamW(IReadOnlyList<(Parameter Parameter, bool Decay)> parameters, double weightDecay,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        if (parameters.Count == 0) throw new ArgumentException("nothing to optimize", nameof(parameters));
        var device = parameters[0].Parameter.device;
        long total = parameters.Sum(p => p.Parameter.numel());
        values = zeros(total, ScalarType.Float32, device);
        gradients = zeros(total, ScalarType.Float32, device);
        exp_avg = zeros(total, ScalarType.Float32, device);
        exp_avg_sq = zeros(total, ScalarType.Float32, device);
        var mask = new float[total];
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;

        using var noGrad = no_grad();
        long offset = 0;
        foreach (var (parameter, decay) in parameters)
        {
            if (parameter.dtype != ScalarType.Float32)
                throw new ArgumentException($"trainable parameters must be float32, got {parameter.dtype}", nameof(parameters));
            if (parameter.device.type != device.type || parameter.device.index != device.index)
                throw new ArgumentException("trainable parameters must share one device", nameof(parameters));
            long n = parameter.numel();
            var shape = parameter.shape;
            using (NewDisposeScope())
            {
                values.narrow(0, offset, n).copy_(parameter.flatten());
                parameter.set_(values.narrow(0, offset, n).view(shape));
                // Autograd accumulates into an existing .grad in place, so gradients land in the flat buffer.
                parameter.grad = gradients.narrow(0, offset, n).view(shape);
            }
            if (decay) Array.Fill(mask, 1f, (int)offset, (int)n);
            offset += n;
        }
        decayMask = tensor(mask).to(device);
    }

    /// <summary>Zeroes the flat gradient buffer (one kernel; the parameters' .grad stay views of it).</summary>
    public void ZeroGrad()
    {
        // In-place operations still hand back a new managed wrapper; the scope releases it.
        using var scope = NewDisposeScope();
        gradients.zero_();
    }

    /// <summary>Scales the gradients to at most <paramref name="maxNorm"/> in L2 norm, on the device.</summary>
    public void ClipGradNorm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        var norm = gradients.norm();
        gradients.mul_(clamp_max(maxNorm / (norm + 1e-6), 1.0));
    }

    public void Step(double learningRate)
    {
        steps++;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        // Decoupled weight decay, only where the mask is 1 (not biases and LayerNorms).
        if (weightDecay > 0) values.addcmul_(values, decayMask, value: -learningRate * weightDecay);
        exp_avg.mul_(beta1).add_(gradients, alpha: 1 - beta1);
        exp_avg_sq.mul_(beta2).addcmul_(gradients, gradients, value: 1 - beta2);
        double correction1 = 1 - Math.Pow(beta1, steps);
        double correction2 = 1 - Math.Pow(beta2, steps);
        var denominator = (exp_avg_sq.sqrt() / Math.Sqrt(correction2)).add_(eps);
        values.addcdiv_(exp_avg, denominator, value: -learningRate / correction1);
    }

    public void Dispose()
    {
        values.Dispose();
        gradients.Dispose();
        exp_avg.Dispose();
        exp_avg_sq.Dispose();
        decayMask.Dispose();
    }
}
