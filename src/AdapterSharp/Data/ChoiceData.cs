using System.Globalization;
using System.Text.Json;

namespace AdapterSharp.Data;

/// <summary>
/// One multiple-choice question (SWAG-style): a context, an optional prefix of every choice (SWAG's second sentence
/// start), the candidate choices, the right one's index (−1 when unknown, for prediction), and where it came from.
/// </summary>
public sealed record ChoiceExample(string Context, string? Prefix, string[] Choices, int Label, string Source, int Line)
{
    /// <summary>The text pair of choice <paramref name="k"/>: the context, and the prefix with the choice.</summary>
    public (string Text, string Pair) Pair(int k) => (Context, Prefix is { Length: > 0 } prefix ? $"{prefix} {Choices[k]}" : Choices[k]);
}

public sealed record LoadedChoiceData(IReadOnlyList<ChoiceExample> Examples, int Skipped, string? FirstSkipReason);

/// <summary>
/// Reads multiple-choice JSONL: <c>{"context": …, "question"?: …, "choices": […], "label": k}</c> per line, the label
/// the index of the right choice (a number, or its text "k"). Every row of a file has as many choices as its first
/// row; a row with another count, a label out of range or an empty choice is an error at file:line, or a skipped row
/// with <c>skipBadRows</c>.
/// </summary>
public static class ChoiceDataReader
{
    /// <summary>The most choices a question may have (a batch row per choice).</summary>
    public const int MaxChoices = 64;

    public static LoadedChoiceData Read(string path, bool skipBadRows = false, bool requireLabel = true)
    {
        if (!File.Exists(path)) throw new DataFormatException($"{path}: file not found");
        var kept = new List<ChoiceExample>();
        int skipped = 0, choices = 0, firstLine = 0;
        string? firstSkip = null;
        foreach (var (line, text, error) in DataReader.ReadLines(path))
        {
            if (error is null && text.Trim().Length == 0) continue;
            string? problem = error;
            ChoiceExample? example = null;
            if (problem is null) (example, problem) = FromLine(text, path, line, requireLabel);
            if (problem is null && choices > 0 && example!.Choices.Length != choices)
                problem = $"{example.Choices.Length} choices where line {firstLine} has {choices}: every question of a file has as many";
            if (problem is null)
            {
                if (choices == 0) (choices, firstLine) = (example!.Choices.Length, line);
                kept.Add(example!);
                continue;
            }
            var message = $"{path}:{line}: {problem}";
            if (!skipBadRows) throw new DataFormatException(message);
            skipped++;
            firstSkip ??= message;
        }
        return new LoadedChoiceData(kept, skipped, firstSkip);
    }

    /// <summary>One JSONL line as a question, or why it is not one (without the file:line, which the caller adds).</summary>
    public static (ChoiceExample? Example, string? Problem) FromLine(string text, string source, int line, bool requireLabel)
    {
        try
        {
            using var document = JsonStrict.Parse(text);
            return FromJson(document.RootElement, source, line, requireLabel);
        }
        catch (JsonException e)
        {
            return (null, $"invalid JSON: {e.Message.Split(" LineNumber")[0]}");
        }
        catch (InvalidOperationException e)
        {
            return (null, $"invalid JSON string: {e.Message}");
        }
    }

    static (ChoiceExample?, string?) FromJson(JsonElement row, string path, int line, bool requireLabel)
    {
        if (row.ValueKind != JsonValueKind.Object) return (null, "expected a JSON object");
        if (!row.TryGetProperty("context", out var contextElement) || contextElement.ValueKind != JsonValueKind.String
            || contextElement.GetString()!.Trim().Length == 0)
            return (null, "missing or empty string \"context\"");
        string? prefix = null;
        if (row.TryGetProperty("question", out var question) && question.ValueKind != JsonValueKind.Null)
        {
            if (question.ValueKind != JsonValueKind.String) return (null, "\"question\" must be a string");
            prefix = question.GetString();
        }
        if (!row.TryGetProperty("choices", out var choicesElement) || choicesElement.ValueKind != JsonValueKind.Array)
            return (null, "missing list \"choices\"");
        int count = choicesElement.GetArrayLength();
        if (count < 2 || count > MaxChoices) return (null, $"{count} choices: a question needs 2 to {MaxChoices}");
        var choices = new string[count];
        for (int k = 0; k < count; k++)
        {
            var choice = choicesElement[k];
            if (choice.ValueKind != JsonValueKind.String || choice.GetString()!.Trim().Length == 0)
                return (null, $"choices[{k}] must be a non-empty string");
            choices[k] = choice.GetString()!;
        }
        int label = -1;
        if (row.TryGetProperty("label", out var labelElement) && labelElement.ValueKind != JsonValueKind.Null)
        {
            bool parsed = labelElement.ValueKind == JsonValueKind.Number ? labelElement.TryGetInt32(out label)
                : labelElement.ValueKind == JsonValueKind.String && int.TryParse(labelElement.GetString(), NumberStyles.None, CultureInfo.InvariantCulture, out label);
            if (!parsed || label < 0 || label >= count) return (null, $"label {labelElement.GetRawText()} is not a choice index (0 to {count - 1})");
        }
        else if (requireLabel) return (null, "missing \"label\" (the right choice's index)");
        return (new ChoiceExample(contextElement.GetString()!, prefix, choices, label, path, line), null);
    }
}
