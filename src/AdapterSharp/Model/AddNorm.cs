using AdapterSharp.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Model;

/// <summary>
/// A sublayer's end, <c>LayerNorm(a + b + residual)</c>, in one pass each way: <c>a</c> is the sublayer's
/// projection (after dropout) and <c>b</c> what its adapter adds, both in the matmul type; the residual, the
/// sum, the LayerNorm and its output are float32 (the fp32 residual stream that autocast keeps too). The output
/// comes twice, in float32 for the residual stream and rounded to the matmul type for the next product, so the
/// next sublayer does not cast it again.
/// <para>
/// libtorch, all TorchSharp can call, runs this as five kernels forward (add, add, LayerNorm, cast; the cast on
/// the consumer's side) and seven backward (cast, add, LayerNorm's input gradients, its weight gradients, cast,
/// plus the adds that collect the two gradients of the output); each reads and writes the whole (B·T × H)
/// activation. Fused, forward reads a, b and the residual and writes the sum (kept for the backward) and the two
/// outputs; backward reads the two output gradients and the sum, and writes the input gradients, in the
/// residual's float32 and in the matmul type for a and b (which get the same gradient).
/// </para>
/// <para>
/// Two implementations of the same arithmetic: CUDA kernels (<see cref="CudaKernels"/>) for bfloat16 on the GPU,
/// and libtorch operators, which run anywhere and are what the tests and <c>bench kernels</c> compare against the
/// unfused path.
/// </para>
/// </summary>
public static class AddNorm
{
    /// <summary>Which implementation <see cref="Apply"/> uses.</summary>
    public enum Backend { Kernels, Operators }

    /// <summary>
    /// Whether the CUDA kernels take these operands: bfloat16 <paramref name="a"/> (and <paramref name="b"/>),
    /// a float32 residual, all on one CUDA device, contiguous, with a hidden size that is a multiple of 4 and at
    /// most 1536 (BERT-base 768, -large 1024, MiniLM 384), and the kernels available and not switched off by
    /// <paramref name="mode"/> (with <see cref="FusedKernels.On"/> a failed compile throws).
    /// </summary>
    public static bool KernelsTake(Tensor a, Tensor? b, Tensor residual, LayerNorm norm, FusedKernels mode)
    {
        if (mode == FusedKernels.Off || a.device.type != DeviceType.CUDA) return false;
        long hidden = residual.shape[^1];
        if (hidden % 4 != 0 || hidden > 1536) return false;
        if (a.dtype != ScalarType.BFloat16 || residual.dtype != ScalarType.Float32) return false;
        if (b is not null && (b.dtype != ScalarType.BFloat16 || !b.is_contiguous() || !b.shape.SequenceEqual(a.shape))) return false;
        if (!a.is_contiguous() || !residual.is_contiguous() || !a.shape.SequenceEqual(residual.shape)) return false;
        if (norm.weight is null || norm.bias is null || norm.weight.dtype != ScalarType.Float32 || norm.weight.shape[0] != hidden) return false;
        if (a.device.index != residual.device.index || norm.weight.device.type != DeviceType.CUDA) return false;
        if (!CudaKernels.AvailableOnCuda()) return false; // only now: a float32 run would not use them anyway
        // Vector loads: 16 bytes of float32, 8 of bfloat16 (the LayerNorm's weight and bias are read element-wise).
        if (AutogradNode.DataPointer(residual) % 16 != 0 || AutogradNode.DataPointer(a) % 8 != 0 || (b is not null && AutogradNode.DataPointer(b) % 8 != 0)) return false;
        return Module(a, hidden, required: mode == FusedKernels.On) is not null;
    }

