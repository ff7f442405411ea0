using static TorchSharp.torch;

namespace AdapterSharp.Tests;

/// <summary>
/// A test of how the CPU-only libtorch behaves: skipped where TorchSharp sees a CUDA device (the GPU tests cover it there).
/// </summary>
public sealed class CpuOnlyFactAttribute : FactAttribute
{
    public CpuOnlyFactAttribute()
    {
        if (cuda.is_available()) Skip = "runs only where no CUDA device is seen";
    }
}
