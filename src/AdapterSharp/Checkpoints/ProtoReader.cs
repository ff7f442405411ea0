using System.Buffers.Binary;
using System.Text;

namespace AdapterSharp.Checkpoints;

/// <summary>Protobuf wire types (https://protobuf.dev/programming-guides/encoding/). Groups (3, 4) are long deprecated.</summary>
internal enum WireType
{
    Varint = 0,
    Fixed64 = 1,
    LengthDelimited = 2,
    Fixed32 = 5,
}

/// <summary>
/// A forward-only reader over one protobuf message held in memory, just enough to pull tensors out of an
/// ONNX file. Every read is checked against the message's end, so a corrupt length or a random file ends in
/// an <see cref="InvalidDataException"/>, never a read past the buffer.
/// </summary>
internal sealed class ProtoReader(byte[] buffer, int start, int end)
{
    int position = start;

    public ProtoReader(byte[] buffer) : this(buffer, 0, buffer.Length) { }

    /// <summary>The next field's number and wire type, or false at the end of the message.</summary>
    public bool TryReadTag(out int field, out WireType wireType)
    {
        field = 0;
        wireType = default;
        if (position >= end) return false;
        int at = position;
        ulong tag = ReadVarint();
        ulong number = tag >> 3;
        if (number is 0 or > 0x1FFF_FFFF) throw new InvalidDataException($"invalid field number {number} at offset {at}");
        field = (int)number;
        wireType = (WireType)(tag & 7);
        if (wireType is not (WireType.Varint or WireType.Fixed64 or WireType.LengthDelimited or WireType.Fixed32))
            throw new InvalidDataException($"field {field} at offset {at} has invalid wire type {(int)wireType}");
        return true;
    }

    public ulong ReadVarint()
    {
        ulong result = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (position >= end) throw new InvalidDataException($"truncated varint at offset {position}");
            byte b = buffer[position++];
            result |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return result;
        }
        throw new InvalidDataException($"varint longer than 10 bytes at offset {position}");
    }

    public uint ReadFixed32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));

    public ulong ReadFixed64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

    /// <summary>A length-delimited field's bytes, as a range of the underlying buffer.</summary>
    public (int Start, int Length) ReadRange()
    {
        int at = position;
        ulong length = ReadVarint();
        if (length > (ulong)(end - position))
            throw new InvalidDataException($"truncated: a field at offset {at} needs {length} bytes but only {end - position} remain");
        int from = position;
        position += (int)length;
        return (from, (int)length);
    }

    public ProtoReader ReadMessage()
    {
        var (from, length) = ReadRange();
        return new ProtoReader(buffer, from, from + length);
    }

    public string ReadString()
    {
        var (from, length) = ReadRange();
        try
        {
            return StrictUtf8.GetString(buffer, from, length);
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidDataException($"string at offset {from} is not valid UTF-8");
        }
    }

    public ReadOnlySpan<byte> Slice((int Start, int Length) range) => buffer.AsSpan(range.Start, range.Length);

    public void Skip(WireType wireType)
    {
        switch (wireType)
        {
            case WireType.Varint: ReadVarint(); break;
            case WireType.Fixed64: Take(8); break;
            case WireType.Fixed32: Take(4); break;
            case WireType.LengthDelimited: ReadRange(); break;
        }
    }

    /// <summary>A repeated varint field, packed (one length-delimited run) or not (one value per tag).</summary>
    public void ReadVarints(int field, WireType wireType, List<long> into)
    {
        if (wireType == WireType.Varint)
        {
            into.Add((long)ReadVarint());
            return;
        }
        Expect(field, wireType, WireType.LengthDelimited);
        var packed = ReadMessage();
        while (!packed.AtEnd) into.Add((long)packed.ReadVarint());
    }

    /// <summary>A repeated fixed-width field as its little-endian bytes, packed or not.</summary>
    public void ReadFixed(int field, WireType wireType, WireType single, int width, MemoryStream into)
    {
        if (wireType == single)
        {
            into.Write(Take(width));
            return;
        }
        Expect(field, wireType, WireType.LengthDelimited);
        var (from, length) = ReadRange();
        if (length % width != 0) throw new InvalidDataException($"packed field at offset {from} is not a multiple of {width} bytes");
        into.Write(buffer, from, length);
    }

    public static void Expect(int field, WireType actual, WireType expected)
    {
        if (actual != expected)
            throw new InvalidDataException($"field {field} has wire type {(int)actual} where {(int)expected} was expected");
    }

    bool AtEnd => position >= end;

    ReadOnlySpan<byte> Take(int count)
    {
        if (end - position < count)
            throw new InvalidDataException($"truncated: {count} bytes needed at offset {position} but only {end - position} remain");
        var span = buffer.AsSpan(position, count);
        position += count;
        return span;
    }

    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
}
