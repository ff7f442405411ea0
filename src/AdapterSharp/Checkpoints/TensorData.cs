namespace AdapterSharp.Checkpoints;

/// <summary>Element types that checkpoint files can hold. Names follow safetensors' dtype strings.</summary>
public enum TensorDType
{
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

public static class TensorDTypeExtensions
{
    public static int ElementSize(this TensorDType dtype) => dtype switch
    {
        TensorDType.F64 or TensorDType.I64 => 8,
        TensorDType.F32 or TensorDType.I32 => 4,
        TensorDType.F16 or TensorDType.BF16 or TensorDType.I16 => 2,
        TensorDType.I8 or TensorDType.U8 or TensorDType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };
}

/// <summary>
/// A tensor as read from (or about to be written to) a checkpoint: dtype, shape and little-endian bytes in
/// row-major order. Independent of TorchSharp so that readers can be tested without the native backend.
/// </summary>
public sealed record TensorData(TensorDType DType, long[] Shape, byte[] Bytes)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>
    /// Bytes that a tensor of <paramref name="dtype"/> and <paramref name="shape"/> occupies, or null when a
    /// dimension is negative or the size overflows a long. Readers check untrusted headers with this.
    /// </summary>
    public static long? ByteCount(TensorDType dtype, IReadOnlyList<long> shape)
    {
        long count = 1;
        foreach (long dim in shape)
        {
            if (dim < 0) return null;
            try { count = checked(count * dim); }
            catch (OverflowException) { return null; }
        }
        try { return checked(count * dtype.ElementSize()); }
        catch (OverflowException) { return null; }
    }

    /// <summary>The matrix transposed: [rows, cols] → [cols, rows], for any dtype.</summary>
    public TensorData Transpose2D()
    {
        if (Shape.Length != 2) throw new InvalidOperationException($"Transpose2D needs a 2-D tensor, not [{string.Join(", ", Shape)}]");
        int rows = checked((int)Shape[0]), cols = checked((int)Shape[1]), size = DType.ElementSize();
        var result = new byte[Bytes.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                Buffer.BlockCopy(Bytes, (r * cols + c) * size, result, (c * rows + r) * size, size);
        return new TensorData(DType, [Shape[1], Shape[0]], result);
    }

    public static TensorData FromFloats(long[] shape, float[] values)
    {
        var bytes = new byte[values.Length * sizeof(float)];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return new TensorData(TensorDType.F32, shape, bytes);
    }

    /// <summary>The values widened to float32 (F32, F16 and BF16 only).</summary>
    public float[] ToFloats()
    {
        switch (DType)
        {
            case TensorDType.F32:
            {
                var result = new float[Bytes.Length / 4];
                Buffer.BlockCopy(Bytes, 0, result, 0, Bytes.Length);
                return result;
            }
            case TensorDType.F16:
            {
                var result = new float[Bytes.Length / 2];
                for (int i = 0; i < result.Length; i++)
                    result[i] = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(Bytes, 2 * i));
                return result;
            }
            case TensorDType.BF16:
            {
                var result = new float[Bytes.Length / 2];
                for (int i = 0; i < result.Length; i++)
                    result[i] = BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(Bytes, 2 * i) << 16);
                return result;
            }
            default:
                throw new InvalidOperationException($"cannot read {DType} values as floats");
        }
    }
}

/// <summary>A checkpoint file that cannot be read: the message names the file and the problem.</summary>
/// <summary>A checkpoint or tokenizer file that cannot be read; the message is one line (control characters escaped).</summary>
public sealed class CheckpointException(string message, Exception? inner = null) : Exception(Messages.OneLine(message), inner);

/// <summary>File access and message helpers shared by the checkpoint readers.</summary>
internal static class CheckpointIO
{
    /// <summary>
    /// Runs <paramref name="read"/>, turning I/O failures into a <see cref="CheckpointException"/> that names
    /// <paramref name="path"/>, so callers see one exception type whatever went wrong.
    /// </summary>
    public static T Guard<T>(string path, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new CheckpointException($"{path}: file not found", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot read: {OneLine(e.Message)}", e);
        }
    }

    /// <summary>A name from an untrusted file, quoted, with control characters escaped so messages stay one line.</summary>
    public static string Quote(string name)
    {
        const int MaxLength = 200;
        var text = name.Length > MaxLength ? name[..MaxLength] + "…" : name;
        return "'" + OneLine(text) + "'";
    }

    public static string OneLine(string text) => Messages.OneLine(text);
}
