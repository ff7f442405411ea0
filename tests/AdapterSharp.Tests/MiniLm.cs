using System.Runtime.CompilerServices;
using AdapterSharp.Checkpoints;

namespace AdapterSharp.Tests;

/// <summary>
/// The built-in minilm-l6, converted once per test run into a cache inside the test output (so tests never
/// touch the user's ~/.cache), and shared by every test that needs the real model.
/// </summary>
static class MiniLm
{
    public static readonly string Home = Path.Combine(AppContext.BaseDirectory, "adaptersharp-home");

    [ModuleInitializer]
    internal static void UseTestHome() => Environment.SetEnvironmentVariable("ADAPTERSHARP_HOME", Home);

    static readonly Lazy<PretrainedEncoder> Encoder = new(() => Pretrained.Load(BuiltInModels.MiniLmL6.Id));

    public static PretrainedEncoder Load() => Encoder.Value;

    public static string AssemblyPath => BuiltInModels.FindAssembly(BuiltInModels.MiniLmL6);

    /// <summary>The packaged model.onnx, extracted once into the test output.</summary>
    public static string OnnxPath => OnnxFile.Value;

    static readonly Lazy<string> OnnxFile = new(() =>
    {
        var path = Path.Combine(AppContext.BaseDirectory, "minilm-l6-original.onnx");
        if (!File.Exists(path))
        {
            var tmp = path + ".tmp";
            using (var stream = File.Create(tmp))
                EmbeddedResources.CopyTo(AssemblyPath, BuiltInModels.MiniLmL6.OnnxResource, stream);
            File.Move(tmp, path, overwrite: true);
        }
        return path;
    });
}
