using static TorchSharp.torch;

namespace AdapterSharp;

/// <summary>Turns <c>--device cpu|cuda|cuda:N|auto</c> into a TorchSharp device.</summary>
public static class Devices
{
    public static Device Resolve(string spec, Action<string>? log = null)
    {
        spec = spec.Trim().ToLowerInvariant();
        if (spec == "cpu") return CPU;
        if (spec == "auto")
        {
            if (cuda.is_available()) return CUDA;
            log?.Invoke("--device auto: no CUDA device available, using the CPU");
            return CPU;
        }
        if (spec == "cuda" || spec.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new ArgumentException("--device cuda: no CUDA device is available to this libtorch (the bundled libtorch is CPU-only)");
            return new Device(spec);
        }
        throw new ArgumentException($"--device: '{spec}' is not cpu, cuda, cuda:N or auto");
    }
}
