using System.Runtime.InteropServices;
using System.Text;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Model;
using AdapterSharp.Server;
using AdapterSharp.Text;

namespace AdapterSharp.Fuzz;

/// <summary>An input broke the contract: an undocumented exception, a message of several lines, or an allocation out of proportion.</summary>
public sealed class ContractViolationException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// One parser under fuzzing: how an input reaches it, and which exceptions are its documented refusals. The contract
/// (docs/reliability.md): any input either loads or is refused with a documented exception whose message is one line;
/// never another exception, a hang, or an allocation proportional to a declared rather than an actual size.
/// </summary>
public sealed record Target(string Name, string Description, Action<byte[], Scratch> Run, Func<Exception, bool> Documented);

/// <summary>A per-process folder where file-based targets write the input (the readers take paths).</summary>
public sealed class Scratch
{
    public string Root { get; } = Directory.CreateDirectory(
        Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"adaptersharp-fuzz-{Environment.ProcessId}")).FullName;

    public string File(string name, byte[] data)
    {
        var path = Path.Combine(Root, name);
        System.IO.File.WriteAllBytes(path, data);
        return path;
    }

    /// <summary>A folder holding just <paramref name="name"/> with <paramref name="data"/>.</summary>
    public string Folder(string folder, string name, byte[] data)
    {
        var dir = Path.Combine(Root, folder);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(dir);
        System.IO.File.WriteAllBytes(Path.Combine(dir, name), data);
        return dir;
    }
}

public static class Targets
{
    static readonly Lazy<BertTokenizer> MiniLmTokenizer = new(() =>
        BertTokenizer.FromVocabBytes(
            EmbeddedResources.Read(BuiltInModels.FindAssembly(BuiltInModels.MiniLmL6), BuiltInModels.MiniLmL6.VocabResource),
            source: "minilm-l6 vocab.txt"));

    // Nothing of the instrumented assemblies may run before SharpFuzz attaches AFL's shared memory (in the fork
    // server it never does): every use of them is inside a target's Run, and these are lazy.
    static BertConfig MiniLmConfig => BuiltInModels.MiniLmL6.Config;

    static bool Checkpoint(Exception e) => e is CheckpointException;
    static bool Model(Exception e) => e is ModelFormatException or CheckpointException;
    static bool Data(Exception e) => e is DataFormatException;
    static bool Request(Exception e) => e is ApiException { Status: 400 or 413 };

    public static readonly IReadOnlyList<Target> All =
    [
        new("safetensors", "Safetensors.Read: a .safetensors file",
            (data, scratch) => Safetensors.Read(scratch.File("model.safetensors", data)), Checkpoint),
        new("onnx", "OnnxWeights.Read, then the BERT state-dict mapping and config inference: an .onnx file",
            (data, scratch) =>
            {
                var model = OnnxWeights.Read(scratch.File("model.onnx", data));
                var weights = OnnxWeights.ToBertStateDict(model);
                OnnxWeights.InferBertConfig(model, weights);
            }, Model),
        new("pickle", "TorchPickle.Read: a PyTorch (zip) checkpoint",
            (data, scratch) => TorchPickle.Read(scratch.File("pytorch_model.bin", data)), Checkpoint),
        new("config", "BertConfig.Load: a HuggingFace config.json",
            (data, scratch) => BertConfig.Load(scratch.File("config.json", data)), Model),
        new("adapter-config", "AdapterFiles.ReadManifest, then the method config checked against minilm-l6: adapter_config.json",
            (data, scratch) =>
            {
                var manifest = AdapterFiles.ReadManifest(scratch.Folder("adapter", AdapterFiles.ConfigFile, data));
                manifest.Config.Validate(MiniLmConfig);
            }, e => Model(e) || e is ArgumentException),
        new("fusion-config", "FusionFiles.ReadManifest: fusion_config.json",
            (data, scratch) => FusionFiles.ReadManifest(scratch.Folder("fusion", FusionFiles.ConfigFile, data)), Model),
        new("tsv", "DataReader.Read: a TSV file with a sentence and a label column",
            (data, scratch) => ReadData(scratch.File("data.tsv", data)), Data),
        new("csv", "DataReader.Read: a CSV file with a sentence and a label column",
            (data, scratch) => ReadData(scratch.File("data.csv", data)), Data),
        new("jsonl", "DataReader.Read: a JSONL file with sentence and label fields",
            (data, scratch) => ReadData(scratch.File("data.jsonl", data)), Data),
        new("tokenizer", "BertTokenizer.Encode with minilm-l6's vocabulary: any text (the bytes as UTF-8, and as UTF-16 with any surrogates)",
            (data, _) => Tokenize(data), _ => false),
        new("tokenizer-json", "BertTokenizer.FromTokenizerJson, then an encoding: a tokenizer.json",
            (data, scratch) => BertTokenizer.FromTokenizerJson(scratch.File("tokenizer.json", data)).Encode("Hello, wörld!", "a pair", 16),
            Checkpoint),
        new("vocab", "BertTokenizer.FromVocabBytes, then an encoding: a vocab.txt",
            (data, _) => BertTokenizer.FromVocabBytes(data).Encode("Hello, wörld!", "a pair", 16), Checkpoint),
        new("predict-request", "RequestBodies: a POST /v1/predict body",
            (data, _) =>
            {
                using var body = RequestBodies.Parse(data);
                RequestBodies.Predict(body, maxInputs: 256);
            }, Request),
        new("load-request", "RequestBodies: a POST /v1/adapters body",
            (data, _) =>
            {
                using var body = RequestBodies.Parse(data);
                RequestBodies.Load(body);
            }, Request),
    ];

