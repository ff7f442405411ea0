using AdapterSharp.Checkpoints;
using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>
/// An adapter's (or fusion's) tensors to and from its file, by the keys its injection recorded: its own modules
/// under the site they sit at without its name (<c>encoder.layer.3.output.adapter.down.weight</c>), its head as
/// <c>head.*</c>, base tensors it fine-tunes under their base names; so a file loads under any name.
/// </summary>
public static class AdapterState
{
    /// <summary>What <paramref name="record"/> owns, by file key.</summary>
    public static Dictionary<string, TensorData> Tensors(AdapterRecord record) =>
        record.Tensors.ToDictionary(t => t.Key, t => StateDict.FromTensor(t.Parameter), StringComparer.Ordinal);

    /// <summary>
    /// Copies <paramref name="tensors"/> into what <paramref name="record"/> owns, after checking that the file holds
    /// exactly those keys with those shapes; a <see cref="ModelFormatException"/> naming <paramref name="source"/> otherwise.
    /// </summary>
    public static void Fill(AdapterRecord record, IReadOnlyDictionary<string, TensorData> tensors, string source)
    {
        var targets = record.Tensors.ToDictionary(t => t.Key, t => (Tensor)t.Parameter, StringComparer.Ordinal);
        var missing = targets.Keys.FirstOrDefault(k => !tensors.ContainsKey(k));
        if (missing is not null)
            throw new ModelFormatException($"{source}: adapter file lacks tensor '{missing}' that its config requires");
        var unexpected = tensors.Keys.FirstOrDefault(k => !targets.ContainsKey(k));
        if (unexpected is not null)
            throw new ModelFormatException($"{source}: unexpected tensor '{unexpected}' for this adapter config");
        foreach (var (key, target) in targets)
            if (!tensors[key].Shape.SequenceEqual(target.shape))
                throw new ModelFormatException(
                    $"{source}: '{key}' has shape [{string.Join(", ", tensors[key].Shape)}], expected [{string.Join(", ", target.shape)}]");
        using var noGrad = no_grad();
        foreach (var (key, target) in targets)
        {
            using var scope = NewDisposeScope();
            target.copy_(StateDict.ToTensor(tensors[key]).to(target.device));
        }
    }
}
