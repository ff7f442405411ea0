using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Checkpoints;

/// <summary>
/// Moves tensors between checkpoint form (<see cref="TensorData"/>) and TorchSharp modules, checking names and
/// shapes so that a mismatch is a clear error rather than a silently half-loaded model.
/// </summary>
public static class StateDict
{
    /// <summary>
    /// Brings HF encoder checkpoint names to <see cref="BertModel"/>'s: drops the <c>bert.</c> prefix of task
    /// checkpoints, renames TF-era <c>LayerNorm.gamma/beta</c>, and leaves out what is not part of the
    /// encoder (task heads such as <c>cls.*</c> or <c>classifier.*</c>, and the <c>position_ids</c> buffer).
    /// </summary>
    public static Dictionary<string, TensorData> NormalizeBertKeys(IReadOnlyDictionary<string, TensorData> weights)
    {
        bool prefixed = weights.Keys.Any(k => k.StartsWith("bert.", StringComparison.Ordinal));
        var result = new Dictionary<string, TensorData>(StringComparer.Ordinal);
        foreach (var (rawName, tensor) in weights)
        {
            var name = rawName;
            if (prefixed)
            {
                if (!name.StartsWith("bert.", StringComparison.Ordinal)) continue; // the task head
                name = name["bert.".Length..];
            }
            if (!(name.StartsWith("embeddings.", StringComparison.Ordinal)
                  || name.StartsWith("encoder.", StringComparison.Ordinal)
                  || name.StartsWith("pooler.", StringComparison.Ordinal)))
                continue;
            if (name.EndsWith(".position_ids", StringComparison.Ordinal)) continue;
            name = name.Replace("LayerNorm.gamma", "LayerNorm.weight", StringComparison.Ordinal)
                       .Replace("LayerNorm.beta", "LayerNorm.bias", StringComparison.Ordinal);
            result[name] = tensor;
        }
        return result;
    }

    /// <summary>
    /// Copies <paramref name="weights"/> into <paramref name="module"/>'s parameters and buffers. Every
    /// module tensor must be present with the same shape, and every weight must belong to the module;
    /// otherwise a <see cref="ModelFormatException"/> names <paramref name="source"/>, the tensor and the shapes.
    /// </summary>
    public static void Load(nn.Module module, IReadOnlyDictionary<string, TensorData> weights, string source)
    {
        var targets = Tensors(module);
        var missing = targets.Keys.Where(k => !weights.ContainsKey(k)).ToList();
        if (missing.Count > 0)
            throw new ModelFormatException(
                $"{source}: weights do not match the config: missing '{missing[0]}'" + More(missing.Count));
        var unexpected = weights.Keys.Where(k => !targets.ContainsKey(k)).ToList();
        if (unexpected.Count > 0)
            throw new ModelFormatException(
                $"{source}: weights do not match the config: unexpected tensor '{unexpected[0]}'" + More(unexpected.Count));
        foreach (var (name, target) in targets)
        {
            var data = weights[name];
            if (!data.Shape.SequenceEqual(target.shape))
                throw new ModelFormatException(
                    $"{source}: weights do not match the config: '{name}' has shape [{string.Join(", ", data.Shape)}], " +
                    $"the config needs [{string.Join(", ", target.shape)}]");
        }
        using var noGrad = no_grad();
        foreach (var (name, target) in targets)
        {
            using var scope = NewDisposeScope();
            target.copy_(ToTensor(weights[name]));
        }
    }

    /// <summary>The module's parameters and persistent buffers by state-dict name.</summary>
    public static Dictionary<string, Tensor> Tensors(nn.Module module)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, parameter) in module.named_parameters()) result[name] = parameter;
        foreach (var (name, buffer) in module.named_buffers(include_nonpersistent: false)) result[name] = buffer;
        return result;
    }

    /// <summary>A CPU tensor with the data's dtype and shape (copied, so the caller may drop the bytes).</summary>
    public static Tensor ToTensor(TensorData data)
    {
        var scalarType = data.DType switch
        {
            TensorDType.F32 => ScalarType.Float32,
            TensorDType.F16 => ScalarType.Float16,
            TensorDType.BF16 => ScalarType.BFloat16,
            TensorDType.F64 => ScalarType.Float64,
            TensorDType.I64 => ScalarType.Int64,
            TensorDType.I32 => ScalarType.Int32,
            TensorDType.I16 => ScalarType.Int16,
            TensorDType.I8 => ScalarType.Int8,
            TensorDType.U8 => ScalarType.Byte,
            TensorDType.Bool => ScalarType.Bool,
            _ => throw new ArgumentOutOfRangeException(nameof(data), data.DType, "unsupported dtype"),
        };
        var tensor = empty(data.Shape, scalarType);
        if (data.Bytes.Length > 0) tensor.bytes = data.Bytes;
        return tensor;
    }

    /// <summary>A copy of a tensor's values in checkpoint form (moved to the CPU, made contiguous).</summary>
    public static TensorData FromTensor(Tensor tensor)
    {
        using var scope = NewDisposeScope();
        var cpu = tensor.detach().cpu().contiguous();
        var dtype = cpu.dtype switch
        {
            ScalarType.Float32 => TensorDType.F32,
            ScalarType.Float16 => TensorDType.F16,
            ScalarType.BFloat16 => TensorDType.BF16,
            ScalarType.Float64 => TensorDType.F64,
            ScalarType.Int64 => TensorDType.I64,
            ScalarType.Int32 => TensorDType.I32,
            ScalarType.Int16 => TensorDType.I16,
            ScalarType.Int8 => TensorDType.I8,
            ScalarType.Byte => TensorDType.U8,
            ScalarType.Bool => TensorDType.Bool,
            var other => throw new ArgumentException($"unsupported dtype {other}", nameof(tensor)),
        };
        return new TensorData(dtype, cpu.shape.ToArray(), cpu.numel() == 0 ? [] : cpu.bytes.ToArray());
    }

    static string More(int count) => count > 1 ? $" (and {count - 1} more)" : "";
}
