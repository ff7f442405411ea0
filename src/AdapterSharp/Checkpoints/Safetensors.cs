using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Unicode;

namespace AdapterSharp.Checkpoints;

/// <summary>Where one tensor lives in a safetensors file. Offsets are relative to the start of the data section.</summary>
public sealed record SafetensorsEntry(TensorDType DType, long[] Shape, long Begin, long End);

/// <summary>A safetensors header: the tensors' places, the free-form <c>__metadata__</c>, and where data starts.</summary>
public sealed record SafetensorsHeader(
    IReadOnlyDictionary<string, SafetensorsEntry> Entries,
    IReadOnlyDictionary<string, string> Metadata,
    long DataStart);

public sealed record SafetensorsFile(
    IReadOnlyDictionary<string, TensorData> Tensors,
    IReadOnlyDictionary<string, string> Metadata);

/// <summary>
/// Reads and writes the safetensors format: an 8-byte little-endian header length, a UTF-8 JSON header
/// mapping names to {dtype, shape, data_offsets}, then the tensors' bytes. The file is treated as hostile:
/// every number in the header is checked against the file before a byte of data is read.
/// </summary>
public static class Safetensors
{
    /// <summary>The reference implementation refuses headers above this size too.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    const string MetadataKey = "__metadata__";

    static readonly (string Name, TensorDType DType)[] DTypeNames =
    [
        ("F64", TensorDType.F64), ("F32", TensorDType.F32), ("F16", TensorDType.F16), ("BF16", TensorDType.BF16),
        ("I64", TensorDType.I64), ("I32", TensorDType.I32), ("I16", TensorDType.I16), ("I8", TensorDType.I8),
        ("U8", TensorDType.U8), ("BOOL", TensorDType.Bool),
    ];

    public static IReadOnlyDictionary<string, TensorData> Read(string path) => ReadFile(path).Tensors;

    /// <summary>Tensors and <c>__metadata__</c>. Each tensor is read from its own byte range, so memory stays near the file's size.</summary>
    public static SafetensorsFile ReadFile(string path) => CheckpointIO.Guard(path, () =>
    {
        using var stream = OpenRead(path);
        var header = ReadHeader(stream, path);
        var tensors = new Dictionary<string, TensorData>(header.Entries.Count);
        foreach (var (name, entry) in header.Entries)
        {
            var bytes = new byte[entry.End - entry.Begin];
            stream.Position = header.DataStart + entry.Begin;
            stream.ReadExactly(bytes);
            tensors[name] = new TensorData(entry.DType, entry.Shape, bytes);
        }
        return new SafetensorsFile(tensors, header.Metadata);
    });

    /// <summary>The header alone, validated against the file's length; no tensor data is read.</summary>
    public static SafetensorsHeader ReadHeader(string path) => CheckpointIO.Guard(path, () =>
    {
        using var stream = OpenRead(path);
        return ReadHeader(stream, path);
    });

    /// <summary>
    /// A sharded checkpoint: <c>model.safetensors.index.json</c> whose <c>weight_map</c> names, for each tensor,
    /// the shard file (next to the index) that holds it. All shards are read and merged.
    /// </summary>
    public static IReadOnlyDictionary<string, TensorData> ReadSharded(string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        string directory = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var merged = new Dictionary<string, TensorData>(weightMap.Count);
        foreach (string shard in weightMap.Values.Distinct())
        {
            if (Path.IsPathRooted(shard) || shard.Contains('/') || shard.Contains('\\') || shard is "." or "..")
                throw new CheckpointException($"{indexPath}: shard {CheckpointIO.Quote(shard)} is not a file name next to the index");
            string shardPath = Path.Combine(directory, shard);
            if (!File.Exists(shardPath))
                throw new CheckpointException($"{indexPath}: shard {CheckpointIO.Quote(shard)} not found");
            foreach (var (name, tensor) in Read(shardPath))
                if (!merged.TryAdd(name, tensor))
                    throw new CheckpointException($"{shardPath}: tensor {CheckpointIO.Quote(name)} is also in another shard");
        }
        foreach (var (name, shard) in weightMap)
            if (!merged.ContainsKey(name))
                throw new CheckpointException($"{indexPath}: tensor {CheckpointIO.Quote(name)} is not in its shard {CheckpointIO.Quote(shard)}");
        return merged;
    }