    /// <summary>
    /// <c>norm(a + b + residual)</c>: (float32 output, the same rounded to <paramref name="a"/>'s type).
    /// Gradients flow to a, b, the residual and the LayerNorm's weight and bias.
    /// </summary>
    /// <param name="a">(…, H) the sublayer's projection, in the matmul type.</param>
    /// <param name="b">(…, H) what the adapter adds, in the matmul type, or null.</param>
    /// <param name="residual">(…, H) float32.</param>
    public static (Tensor Output, Tensor Low) Apply(Tensor a, Tensor? b, Tensor residual, LayerNorm norm, Backend backend)
    {
        var weight = norm.weight!;
        var bias = norm.bias!;
        double eps = norm.eps;
        Tensor[] inputs = b is null ? [a, residual, weight, bias] : [a, b, residual, weight, bias];
        bool training = is_grad_enabled() && inputs.Any(t => t.requires_grad);
        var lowType = a.dtype;
        Saved? saved;
        Tensor output, low;
        using (no_grad())
        {
            (output, low, saved) = backend == Backend.Kernels
                ? KernelForward(a, b, residual, weight, bias, eps, training)
                : OperatorForward(a, b, residual, weight, bias, eps, training);
        }
        var attached = AutogradNode.Attach(inputs, [output, low], gradients =>
        {
            using var noGrad = no_grad();
            var (dx, dxLow, dWeight, dBias) = backend == Backend.Kernels
                ? KernelBackward(gradients[0], gradients[1], saved!, weight)
                : OperatorBackward(gradients[0], gradients[1], saved!, weight, lowType);
            return b is null ? [dxLow, dx, dWeight, dBias] : [dxLow, dxLow, dx, dWeight, dBias];
        }, saved);
        return (attached[0], attached[1]);
    }

    /// <summary>What the backward reads: the sum (LayerNorm's input) and its per-row mean and 1/σ.</summary>
    sealed class Saved(Tensor sum, Tensor mean, Tensor rstd) : IDisposable
    {
        public Tensor Sum { get; } = sum.DetachFromDisposeScope();
        public Tensor Mean { get; } = mean.DetachFromDisposeScope();
        public Tensor Rstd { get; } = rstd.DetachFromDisposeScope();

        public void Dispose()
        {
            Sum.Dispose();
            Mean.Dispose();
            Rstd.Dispose();
        }
    }

    static (Tensor, Tensor, Saved?) OperatorForward(Tensor a, Tensor? b, Tensor residual, Tensor weight, Tensor bias, double eps, bool training)
    {
        using var scope = NewDisposeScope();
        var sum = a.to_type(ScalarType.Float32) + residual;
        if (b is not null) sum += b.to_type(ScalarType.Float32);
        var mean = sum.mean([-1], keepdim: true); // (…, 1)
        var centered = sum - mean;
        var rstd = (centered.square().mean([-1], keepdim: true) + eps).rsqrt(); // (…, 1)
        var output = centered * rstd * weight + bias;
        var low = output.to_type(a.dtype, copy: true); // a copy even for float32 operands: two outputs must not share a tensor
        Saved? saved = training ? new Saved(sum, mean, rstd) : null;
        return (output.MoveToOuterDisposeScope(), low.MoveToOuterDisposeScope(), saved);
    }

    static (Tensor, Tensor, Tensor, Tensor) OperatorBackward(Tensor? dOutput, Tensor? dLow, Saved saved, Tensor weight, ScalarType lowType)
    {
        using var scope = NewDisposeScope();
        var g = dOutput ?? zeros_like(saved.Sum);
        if (dLow is not null) g = g + dLow.to_type(ScalarType.Float32);
        var normalized = (saved.Sum - saved.Mean) * saved.Rstd;
        var gw = g * weight;
        var dx = saved.Rstd * (gw - gw.mean([-1], keepdim: true) - normalized * (gw * normalized).mean([-1], keepdim: true));
        long hidden = saved.Sum.shape[^1];
        var rows = g.reshape(-1, hidden);
        var dWeight = (rows * normalized.reshape(-1, hidden)).sum([0]); // not sum(0): 0 converts to ScalarType
        var dBias = rows.sum([0]);
        var dxLow = dx.to_type(lowType);
        return (dx.MoveToOuterDisposeScope(), dxLow.MoveToOuterDisposeScope(), dWeight.MoveToOuterDisposeScope(), dBias.MoveToOuterDisposeScope());
    }

