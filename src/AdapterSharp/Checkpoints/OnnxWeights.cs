using System.Buffers.Binary;
using System.Text.RegularExpressions;

namespace AdapterSharp.Checkpoints;

/// <summary>One graph node: its operator, the value names it reads and writes, and its integer attributes.</summary>
public sealed record OnnxNode(
    string Name,
    string OpType,
    IReadOnlyList<string> Inputs,
    IReadOnlyList<string> Outputs,
    IReadOnlyDictionary<string, long> IntAttributes);

/// <summary>What a BERT checkpoint needs from an ONNX model: the initializers and enough of the graph to name them.</summary>
public sealed record OnnxModel(
    string Source,
    IReadOnlyDictionary<string, TensorData> Initializers,
    IReadOnlyList<OnnxNode> Nodes,
    IReadOnlyList<string> Inputs,
    IReadOnlyList<string> Outputs);

/// <summary>
/// Reads the weights of an ONNX model (a protobuf <c>ModelProto</c>) without an ONNX library, and maps an
/// exported BERT encoder's initializers back to Hugging Face <c>BertModel</c> state-dict keys.
/// </summary>
public static partial class OnnxWeights
{
    // Field numbers from onnx/onnx.proto.
    const int ModelIrVersion = 1, ModelGraph = 7;
    const int GraphNode = 1, GraphInitializer = 5, GraphInput = 11, GraphOutput = 12;
    const int NodeInput = 1, NodeOutput = 2, NodeName = 3, NodeOpType = 4, NodeAttribute = 5;
    const int AttributeName = 1, AttributeInt = 3;
    const int ValueInfoName = 1;
    const int TensorDims = 1, TensorDataType = 2, TensorSegment = 3, TensorFloatData = 4, TensorInt32Data = 5,
        TensorInt64Data = 7, TensorName = 8, TensorRawData = 9, TensorDoubleData = 10, TensorExternalData = 13,
        TensorDataLocation = 14;
    const int DataLocationExternal = 1;

    /// <summary>TensorProto.DataType values this reader understands; STRING, complex and unsigned 16/32/64 are not.</summary>
    static readonly Dictionary<int, TensorDType> DataTypes = new()
    {
        [1] = TensorDType.F32, [2] = TensorDType.U8, [3] = TensorDType.I8, [5] = TensorDType.I16, [6] = TensorDType.I32,
        [7] = TensorDType.I64, [9] = TensorDType.Bool, [10] = TensorDType.F16, [11] = TensorDType.F64, [16] = TensorDType.BF16,
    };

    public static OnnxModel Read(string path)
    {
        byte[] bytes = CheckpointIO.Guard(path, () => File.ReadAllBytes(path));
        try
        {
            return ReadModel(new ProtoReader(bytes), path);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointException($"{path}: not a readable ONNX model: {e.Message}", e);
        }
    }

    static OnnxModel ReadModel(ProtoReader model, string path)
    {
        ProtoReader? graph = null;
        bool hasIrVersion = false;
        while (model.TryReadTag(out int field, out var wireType))
        {
            if (field == ModelIrVersion)
            {
                ProtoReader.Expect(field, wireType, WireType.Varint);
                model.ReadVarint();
                hasIrVersion = true;
            }
            else if (field == ModelGraph)
            {
                ProtoReader.Expect(field, wireType, WireType.LengthDelimited);
                graph = model.ReadMessage();
            }
            else
            {
                model.Skip(wireType);
            }
        }
        if (!hasIrVersion || graph is null)
            throw new CheckpointException($"{path}: not an ONNX model: no {(hasIrVersion ? "graph" : "ir_version")}");

        var initializers = new Dictionary<string, TensorData>();
        var nodes = new List<OnnxNode>();
        var inputs = new List<string>();
        var outputs = new List<string>();
        while (graph.TryReadTag(out int field, out var wireType))
        {
            switch (field)
            {
                case GraphNode:
                    ProtoReader.Expect(field, wireType, WireType.LengthDelimited);
                    nodes.Add(ReadNode(graph.ReadMessage()));
                    break;
                case GraphInitializer:
                    ProtoReader.Expect(field, wireType, WireType.LengthDelimited);
                    var (name, tensor) = ReadTensor(graph.ReadMessage(), path);
                    if (!initializers.TryAdd(name, tensor))
                        throw new CheckpointException($"{path}: two initializers are named {CheckpointIO.Quote(name)}");
                    break;
                case GraphInput or GraphOutput:
                    ProtoReader.Expect(field, wireType, WireType.LengthDelimited);
                    (field == GraphInput ? inputs : outputs).Add(ReadValueInfoName(graph.ReadMessage()));
                    break;
                default:
                    graph.Skip(wireType);
                    break;
            }
        }
        return new OnnxModel(path, initializers, nodes, inputs, outputs);
    }