    /// <summary>
    /// Writes tensors sorted by name, contiguously, after a JSON header padded with spaces to a multiple of 8
    /// bytes. The file is written beside <paramref name="path"/> under a temporary name and then moved over
    /// it, so an existing file is either left as it was or fully replaced, never half-written.
    /// </summary>
    public static void Write(
        string path,
        IReadOnlyDictionary<string, TensorData> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        foreach (string name in names)
        {
            var tensor = tensors[name];
            if (name.Length == 0 || name == MetadataKey)
                throw new ArgumentException($"'{name}' cannot be a tensor name in a safetensors file", nameof(tensors));
            if (TensorData.ByteCount(tensor.DType, tensor.Shape) != tensor.Bytes.Length)
                throw new ArgumentException(
                    $"tensor '{name}' has {tensor.Bytes.Length} bytes, which does not fit {tensor.DType} [{string.Join(", ", tensor.Shape)}]",
                    nameof(tensors));
        }

        byte[] header = SerializeHeader(names, tensors, metadata);
        try
        {
            AtomicFile.Write(path, stream =>
            {
                Span<byte> length = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
                stream.Write(length);
                stream.Write(header);
                foreach (string name in names) stream.Write(tensors[name].Bytes);
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException(e.InnerException is not null && AtomicFile.TooLarge(e.InnerException)
                ? $"{path}: cannot write: {AtomicFile.TooLargeMessage}"
                : $"{path}: cannot write: {CheckpointIO.OneLine(e.Message)}", e);
        }
    }

    static byte[] SerializeHeader(
        List<string> names, IReadOnlyDictionary<string, TensorData> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal)) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (string name in names)
            {
                var tensor = tensors[name];
                json.WriteStartObject(name);
                json.WriteString("dtype", DTypeNames.First(d => d.DType == tensor.DType).Name);
                json.WriteStartArray("shape");
                foreach (long dim in tensor.Shape) json.WriteNumberValue(dim);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset += tensor.Bytes.Length);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        // Pad so that the data section starts 8-byte aligned (the length prefix is 8 bytes too).
        while (buffer.Length % 8 != 0) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    static FileStream OpenRead(string path) =>
        new(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16, FileOptions.RandomAccess);

    static SafetensorsHeader ReadHeader(FileStream stream, string path)
    {
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw Fail(path, $"too small for a safetensors file ({fileLength} bytes; the header length alone takes 8)");
        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength == 0) throw Fail(path, "header length is 0");
        if (headerLength > MaxHeaderBytes)
            throw Fail(path, $"header length {headerLength} is over the {MaxHeaderBytes}-byte limit (not a safetensors file?)");
        if ((long)headerLength > fileLength - 8)
            throw Fail(path, $"truncated: the header needs {headerLength} bytes but only {fileLength - 8} follow its length");

        var headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLength;
        var (entries, metadata) = ParseHeader(headerBytes, path);
        Validate(entries, fileLength - dataStart, path);
        return new SafetensorsHeader(entries, metadata, dataStart);
    }

    static (Dictionary<string, SafetensorsEntry>, Dictionary<string, string>) ParseHeader(byte[] bytes, string path)
    {
        if (!Utf8.IsValid(bytes)) throw Fail(path, "header is not valid UTF-8");
        JsonDocument document;
        try
        {
            // Lenient about repeated names here: ReadHeader refuses them with a message naming the tensor.
            document = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{path}: header is not valid JSON: {CheckpointIO.OneLine(e.Message)}", e);
        }
        using (document)
        {
            try
            {
                return ReadHeader(document, path);
            }
            catch (InvalidOperationException)
            {
                // An escaped lone surrogate ("\ud800") parses, and fails only when the string is read.
                throw Fail(path, "header holds a name or string that is not valid Unicode (an escaped lone surrogate)");
            }
        }
    }