    static long kernelPasses;

    /// <summary>How many forward passes the CUDA kernels have run in this process (benchmarks report whether any did).</summary>
    public static long KernelPasses => Interlocked.Read(ref kernelPasses);

    const int ForwardThreads = 128; // 4 rows a block, one warp a row
    const int BackwardThreads = 128;

    static readonly Dictionary<(int Device, long Hidden), CudaKernels.Module?> Modules = [];

    /// <summary>The kernels for this device and hidden size, compiled on first use, or null where they cannot be.</summary>
    static CudaKernels.Module? Module(Tensor t, long hidden, bool required = false)
    {
        var key = (Math.Max(0, (int)t.device.index), hidden);
        lock (Modules)
        {
            if (Modules.TryGetValue(key, out var module))
                return module ?? (required ? throw new InvalidOperationException("the fused kernels failed to compile earlier in this process") : null);
            module = CudaKernels.TryCompile(key.Item1, Source, required, $"-DHIDDEN={hidden}");
            // Each function is fetched now, so none is first loaded while a CUDA graph is being captured.
            if (module is not null)
                foreach (var name in new[] { "add_layer_norm_forward", "add_layer_norm_backward", "layer_norm_weight_gradients" })
                    _ = module[name];
            return Modules[key] = module;
        }
    }

    static unsafe (Tensor, Tensor, Saved?) KernelForward(Tensor a, Tensor? b, Tensor residual, Tensor weight, Tensor bias, double eps, bool training)
    {
        long hidden = residual.shape[^1];
        long rows = residual.numel() / hidden;
        var output = empty_like(residual);
        var low = empty_like(a);
        Saved? saved = null;
        if (training)
        {
            var rowShape = residual.shape[..^1];
            saved = new Saved(empty_like(residual), empty(rowShape, ScalarType.Float32, residual.device), empty(rowShape, ScalarType.Float32, residual.device));
        }
        nint pa = AutogradNode.DataPointer(a), pb = b is null ? 0 : AutogradNode.DataPointer(b), pr = AutogradNode.DataPointer(residual);
        nint pw = AutogradNode.DataPointer(weight), pbias = AutogradNode.DataPointer(bias);
        nint psum = saved is null ? 0 : AutogradNode.DataPointer(saved.Sum);
        nint pmean = saved is null ? 0 : AutogradNode.DataPointer(saved.Mean), prstd = saved is null ? 0 : AutogradNode.DataPointer(saved.Rstd);
        nint po = AutogradNode.DataPointer(output), plow = AutogradNode.DataPointer(low);
        float epsilon = (float)eps;
        void** args = stackalloc void*[] { &pa, &pb, &pr, &pw, &pbias, &psum, &po, &plow, &pmean, &prstd, &rows, &epsilon };
        Interlocked.Increment(ref kernelPasses);
        int rowsPerBlock = ForwardThreads / 32;
        Module(a, hidden)!["add_layer_norm_forward"].Launch((rows + rowsPerBlock - 1) / rowsPerBlock, ForwardThreads, 0, args);
        return (output, low, saved);
    }

