using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace AdapterSharp.Checkpoints;

/// <summary>
/// Reads a state dict saved by <c>torch.save</c> (e.g. <c>pytorch_model.bin</c>) without Python. Since PyTorch
/// 1.6 that is a zip archive holding <c>&lt;prefix&gt;/data.pkl</c>, a pickle whose tensors refer to storages
/// stored as raw little-endian records <c>&lt;prefix&gt;/data/&lt;key&gt;</c>. The pickle is run by a
/// restricted unpickler that knows only the handful of globals a state dict uses and refuses every other one,
/// so a malicious checkpoint cannot run code.
/// </summary>
public static class TorchPickle
{
    /// <summary>data.pkl holds only structure; the tensors' bytes are in separate records.</summary>
    const long MaxPickleBytes = 256L << 20;

    public static IReadOnlyDictionary<string, TensorData> Read(string path) => CheckpointIO.Guard(path, () =>
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        Span<byte> magic = stackalloc byte[4];
        int read = stream.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
        if (read < 4 || !magic.SequenceEqual("PK\x03\x04"u8))
            throw new CheckpointException(read > 0 && magic[0] == 0x80
                ? $"{path}: legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with a current PyTorch or convert it to safetensors"
                : $"{path}: not a PyTorch checkpoint (expected a zip archive)");
        stream.Position = 0;
        try
        {
            using var archive = new ZipArchive(stream, ZipArchiveMode.Read);
            return ReadArchive(archive, path, stream.Length);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointException($"{path}: corrupt zip archive: {CheckpointIO.OneLine(e.Message)}", e);
        }
    });

    static Dictionary<string, TensorData> ReadArchive(ZipArchive archive, string path, long fileLength)
    {
        // torch names the top folder after the file or "archive"; the reader takes whatever holds data.pkl.
        var pickles = archive.Entries
            .Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length)
            .ToList();
        if (pickles.Count != 1)
            throw new CheckpointException($"{path}: expected one <folder>/data.pkl record, found {pickles.Count}");
        string prefix = pickles[0].FullName[..^"data.pkl".Length];

        // Newer torch records the writer's byte order; storages are in that order.
        if (archive.GetEntry(prefix + "byteorder") is { } byteorder && Encoding.ASCII.GetString(ReadEntry(byteorder, 16, path, fileLength)) != "little")
            throw new CheckpointException($"{path}: big-endian checkpoints are not supported");

        var root = new Unpickler(ReadEntry(pickles[0], MaxPickleBytes, path, fileLength), path).Load();
        if (root is not PyDict dict)
            throw new CheckpointException($"{path}: expected a state dict (name → tensor) but the pickle holds {Describe(root)}");

        var storages = new Dictionary<string, byte[]>();
        var tensors = new Dictionary<string, TensorData>(dict.Items.Count);
        foreach (var (key, value) in dict.Items)
        {
            if (key is not string name) throw new CheckpointException($"{path}: state dict key {Describe(key)} is not a string");
            if (value is not TensorRef tensor)
                throw new CheckpointException($"{path}: state dict entry {CheckpointIO.Quote(name)} is {Describe(value)}, not a tensor");
            if (!storages.TryGetValue(tensor.Storage.Key, out var storage))
            {
                var entry = archive.GetEntry($"{prefix}data/{tensor.Storage.Key}")
                    ?? throw new CheckpointException($"{path}: storage record {CheckpointIO.Quote(tensor.Storage.Key)} is missing");
                long? size = TensorData.ByteCount(tensor.Storage.DType, [tensor.Storage.Numel]);
                if (entry.Length != size)
                    throw new CheckpointException($"{path}: storage {CheckpointIO.Quote(tensor.Storage.Key)} has {entry.Length} bytes but should have {size}");
                storages[tensor.Storage.Key] = storage = ReadEntry(entry, Array.MaxLength, path, fileLength);
            }
            tensors.Add(name, Materialize(tensor, storage, $"{path}: tensor {CheckpointIO.Quote(name)}"));
        }
        return tensors;
    }

    /// <summary>Copies the tensor's elements out of its storage into row-major order, honouring offset and strides.</summary>
    static TensorData Materialize(TensorRef tensor, byte[] storage, string label)
    {
        var (shape, stride, offset) = (tensor.Size, tensor.Stride, tensor.Offset);
        var dtype = tensor.Storage.DType;
        int size = dtype.ElementSize();
        if (shape.Length != stride.Length) throw new CheckpointException($"{label}: size and stride differ in length");
        long? byteCount = TensorData.ByteCount(dtype, shape);
        if (byteCount is null || byteCount > Array.MaxLength || offset < 0 || stride.Any(s => s < 0))
            throw new CheckpointException($"{label}: invalid size, stride or offset");
        if (byteCount == 0) return new TensorData(dtype, shape, []);

        // The last element read must lie inside the storage; checked before any copy.
        long numel = storage.Length / size, last;
        try
        {
            last = offset;
            for (int d = 0; d < shape.Length; d++) last = checked(last + (shape[d] - 1) * stride[d]);
        }
        catch (OverflowException)
        {
            throw new CheckpointException($"{label}: invalid size, stride or offset");
        }
        if (last >= numel)
            throw new CheckpointException($"{label}: view reaches element {last} of a storage of {numel}");

        var bytes = new byte[byteCount.Value];
        if (IsContiguous(shape, stride))
        {
            Buffer.BlockCopy(storage, checked((int)(offset * size)), bytes, 0, bytes.Length);
            return new TensorData(dtype, shape, bytes);
        }
        var index = new long[shape.Length];
        long source = offset;
        for (int i = 0; i < bytes.Length / size; i++)
        {
            Buffer.BlockCopy(storage, (int)(source * size), bytes, i * size, size);
            // Odometer over the dimensions, last one fastest.
            for (int d = shape.Length - 1; d >= 0; d--)
            {
                source += stride[d];
                if (++index[d] < shape[d]) break;
                source -= stride[d] * shape[d];
                index[d] = 0;
            }
        }
        return new TensorData(dtype, shape, bytes);
    }

    static bool IsContiguous(long[] shape, long[] stride)
    {
        long expected = 1;
        for (int d = shape.Length - 1; d >= 0; d--)
        {
            if (shape[d] != 1 && stride[d] != expected) return false;
            expected *= shape[d];
        }
        return true;
    }

    /// <summary>Deflate expands at most about 1032:1; a record declaring more than that of its compressed bytes lies.</summary>
    const long MaxDeflateRatio = 1032;

    static byte[] ReadEntry(ZipArchiveEntry entry, long limit, string path, long fileLength)
    {
        if (entry.Length > limit)
            throw new CheckpointException($"{path}: record {CheckpointIO.Quote(entry.FullName)} is too large ({entry.Length} bytes)");
        // The sizes in the zip directory are declared, not read: bound them by the bytes the record actually holds
        // before allocating by them (a 1 KB file may declare 200 MB).
        if (entry.CompressedLength > fileLength || entry.Length > entry.CompressedLength * MaxDeflateRatio + 64)
            throw new CheckpointException(
                $"{path}: record {CheckpointIO.Quote(entry.FullName)} declares {entry.Length} bytes from {entry.CompressedLength} compressed, more than the {fileLength}-byte file can hold");
        var bytes = new byte[entry.Length];
        using var stream = entry.Open();
        stream.ReadExactly(bytes);
        return bytes;
    }

    static string Describe(object? value) => value switch
    {
        null => "None",
        string s => $"the string {CheckpointIO.Quote(s)}",
        PyDict => "a dict",
        TensorRef => "a tensor",
        _ => $"a {value.GetType().Name}",
    };

    sealed class PyDict
    {
        public List<(object? Key, object? Value)> Items { get; } = [];
    }

    sealed record PyGlobal(string Module, string Name);

    sealed record StorageRef(TensorDType DType, string Key, long Numel);

    sealed record TensorRef(StorageRef Storage, long Offset, long[] Size, long[] Stride);

    /// <summary>
    /// The pickle virtual machine, cut down to the opcodes that <c>torch.save</c> emits for a state dict
    /// (protocols 2–5) and to an allow-list of globals that only build dicts, storages and tensors.
    /// </summary>
    sealed class Unpickler(byte[] data, string path)
    {
        static readonly Dictionary<string, TensorDType> Storages = new()
        {
            ["FloatStorage"] = TensorDType.F32, ["DoubleStorage"] = TensorDType.F64, ["HalfStorage"] = TensorDType.F16,
            ["BFloat16Storage"] = TensorDType.BF16, ["LongStorage"] = TensorDType.I64, ["IntStorage"] = TensorDType.I32,
            ["ShortStorage"] = TensorDType.I16, ["CharStorage"] = TensorDType.I8, ["ByteStorage"] = TensorDType.U8,
            ["BoolStorage"] = TensorDType.Bool,
        };

        readonly List<object?> stack = [];
        readonly List<int> marks = [];
        readonly Dictionary<long, object?> memo = [];
        readonly Dictionary<string, StorageRef> storages = [];
        int position;

        public object? Load()
        {
            while (true)
            {
                int at = position;
                byte op = Byte();
                switch (op)
                {
                    case 0x80: if (Byte() > 5) throw Fail($"unsupported pickle protocol at offset {at}"); break;  // PROTO
                    case 0x95: Bytes(8); break;  // FRAME: a hint for buffered readers only
                    case (byte)'.': return Pop();  // STOP
                    case (byte)'(': marks.Add(stack.Count); break;  // MARK
                    case (byte)')': Push(Array.Empty<object?>()); break;  // EMPTY_TUPLE
                    case (byte)'t': Push(PopMark().ToArray()); break;  // TUPLE
                    case 0x85: Push(new[] { Pop() }); break;  // TUPLE1
                    case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }  // TUPLE2
                    case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; }  // TUPLE3
                    case (byte)']': Push(new List<object?>()); break;  // EMPTY_LIST
                    case (byte)'a': { var item = Pop(); Peek<List<object?>>("APPEND").Add(item); break; }
                    case (byte)'e': { var items = PopMark(); Peek<List<object?>>("APPENDS").AddRange(items); break; }
                    case (byte)'}': Push(new PyDict()); break;  // EMPTY_DICT
                    case (byte)'s': { var v = Pop(); var k = Pop(); Peek<PyDict>("SETITEM").Items.Add((k, v)); break; }
                    case (byte)'u':  // SETITEMS
                    {
                        var items = PopMark();
                        if (items.Count % 2 != 0) throw Fail($"SETITEMS with an odd number of items at offset {at}");
                        var dict = Peek<PyDict>("SETITEMS");
                        for (int i = 0; i < items.Count; i += 2) dict.Items.Add((items[i], items[i + 1]));
                        break;
                    }
                    case (byte)'N': Push(null); break;
                    case 0x88: Push(true); break;  // NEWTRUE
                    case 0x89: Push(false); break;  // NEWFALSE
                    case (byte)'K': Push((long)Byte()); break;  // BININT1
                    case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Bytes(2))); break;  // BININT2
                    case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Bytes(4))); break;  // BININT
                    case 0x8a: Push(Long1(at)); break;  // LONG1
                    case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Bytes(8))); break;  // BINFLOAT
                    case (byte)'X': Push(Utf8(Bytes(BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4))), at)); break;  // BINUNICODE
                    case 0x8c: Push(Utf8(Bytes(Byte()), at)); break;  // SHORT_BINUNICODE
                    case (byte)'c': Push(Global(Line(), Line())); break;  // GLOBAL
                    case 0x93:  // STACK_GLOBAL
                    {
                        var name = Pop() as string;
                        var module = Pop() as string;
                        if (module is null || name is null) throw Fail($"STACK_GLOBAL without strings at offset {at}");
                        Push(Global(module, name));
                        break;
                    }
                    case (byte)'Q': Push(PersistentLoad(Pop())); break;  // BINPERSID
                    case (byte)'R': { var args = Pop(); var callable = Pop(); Push(Call(callable, args, at)); break; }  // REDUCE
                    case (byte)'b':  // BUILD: OrderedDict state is its _metadata attribute, which a reader can drop
                    {
                        Pop();
                        if (Top() is not PyDict) throw Fail($"BUILD on {Describe(Top())} at offset {at}");
                        break;
                    }
                    case (byte)'q': memo[Byte()] = Top(); break;  // BINPUT
                    case (byte)'r': memo[BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4))] = Top(); break;  // LONG_BINPUT
                    case 0x94: memo[memo.Count] = Top(); break;  // MEMOIZE
                    case (byte)'h': Push(Memo(Byte(), at)); break;  // BINGET
                    case (byte)'j': Push(Memo(BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4)), at)); break;  // LONG_BINGET
                    default: throw Fail($"unsupported pickle opcode 0x{op:x2} at offset {at}");
                }
            }
        }

        /// <summary>The allow-list. Anything else could run arbitrary code when called, so it is refused outright.</summary>
        object Global(string module, string name)
        {
            bool allowed = (module, name) switch
            {
                ("collections", "OrderedDict") => true,
                ("torch._utils", "_rebuild_tensor_v2" or "_rebuild_parameter") => true,
                ("torch", _) => Storages.ContainsKey(name),
                _ => false,
            };
            if (!allowed) throw Fail($"refusing to unpickle global {CheckpointIO.OneLine(module)}.{CheckpointIO.OneLine(name)}");
            return new PyGlobal(module, name);
        }

        object Call(object? callable, object? args, int at)
        {
            if (callable is not PyGlobal global || args is not object?[] a) throw Fail($"REDUCE on {Describe(callable)} at offset {at}");
            switch (global.Name)
            {
                case "OrderedDict" when a.Length == 0:
                    return new PyDict();
                // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                case "_rebuild_tensor_v2" when a.Length is 6 or 7 && a[0] is StorageRef storage && a[1] is long offset:
                    return new TensorRef(storage, offset, Longs(a[2], at), Longs(a[3], at));
                // _rebuild_parameter(data, requires_grad, backward_hooks): a Parameter is its tensor here
                case "_rebuild_parameter" when a.Length == 3 && a[0] is TensorRef tensor:
                    return tensor;
                default:
                    throw Fail($"unexpected call to {global.Module}.{global.Name} at offset {at}");
            }
        }

        /// <summary>torch.save's persistent id: ('storage', storage_type, key, location, numel).</summary>
        StorageRef PersistentLoad(object? pid)
        {
            if (pid is not object?[] { Length: 5 } t || t[0] is not "storage" || t[1] is not PyGlobal type
                || !Storages.TryGetValue(type.Name, out var dtype) || t[2] is not string key || t[4] is not long numel || numel < 0)
                throw Fail("unexpected persistent id (expected ('storage', type, key, location, numel))");
            var storage = new StorageRef(dtype, key, numel);
            if (storages.TryGetValue(key, out var seen) && seen != storage)
                throw Fail($"storage {CheckpointIO.Quote(key)} is used with two types or sizes");
            return storages[key] = storage;
        }

        long[] Longs(object? value, int at) =>
            value is object?[] items && items.All(i => i is long)
                ? items.Select(i => (long)i!).ToArray()
                : throw Fail($"expected a tuple of ints at offset {at}");

        long Long1(int at)
        {
            int n = Byte();
            if (n > 8) throw Fail($"integer too large at offset {at}");
            var bytes = Bytes(n);
            long value = 0;
            for (int i = n - 1; i >= 0; i--) value = (value << 8) | bytes[i];
            if (n is > 0 and < 8 && (bytes[n - 1] & 0x80) != 0) value -= 1L << (8 * n);  // two's complement sign
            return value;
        }

        object? Memo(long index, int at) =>
            memo.TryGetValue(index, out var value) ? value : throw Fail($"memo {index} read before it was written (offset {at})");

        string Line()
        {
            int end = Array.IndexOf(data, (byte)'\n', position, Math.Min(256, data.Length - position));
            if (end < 0) throw Fail($"unterminated GLOBAL name at offset {position}");
            string line = Encoding.ASCII.GetString(data, position, end - position);
            position = end + 1;
            return line;
        }

        string Utf8(ReadOnlySpan<byte> bytes, int at)
        {
            if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw Fail($"invalid UTF-8 string at offset {at}");
            return Encoding.UTF8.GetString(bytes);
        }

        List<object?> PopMark()
        {
            if (marks.Count == 0) throw Fail($"no MARK before offset {position - 1}");
            int start = marks[^1];
            marks.RemoveAt(marks.Count - 1);
            var items = stack.GetRange(start, stack.Count - start);
            stack.RemoveRange(start, stack.Count - start);
            return items;
        }

        void Push(object? value) => stack.Add(value);

        object? Pop()
        {
            var value = Top();
            stack.RemoveAt(stack.Count - 1);
            return value;
        }

        object? Top()
        {
            if (stack.Count == 0 || (marks.Count > 0 && marks[^1] == stack.Count))
                throw Fail($"stack underflow at offset {position - 1}");
            return stack[^1];
        }

        T Peek<T>(string opcode) where T : class =>
            Top() as T ?? throw Fail($"{opcode} on {Describe(Top())} at offset {position - 1}");

        byte Byte() => Bytes(1)[0];

        ReadOnlySpan<byte> Bytes(long count)
        {
            if (count < 0 || data.Length - position < count) throw Fail($"data.pkl is truncated at offset {position}");
            var span = data.AsSpan(position, (int)count);
            position += (int)count;
            return span;
        }

        CheckpointException Fail(string problem) => new($"{path}: {problem}");
    }
}