    static (Dictionary<string, SafetensorsEntry>, Dictionary<string, string>) ReadHeader(JsonDocument document, string path)
    {
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object) throw Fail(path, "header is not a JSON object");
            var entries = new Dictionary<string, SafetensorsEntry>();
            var metadata = new Dictionary<string, string>();
            var seen = new HashSet<string>();
            foreach (var property in document.RootElement.EnumerateObject())
            {
                string name = property.Name;
                if (!seen.Add(name)) throw Fail(path, $"header names {CheckpointIO.Quote(name)} twice");
                if (name == MetadataKey)
                {
                    if (property.Value.ValueKind != JsonValueKind.Object) throw Fail(path, "__metadata__ is not a JSON object");
                    foreach (var item in property.Value.EnumerateObject())
                    {
                        if (item.Value.ValueKind != JsonValueKind.String)
                            throw Fail(path, $"__metadata__ value for {CheckpointIO.Quote(item.Name)} is not a string");
                        metadata[item.Name] = item.Value.GetString()!;
                    }
                    continue;
                }
                entries[name] = ParseEntry(property.Value, name, path);
            }
            return (entries, metadata);
        }
    }

    static SafetensorsEntry ParseEntry(JsonElement json, string name, string path)
    {
        string tensor = $"tensor {CheckpointIO.Quote(name)}";
        if (json.ValueKind != JsonValueKind.Object) throw Fail(path, $"{tensor}: entry is not a JSON object");

        if (!json.TryGetProperty("dtype", out var dtypeJson) || dtypeJson.ValueKind != JsonValueKind.String)
            throw Fail(path, $"{tensor}: missing dtype");
        string dtypeName = dtypeJson.GetString()!;
        var dtype = DTypeNames.FirstOrDefault(d => d.Name == dtypeName);
        if (dtype.Name is null) throw Fail(path, $"{tensor}: unknown or unsupported dtype {CheckpointIO.Quote(dtypeName)}");

        long[] shape = ReadNaturals(json, "shape", tensor, path);
        long[] offsets = ReadNaturals(json, "data_offsets", tensor, path);
        if (offsets.Length != 2) throw Fail(path, $"{tensor}: data_offsets must be [begin, end]");
        var (begin, end) = (offsets[0], offsets[1]);
        if (begin > end) throw Fail(path, $"{tensor}: data_offsets [{begin}, {end}] end before they begin");

        long? expected = TensorData.ByteCount(dtype.DType, shape);
        if (expected is null) throw Fail(path, $"{tensor}: shape [{string.Join(", ", shape)}] overflows");
        if (end - begin != expected)
            throw Fail(path, $"{tensor}: data_offsets [{begin}, {end}] hold {end - begin} bytes but {dtypeName} [{string.Join(", ", shape)}] needs {expected}");
        if (expected > Array.MaxLength) throw Fail(path, $"{tensor}: {expected} bytes is more than one array can hold");
        return new SafetensorsEntry(dtype.DType, shape, begin, end);
    }

    static long[] ReadNaturals(JsonElement json, string field, string tensor, string path)
    {
        if (!json.TryGetProperty(field, out var array) || array.ValueKind != JsonValueKind.Array)
            throw Fail(path, $"{tensor}: missing {field}");
        var values = new long[array.GetArrayLength()];
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out values[i]) || values[i] < 0)
                throw Fail(path, $"{tensor}: {field} must hold non-negative integers, found {item.GetRawText()}");
            i++;
        }
        return values;
    }

    /// <summary>
    /// The tensors, in offset order, must tile the data section exactly: no overlaps, no gaps, nothing past
    /// the end of the file and nothing left over — the same rule as the reference implementation.
    /// </summary>
    static void Validate(Dictionary<string, SafetensorsEntry> entries, long dataSize, string path)
    {
        long expectedBegin = 0;
        string? previous = null;
        foreach (var (name, entry) in entries.OrderBy(e => e.Value.Begin).ThenBy(e => e.Value.End))
        {
            string tensor = $"tensor {CheckpointIO.Quote(name)}";
            if (entry.Begin < expectedBegin)
                throw Fail(path, $"{tensor} (bytes {entry.Begin}..{entry.End}) overlaps tensor {CheckpointIO.Quote(previous!)} (ending at {expectedBegin})");
            if (entry.End > dataSize)
                throw Fail(path, $"truncated: {tensor} needs bytes {entry.Begin}..{entry.End} but the data section has {dataSize}");
            if (entry.Begin > expectedBegin)
                throw Fail(path, $"{tensor} starts at byte {entry.Begin}, leaving bytes {expectedBegin}..{entry.Begin} unused");
            expectedBegin = entry.End;
            previous = name;
        }
        if (expectedBegin != dataSize)
            throw Fail(path, $"the data section has {dataSize} bytes but its tensors account for {expectedBegin}");
    }

    static Dictionary<string, string> ReadWeightMap(string indexPath) => CheckpointIO.Guard(indexPath, () =>
    {
        var info = new FileInfo(indexPath);
        if (!info.Exists) throw new CheckpointException($"{indexPath}: file not found");
        if (info.Length > MaxHeaderBytes) throw Fail(indexPath, $"{info.Length} bytes is too large for a shard index");
        try
        {
            using var document = JsonStrict.Parse(File.ReadAllBytes(indexPath));
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out var map)
                || map.ValueKind != JsonValueKind.Object)
                throw Fail(indexPath, "no weight_map object");
            var weightMap = new Dictionary<string, string>();
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw Fail(indexPath, $"weight_map entry {CheckpointIO.Quote(entry.Name)} is not a file name");
                weightMap[entry.Name] = entry.Value.GetString()!;
            }
            return weightMap;
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{indexPath}: not valid JSON: {CheckpointIO.OneLine(e.Message)}", e);
        }
    });

    static CheckpointException Fail(string path, string problem) => new($"{path}: {problem}");
}
