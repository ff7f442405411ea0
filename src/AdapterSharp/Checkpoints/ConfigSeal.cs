using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using AdapterSharp.Model;

namespace AdapterSharp.Checkpoints;

/// <summary>
/// The <c>config_sha256</c> of an adapter or fusion config: SHA-256 over the file's content without that field, in a
/// canonical form (names sorted, no whitespace, strings re-escaped, numbers as written), so that any change to a
/// value is found while reformatting the file is not. It hashes what the file holds, not what this version of the
/// code would write, so adding fields to the format later does not invalidate older seals.
/// </summary>
public static class ConfigSeal
{
    public const string Field = "config_sha256";

    /// <summary>The seal of <paramref name="json"/> (its own <see cref="Field"/>, if any, left out).</summary>
    public static string Sha256(string json)
    {
        using var document = JsonStrict.Parse(json);
        return Sha256(document.RootElement);
    }

    static string Sha256(JsonElement root)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = false, Indented = false }))
            WriteCanonical(writer, root, top: true);
        return Convert.ToHexStringLower(SHA256.HashData(buffer.WrittenSpan));
    }

    /// <summary>
    /// Checks a config's seal, if it has one (older files do not): a one-line <see cref="ModelFormatException"/>
    /// naming <paramref name="path"/> when its content changed after it was saved.
    /// </summary>
    public static void Check(string json, string path)
    {
        JsonDocument document;
        try
        {
            document = JsonStrict.Parse(json);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: not valid JSON: {e.Message.ReplaceLineEndings(" ")}");
        }
        using var _ = document;
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty(Field, out var recorded)) return;
        if (recorded.ValueKind != JsonValueKind.String)
            throw new ModelFormatException($"{path}: \"{Field}\" is not a string");
        string actual;
        try
        {
            actual = Sha256(root);
        }
        catch (InvalidOperationException)
        {
            throw new ModelFormatException($"{path}: a name or string is not valid Unicode (an escaped lone surrogate)");
        }
        if (!string.Equals(actual, recorded.GetString(), StringComparison.OrdinalIgnoreCase))
            throw new ModelFormatException(
                $"{path}: the file was changed after it was saved (its content no longer matches \"{Field}\"); " +
                $"restore it, or delete \"{Field}\" to accept the edit");
    }

    static void WriteCanonical(Utf8JsonWriter writer, JsonElement element, bool top)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                writer.WriteStartObject();
                foreach (var property in element.EnumerateObject()
                             .Where(p => !(top && p.Name == Field))
                             .OrderBy(p => p.Name, StringComparer.Ordinal))
                {
                    writer.WritePropertyName(property.Name);
                    WriteCanonical(writer, property.Value, top: false);
                }
                writer.WriteEndObject();
                break;
            case JsonValueKind.Array:
                writer.WriteStartArray();
                foreach (var item in element.EnumerateArray()) WriteCanonical(writer, item, top: false);
                writer.WriteEndArray();
                break;
            case JsonValueKind.String:
                writer.WriteStringValue(element.GetString());
                break;
            default: // numbers as written ("4" and "4.0" differ), true, false, null
                writer.WriteRawValue(element.GetRawText(), skipInputValidation: true);
                break;
        }
    }
}
