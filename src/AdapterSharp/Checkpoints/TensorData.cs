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
public sealed class CheckpointException(string message, Exception? inner = null) : Exception(message, inner);
