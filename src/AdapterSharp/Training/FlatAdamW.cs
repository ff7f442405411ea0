using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Training;

/// <summary>
/// AdamW over one flat buffer. Every trainable parameter is re-pointed at a slice of a single float32 tensor, so
/// that clipping and the update are a handful of kernels whatever the number of tensors (an adapter set has
/// hundreds of small ones; a per-tensor optimizer would launch thousands of kernels per step). Gradients are
/// not kept in a flat buffer between steps: <see cref="ZeroGrad"/> drops them, as PyTorch's
/// <c>zero_grad(set_to_none=True)</c> does, so the backward allocates each one as it reaches it, while activations
/// are being freed; the step gathers them only after the backward, in chunks of at most
/// <see cref="DefaultChunkElements"/> consecutive parameters (one copy each; a parameter that size or larger is used as it
/// is). A persistent buffer would be live through the whole forward pass (for full fine-tuning of bert-base,
/// 415 MiB on top of the step's peak), and one gathered copy of that size finds no hole left by the freed
/// activations, so the allocator grows by it. An adapter set is one chunk. The gradient norm stays on the device:
/// no host synchronisation.
/// The step's scalars (learning rate, bias corrections) live in a small device tensor that <see cref="Prepare"/>
/// refills, so <see cref="Apply"/> can be captured once in a CUDA graph and replayed every step.
/// </summary>
public sealed class FlatAdamW : IDisposable
{
    /// <summary>Default elements per gathered gradient chunk (32 MiB of float32).</summary>
    public const long DefaultChunkElements = 8L << 20;

    readonly Tensor values;
    readonly Parameter[] ordered; // as laid out in the buffers
    readonly List<(long Offset, long Length, Parameter[] Parameters)> chunks = []; // consecutive runs of `ordered`
    Tensor[]? gradients; // this step's gradients, a tensor per chunk, from ClipGradNorm or Apply until the step ends
    readonly Tensor exp_avg;
    readonly Tensor exp_avg_sq;
    readonly long decayed; // the parameters with weight decay come first in the buffers: values[..decayed]
    readonly Tensor? rates; // per element, each parameter's learning rate as a multiple of the step's; null: all 1
    readonly Tensor scalars; // (4): 1 − lr·decay, −lr / (1 − β1^t), 1 / √(1 − β2^t), lr·decay
    readonly double beta1, beta2, eps, weightDecay;
    long steps;

    /// <param name="parameters">Trainable parameters, each with whether weight decay applies to it.</param>
    /// <param name="chunkElements">At most this many elements per gathered gradient chunk.</param>
    public FlatAdamW(IReadOnlyList<(Parameter Parameter, bool Decay)> parameters, double weightDecay,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, long chunkElements = DefaultChunkElements)
        : this(parameters.Select(p => (p.Parameter, p.Decay, 1.0)).ToList(), weightDecay, beta1, beta2, eps, chunkElements)
    {
    }