    public static Target? Find(string name) => All.FirstOrDefault(t => t.Name == name);

    static void ReadData(string path)
    {
        var columns = new ColumnSpec("sentence", null, "label");
        DataReader.Read(path, columns, skipBadRows: true);
        DataReader.Read(path, columns, skipBadRows: false);
    }

    static void Tokenize(byte[] data)
    {
        var tokenizer = MiniLmTokenizer.Value;
        var utf16 = new string(MemoryMarshal.Cast<byte, char>(data.AsSpan(0, data.Length & ~1)));
        foreach (var text in new[] { Encoding.UTF8.GetString(data), utf16 })
        {
            int half = text.Length / 2;
            foreach (var (first, second) in new[] { (text, (string?)null), (text[..half], text[half..]) })
            {
                var encoding = tokenizer.Encode(first, second, maxLength: 64);
                if (encoding.Length is < 2 or > 64 || encoding.InputIds[0] != tokenizer.ClsId || encoding.InputIds[^1] != tokenizer.SepId)
                    throw new ContractViolationException($"an encoding of {encoding.Length} ids does not run [CLS] … [SEP] within 64");
                if (encoding.InputIds.Any(id => id < 0 || id >= tokenizer.VocabSize))
                    throw new ContractViolationException("an id outside the vocabulary");
                if (encoding.TokenTypeIds.Length != encoding.Length) throw new ContractViolationException("token types and ids differ in length");
            }
        }
    }

    /// <summary>Runs <paramref name="target"/> on one input and checks the contract; a <see cref="ContractViolationException"/> otherwise.</summary>
    public static void Check(Target target, byte[] data, Scratch scratch)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            target.Run(data, scratch);
        }
        catch (ContractViolationException)
        {
            throw;
        }
        catch (Exception e) when (target.Documented(e))
        {
            if (e.Message.Contains('\n') || e.Message.Contains('\r'))
                throw new ContractViolationException($"a {e.GetType().Name} message of several lines: {e.Message}", e);
            if (e.Message.Length == 0) throw new ContractViolationException($"a {e.GetType().Name} without a message", e);
        }
        catch (Exception e)
        {
            throw new ContractViolationException($"undocumented {e.GetType().Name}: {e.Message}", e);
        }
        // What a parser may allocate: a multiple of what it was given, plus a fixed allowance (tables, a vocabulary).
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        long allowed = 64L * data.Length + (64 << 20);
        if (allocated > allowed)
            throw new ContractViolationException($"allocated {allocated} bytes for an input of {data.Length} bytes (allowed {allowed})");
    }
}
