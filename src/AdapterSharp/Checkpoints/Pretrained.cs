using System.Security.Cryptography;
using AdapterSharp.Model;
using AdapterSharp.Text;

namespace AdapterSharp.Checkpoints;

/// <summary>
/// A pretrained encoder as found on disk, before any TorchSharp module exists: its config, its weights under
/// <see cref="BertModel"/>'s state-dict names, its tokenizer, and where they came from.
/// </summary>
public sealed class PretrainedEncoder
{
    public required string Id { get; init; }
    public required string Origin { get; init; }
    public required string WeightsPath { get; init; }
    public required BertConfig Config { get; init; }
    public required IReadOnlyDictionary<string, TensorData> Weights { get; init; }
    public required BertTokenizer Tokenizer { get; init; }

    /// <summary>The weights' element type as stored (the model computes in float32 on the CPU).</summary>
    public TensorDType StoredDType => Weights.Values.GroupBy(w => w.DType).MaxBy(g => g.Count())!.Key;

    public bool HasPooler => Weights.ContainsKey("pooler.dense.weight");

    /// <summary>Builds the encoder and loads the weights into it (names and shapes checked).</summary>
    public BertModel CreateModel()
    {
        var model = new BertModel(Config, HasPooler);
        StateDict.Load(model, Weights, WeightsPath);
        return model;
    }

    /// <summary>
    /// SHA-256 over the weights in canonical form (sorted names, dtype, shape, bytes), so the same weights
    /// give the same identity whether they were read from ONNX, safetensors or a PyTorch file.
    /// </summary>
    public string WeightsSha256()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var name in Weights.Keys.Order(StringComparer.Ordinal))
        {
            var tensor = Weights[name];
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes($"{name}|{tensor.DType}|{string.Join(",", tensor.Shape)}|"));
            hash.AppendData(tensor.Bytes);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}