    /// <param name="parameters">
    /// Trainable parameters, each with whether weight decay applies to it and its learning rate as a multiple of the
    /// step's (a group of its own, as in PyTorch's parameter groups: decay scales with it too).
    /// </param>
    /// <param name="chunkElements">At most this many elements per gathered gradient chunk.</param>
    public FlatAdamW(IReadOnlyList<(Parameter Parameter, bool Decay, double RateScale)> parameters, double weightDecay,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, long chunkElements = DefaultChunkElements)
    {
        if (parameters.Count == 0) throw new ArgumentException("nothing to optimize", nameof(parameters));
        if (parameters.Any(p => !(p.RateScale > 0 && double.IsFinite(p.RateScale))))
            throw new ArgumentException("learning-rate scales must be positive", nameof(parameters));
        var device = parameters[0].Parameter.device;
        long total = parameters.Sum(p => p.Parameter.numel());
        values = zeros(total, ScalarType.Float32, device);
        exp_avg = zeros(total, ScalarType.Float32, device);
        exp_avg_sq = zeros(total, ScalarType.Float32, device);
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;

        using var noGrad = no_grad();
        long offset = 0;
        // Decayed parameters first, so that decay is one product over a prefix of the buffer (no mask to read).
        var layout = parameters.Where(p => p.Decay).Concat(parameters.Where(p => !p.Decay)).ToList();
        ordered = layout.Select(p => p.Parameter).ToArray();
        if (layout.Any(p => p.RateScale != 1.0))
            using (NewDisposeScope())
                rates = cat(layout.Select(p => full(p.Parameter.numel(), p.RateScale, ScalarType.Float32, device)).ToArray()).DetachFromDisposeScope();
        foreach (var (parameter, decay, _) in layout)
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
                parameter.grad = null;
            }
            if (decay) decayed += n;
            offset += n;
        }
        long start = 0, length = 0;
        var run = new List<Parameter>();
        foreach (var parameter in ordered)
        {
            long n = parameter.numel();
            if (run.Count > 0 && length + n > chunkElements)
            {
                chunks.Add((start, length, run.ToArray()));
                (start, length) = (start + length, 0);
                run.Clear();
            }
            run.Add(parameter);
            length += n;
        }
        chunks.Add((start, length, run.ToArray()));
        scalars = zeros(4, ScalarType.Float32, device);
        // The parameters' old storages are free now; on a GPU their blocks would stay cached, in sizes the
        // activations seldom fit. Hand them back.
        if (device.type == DeviceType.CUDA) Native.CudaAllocator.EmptyCache();
    }

    /// <summary>Drops the gradients (the next backward allocates them afresh), as <c>zero_grad(set_to_none=True)</c>.</summary>
    public void ZeroGrad()
    {
        foreach (var parameter in ordered) parameter.grad = null;
        ReleaseGathered();
    }

    void ReleaseGathered()
    {
        foreach (var chunk in gradients ?? []) chunk.Dispose();
        gradients = null;
    }

    /// <summary>
    /// The parameters' gradients, one flat tensor per chunk in the buffers' layout (zeros for a parameter the
    /// backward did not reach), gathered once per step. A one-parameter chunk is a view of its gradient.
    /// </summary>
    Tensor[] Gradients()
    {
        if (gradients is not null) return gradients;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        static Tensor Flat(Parameter p) => p.grad is { } g ? g.reshape(-1) : zeros(p.numel(), ScalarType.Float32, p.device);
        gradients = chunks.Select(c => (c.Parameters.Length == 1 ? Flat(c.Parameters[0]) : cat(c.Parameters.Select(Flat).ToArray()))
            .DetachFromDisposeScope()).ToArray();
        return gradients;
    }

    /// <summary>
    /// Scales the step's gathered gradients (what <see cref="Apply"/> uses) to at most <paramref name="maxNorm"/> in
    /// L2 norm, on the device. The parameters' own <c>.grad</c> are scaled only where a chunk is one parameter's
    /// gradient itself; read the update, not <c>.grad</c>, after clipping.
    /// </summary>
    public void ClipGradNorm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var parts = Gradients();
        var norm = parts.Length == 1 ? parts[0].norm() : stack(parts.Select(g => g.norm()).ToArray()).norm();
        var factor = clamp_max(maxNorm / (norm + 1e-6), 1.0);
        foreach (var g in parts) g.mul_(factor);
    }

    /// <summary>One AdamW step at <paramref name="learningRate"/>: <see cref="Prepare"/>, then <see cref="Apply"/>.</summary>
    public void Step(double learningRate)
    {
        Prepare(learningRate);
        Apply();
    }

    /// <summary>Counts a step and writes its scalars to the device (three fills, no synchronisation).</summary>
    public void Prepare(double learningRate)
    {
        steps++;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        double correction1 = 1 - Math.Pow(beta1, steps);
        double correction2 = 1 - Math.Pow(beta2, steps);
        scalars.narrow(0, 0, 1).fill_(1 - learningRate * weightDecay);
        scalars.narrow(0, 1, 1).fill_(-learningRate / correction1);
        scalars.narrow(0, 2, 1).fill_(1 / Math.Sqrt(correction2));
        scalars.narrow(0, 3, 1).fill_(learningRate * weightDecay);
    }

    /// <summary>The update with the scalars of the last <see cref="Prepare"/>; only device work, so it can be captured.</summary>
    public void Apply()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var parts = Gradients();
        // Decoupled weight decay, on the decayed prefix only (not biases and LayerNorms): 1 − lr·decay, or per element
        // 1 − lr·decay·scale where parameters have learning rates of their own.
        if (weightDecay > 0 && decayed > 0)
        {
            if (rates is null) values.narrow(0, 0, decayed).mul_(scalars.narrow(0, 0, 1));
            else values.narrow(0, 0, decayed).mul_(1 - rates.narrow(0, 0, decayed) * scalars.narrow(0, 3, 1));
        }
        for (int i = 0; i < parts.Length; i++)
        {
            var (offset, length, _) = chunks[i];
            var (g, m, v) = (parts[i], exp_avg.narrow(0, offset, length), exp_avg_sq.narrow(0, offset, length));
            m.lerp_(g, 1 - beta1); // β1·m + (1 − β1)·g in one pass
            v.mul_(beta2).addcmul_(g, g, value: 1 - beta2);
            var denominator = v.sqrt().mul_(scalars.narrow(0, 2, 1)).add_(eps);
            var step = rates is null ? m / denominator : m / denominator * rates.narrow(0, offset, length);
            values.narrow(0, offset, length).addcmul_(step, scalars.narrow(0, 1, 1), value: 1);
        }
        // The gathered copies are spent; the parameters' own gradients stay until ZeroGrad (they accumulate otherwise).
        ReleaseGathered();
    }

    public void Dispose()
    {
        values.Dispose();
        ReleaseGathered();
        exp_avg.Dispose();
        exp_avg_sq.Dispose();
        rates?.Dispose();
        scalars.Dispose();
    }
}
