using System.Buffers.Binary;
using System.Text;
using AdapterSharp.Checkpoints;
using Xunit;

namespace AdapterSharp.Tests.Checkpoints;

/// <summary>A fresh directory under the system temp folder, deleted on dispose.</summary>
public sealed class TempDirectory : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("adaptersharp-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string Write(string name, byte[] bytes)
    {
        string path = File(name);
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

public static class Tensors
{
    public static TensorData Random(TensorDType dtype, long[] shape, int seed)
    {
        var bytes = new byte[TensorData.ByteCount(dtype, shape)!.Value];
        new Random(seed).NextBytes(bytes);
        return new TensorData(dtype, shape, bytes);
    }

    public static void AssertEqual(TensorData expected, TensorData actual)
    {
        Assert.Equal(expected.DType, actual.DType);
        Assert.Equal(expected.Shape, actual.Shape);
        Assert.Equal(expected.Bytes, actual.Bytes);
    }
}

/// <summary>Writes protobuf wire format, to build small ONNX models by hand.</summary>
public sealed class ProtoWriter
{
    readonly List<byte> buffer = [];

    public byte[] ToArray() => [.. buffer];

    public ProtoWriter Varint(int field, ulong value) => Tag(field, 0).Raw(value);

    public ProtoWriter Bytes(int field, byte[] value) => Tag(field, 2).Raw((ulong)value.Length).Append(value);

    public ProtoWriter Text(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

    public ProtoWriter Message(int field, ProtoWriter message) => Bytes(field, message.ToArray());

    public ProtoWriter PackedVarints(int field, IEnumerable<long> values)
    {
        var packed = new ProtoWriter();
        foreach (long v in values) packed.Raw((ulong)v);
        return Bytes(field, packed.ToArray());
    }

    public ProtoWriter Tag(int field, int wireType) => Raw((ulong)((field << 3) | wireType));

    public ProtoWriter Raw(ulong value)
    {
        while (value >= 0x80)
        {
            buffer.Add((byte)(value | 0x80));
            value >>= 7;
        }
        buffer.Add((byte)value);
        return this;
    }

    public ProtoWriter Append(byte[] bytes)
    {
        buffer.AddRange(bytes);
        return this;
    }

    // ONNX messages (field numbers from onnx/onnx.proto).
    public static ProtoWriter Model(ProtoWriter graph) => new ProtoWriter().Varint(1, 7).Text(2, "test").Message(7, graph);

    public static ProtoWriter Tensor(string name, TensorData tensor, int dataType)
    {
        var t = new ProtoWriter().PackedVarints(1, tensor.Shape).Varint(2, (ulong)dataType).Text(8, name);
        return t.Bytes(9, tensor.Bytes);
    }

    public static ProtoWriter Node(string opType, string[] inputs, string[] outputs, params (string Name, long Value)[] ints)
    {
        var node = new ProtoWriter();
        foreach (string i in inputs) node.Text(1, i);
        foreach (string o in outputs) node.Text(2, o);
        node.Text(3, $"{opType}_{outputs[0]}").Text(4, opType);
        foreach (var (name, value) in ints) node.Message(5, new ProtoWriter().Text(1, name).Varint(3, (ulong)value).Varint(20, 2));
        return node;
    }
}

/// <summary>
/// Writes pickles the way CPython's protocol-2 pickler does for <c>torch.save(state_dict)</c>: GLOBAL for
/// classes, strings and globals memoized with BINPUT and reused with BINGET, TUPLE1-3 for short tuples, and
/// tensors as <c>_rebuild_tensor_v2</c> calls whose storages are persistent ids.
/// </summary>
public sealed class TorchPickleWriter
{
    readonly List<byte> buffer = [];
    readonly Dictionary<string, int> memo = [];

    public sealed record Tensor(string Name, string StorageType, string StorageKey, long StorageNumel, long Offset, long[] Size, long[] Stride);

    public static byte[] StateDict(IEnumerable<Tensor> tensors)
    {
        var w = new TorchPickleWriter();
        w.Op(0x80).Op(2);                                   // PROTO 2
        w.Global("collections", "OrderedDict").Op(')').Op('R').Put("<state dict>");
        w.Op('(');
        foreach (var t in tensors)
        {
            w.Str(t.Name);
            w.Global("torch._utils", "_rebuild_tensor_v2");
            w.Op('(');
            // persistent id ('storage', storage_type, key, location, numel), then BINPERSID
            w.Op('(').Str("storage").Global("torch", t.StorageType).Str(t.StorageKey).Str("cpu").Int(t.StorageNumel).Op('t').Put(null).Op('Q');
            w.Int(t.Offset).Tuple(t.Size).Tuple(t.Stride);
            w.Op(0x89);                                     // requires_grad = False
            w.Global("collections", "OrderedDict").Op(')').Op('R').Put(null);  // backward_hooks
            w.Op('t').Put(null).Op('R').Put(null);
        }
        w.Op('u');                                          // SETITEMS
        // OrderedDict state: {'_metadata': OrderedDict([('', {'version': 1})])}, applied by BUILD
        w.Op('}').Put(null).Str("_metadata");
        w.Global("collections", "OrderedDict").Op(')').Op('R').Put(null);
        w.Str("").Op('}').Put(null).Str("version").Int(1).Op('s').Op('s');
        w.Op('s').Op('b').Op('.');
        return [.. w.buffer];
    }

    /// <summary>A pickle that calls <paramref name="module"/>.<paramref name="name"/>('id'), like an exploit would.</summary>
    public static byte[] CallingGlobal(string module, string name)
    {
        var w = new TorchPickleWriter();
        w.Op(0x80).Op(2).Global(module, name).Str("id").Op(0x85).Op('R').Op('.');
        return [.. w.buffer];
    }

    TorchPickleWriter Op(int opcode)
    {
        buffer.Add((byte)opcode);
        return this;
    }

    TorchPickleWriter Global(string module, string name)
    {
        string key = $"{module}\n{name}\n";
        if (Get(key)) return this;
        Op('c').Bytes(Encoding.ASCII.GetBytes(key));
        return Put(key);
    }

    TorchPickleWriter Str(string value)
    {
        if (Get("str:" + value)) return this;
        byte[] utf8 = Encoding.UTF8.GetBytes(value);
        Span<byte> length = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(length, utf8.Length);
        Op('X').Bytes(length.ToArray()).Bytes(utf8);
        return Put("str:" + value);
    }

    TorchPickleWriter Int(long value)
    {
        if (value is >= 0 and < 256) return Op('K').Op((int)value);
        if (value is >= 0 and < 65536) return Op('M').Bytes([(byte)value, (byte)(value >> 8)]);
        if (value is >= int.MinValue and <= int.MaxValue) return Op('J').Bytes(BitConverter.GetBytes((int)value));
        return Op(0x8a).Op(8).Bytes(BitConverter.GetBytes(value));  // LONG1
    }

    TorchPickleWriter Tuple(long[] items)
    {
        if (items.Length == 0) return Op(')');
        if (items.Length > 3) Op('(');
        foreach (long item in items) Int(item);
        return Op(items.Length switch { 1 => 0x85, 2 => 0x86, 3 => 0x87, _ => 't' }).Put(null);
    }

    bool Get(string key)
    {
        if (!memo.TryGetValue(key, out int index)) return false;
        Op('h').Op(index);
        return true;
    }

    TorchPickleWriter Put(string? key)
    {
        int index = memo.Count;
        memo[key ?? $"<anonymous {index}>"] = index;
        return Op('q').Op(index);
    }

    TorchPickleWriter Bytes(byte[] bytes)
    {
        buffer.AddRange(bytes);
        return this;
    }
}
