using AdapterSharp.Native;
using static TorchSharp.torch;

namespace AdapterSharp;

/// <summary>Turns <c>--device cpu|cuda|cuda:N|auto</c> into a TorchSharp device, loading a CUDA libtorch if needed.</summary>
public static class Devices
{
    public static Device Resolve(string spec, Action<string>? log = null)
    {
        spec = spec.Trim().ToLowerInvariant();
        if (spec == "cpu") return CPU;
        if (spec is not ("auto" or "cuda") && !spec.StartsWith("cuda:", StringComparison.Ordinal))
            throw new ArgumentException($"--device: '{spec}' is not cpu, cuda, cuda:N or auto");

        var problem = CudaLibTorch.TryLoad();
        bool available = problem is null && TryInitializeDeviceType(TorchSharp.DeviceType.CUDA);
        if (!available)
        {
            var reason = problem ?? "libtorch loaded but reports no CUDA device";
            if (spec == "auto")
            {
                log?.Invoke($"--device auto: using the CPU ({reason})");
                return CPU;
            }
            throw new ArgumentException($"--device {spec}: {reason}");
        }
        if (CudaLibTorch.LoadedFrom is { } dir) log?.Invoke($"CUDA libtorch from {dir}");
        return spec == "auto" ? CUDA : new Device(spec);
    }

    /// <summary>The matrix-product type for <c>--precision auto|fp32|bf16</c> on a device: bf16 on GPUs, fp32 on CPUs.</summary>
    public static ScalarType MatmulType(string precision, Device device) => precision.Trim().ToLowerInvariant() switch
    {
        "auto" => device.type == TorchSharp.DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
        "fp32" or "float32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        var other => throw new ArgumentException($"--precision: '{other}' is not auto, fp32 or bf16"),
    };
}
