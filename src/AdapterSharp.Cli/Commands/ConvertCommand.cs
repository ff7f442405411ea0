using System.CommandLine;
using AdapterSharp.Checkpoints;

namespace AdapterSharp.Cli.Commands;

/// <summary>
/// <c>adaptersharp convert --model M --output DIR</c>: writes any model AdapterSharp reads (built-in, directory,
/// ONNX) as a HuggingFace model folder: config.json, model.safetensors (f32, f16 or bf16) and vocab.txt.
/// </summary>
static class ConvertCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var vocab = CommonOptions.Vocab();
        var output = new Option<string>("--output", "-o") { Description = "Folder to write (must not exist).", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "f32 (default), f16 or bf16.", DefaultValueFactory = _ => "f32" };
        var command = new Command("convert", "Write a model as a HuggingFace folder (config.json, model.safetensors, vocab.txt).")
        {
            model, vocab, output, dtype,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            var target = parse.GetValue(output)!;
            if (Directory.Exists(target) || File.Exists(target)) throw new UsageException($"{target}: already exists");
            var type = parse.GetValue(dtype) switch
            {
                "f32" => TensorDType.F32,
                "f16" => TensorDType.F16,
                "bf16" => TensorDType.BF16,
                var other => throw new UsageException($"--dtype: '{other}' is not f32, f16 or bf16"),
            };
            var encoder = Pretrained.Load(parse.GetValue(model)!, parse.GetValue(vocab), Run.StderrLog);
            AtomicFolder.Write(target, staging =>
            {
                var weights = encoder.Weights.ToDictionary(w => w.Key, w => w.Value.DType == type ? w.Value : Cast(w.Value, type));
                Safetensors.Write(Path.Combine(staging, "model.safetensors"), weights, new Dictionary<string, string> { ["format"] = "pt" });
                encoder.Config.Save(Path.Combine(staging, "config.json"));
                File.WriteAllLines(Path.Combine(staging, "vocab.txt"),
                    Enumerable.Range(0, encoder.Tokenizer.VocabSize).Select(encoder.Tokenizer.IdToToken));
                // Casing travels with the vocabulary: without it a cased model would be read back lower-cased.
                File.WriteAllText(Path.Combine(staging, "tokenizer_config.json"),
                    $"{{\"tokenizer_class\": \"BertTokenizer\", \"do_lower_case\": {(encoder.Tokenizer.LowerCase ? "true" : "false")}}}\n");
            }, replace: false);
            Console.WriteLine($"{target}: {encoder.Weights.Count} tensors as {type}");
            return 0;
        }));
        return command;
    }

    static TensorData Cast(TensorData tensor, TensorDType type)
    {
        if (tensor.DType is not (TensorDType.F32 or TensorDType.F16 or TensorDType.BF16)) return tensor;
        var values = tensor.ToFloats();
        var bytes = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++)
        {
            ushort bits = type == TensorDType.F16
                ? BitConverter.HalfToUInt16Bits((Half)values[i])
                : RoundToBfloat16(values[i]);
            BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), bits);
        }
        return type == TensorDType.F32 ? TensorData.FromFloats(tensor.Shape, values) : new TensorData(type, tensor.Shape, bytes);
    }

    // Round to nearest even, as PyTorch's float → bfloat16 conversion does.
    static ushort RoundToBfloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return 0x7FC0;
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}