    static unsafe (Tensor, Tensor, Tensor, Tensor) KernelBackward(Tensor? dOutputGiven, Tensor? dLowGiven, Saved saved, Tensor weight)
    {
        // The kernels read rows of H consecutive elements, 16 or 8 bytes at a time; a gradient may come as a
        // broadcast or strided view, or start at an odd offset.
        using var dOutput = Aligned(dOutputGiven, 16);
        using var dLow = Aligned(dLowGiven, 8);
        long hidden = saved.Sum.shape[^1];
        long rows = saved.Sum.numel() / hidden;
        var module = Module(saved.Sum, hidden)!;
        var backward = module["add_layer_norm_backward"];
        int shared = BackwardThreads / 32 * (int)hidden * sizeof(float);
        int blocks = (int)Math.Min(backward.ResidentBlocks(BackwardThreads, shared), (rows + BackwardThreads / 32 - 1) / (BackwardThreads / 32));
        var dx = empty_like(saved.Sum);
        var dxLow = empty(saved.Sum.shape, ScalarType.BFloat16, saved.Sum.device);
        using var partial = empty([blocks, 2, hidden], ScalarType.Float32, saved.Sum.device);
        var dWeight = empty_like(weight);
        var dBias = empty_like(weight);
        nint pdy = dOutput is null ? 0 : AutogradNode.DataPointer(dOutput), pdl = dLow is null ? 0 : AutogradNode.DataPointer(dLow);
        nint psum = AutogradNode.DataPointer(saved.Sum), pmean = AutogradNode.DataPointer(saved.Mean), prstd = AutogradNode.DataPointer(saved.Rstd);
        nint pw = AutogradNode.DataPointer(weight), pdx = AutogradNode.DataPointer(dx), pdxl = AutogradNode.DataPointer(dxLow);
        nint ppartial = AutogradNode.DataPointer(partial), pdw = AutogradNode.DataPointer(dWeight), pdb = AutogradNode.DataPointer(dBias);
        void** args = stackalloc void*[] { &pdy, &pdl, &psum, &pmean, &prstd, &pw, &pdx, &pdxl, &ppartial, &rows };
        backward.Launch(blocks, BackwardThreads, shared, args);
        void** finish = stackalloc void*[] { &ppartial, &blocks, &pdw, &pdb };
        module["layer_norm_weight_gradients"].Launch((2 * hidden + 255) / 256, 256, 0, finish);
        return (dx, dxLow, dWeight, dBias);
    }

    static Tensor? Aligned(Tensor? t, int bytes)
    {
        if (t is null) return null;
        var c = t.contiguous();
        if (AutogradNode.DataPointer(c) % bytes == 0) return c;
        using (c) return c.clone();
    }

