using System.Text.Json;

namespace AdapterSharp;

/// <summary>
/// How every file and line AdapterSharp reads as JSON is parsed: a name given twice in one object is an error (by
/// default the last would silently win, so two tools could read one file differently).
/// </summary>
public static class JsonStrict
{
    public static readonly JsonDocumentOptions Document = new() { AllowDuplicateProperties = false };

    /// <summary>Parses <paramref name="utf8"/>; every way it can fail is a <see cref="JsonException"/>.</summary>
    public static JsonDocument Parse(ReadOnlyMemory<byte> utf8, JsonDocumentOptions? options = null) =>
        Checked(() => JsonDocument.Parse(utf8, options ?? Document));

    /// <inheritdoc cref="Parse(ReadOnlyMemory{byte}, JsonDocumentOptions?)"/>
    public static JsonDocument Parse(string text, JsonDocumentOptions? options = null) =>
        Checked(() => JsonDocument.Parse(text, options ?? Document));

    static JsonDocument Checked(Func<JsonDocument> parse)
    {
        try
        {
            return parse();
        }
        catch (InvalidOperationException e)
        {
            throw LoneSurrogate(e);
        }
    }

    // Checking names for duplicates decodes them, and an escaped lone surrogate ("\ud800") cannot be decoded.
    static JsonException LoneSurrogate(InvalidOperationException e) =>
        new("a property name is not valid Unicode (an escaped lone surrogate)", e);
}