    static OnnxNode ReadNode(ProtoReader node)
    {
        var inputs = new List<string>();
        var outputs = new List<string>();
        var attributes = new Dictionary<string, long>();
        string name = "", opType = "";
        while (node.TryReadTag(out int field, out var wireType))
        {
            if (field is NodeInput or NodeOutput or NodeName or NodeOpType or NodeAttribute)
                ProtoReader.Expect(field, wireType, WireType.LengthDelimited);
            switch (field)
            {
                case NodeInput: inputs.Add(node.ReadString()); break;
                case NodeOutput: outputs.Add(node.ReadString()); break;
                case NodeName: name = node.ReadString(); break;
                case NodeOpType: opType = node.ReadString(); break;
                case NodeAttribute:
                    var attribute = node.ReadMessage();
                    string attributeName = "";
                    long? value = null;
                    while (attribute.TryReadTag(out int f, out var w))
                    {
                        if (f == AttributeName && w == WireType.LengthDelimited) attributeName = attribute.ReadString();
                        else if (f == AttributeInt && w == WireType.Varint) value = (long)attribute.ReadVarint();
                        else attribute.Skip(w);
                    }
                    if (value is { } i) attributes[attributeName] = i;
                    break;
                default: node.Skip(wireType); break;
            }
        }
        return new OnnxNode(name, opType, inputs, outputs, attributes);
    }

    static string ReadValueInfoName(ProtoReader valueInfo)
    {
        string name = "";
        while (valueInfo.TryReadTag(out int field, out var wireType))
        {
            if (field == ValueInfoName && wireType == WireType.LengthDelimited) name = valueInfo.ReadString();
            else valueInfo.Skip(wireType);
        }
        return name;
    }