    // One warp per row; each lane holds ITEMS groups of 4 columns in registers (H = 768: 6 groups). bfloat16 is
    // handled as its bits (the top half of a float32), so the source needs no CUDA headers; rounding to it is
    // round-to-nearest-even, as libtorch's casts.
    const string Source = """
        #define ITEMS ((HIDDEN + 127) / 128)
        struct alignas(16) f4 { float x, y, z, w; };
        struct alignas(8) u2 { unsigned int x, y; };

        __device__ __forceinline__ unsigned int to_bf16(float f) {
            unsigned int u = __float_as_uint(f);
            if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
            u += 0x7fffu + ((u >> 16) & 1u);
            return u >> 16;
        }
        __device__ __forceinline__ void load_bf16(const unsigned short* p, float* v) {
            u2 w = *reinterpret_cast<const u2*>(p);
            v[0] = __uint_as_float(w.x << 16); v[1] = __uint_as_float(w.x & 0xffff0000u);
            v[2] = __uint_as_float(w.y << 16); v[3] = __uint_as_float(w.y & 0xffff0000u);
        }
        __device__ __forceinline__ void store_bf16(unsigned short* p, const float* v) {
            u2 w;
            w.x = to_bf16(v[0]) | (to_bf16(v[1]) << 16);
            w.y = to_bf16(v[2]) | (to_bf16(v[3]) << 16);
            *reinterpret_cast<u2*>(p) = w;
        }
        __device__ __forceinline__ void load_f32(const float* p, float* v) {
            f4 w = *reinterpret_cast<const f4*>(p);
            v[0] = w.x; v[1] = w.y; v[2] = w.z; v[3] = w.w;
        }
        // The LayerNorm's weight and bias may sit anywhere in the optimizer's flat buffer: element by element.
        __device__ __forceinline__ void load_f32_unaligned(const float* p, float* v) {
            v[0] = p[0]; v[1] = p[1]; v[2] = p[2]; v[3] = p[3];
        }
        __device__ __forceinline__ void store_f32(float* p, const float* v) {
            f4 w; w.x = v[0]; w.y = v[1]; w.z = v[2]; w.w = v[3];
            *reinterpret_cast<f4*>(p) = w;
        }
        __device__ __forceinline__ float warp_sum(float v) {
            #pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            return v;
        }

        // sum = a + b + r; y = (sum - mean) / sigma * gamma + beta, in float32 and bfloat16.
        extern "C" __global__ void __launch_bounds__(128) add_layer_norm_forward(
            const unsigned short* __restrict__ a, const unsigned short* __restrict__ b, const float* __restrict__ r,
            const float* __restrict__ gamma, const float* __restrict__ beta, float* __restrict__ sum_out,
            float* __restrict__ y, unsigned short* __restrict__ y_low, float* __restrict__ mean_out,
            float* __restrict__ rstd_out, long long rows, float eps)
        {
            const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
            const int lane = threadIdx.x & 31;
            if (row >= rows) return;
            const long long base = row * HIDDEN;
            float v[ITEMS][4];
            float total = 0.f;
            #pragma unroll
            for (int j = 0; j < ITEMS; j++) {
                const int col = (j * 32 + lane) * 4;
                if (col < HIDDEN) {
                    float t[4];
                    load_f32(r + base + col, v[j]);
                    load_bf16(a + base + col, t);
                    #pragma unroll
                    for (int k = 0; k < 4; k++) v[j][k] += t[k];
                    if (b) {
                        load_bf16(b + base + col, t);
                        #pragma unroll
                        for (int k = 0; k < 4; k++) v[j][k] += t[k];
                    }
                    total += (v[j][0] + v[j][1]) + (v[j][2] + v[j][3]);
                }
            }
            const float mean = warp_sum(total) / HIDDEN;
            float squares = 0.f;
            #pragma unroll
            for (int j = 0; j < ITEMS; j++) {
                const int col = (j * 32 + lane) * 4;
                if (col < HIDDEN) {
                    #pragma unroll
                    for (int k = 0; k < 4; k++) { const float d = v[j][k] - mean; squares += d * d; }
                }
            }
            const float rstd = rsqrtf(warp_sum(squares) / HIDDEN + eps);
            #pragma unroll
            for (int j = 0; j < ITEMS; j++) {
                const int col = (j * 32 + lane) * 4;
                if (col < HIDDEN) {
                    if (sum_out) store_f32(sum_out + base + col, v[j]);
                    float g[4], bb[4], o[4];
                    load_f32_unaligned(gamma + col, g);
                    load_f32_unaligned(beta + col, bb);
                    #pragma unroll
                    for (int k = 0; k < 4; k++) o[k] = (v[j][k] - mean) * rstd * g[k] + bb[k];
                    store_f32(y + base + col, o);
                    store_bf16(y_low + base + col, o);
                }
            }
            if (lane == 0 && mean_out) { mean_out[row] = mean; rstd_out[row] = rstd; }
        }

        // g = dy + dy_low; dx = rstd * (g*gamma - mean(g*gamma) - xhat * mean(g*gamma*xhat)), in float32 and
        // bfloat16; each block leaves its rows' sums of g*xhat and g (the weight and bias gradients) in partial.
        extern "C" __global__ void __launch_bounds__(128) add_layer_norm_backward(
            const float* __restrict__ dy, const unsigned short* __restrict__ dy_low, const float* __restrict__ x,
            const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ gamma,
            float* __restrict__ dx, unsigned short* __restrict__ dx_low, float* __restrict__ partial, long long rows)
        {
            extern __shared__ float shared[]; // [warps][HIDDEN]
            const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
            float dg[ITEMS][4], db[ITEMS][4];
            #pragma unroll
            for (int j = 0; j < ITEMS; j++)
                #pragma unroll
                for (int k = 0; k < 4; k++) { dg[j][k] = 0.f; db[j][k] = 0.f; }
            for (long long row = (long long)blockIdx.x * warps + warp; row < rows; row += (long long)gridDim.x * warps) {
                const long long base = row * HIDDEN;
                const float mu = mean[row], rs = rstd[row];
                float g[ITEMS][4], xh[ITEMS][4];
                float s1 = 0.f, s2 = 0.f;
                #pragma unroll
                for (int j = 0; j < ITEMS; j++) {
                    const int col = (j * 32 + lane) * 4;
                    if (col < HIDDEN) {
                        float t[4], w[4];
                        if (dy) load_f32(dy + base + col, g[j]); else { g[j][0] = g[j][1] = g[j][2] = g[j][3] = 0.f; }
                        if (dy_low) {
                            load_bf16(dy_low + base + col, t);
                            #pragma unroll
                            for (int k = 0; k < 4; k++) g[j][k] += t[k];
                        }
                        load_f32(x + base + col, xh[j]);
                        load_f32_unaligned(gamma + col, w);
                        #pragma unroll
                        for (int k = 0; k < 4; k++) {
                            xh[j][k] = (xh[j][k] - mu) * rs;
                            const float gw = g[j][k] * w[k];
                            s1 += gw;
                            s2 += gw * xh[j][k];
                            dg[j][k] += g[j][k] * xh[j][k];
                            db[j][k] += g[j][k];
                        }
                    }
                }
                s1 = warp_sum(s1) / HIDDEN;
                s2 = warp_sum(s2) / HIDDEN;
                #pragma unroll
                for (int j = 0; j < ITEMS; j++) {
                    const int col = (j * 32 + lane) * 4;
                    if (col < HIDDEN) {
                        float w[4], o[4];
                        load_f32_unaligned(gamma + col, w);
                        #pragma unroll
                        for (int k = 0; k < 4; k++) o[k] = rs * (g[j][k] * w[k] - s1 - xh[j][k] * s2);
                        store_f32(dx + base + col, o);
                        store_bf16(dx_low + base + col, o);
                    }
                }
            }
            #pragma unroll
            for (int pass = 0; pass < 2; pass++) {
                #pragma unroll
                for (int j = 0; j < ITEMS; j++) {
                    const int col = (j * 32 + lane) * 4;
                    if (col < HIDDEN)
                        #pragma unroll
                        for (int k = 0; k < 4; k++) shared[warp * HIDDEN + col + k] = pass == 0 ? dg[j][k] : db[j][k];
                }
                __syncthreads();
                for (int c = threadIdx.x; c < HIDDEN; c += blockDim.x) {
                    float t = 0.f;
                    for (int w = 0; w < warps; w++) t += shared[w * HIDDEN + c];
                    partial[((long long)blockIdx.x * 2 + pass) * HIDDEN + c] = t;
                }
                __syncthreads();
            }
        }

        // The blocks' partial sums, added up: gamma's and beta's gradients.
        extern "C" __global__ void layer_norm_weight_gradients(const float* __restrict__ partial, int blocks,
            float* __restrict__ dgamma, float* __restrict__ dbeta)
        {
            const int c = blockIdx.x * blockDim.x + threadIdx.x;
            if (c >= 2 * HIDDEN) return;
            const int pass = c / HIDDEN, col = c - pass * HIDDEN;
            float t = 0.f;
            for (int b = 0; b < blocks; b++) t += partial[((long long)b * 2 + pass) * HIDDEN + col];
            (pass == 0 ? dgamma : dbeta)[col] = t;
        }
        """;
}
