using System.IO.Compression;
using System.Text;
using AdapterSharp.Checkpoints;
using Xunit;
using T = AdapterSharp.Tests.Checkpoints.TorchPickleWriter.Tensor;

namespace AdapterSharp.Tests.Checkpoints;

public sealed class TorchPickleTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    static readonly float[] Storage0 = [0, 1, 2, 3, 4, 5, 6, 7];

    /// <summary>Storages as torch.save writes them: one raw little-endian record per storage key.</summary>
    static Dictionary<string, byte[]> Storages() => new()
    {
        ["0"] = TensorData.FromFloats([8], Storage0).Bytes,
        ["1"] = [0x00, 0x3C, 0x00, 0x40, 0x00, 0xC0],                        // float16 1, 2, -2
        ["2"] = [.. BitConverter.GetBytes(7L), .. BitConverter.GetBytes(-1L)],  // int64 7, -1
        ["3"] = [0x80, 0x3F, 0x40, 0x40],                                      // bfloat16 1, 3
    };

    static T[] StateDict() =>
    [
        new("dense.weight", "FloatStorage", "0", 8, 0, [2, 3], [3, 1]),        // contiguous, from the start
        new("dense.weight_t", "FloatStorage", "0", 8, 0, [3, 2], [1, 3]),      // a transposed view of the same storage
        new("tail", "FloatStorage", "0", 8, 6, [2], [1]),                      // an offset slice
        new("half", "HalfStorage", "1", 3, 0, [3], [1]),
        new("ids", "LongStorage", "2", 2, 0, [1, 2], [2, 1]),
        new("brain", "BFloat16Storage", "3", 2, 0, [2], [1]),
        new("scalar", "FloatStorage", "0", 8, 5, [], []),
    ];

    string WriteCheckpoint(byte[] pickle, Dictionary<string, byte[]> storages, string prefix = "archive", string name = "pytorch_model.bin")
    {
        string path = dir.File(name);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        void Record(string record, byte[] bytes)
        {
            using var stream = zip.CreateEntry($"{prefix}/{record}", CompressionLevel.NoCompression).Open();
            stream.Write(bytes);
        }
        Record("data.pkl", pickle);
        Record("byteorder", "little"u8.ToArray());
        foreach (var (key, bytes) in storages) Record($"data/{key}", bytes);
        Record("version", "3\n"u8.ToArray());
        return path;
    }

    [Theory]
    [InlineData("archive")]
    [InlineData("pytorch_model")]
    public void A_torch_saved_state_dict_round_trips_with_offsets_strides_and_dtypes(string prefix)
    {
        string path = WriteCheckpoint(TorchPickleWriter.StateDict(StateDict()), Storages(), prefix);

        var state = TorchPickle.Read(path);

        Assert.Equal(StateDict().Select(t => t.Name), state.Keys);
        Assert.Equal([2L, 3], state["dense.weight"].Shape);
        Assert.Equal([0f, 1, 2, 3, 4, 5], state["dense.weight"].ToFloats());
        Assert.Equal([3L, 2], state["dense.weight_t"].Shape);
        Assert.Equal([0f, 3, 1, 4, 2, 5], state["dense.weight_t"].ToFloats());
        Assert.Equal([6f, 7], state["tail"].ToFloats());
        Assert.Equal([1f, 2, -2], state["half"].ToFloats());
        Assert.Equal(TensorDType.I64, state["ids"].DType);
        Assert.Equal([7L, -1], [BitConverter.ToInt64(state["ids"].Bytes, 0), BitConverter.ToInt64(state["ids"].Bytes, 8)]);
        Assert.Equal([1f, 3], state["brain"].ToFloats());
        Assert.Empty(state["scalar"].Shape);
        Assert.Equal([5f], state["scalar"].ToFloats());
    }

    [Theory]
    [InlineData("os", "system")]
    [InlineData("builtins", "eval")]
    [InlineData("torch", "load")]
    [InlineData("__builtin__", "exec")]
    public void A_pickle_naming_any_other_global_is_refused(string module, string name)
    {
        string path = WriteCheckpoint(TorchPickleWriter.CallingGlobal(module, name), []);

        var e = Assert.Throws<CheckpointException>(() => TorchPickle.Read(path));

        Assert.Equal($"{path}: refusing to unpickle global {module}.{name}", e.Message);
    }

    [Fact]
    public void The_legacy_non_zip_format_is_rejected_with_a_clear_message()
    {
        // Pre-1.6 torch.save: a protocol-2 pickle of the magic number 0x1950a86a20f9469cfc6c, then more pickles.
        string path = dir.Write("old.bin", [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);

        var e = Assert.Throws<CheckpointException>(() => TorchPickle.Read(path));

        Assert.StartsWith($"{path}: legacy (pre-1.6, non-zip) torch.save format is not supported", e.Message);
    }

    [Fact]
    public void A_file_that_is_not_a_zip_is_rejected()
    {
        string path = dir.Write("model.bin", Encoding.ASCII.GetBytes("hello, world"));

        var e = Assert.Throws<CheckpointException>(() => TorchPickle.Read(path));

        Assert.Equal($"{path}: not a PyTorch checkpoint (expected a zip archive)", e.Message);
    }

    [Fact]
    public void A_missing_storage_record_is_reported()
    {
        var storages = Storages();
        storages.Remove("1");
        string path = WriteCheckpoint(TorchPickleWriter.StateDict(StateDict()), storages);

        var e = Assert.Throws<CheckpointException>(() => TorchPickle.Read(path));

        Assert.Equal($"{path}: storage record '1' is missing", e.Message);
    }

    [Fact]
    public void A_view_reaching_past_its_storage_is_rejected()
    {
        T[] tensors = [new("w", "FloatStorage", "0", 8, 4, [2, 3], [3, 1])];
        string path = WriteCheckpoint(TorchPickleWriter.StateDict(tensors), Storages());

        var e = Assert.Throws<CheckpointException>(() => TorchPickle.Read(path));

        Assert.Equal($"{path}: tensor 'w': view reaches element 9 of a storage of 8", e.Message);
    }

    [Fact]
    public void A_storage_record_of_the_wrong_size_is_rejected()
    {
        T[] tensors = [new("w", "FloatStorage", "0", 9, 0, [2], [1])];
        string path = WriteCheckpoint(TorchPickleWriter.StateDict(tensors), Storages());

        var e = Assert.Throws<CheckpointException>(() => TorchPickle.Read(path));

        Assert.Equal($"{path}: storage '0' has 32 bytes but should have 36", e.Message);
    }

    [Fact]
    public void Corrupted_pickles_only_ever_raise_checkpoint_errors()
    {
        byte[] valid = TorchPickleWriter.StateDict(StateDict());
        var random = new Random(7);
        for (int trial = 0; trial < 1000; trial++)
        {
            byte[] pickle = trial % 3 == 0 ? valid[..random.Next(valid.Length)] : (byte[])valid.Clone();
            if (trial % 3 != 0) pickle[random.Next(pickle.Length)] = (byte)random.Next(256);
            string path = WriteCheckpoint(pickle, Storages(), name: $"fuzz{trial}.bin");
            try
            {
                TorchPickle.Read(path);
            }
            catch (CheckpointException e)
            {
                Assert.StartsWith(path + ": ", e.Message);
            }
        }
    }
}