/// <summary>Resolves <c>--model</c>: a built-in id, a HuggingFace model directory, or an <c>.onnx</c> file.</summary>
public static class Pretrained
{
    /// <summary>
    /// The root of AdapterSharp's cache: <c>$ADAPTERSHARP_HOME</c>, else <c>~/.cache/adaptersharp</c>.
    /// Built-in models are converted once into <c>&lt;root&gt;/models/&lt;id&gt;/</c>.
    /// </summary>
    public static string HomeDirectory
    {
        get
        {
            var home = Environment.GetEnvironmentVariable("ADAPTERSHARP_HOME");
            if (!string.IsNullOrWhiteSpace(home)) return Path.GetFullPath(home);
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "adaptersharp");
        }
    }

    public static PretrainedEncoder Load(string model, string? vocabPath = null, Action<string>? log = null)
    {
        if (BuiltInModels.TryGet(model, out var builtIn))
            return Checked(LoadDirectory(BuiltInModels.EnsureCached(builtIn, HomeDirectory, log), builtIn.Id,
                $"built-in {builtIn.Id} ({builtIn.Description})"));
        if (Directory.Exists(model)) return Checked(LoadDirectory(model, Path.GetFullPath(model), "HuggingFace model directory", vocabPath));
        if (model.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)) return Checked(LoadOnnx(model, vocabPath));
        if (File.Exists(model))
            throw new ModelFormatException($"{model}: not a model: expected a model directory, an .onnx file or one of: {BuiltInModels.Names}");
        throw new ModelFormatException($"{model}: unknown model: not a built-in id ({BuiltInModels.Names}), a directory or an .onnx file");
    }

    /// <summary>
    /// The tokenizer must fit the model: a token id at or past the model's vocabulary would fail (or read another
    /// table's memory) at the first text that has it, long after loading.
    /// </summary>
    static PretrainedEncoder Checked(PretrainedEncoder encoder)
    {
        if (encoder.Tokenizer.VocabSize > encoder.Config.VocabSize)
            throw new ModelFormatException(
                $"{encoder.Tokenizer.Source}: the vocabulary has ids up to {encoder.Tokenizer.VocabSize - 1}, but the model's vocab_size is {encoder.Config.VocabSize}");
        return encoder;
    }

    /// <summary>A HuggingFace-layout directory: config.json, weights, and vocab.txt or tokenizer.json.</summary>
    public static PretrainedEncoder LoadDirectory(string dir, string id, string origin, string? vocabPath = null)
    {
        var config = BertConfig.Load(Path.Combine(dir, "config.json"));
        var (weightsPath, raw) = ReadDirectoryWeights(dir);
        var weights = StateDict.NormalizeBertKeys(raw);
        if (weights.Count == 0)
            throw new ModelFormatException($"{weightsPath}: no BERT encoder tensors (embeddings.*, encoder.*) in this file");
        return new PretrainedEncoder
        {
            Id = id,
            Origin = origin,
            WeightsPath = weightsPath,
            Config = config,
            Weights = weights,
            Tokenizer = LoadTokenizer(dir, vocabPath),
        };
    }

    static (string Path, IReadOnlyDictionary<string, TensorData> Weights) ReadDirectoryWeights(string dir)
    {
        var single = Path.Combine(dir, "model.safetensors");
        if (File.Exists(single)) return (single, Safetensors.Read(single));
        var index = Path.Combine(dir, "model.safetensors.index.json");
        if (File.Exists(index)) return (index, Safetensors.ReadSharded(index));
        var bin = Path.Combine(dir, "pytorch_model.bin");
        if (File.Exists(bin)) return (bin, TorchPickle.Read(bin));
        throw new ModelFormatException(
            $"{dir}: no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin");
    }

    static BertTokenizer LoadTokenizer(string dir, string? vocabPath)
    {
        bool lowerCase = LowerCase(dir);
        if (vocabPath is not null) return OpenVocab(vocabPath, lowerCase);
        var vocab = Path.Combine(dir, "vocab.txt");
        if (File.Exists(vocab)) return OpenVocab(vocab, lowerCase);
        var json = Path.Combine(dir, "tokenizer.json");
        if (File.Exists(json)) return BertTokenizer.FromTokenizerJson(json);
        throw new ModelFormatException($"{dir}: no tokenizer: expected vocab.txt or tokenizer.json (or pass --vocab)");
    }

    static BertTokenizer OpenVocab(string path, bool lowerCase = true) =>
        path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
            ? BertTokenizer.FromTokenizerJson(path)
            : BertTokenizer.FromVocabFile(path, lowerCase);

    /// <summary><c>do_lower_case</c> from tokenizer_config.json when present (cased BERTs set it false); else true.</summary>
    static bool LowerCase(string dir)
    {
        var path = Path.Combine(dir, "tokenizer_config.json");
        if (!File.Exists(path)) return true;
        try
        {
            using var document = JsonStrict.Parse(File.ReadAllText(path));
            return !document.RootElement.TryGetProperty("do_lower_case", out var value) || value.ValueKind != System.Text.Json.JsonValueKind.False;
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new ModelFormatException($"{path}: invalid JSON: {e.Message.Split(" Path:")[0]}");
        }
    }

    /// <summary>
    /// An ONNX export of a BERT encoder. The architecture comes from a config.json beside the file when there
    /// is one, else from the weights' shapes and the graph (attention heads, LayerNorm epsilon).
    /// </summary>
    public static PretrainedEncoder LoadOnnx(string path, string? vocabPath, BertConfig? knownConfig = null)
    {
        if (!File.Exists(path)) throw new ModelFormatException($"{path}: file not found");
        var onnx = OnnxWeights.Read(path);
        var weights = OnnxWeights.ToBertStateDict(onnx);
        var besideConfig = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "config.json");
        var config = knownConfig
                     ?? (File.Exists(besideConfig) ? BertConfig.Load(besideConfig) : OnnxWeights.InferBertConfig(onnx, weights));
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        vocabPath ??= File.Exists(Path.Combine(dir, "vocab.txt")) ? Path.Combine(dir, "vocab.txt") : null;
        if (vocabPath is null)
            throw new ModelFormatException($"{path}: no vocabulary: pass --vocab (vocab.txt or tokenizer.json)");
        return new PretrainedEncoder
        {
            Id = Path.GetFullPath(path),
            Origin = "ONNX file",
            WeightsPath = path,
            Config = config,
            Weights = weights,
            Tokenizer = OpenVocab(vocabPath),
        };
    }
}
