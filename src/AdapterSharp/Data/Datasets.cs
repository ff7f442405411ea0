using System.Text;
using System.Text.Json;

namespace AdapterSharp.Data;

/// <summary>One labelled row: its text (and pair), its label as written in the file, and where it came from.</summary>
public sealed record Example(string Text, string? TextPair, string Label, string Source, int Line);

/// <summary>A data row that cannot be used: the message starts with file:line.</summary>
public sealed class DataFormatException(string message) : Exception(message);

/// <summary>Which columns hold the text, the optional second text and the label.</summary>
public sealed record ColumnSpec(string Text, string? TextPair, string Label);

/// <summary>What a reader kept and what it skipped.</summary>
public sealed record LoadedData(IReadOnlyList<Example> Examples, int Skipped, string? FirstSkipReason);

/// <summary>
/// Reads labelled text from TSV (split on TAB only: quotes are text), CSV (RFC 4180 quoting), JSONL, and
/// the GLUE task files. Every bad row is an error naming file:line, or, when <c>skipBadRows</c> is set,
/// is counted and left out; no row is ever read with a wrong label.
/// </summary>
public static class DataReader
{
    /// <summary>A file with a header row (TSV, CSV) or JSON objects (JSONL), columns taken by name.</summary>
    public static LoadedData Read(string path, ColumnSpec columns, bool skipBadRows = false)
    {
        var format = Path.GetExtension(path).ToLowerInvariant();
        return format switch
        {
            ".tsv" or ".txt" => ReadDelimited(path, columns, skipBadRows, csv: false),
            ".csv" => ReadDelimited(path, columns, skipBadRows, csv: true),
            ".jsonl" or ".json" => ReadJsonLines(path, columns, skipBadRows),
            _ => throw new DataFormatException($"{path}: unknown data format '{format}' (expected .tsv, .csv or .jsonl)"),
        };
    }

    /// <summary>A TSV file whose columns are given by index, optionally after a header line (GLUE's CoLA has none).</summary>
    public static LoadedData ReadTsvByIndex(string path, bool hasHeader, int text, int? pair, int label, bool skipBadRows)
    {
        var rows = ReadLines(path).Select(l => (l.Line, Fields: l.Text.Split('\t'), l.Error));
        if (hasHeader) rows = rows.Skip(1);
        return Collect(path, rows, columnCount: null, text, pair, label, skipBadRows, ColumnName);

        static string ColumnName(int index) => $"column {index + 1}";
    }

    static LoadedData ReadDelimited(string path, ColumnSpec columns, bool skipBadRows, bool csv)
    {
        var rows = csv ? CsvRows(path) : ReadLines(path).Select(l => (l.Line, Fields: l.Text.Split('\t'), l.Error));
        using var enumerator = rows.GetEnumerator();
        if (!enumerator.MoveNext()) throw new DataFormatException($"{path}: empty file (expected a header row)");
        var (headerLine, header, headerError) = enumerator.Current;
        if (headerError is not null) throw new DataFormatException($"{path}:{headerLine}: {headerError}");
        int Index(string name, string option)
        {
            int index = Array.FindIndex(header, h => h.Trim() == name);
            if (index < 0)
                throw new DataFormatException(
                    $"{path}:{headerLine}: no column '{name}' ({option}); the header has: {string.Join(", ", header.Select(h => h.Trim()))}");
            return index;
        }
        int text = Index(columns.Text, "--text-column");
        int? pair = columns.TextPair is null ? null : Index(columns.TextPair, "--text-pair-column");
        int label = Index(columns.Label, "--label-column");
        return Collect(path, Rest(enumerator), header.Length, text, pair, label, skipBadRows, i => $"'{header[i].Trim()}'");

        static IEnumerable<(int, string[], string?)> Rest(IEnumerator<(int, string[], string?)> e)
        {
            while (e.MoveNext()) yield return e.Current;
        }
    }

    /// <param name="columnCount">The header's width, which every row must match; null where columns are taken by index.</param>
    static LoadedData Collect(string path, IEnumerable<(int Line, string[] Fields, string? Error)> rows,
        int? columnCount, int text, int? pair, int label, bool skipBadRows, Func<int, string> columnName)
    {
        var kept = new KeptRows(path, skipBadRows);
        int needed = Math.Max(text, Math.Max(pair ?? 0, label)) + 1;
        foreach (var (line, fields, error) in rows)
        {
            string? problem = error;
            if (problem is null && fields.Length == 1 && fields[0].Trim().Length == 0) continue; // blank line
            // A row wider than the header has a delimiter inside a text (an unquoted comma, a tab), so any of its
            // fields could be the label; a narrower one may have lost any of its fields.
            if (problem is null && columnCount is { } width && fields.Length != width)
                problem = $"expected {width} columns as in the header, found {fields.Length}";
            if (problem is null && fields.Length < needed)
                problem = $"expected at least {needed} columns, found {fields.Length}";
            if (problem is null && fields[text].Trim().Length == 0) problem = $"empty text in {columnName(text)}";
            if (problem is null && pair is { } p && fields[p].Trim().Length == 0) problem = $"empty text in {columnName(p)}";
            if (problem is null && fields[label].Trim().Length == 0) problem = $"empty label in {columnName(label)}";
            if (problem is not null) kept.Reject(line, problem);
            else kept.Add(new Example(fields[text], pair is { } q ? fields[q] : null, fields[label].Trim(), path, line));
        }
        return kept.Data;
    }