    static (string Name, TensorData Tensor) ReadTensor(ProtoReader reader, string path)
    {
        string name = "";
        var dims = new List<long>();
        int dataType = 0;
        bool external = false, segmented = false;
        (int Start, int Length)? raw = null;
        int typedField = 0;  // which of float/int32/int64/double_data carried the values, if any
        var fixedValues = new MemoryStream();
        var varintValues = new List<long>();
        while (reader.TryReadTag(out int field, out var wireType))
        {
            switch (field)
            {
                case TensorDims: reader.ReadVarints(field, wireType, dims); break;
                case TensorDataType:
                    ProtoReader.Expect(field, wireType, WireType.Varint);
                    dataType = (int)reader.ReadVarint();
                    break;
                case TensorName:
                    ProtoReader.Expect(field, wireType, WireType.LengthDelimited);
                    name = reader.ReadString();
                    break;
                case TensorRawData:
                    ProtoReader.Expect(field, wireType, WireType.LengthDelimited);
                    raw = reader.ReadRange();
                    break;
                case TensorFloatData: reader.ReadFixed(field, wireType, WireType.Fixed32, 4, fixedValues); typedField = field; break;
                case TensorDoubleData: reader.ReadFixed(field, wireType, WireType.Fixed64, 8, fixedValues); typedField = field; break;
                case TensorInt32Data or TensorInt64Data: reader.ReadVarints(field, wireType, varintValues); typedField = field; break;
                case TensorDataLocation:
                    ProtoReader.Expect(field, wireType, WireType.Varint);
                    external |= reader.ReadVarint() == DataLocationExternal;
                    break;
                case TensorExternalData: external = true; reader.Skip(wireType); break;
                case TensorSegment: segmented = true; reader.Skip(wireType); break;
                default: reader.Skip(wireType); break;
            }
        }

        string label = $"{path}: initializer {CheckpointIO.Quote(name)}";
        if (external)
            throw new CheckpointException($"{label} keeps its data in an external file, which is not supported (save the model with its weights inside the .onnx file)");
        if (segmented) throw new CheckpointException($"{label} is stored in segments, which is not supported");
        if (!DataTypes.TryGetValue(dataType, out var dtype))
            throw new CheckpointException($"{label} has unsupported data type {dataType}");
        long[] shape = [.. dims];
        long? byteCount = TensorData.ByteCount(dtype, shape);
        if (byteCount is null || byteCount > Array.MaxLength)
            throw new CheckpointException($"{label} has an invalid shape [{string.Join(", ", shape)}]");
        long count = byteCount.Value / dtype.ElementSize();

        byte[] bytes;
        if (raw is { } range)
        {
            if (range.Length != byteCount)
                throw new CheckpointException($"{label}: raw_data has {range.Length} bytes but {dtype} [{string.Join(", ", shape)}] needs {byteCount}");
            bytes = reader.Slice(range).ToArray();
        }
        else if (typedField is TensorFloatData or TensorDoubleData)
        {
            if (dtype != (typedField == TensorFloatData ? TensorDType.F32 : TensorDType.F64))
                throw new CheckpointException($"{label}: field {typedField} cannot hold {dtype} values");
            if (fixedValues.Length != byteCount)
                throw new CheckpointException($"{label}: has {fixedValues.Length / dtype.ElementSize()} values but its shape needs {count}");
            bytes = fixedValues.ToArray();
        }
        else if (typedField is TensorInt32Data or TensorInt64Data)
        {
            bool fits = typedField == TensorInt64Data
                ? dtype == TensorDType.I64
                : dtype is TensorDType.I32 or TensorDType.I16 or TensorDType.I8 or TensorDType.U8 or TensorDType.Bool
                    or TensorDType.F16 or TensorDType.BF16;
            if (!fits) throw new CheckpointException($"{label}: field {typedField} cannot hold {dtype} values");
            if (varintValues.Count != count)
                throw new CheckpointException($"{label}: has {varintValues.Count} values but its shape needs {count}");
            // int32_data widens the small types (and FLOAT16/BFLOAT16 bit patterns): keep each value's low bytes.
            int size = dtype.ElementSize();
            bytes = new byte[byteCount.Value];
            Span<byte> wide = stackalloc byte[8];
            for (int i = 0; i < varintValues.Count; i++)
            {
                BinaryPrimitives.WriteInt64LittleEndian(wide, varintValues[i]);
                wide[..size].CopyTo(bytes.AsSpan(i * size));
            }
        }
        else if (count == 0)
        {
            bytes = [];
        }
        else
        {
            throw new CheckpointException($"{label} has no data");
        }
        return (name, new TensorData(dtype, shape, bytes));
    }

