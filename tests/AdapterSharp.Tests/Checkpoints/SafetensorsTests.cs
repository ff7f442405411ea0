using System.Buffers.Binary;
using System.Text;
using AdapterSharp.Checkpoints;
using Xunit;

namespace AdapterSharp.Tests.Checkpoints;

public sealed class SafetensorsTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    static Dictionary<string, TensorData> Sample() => new()
    {
        ["encoder.weight"] = Tensors.Random(TensorDType.F32, [2, 3], seed: 1),
        ["encoder.half"] = Tensors.Random(TensorDType.F16, [4], seed: 2),
        ["encoder.brain"] = Tensors.Random(TensorDType.BF16, [2, 2], seed: 3),
        ["embeddings.position_ids"] = Tensors.Random(TensorDType.I64, [1, 3], seed: 4),
        ["mask"] = Tensors.Random(TensorDType.Bool, [2], seed: 5),
        ["scale"] = Tensors.Random(TensorDType.F32, [], seed: 6),
        ["empty"] = new TensorData(TensorDType.F32, [0, 4], []),
    };

    [Fact]
    public void Write_then_read_returns_the_same_tensors_and_metadata()
    {
        var tensors = Sample();
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode" };
        string path = dir.File("model.safetensors");

        Safetensors.Write(path, tensors, metadata);
        var file = Safetensors.ReadFile(path);

        Assert.Equal(tensors.Keys.Order(), file.Tensors.Keys.Order());
        foreach (var (name, tensor) in tensors) Tensors.AssertEqual(tensor, file.Tensors[name]);
        Assert.Equal(metadata, file.Metadata);
    }

    [Fact]
    public void Write_uses_the_standard_layout_padded_header_and_tensors_sorted_by_name()
    {
        string path = dir.File("model.safetensors");
        Safetensors.Write(path, Sample());

        byte[] bytes = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, headerLength % 8);
        Assert.EndsWith("}", Encoding.UTF8.GetString(bytes, 8, (int)headerLength).TrimEnd(' '));
        var header = Safetensors.ReadHeader(path);
        Assert.Empty(header.Metadata);
        var byOffset = header.Entries.OrderBy(e => e.Value.Begin).Select(e => e.Key);
        Assert.Equal(header.Entries.Keys.Order(StringComparer.Ordinal), byOffset);
        Assert.Equal(bytes.Length, header.DataStart + header.Entries.Values.Max(e => e.End));
    }

    [Fact]
    public void Write_replaces_an_existing_file_and_leaves_no_temporary_files()
    {
        string path = dir.File("model.safetensors");
        Safetensors.Write(path, Sample());
        var replacement = new Dictionary<string, TensorData> { ["only"] = Tensors.Random(TensorDType.F32, [5], seed: 9) };

        Safetensors.Write(path, replacement);

        Assert.Equal(["model.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
        Assert.Equal(["only"], Safetensors.Read(path).Keys);
    }

    [Fact]
    public void A_failed_write_keeps_the_existing_file_and_leaves_no_temporary_files()
    {
        string path = dir.File("model.safetensors");
        Safetensors.Write(path, Sample());
        byte[] before = File.ReadAllBytes(path);
        var bad = new Dictionary<string, TensorData> { ["bad"] = new(TensorDType.F32, [3], new byte[5]) };

        Assert.Throws<ArgumentException>(() => Safetensors.Write(path, bad));

        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Reading_allocates_about_the_size_of_the_file()
    {
        // Four 8 MB tensors: the reader should allocate the tensors and little else (no whole-file buffer).
        var tensors = Enumerable.Range(0, 4).ToDictionary(i => $"t{i}", i => Tensors.Random(TensorDType.F32, [2048, 1024], seed: i));
        string path = dir.File("big.safetensors");
        Safetensors.Write(path, tensors);
        long fileSize = new FileInfo(path).Length;

        long before = GC.GetAllocatedBytesForCurrentThread();
        var read = Safetensors.Read(path);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(4, read.Count);
        Assert.InRange(allocated, fileSize * 9 / 10, fileSize * 12 / 10);
    }

    /// <summary>A file with the given header and <paramref name="dataBytes"/> bytes of data.</summary>
    static byte[] File_(string header, int dataBytes, ulong? headerLength = null) =>
        File_(Encoding.UTF8.GetBytes(header), dataBytes, headerLength);

    static byte[] File_(byte[] json, int dataBytes, ulong? headerLength = null)
    {
        var bytes = new byte[8 + json.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)json.Length);
        json.CopyTo(bytes, 8);
        return bytes;
    }

    const string X = """{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}""";

    public static TheoryData<string, byte[], string> Malformed => new()
    {
        { "too small", new byte[5], "too small" },
        { "header length zero", File_("{}", 0, headerLength: 0), "header length is 0" },
        { "header length over the limit", File_("{}", 0, headerLength: 200_000_000), "limit" },
        { "header length beyond the file", File_(X + "}", 16, headerLength: 4096), "truncated: the header needs 4096 bytes" },
        { "header not JSON", File_("{not json", 0), "header is not valid JSON" },
        { "header not UTF-8", File_([.. "{\""u8, 0xFF, .. "\":{}}"u8], 0), "not valid UTF-8" },
        { "header not an object", File_("[1, 2]", 0), "not a JSON object" },
        { "unknown dtype", File_("""{"x":{"dtype":"Q7","shape":[2],"data_offsets":[0,2]}}""", 2), "unknown or unsupported dtype 'Q7'" },
        { "missing dtype", File_("""{"x":{"shape":[2],"data_offsets":[0,8]}}""", 8), "missing dtype" },
        { "negative dimension", File_("""{"x":{"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]}}""", 16), "non-negative integers" },
        { "fractional dimension", File_("""{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}""", 4), "non-negative integers" },
        { "shape overflows", File_("""{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}""", 16), "overflows" },
        { "offsets end before begin", File_("""{"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}""", 8), "end before they begin" },
        { "offsets not a pair", File_("""{"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}}""", 8), "[begin, end]" },
        { "offsets outside the data", File_("""{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[100,116]}}""", 16), "tensor 'x' needs bytes 100..116 but the data section has 16" },
        { "offsets inconsistent with shape", File_("""{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}""", 12), "hold 12 bytes but F32 [2, 2] needs 16" },
        { "data shorter than the offsets", File_(X + "}", 10), "truncated: tensor 'x' needs bytes 0..16 but the data section has 10" },
        { "overlapping tensors", File_(X + ""","y":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", 16), "overlaps tensor 'x'" },
        { "gap between tensors", File_(X + ""","y":{"dtype":"F32","shape":[1],"data_offsets":[20,24]}}""", 24), "unused" },
        { "bytes left over", File_(X + "}", 20), "its tensors account for 16" },
        { "duplicate name", File_(X + ""","x":{"dtype":"F32","shape":[0],"data_offsets":[16,16]}}""", 16), "twice" },
        { "metadata not strings", File_("""{"__metadata__":{"n":1},""" + X[1..] + "}", 16), "__metadata__ value for 'n' is not a string" },
        { "entry not an object", File_("""{"x":[1]}""", 0), "entry is not a JSON object" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void A_malformed_file_is_rejected_with_a_message_naming_the_file_and_problem(string @case, byte[] bytes, string problem)
    {
        string path = dir.Write("model.safetensors", bytes);

        var e = Assert.Throws<CheckpointException>(() => Safetensors.Read(path));

        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(problem, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.NotNull(@case);
    }

    [Fact]
    public void A_file_cut_in_half_is_reported_as_truncated()
    {
        string path = dir.File("model.safetensors");
        Safetensors.Write(path, Sample());
        byte[] whole = File.ReadAllBytes(path);
        File.WriteAllBytes(path, whole[..(whole.Length / 2)]);

        var e = Assert.Throws<CheckpointException>(() => Safetensors.Read(path));

        Assert.Matches(@"model\.safetensors: truncated: (the header needs|tensor '.*' needs bytes)", e.Message);
    }

    [Fact]
    public void A_missing_file_is_a_checkpoint_error()
    {
        var e = Assert.Throws<CheckpointException>(() => Safetensors.Read(dir.File("absent.safetensors")));
        Assert.Contains("absent.safetensors: file not found", e.Message);
    }

    [Fact]
    public void Corrupted_files_only_ever_raise_checkpoint_errors()
    {
        string path = dir.File("model.safetensors");
        Safetensors.Write(path, Sample(), new Dictionary<string, string> { ["format"] = "pt" });
        byte[] valid = File.ReadAllBytes(path);
        var random = new Random(1234);
        for (int trial = 0; trial < 2000; trial++)
        {
            byte[] bytes = trial % 4 == 0 ? valid[..random.Next(valid.Length)] : (byte[])valid.Clone();
            if (trial % 4 != 0)
                for (int flips = random.Next(1, 4); flips > 0; flips--)
                    bytes[random.Next(Math.Min(bytes.Length, 8 + 600))] = (byte)random.Next(256);
            File.WriteAllBytes(path, bytes);
            try
            {
                Safetensors.Read(path);
            }
            catch (CheckpointException e)
            {
                Assert.StartsWith(path + ": ", e.Message);
            }
        }
    }

    [Fact]
    public void A_sharded_checkpoint_is_read_through_its_index_and_merged()
    {
        var tensors = Sample();
        var first = tensors.Take(3).ToDictionary();
        var second = tensors.Skip(3).ToDictionary();
        Safetensors.Write(dir.File("model-00001-of-00002.safetensors"), first);
        Safetensors.Write(dir.File("model-00002-of-00002.safetensors"), second);
        string index = WriteIndex(first.Keys.Select(k => (k, "model-00001-of-00002.safetensors"))
            .Concat(second.Keys.Select(k => (k, "model-00002-of-00002.safetensors"))));

        var merged = Safetensors.ReadSharded(index);

        Assert.Equal(tensors.Count, merged.Count);
        foreach (var (name, tensor) in tensors) Tensors.AssertEqual(tensor, merged[name]);
    }

    [Fact]
    public void A_sharded_checkpoint_with_a_missing_shard_names_the_index_and_the_shard()
    {
        Safetensors.Write(dir.File("model-00001-of-00002.safetensors"), Sample());
        string index = WriteIndex([("a", "model-00001-of-00002.safetensors"), ("b", "model-00002-of-00002.safetensors")]);

        var e = Assert.Throws<CheckpointException>(() => Safetensors.ReadSharded(index));

        Assert.Equal($"{index}: shard 'model-00002-of-00002.safetensors' not found", e.Message);
    }

    [Fact]
    public void A_shard_index_entry_whose_tensor_is_not_in_its_shard_is_rejected()
    {
        Safetensors.Write(dir.File("model-00001-of-00001.safetensors"), Sample());
        string index = WriteIndex([("not.there", "model-00001-of-00001.safetensors")]);

        var e = Assert.Throws<CheckpointException>(() => Safetensors.ReadSharded(index));

        Assert.Contains("tensor 'not.there' is not in its shard", e.Message);
    }

    [Fact]
    public void A_shard_index_cannot_point_outside_its_directory()
    {
        string index = WriteIndex([("a", "../elsewhere.safetensors")]);

        var e = Assert.Throws<CheckpointException>(() => Safetensors.ReadSharded(index));

        Assert.Contains("is not a file name next to the index", e.Message);
    }

    string WriteIndex(IEnumerable<(string Tensor, string Shard)> map)
    {
        string entries = string.Join(",", map.Select(m => $"\"{m.Tensor}\":\"{m.Shard}\""));
        string path = dir.File("model.safetensors.index.json");
        File.WriteAllText(path, """{"metadata":{"total_size":1},"weight_map":{""" + entries + "}}");
        return path;
    }
}