    static LoadedData ReadJsonLines(string path, ColumnSpec columns, bool skipBadRows)
    {
        var kept = new KeptRows(path, skipBadRows);
        foreach (var (line, text, error) in ReadLines(path))
        {
            if (error is null && text.Trim().Length == 0) continue;
            string? problem = error;
            Example? example = null;
            if (problem is null)
            {
                try
                {
                    using var document = JsonDocument.Parse(text);
                    (example, problem) = FromJson(document.RootElement, columns, path, line);
                }
                catch (JsonException e)
                {
                    problem = $"invalid JSON: {e.Message.Split(" LineNumber")[0]}";
                }
                catch (InvalidOperationException e)
                {
                    // An escaped lone surrogate ("\ud800") parses, and fails only when the string is read.
                    problem = $"invalid JSON string: {e.Message}";
                }
            }
            if (problem is not null) kept.Reject(line, problem);
            else kept.Add(example!);
        }
        return kept.Data;
    }

    static (Example?, string?) FromJson(JsonElement row, ColumnSpec columns, string path, int line)
    {
        if (row.ValueKind != JsonValueKind.Object) return (null, "expected a JSON object");
        string? Field(string name, out string? problem)
        {
            problem = null;
            if (!row.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
            {
                problem = $"missing field \"{name}\"";
                return null;
            }
            var result = value.ValueKind switch
            {
                JsonValueKind.String => value.GetString(),
                JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False => value.GetRawText(),
                _ => null,
            };
            if (result is null) problem = $"field \"{name}\" must be a string or a number";
            else if (result.Trim().Length == 0) problem = $"empty \"{name}\"";
            return result;
        }
        var text = Field(columns.Text, out var problem);
        if (problem is not null) return (null, problem);
        string? pair = null;
        if (columns.TextPair is not null)
        {
            pair = Field(columns.TextPair, out problem);
            if (problem is not null) return (null, problem);
        }
        var label = Field(columns.Label, out problem);
        if (problem is not null) return (null, problem);
        return (new Example(text!, pair, label!.Trim(), path, line), null);
    }

    /// <summary>
    /// Lines of a UTF-8 file (a BOM is dropped, CR before LF too), each decoded strictly: a line with
    /// invalid UTF-8 comes back with an error instead of replacement characters.
    /// </summary>
    public static IEnumerable<(int Line, string Text, string? Error)> ReadLines(string path) =>
        DecodeLines(path).Select(l => l.Error is null ? l : (l.Line, "", l.Error));

    /// <summary>As <see cref="ReadLines"/>, but a line with an error also has its text, decoded with replacement characters.</summary>
    static IEnumerable<(int Line, string Text, string? Error)> DecodeLines(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException($"{path}: file not found");
        var bytes = File.ReadAllBytes(path);
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        int start = bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? 3 : 0;
        int lineNumber = 0;
        while (start < bytes.Length)
        {
            int end = Array.IndexOf(bytes, (byte)'\n', start);
            if (end < 0) end = bytes.Length;
            int length = end - start;
            if (length > 0 && bytes[start + length - 1] == '\r') length--;
            lineNumber++;
            string text;
            string? error = null;
            try
            {
                text = strict.GetString(bytes, start, length);
            }
            catch (DecoderFallbackException)
            {
                text = Encoding.UTF8.GetString(bytes, start, length);
                error = "invalid UTF-8";
            }
            yield return (lineNumber, text, error);
            start = end + 1;
        }
    }

    /// <summary>RFC 4180 CSV records: quoted fields may hold commas, doubled quotes and line breaks.</summary>
    static IEnumerable<(int Line, string[] Fields, string? Error)> CsvRows(string path)
    {
        var fields = new List<string>();
        var field = new StringBuilder();
        bool inQuotes = false;
        int recordLine = 0;
        string? recordError = null;
        foreach (var (line, text, error) in DecodeLines(path))
        {
            if (!inQuotes) recordLine = line;
            else field.Append('\n');
            // Invalid bytes never decode to a quote or a comma, so the record's extent is still read from the
            // replacement text: the rest of a quoted field must not come back as records of its own.
            if (error is not null) recordError ??= line == recordLine ? error : $"{error} on line {line} (inside a quoted field)";
            for (int i = 0; i < text.Length; i++)
            {
                char c = text[i];
                if (inQuotes)
                {
                    if (c != '"') field.Append(c);
                    else if (i + 1 < text.Length && text[i + 1] == '"')
                    {
                        field.Append('"');
                        i++;
                    }
                    else inQuotes = false;
                }
                else if (c == '"' && field.Length == 0) inQuotes = true;
                else if (c == ',')
                {
                    fields.Add(field.ToString());
                    field.Clear();
                }
                else field.Append(c);
            }
            if (inQuotes) continue;
            fields.Add(field.ToString());
            field.Clear();
            yield return recordError is null ? (recordLine, fields.ToArray(), null) : (recordLine, [], recordError);
            fields.Clear();
            recordError = null;
        }
        if (inQuotes) yield return (recordLine, [], "unterminated quoted field");
    }
}

/// <summary>
/// The rows a reader keeps from <paramref name="path"/>: a bad row is a <see cref="DataFormatException"/> naming
/// file:line, or, with <paramref name="skipBadRows"/>, counted (the first reason kept for the report).
/// </summary>
sealed class KeptRows(string path, bool skipBadRows)
{
    readonly List<Example> examples = [];
    int skipped;
    string? firstSkip;

    public void Add(Example example) => examples.Add(example);

    public void Reject(int line, string problem)
    {
        var message = $"{path}:{line}: {problem}";
        if (!skipBadRows) throw new DataFormatException(message);
        skipped++;
        firstSkip ??= message;
    }

    public LoadedData Data => new(examples, skipped, firstSkip);
}
