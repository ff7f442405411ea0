using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace AdapterSharp.Server;

/// <summary>The body of <c>POST /v1/adapters</c>: <c>{"path": P, "name"?: N}</c>.</summary>
public sealed record LoadRequest(string Path, string? Name);

/// <summary>
/// How the server reads request bodies: JSON nested at most 8 deep, no name given twice, and every string valid
/// Unicode. Whatever a client sends, these either return a request or throw an <see cref="ApiException"/> (400, or
/// 413 for too many inputs) whose message names the place.
/// </summary>
public static class RequestBodies
{
    // No request this server takes nests deeper than three levels; a deep one is refused before it is built. A name
    // given twice is refused rather than the last one silently winning.
    static readonly JsonDocumentOptions Options = new() { MaxDepth = 8, AllowDuplicateProperties = false };

    public static JsonDocument Parse(ReadOnlyMemory<byte> utf8) => Mapped(() => JsonDocument.Parse(utf8, Options));

    public static async Task<JsonDocument> ParseAsync(Stream body, CancellationToken cancel)
    {
        try
        {
            return await JsonDocument.ParseAsync(body, Options, cancel);
        }
        catch (Exception e) when (Map(e) is { } mapped)
        {
            throw mapped;
        }
    }

    public static PredictRequest Predict(JsonDocument body, int maxInputs) =>
        Unicode(() => PredictRequest.Parse(body.RootElement, maxInputs));

    public static LoadRequest Load(JsonDocument body) => Unicode(() =>
    {
        var root = body.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw Bad("body: expected a JSON object");
        string? name = null, path = null;
        foreach (var property in root.EnumerateObject())
        {
            if (property.Name is not ("name" or "path"))
                throw Bad($"body: unknown field \"{property.Name}\" (expected \"name\" and \"path\")");
            if (property.Value.ValueKind != JsonValueKind.String) throw Bad($"{property.Name}: expected a string");
            if (property.Name == "name") name = property.Value.GetString();
            else path = property.Value.GetString();
        }
        return new LoadRequest(path ?? throw Bad("path: required: an adapter (or fusion) folder under the adapters root"), name);
    });

    static JsonDocument Mapped(Func<JsonDocument> parse)
    {
        try
        {
            return parse();
        }
        catch (Exception e) when (Map(e) is { } mapped)
        {
            throw mapped;
        }
    }

    static ApiException? Map(Exception e) => e switch
    {
        JsonException => Bad($"invalid JSON: {OneLine(e.Message)}"),
        // Checking names for duplicates decodes them, and an escaped lone surrogate cannot be decoded.
        InvalidOperationException and not ObjectDisposedException => NotUnicode(e),
        _ => null,
    };

    /// <summary>
    /// <paramref name="read"/>, with a string that is not valid Unicode (a lone surrogate escape, bytes that are not
    /// UTF-8), which the JSON parser lets through until it is read, answered as 400.
    /// </summary>
    static T Unicode<T>(Func<T> read)
    {
        try
        {
            return read();
        }
        catch (InvalidOperationException e) when (e is not ObjectDisposedException)
        {
            throw NotUnicode(e);
        }
    }

    static ApiException NotUnicode(Exception e) =>
        Bad($"body: a name or string is not valid Unicode (a lone surrogate \\uD800-\\uDFFF, or bytes that are not UTF-8): {OneLine(e.Message)}");

    static string OneLine(string message) => message.ReplaceLineEndings(" ");

    static ApiException Bad(string message) => new(StatusCodes.Status400BadRequest, message);
}
