using AdapterSharp.Checkpoints;
using AdapterSharp.Model;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// A tiny random BERT (<see cref="TinyBert"/>'s config) on disk, for the CLI to load: HF model directories,
/// each written fresh so that a test can break one part of it, and a hand-built ONNX export of the same weights.
/// </summary>
public sealed class TinyModelFiles : IDisposable
{
    readonly TempDirectory root = new();
    int next;

    public BertConfig Config => TinyBert.Config;

    /// <summary>The state dict under HF names, as it would be saved to model.safetensors.</summary>
    public IReadOnlyDictionary<string, TensorData> Weights { get; }

    public TinyModelFiles()
    {
        using var model = TinyBert.Create(seed: 1);
        Weights = StateDict.Tensors(model).ToDictionary(p => p.Key, p => StateDict.FromTensor(p.Value), StringComparer.Ordinal);
    }

    /// <summary>A new directory with config.json, model.safetensors and vocab.txt.</summary>
    public string ModelDirectory(BertConfig? config = null, IReadOnlyDictionary<string, TensorData>? weights = null)
    {
        var dir = NewDirectory();
        File.WriteAllText(Path.Combine(dir, "config.json"), (config ?? Config).ToJson());
        Safetensors.Write(Path.Combine(dir, "model.safetensors"), weights ?? Weights);
        WriteVocab(Path.Combine(dir, "vocab.txt"));
        return dir;
    }

    /// <summary>A new directory holding <c>model.onnx</c> (the weights as named initializers) and config.json, but no vocabulary.</summary>
    public string OnnxFile()
    {
        var graph = new ProtoWriter();
        foreach (var (name, tensor) in Weights) graph.Message(5, ProtoWriter.Tensor(name, tensor, dataType: 1));
        var dir = NewDirectory();
        File.WriteAllText(Path.Combine(dir, "config.json"), Config.ToJson());
        var path = Path.Combine(dir, "model.onnx");
        File.WriteAllBytes(path, ProtoWriter.Model(graph).ToArray());
        return path;
    }

    public string NewDirectory() =>
        Directory.CreateDirectory(Path.Combine(root.Path, $"m{Interlocked.Increment(ref next)}")).FullName;

    /// <summary>Special tokens, a few words, then fillers up to the config's vocab_size.</summary>
    public void WriteVocab(string path)
    {
        string[] words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "bad", "!", ".", ","];
        var vocab = words.Concat(Enumerable.Range(0, Config.VocabSize - words.Length).Select(i => $"[unused{i}]"));
        File.WriteAllText(path, string.Join("\n", vocab) + "\n");
    }

    public void Dispose() => root.Dispose();
}
