using System.CommandLine;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Model;
using AdapterSharp.Training;

namespace AdapterSharp.Cli;

static class CommonOptions
{
    public static readonly Option<bool> Verbose = new("--verbose", "-v")
    {
        Description = "Show stack traces and progress details.",
        Recursive = true,
    };

    public static Option<string> Model() => new("--model", "-m")
    {
        Description = $"Built-in model id ({BuiltInModels.Names}), a HuggingFace model directory, or an .onnx file.",
        DefaultValueFactory = _ => BuiltInModels.MiniLmL6.Id,
    };

    public static Option<string> Device() => new("--device")
    {
        Description = "cpu, cuda (cuda:N) or auto (cuda when a CUDA libtorch is found).",
        DefaultValueFactory = _ => "cpu",
    };

    public static Option<string> Precision() => new("--precision")
    {
        Description = "Matrix products in auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16; LayerNorms and losses stay fp32.",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<string> CudaGraphs() => new("--cuda-graphs")
    {
        Description = "Replay training steps as captured CUDA graphs: auto (on CUDA, where the libtorch allows it), on, off.",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>Whether to use CUDA graphs on <paramref name="device"/> for an <c>--cuda-graphs</c> value.</summary>
    public static bool ResolveCudaGraphs(string value, TorchSharp.torch.Device device) => value switch
    {
        "off" => false,
        "auto" => device.type == TorchSharp.DeviceType.CUDA && Native.CudaGraphs.Available,
        "on" when device.type != TorchSharp.DeviceType.CUDA => throw new UsageException("--cuda-graphs on needs --device cuda"),
        "on" when !Native.CudaGraphs.Available => throw new UsageException($"--cuda-graphs on: {Native.CudaGraphs.Problem}"),
        "on" => true,
        _ => throw new UsageException($"--cuda-graphs must be auto, on or off, not '{value}'"),
    };

    public static Option<string> FusedKernels() => new("--fused-kernels")
    {
        Description = "Our own fused CUDA kernels (residual add + LayerNorm), compiled with the PyTorch install's NVRTC: auto (on CUDA, where NVRTC is found), on, off.",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>The fused-kernel choice for <paramref name="device"/> from a <c>--fused-kernels</c> value.</summary>
    public static AdapterSharp.Model.FusedKernels ResolveFusedKernels(string value, TorchSharp.torch.Device device) => value switch
    {
        "off" => AdapterSharp.Model.FusedKernels.Off,
        "auto" => AdapterSharp.Model.FusedKernels.Auto,
        "on" when device.type != TorchSharp.DeviceType.CUDA => throw new UsageException("--fused-kernels on needs --device cuda"),
        "on" when !Native.CudaKernels.Available => throw new UsageException($"--fused-kernels on: {Native.CudaKernels.Problem}"),
        "on" => AdapterSharp.Model.FusedKernels.On,
        _ => throw new UsageException($"--fused-kernels must be auto, on or off, not '{value}'"),
    };

    public static Option<string?> Vocab() => new("--vocab")
    {
        Description = "vocab.txt or tokenizer.json (for an .onnx model, or to override a directory's).",
    };
}

/// <summary>A command-line mistake the user can fix: printed as one line, without a stack trace.</summary>
sealed class UsageException(string message) : Exception(message);

static class Run
{
    /// <summary>
    /// Runs a command body. Expected failures (bad files, bad options, bad data) become one line on stderr
    /// and exit code 1; the stack trace only with --verbose.
    /// </summary>
    public static int Guarded(ParseResult parse, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is UsageException or ModelFormatException or CheckpointException or DataFormatException
                                      or TrainingException or IOException or UnauthorizedAccessException
                                      or InvalidDataException or ArgumentException)
        {
            Console.Error.WriteLine($"error: {Messages.OneLine(e.Message)}");
            if (parse.GetValue(CommonOptions.Verbose)) Console.Error.WriteLine(e);
            return 1;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"error: {e.GetType().Name}: {Messages.OneLine(e.Message)}");
            Console.Error.WriteLine(parse.GetValue(CommonOptions.Verbose) ? e.ToString() : "(run with --verbose for details)");
            return 2;
        }
    }

    public static Action<string> StderrLog => message => Console.Error.WriteLine(message);
}
