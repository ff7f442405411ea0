using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Text;

namespace AdapterSharp.Tests;

/// <summary>
/// A tiny random BERT saved as a HuggingFace model folder, with a word-level vocabulary and a synthetic
/// sentiment task it can learn in seconds: a row is "pos" exactly when it contains the word "good".
/// </summary>
static class TinyTask
{
    static readonly string[] Words = ["good", "bad", .. Enumerable.Range(0, 88).Select(i => $"w{i}")];

    public static readonly string[] Vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", .. Words];

    public static BertTokenizer Tokenizer() => BertTokenizer.FromVocab(Vocabulary);

    /// <summary>Writes config.json, model.safetensors and vocab.txt of TinyBert (seed) into a new temp folder.</summary>
    public static string CreateModelDir(int seed = 0)
    {
        var dir = Directory.CreateTempSubdirectory("adaptersharp-tiny-").FullName;
        using var model = TinyBert.Create(seed);
        var tensors = StateDict.Tensors(model).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value));
        Safetensors.Write(Path.Combine(dir, "model.safetensors"), tensors);
        TinyBert.Config.Save(Path.Combine(dir, "config.json"));
        File.WriteAllLines(Path.Combine(dir, "vocab.txt"), Vocabulary);
        return dir;
    }

    public static List<Example> Examples(int count, int seed, string source = "synthetic")
    {
        var random = new Random(seed);
        var examples = new List<Example>();
        for (int i = 0; i < count; i++)
        {
            var words = Enumerable.Range(0, random.Next(3, 9)).Select(_ => Words[random.Next(2, Words.Length)]).ToList();
            bool positive = random.Next(2) == 0;
            words.Insert(random.Next(words.Count), positive ? "good" : "bad");
            examples.Add(new Example(string.Join(' ', words), null, positive ? "pos" : "neg", source, i + 1));
        }
        return examples;
    }

    /// <summary>The same task as a TSV file with a header (sentence, label).</summary>
    public static string WriteTsv(string dir, string name, IEnumerable<Example> examples)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllLines(path, ["sentence\tlabel", .. examples.Select(e => $"{e.Text}\t{e.Label}")]);
        return path;
    }
}
