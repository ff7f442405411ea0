using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace AdapterSharp.Server;

/// <summary>
/// The body of <c>POST /v1/predict</c>: <c>{"adapter": A, "inputs": [...]}</c>, where an input is a text, a
/// <c>[text, text_pair]</c> pair, or <c>{"adapter"?, "text", "text_pair"?}</c>, whose adapter overrides the
/// top-level one. Read by hand rather than bound to types, so that a mistake is reported at its place
/// (<c>inputs[2].text: expected a string</c>).
/// </summary>
public sealed record PredictRequest(string? Adapter, IReadOnlyList<BatchInput> Inputs)
{
    /// <summary>Whether the answer lists the adapter per prediction rather than once.</summary>
    public bool MixesAdapters => Adapter is null || Inputs.Any(i => i.Adapter != Adapter);

    public static PredictRequest Parse(JsonElement body, int maxInputs)
    {
        if (body.ValueKind != JsonValueKind.Object) throw Bad("body: expected a JSON object");
        string? adapter = null;
        JsonElement? inputs = null;
        foreach (var property in body.EnumerateObject())
        {
            switch (property.Name)
            {
                case "adapter":
                    adapter = String(property.Value, "adapter");
                    break;
                case "inputs":
                    inputs = property.Value;
                    break;
                default:
                    throw Bad($"body: unknown field \"{property.Name}\" (expected \"adapter\" and \"inputs\")");
            }
        }
        if (inputs is not { } list) throw Bad("inputs: required: a list of texts, [text, text_pair] pairs or {adapter, text, text_pair} objects");
        if (list.ValueKind != JsonValueKind.Array) throw Bad("inputs: expected a list");
        int count = list.GetArrayLength();
        if (count == 0) throw Bad("inputs: the list is empty");
        if (count > maxInputs)
            throw new ApiException(StatusCodes.Status413PayloadTooLarge, $"inputs: {count} inputs, more than the {maxInputs} a request may hold");

        var result = new List<BatchInput>(count);
        int index = 0;
        foreach (var item in list.EnumerateArray())
        {
            var at = $"inputs[{index++}]";
            result.Add(item.ValueKind switch
            {
                JsonValueKind.String => new BatchInput(adapter ?? throw NoAdapter(at), Text(item, at)),
                JsonValueKind.Array => Pair(item, adapter ?? throw NoAdapter(at), at),
                JsonValueKind.Object => Object(item, adapter, at),
                _ => throw Bad($"{at}: expected a string, a [text, text_pair] pair or an object with \"text\", got {Kind(item)}"),
            });
        }
        return new PredictRequest(adapter, result);
    }

    static BatchInput Pair(JsonElement item, string adapter, string at)
    {
        if (item.GetArrayLength() != 2 || item.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
            throw Bad($"{at}: expected a [text, text_pair] pair of two strings");
        return new BatchInput(adapter, Text(item[0], $"{at}[0]"), Text(item[1], $"{at}[1]"));
    }

    static BatchInput Object(JsonElement item, string? adapter, string at)
    {
        string? text = null, pair = null, question = null, context = null;
        List<string>? choices = null;
        foreach (var property in item.EnumerateObject())
        {
            switch (property.Name)
            {
                case "adapter":
                    adapter = String(property.Value, $"{at}.adapter");
                    break;
                case "text":
                    text = String(property.Value, $"{at}.text");
                    break;
                case "text_pair":
                    pair = property.Value.ValueKind == JsonValueKind.Null ? null : String(property.Value, $"{at}.text_pair");
                    break;
                case "question":
                    question = String(property.Value, $"{at}.question");
                    break;
                case "context":
                    context = String(property.Value, $"{at}.context");
                    break;
                case "choices":
                    if (property.Value.ValueKind != JsonValueKind.Array) throw Bad($"{at}.choices: expected a list of strings, got {Kind(property.Value)}");
                    if (property.Value.GetArrayLength() > MaxChoices)
                        throw Bad($"{at}.choices: {property.Value.GetArrayLength()} choices, more than the {MaxChoices} a question may have");
                    choices = [.. property.Value.EnumerateArray().Select((c, k) => String(c, $"{at}.choices[{k}]"))];
                    break;
                default:
                    throw Bad($"{at}: unknown field \"{property.Name}\" (expected \"adapter\", \"text\", \"text_pair\"; \"question\", \"context\"; \"choices\")");
            }
        }
        if (choices is not null)
        {
            // Multiple choice: the context, an optional prefix of every choice (question or text_pair), the choices.
            if (context is not null && text is not null) throw Bad($"{at}: give the context as \"context\" or \"text\", not both");
            if (question is not null && pair is not null) throw Bad($"{at}: give the choices' prefix as \"question\" or \"text_pair\", not both");
            return new BatchInput(adapter ?? throw NoAdapter(at), context ?? text ?? throw Bad($"{at}.context: required with choices"), question ?? pair, choices);
        }
        if (question is not null && text is not null) throw Bad($"{at}: give \"question\" or \"text\", not both");
        if (context is not null && pair is not null) throw Bad($"{at}: give \"context\" or \"text_pair\", not both");
        if ((question ?? text) is not { } first) throw Bad($"{at}.text: required");
        return new BatchInput(adapter ?? throw NoAdapter(at), first, context ?? pair);
    }

    /// <summary>The most choices an input may have (each is a row of the batch).</summary>
    const int MaxChoices = 64;

    static string String(JsonElement value, string at) =>
        value.ValueKind == JsonValueKind.String ? Text(value, at) : throw Bad($"{at}: expected a string, got {Kind(value)}");

    /// <summary>A JSON string's text; one that is not valid Unicode (a lone surrogate escape, bytes that are not UTF-8) is 400 at its place.</summary>
    static string Text(JsonElement value, string at)
    {
        try
        {
            return value.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw Bad($"{at}: not valid Unicode (a lone surrogate \\uD800-\\uDFFF, or bytes that are not UTF-8)");
        }
    }

    static string Kind(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "a list",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => value.ValueKind.ToString(),
    };

    static ApiException NoAdapter(string at) => Bad($"{at}: no adapter: give \"adapter\" in the body or in the input");

    static ApiException Bad(string message) => new(StatusCodes.Status400BadRequest, message);
}