    /// <summary>
    /// Maps an exported BERT encoder's initializers to Hugging Face <c>BertModel</c> state-dict keys, in
    /// <c>state_dict()</c> order. Named initializers map directly (a leading <c>bert.</c> is dropped). The
    /// exporter folds each Linear weight into an anonymous initializer (e.g. <c>927</c>) holding Wᵀ for a MatMul;
    /// it is named by the bias that the following Add applies, and transposed back to PyTorch's [out, in].
    /// Buffers such as <c>embeddings.position_ids</c> and shape constants are left out.
    /// </summary>
    public static IReadOnlyDictionary<string, TensorData> ToBertStateDict(OnnxModel model)
    {
        var found = new Dictionary<string, TensorData>();
        void Add(string key, TensorData tensor, string from)
        {
            if (!found.TryAdd(key, tensor))
                throw new CheckpointException($"{model.Source}: both {CheckpointIO.Quote(from)} and another tensor map to '{key}'");
        }

        // A weight that feeds a MatMul, or a Gemm without transB, is stored [in, out] whatever its name.
        var storedTransposed = new HashSet<string>();
        foreach (var node in model.Nodes)
            if (node.Inputs.Count >= 2 && (node.OpType == "MatMul" || (node.OpType == "Gemm" && !TransB(node))))
                storedTransposed.Add(node.Inputs[1]);

        foreach (var (name, tensor) in model.Initializers)
            if (BertKey(name) is { } key)
                Add(key, key.EndsWith(".weight", StringComparison.Ordinal) && storedTransposed.Contains(name) && tensor.Shape.Length == 2
                    ? tensor.Transpose2D() : tensor, name);

        var consumers = model.Nodes
            .SelectMany(node => node.Inputs.Select(input => (input, node)))
            .ToLookup(p => p.input, p => p.node);
        foreach (var node in model.Nodes)
        {
            if (node.Inputs.Count < 2 || node.Outputs.Count < 1) continue;
            string weightName = node.Inputs[1];
            if (BertKey(weightName) is not null
                || !model.Initializers.TryGetValue(weightName, out var weight)
                || weight.Shape.Length != 2)
                continue;
            // MatMul(x, Wᵀ) is followed by Add(bias, ·) in either operand order; Gemm(x, W, bias) carries its own.
            string? biasName = node.OpType switch
            {
                "MatMul" => consumers[node.Outputs[0]]
                    .Where(add => add.OpType == "Add" && add.Inputs.Count == 2)
                    .Select(add => add.Inputs[0] == node.Outputs[0] ? add.Inputs[1] : add.Inputs[0])
                    .FirstOrDefault(IsBias),
                "Gemm" when node.Inputs.Count >= 3 && IsBias(node.Inputs[2]) => node.Inputs[2],
                _ => null,
            };
            if (biasName is null) continue;
            var linear = node.OpType == "Gemm" && TransB(node) ? weight : weight.Transpose2D();  // [out, in]
            if (linear.Shape[0] != model.Initializers[biasName].Shape[0]) continue;
            Add(BertKey(biasName)![..^".bias".Length] + ".weight", linear, weightName);
        }

        // Emit exactly BertModel's keys, in its order; the first one missing means this is not a BERT export.
        int layers = found.Keys
            .Select(key => LayerKey().Match(key))
            .Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].ValueSpan, provider: null) + 1)
            .DefaultIfEmpty(1)
            .Max();
        bool hasPooler = found.ContainsKey("pooler.dense.weight") || found.ContainsKey("pooler.dense.bias");
        var result = new Dictionary<string, TensorData>();
        foreach (string key in BertModelKeys(layers, hasPooler))
        {
            if (!found.TryGetValue(key, out var tensor))
                throw new CheckpointException($"{model.Source}: not a BERT encoder graph: no tensor for '{key}'");
            result[key] = tensor;
        }
        return result;

        bool IsBias(string name) =>
            BertKey(name) is { } key && key.EndsWith(".bias", StringComparison.Ordinal)
            && !key.Contains("LayerNorm", StringComparison.Ordinal)
            && model.Initializers.TryGetValue(name, out var bias) && bias.Shape.Length == 1;
    }

    /// <summary>The keys of HF <c>BertModel.state_dict()</c> (transformers ≥ 4.31, where position_ids is not saved).</summary>
    public static IEnumerable<string> BertModelKeys(int layers, bool pooler = true)
    {
        string[] embeddings = ["word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"];
        foreach (string name in embeddings) yield return $"embeddings.{name}";
        string[] layer =
        [
            "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
            "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm",
        ];
        for (int i = 0; i < layers; i++)
            foreach (string module in layer)
            {
                yield return $"encoder.layer.{i}.{module}.weight";
                yield return $"encoder.layer.{i}.{module}.bias";
            }
        if (pooler)
        {
            yield return "pooler.dense.weight";
            yield return "pooler.dense.bias";
        }
    }

    static bool TransB(OnnxNode gemm) => gemm.IntAttributes.GetValueOrDefault("transB") != 0;

    /// <summary>The state-dict key for an initializer named like a BERT parameter, or null.</summary>
    static string? BertKey(string name)
    {
        string key = name.StartsWith("bert.", StringComparison.Ordinal) ? name["bert.".Length..] : name;
        return BertParameter().IsMatch(key) ? key : null;
    }

    [GeneratedRegex(@"^(embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight"
        + @"|embeddings\.LayerNorm\.(weight|bias)"
        + @"|encoder\.layer\.[0-9]{1,4}\.(attention\.self\.(query|key|value)|attention\.output\.dense|attention\.output\.LayerNorm"
        + @"|intermediate\.dense|output\.dense|output\.LayerNorm)\.(weight|bias)"
        + @"|pooler\.dense\.(weight|bias))$")]
    private static partial Regex BertParameter();

    [GeneratedRegex(@"^encoder\.layer\.([0-9]+)\.")]
    private static partial Regex LayerKey();
}
