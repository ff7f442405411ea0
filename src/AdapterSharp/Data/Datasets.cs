using System.Text;
using System.Text.Json;

namespace AdapterSharp.Data;

/// <summary>One labelled row: its text (and pair), its label as written in the file, and where it came from.</summary>
public sealed record Example(string Text, string? TextPair, string Label, string Source, int Line);

/// <summary>A data row that cannot be used: the message starts with file:line.</summary>
public sealed class DataFormatException(string message) : Exception(Messages.OneLine(message));

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
            var matches = Enumerable.Range(0, header.Length).Where(i => header[i].Trim() == name).ToArray();
            if (matches.Length == 0)
                throw new DataFormatException(
                    $"{path}:{headerLine}: no column '{name}' ({option}); the header has: {Shorten(string.Join(", ", header.Select(h => h.Trim())))}");
            if (matches.Length > 1)
                throw new DataFormatException(
                    $"{path}:{headerLine}: column '{name}' ({option}) appears {matches.Length} times in the header (columns {string.Join(", ", matches.Select(i => i + 1))})");
            return matches[0];
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

    /// <summary>At most 200 characters of <paramref name="text"/>, for a message.</summary>
    static string Shorten(string text) => text.Length <= 200 ? text : text[..200] + "…";

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
            string? canonical = null;
            if (problem is null && fields[label].Trim().Length == 0) problem = $"empty label in {columnName(label)}";
            if (problem is null) (canonical, problem) = Labels.Canonical(fields[label]);
            if (problem is not null) kept.Reject(line, problem);
            else kept.Add(new Example(fields[text], pair is { } q ? fields[q] : null, canonical!, path, line));
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
                    using var document = JsonStrict.Parse(text);
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
        var (canonical, labelProblem) = Labels.Canonical(label!);
        return labelProblem is not null ? (null, labelProblem) : (new Example(text!, pair, canonical!, path, line), null);
    }

    /// <summary>
    /// Lines of a UTF-8 file (a BOM is dropped, CR before LF too), each decoded strictly: a line with
    /// invalid UTF-8 comes back with an error instead of replacement characters.
    /// </summary>
    public static IEnumerable<(int Line, string Text, string? Error)> ReadLines(string path) =>
        DecodeLines(path).Select(l => l.Error is null ? l : (l.Line, "", l.Error));

    /// <summary>The longest line a data file may have: a longer one is an error, not an allocation as large as the file.</summary>
    public const int MaxLineBytes = 1 << 20;

    /// <summary>
    /// As <see cref="ReadLines"/>, but a line with an error also has its text, decoded with replacement characters.
    /// The file is read as a stream, a line at a time, so a file without line breaks (or /dev/zero) is an error at its
    /// first line once that passes <see cref="MaxLineBytes"/>.
    /// </summary>
    static IEnumerable<(int Line, string Text, string? Error)> DecodeLines(string path)
    {
        if (!File.Exists(path) && !IsDevice(path)) throw new DataFormatException($"{path}: file not found");
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        var line = new MemoryStream();
        int lineNumber = 0, next;
        bool first = true;
        while (true)
        {
            line.SetLength(0);
            while ((next = stream.ReadByte()) >= 0 && next != '\n')
            {
                if (line.Length >= MaxLineBytes)
                    throw new DataFormatException($"{path}:{lineNumber + 1}: line longer than {MaxLineBytes >> 20} MiB (not a text file, or no line breaks?)");
                line.WriteByte((byte)next);
            }
            if (next < 0 && line.Length == 0) yield break;
            lineNumber++;
            var bytes = line.GetBuffer().AsSpan(0, (int)line.Length);
            if (first && bytes.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) bytes = bytes[3..];
            first = false;
            if (bytes.Length > 0 && bytes[^1] == '\r') bytes = bytes[..^1];
            if (bytes.IndexOf((byte)'\r') >= 0)
                throw new DataFormatException($"{path}:{lineNumber}: a carriage return inside the line: the file's line endings are CR only? (write them as LF or CRLF)");
            string text;
            string? error = null;
            try
            {
                text = strict.GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                text = Encoding.UTF8.GetString(bytes);
                error = "invalid UTF-8";
            }
            yield return (lineNumber, text, error);
            if (next < 0) yield break;
        }
    }

    static bool IsDevice(string path) => path.StartsWith("/dev/", StringComparison.Ordinal);

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
                    else
                    {
                        inQuotes = false;
                        // After a closing quote comes a comma or the end of the record; anything else means an unbalanced
                        // quote earlier, which would otherwise merge records silently.
                        if (i + 1 < text.Length && text[i + 1] != ',')
                        {
                            recordError ??= $"text after the closing quote of field {fields.Count + 1} (an unbalanced quote{(line == recordLine ? "" : $" from line {recordLine}")}?)";
                        }
                    }
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
/// Labels as the readers keep them: trimmed; a number in its shortest form (<c>1.0</c>, <c>01</c> and <c>1e0</c> are all
/// <c>1</c>), so that one class is not read as several; control characters refused.
/// </summary>
public static class Labels
{
    public static (string? Label, string? Problem) Canonical(string raw)
    {
        var label = raw.Trim();
        if (label.Any(char.IsControl))
            return (null, $"label '{Escape(label)}' contains a control character");
        if (decimal.TryParse(label, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var number))
            return (number == decimal.Truncate(number) ? decimal.Truncate(number).ToString(System.Globalization.CultureInfo.InvariantCulture)
                : number.ToString("G29", System.Globalization.CultureInfo.InvariantCulture), null);
        return (label, null);
    }

    static string Escape(string text) =>
        string.Concat(text.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()));
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

/// <summary>Lines of a text stream (stdin, a file), each at most <see cref="DataReader.MaxLineBytes"/> characters.</summary>
public static class TextLines
{
    /// <summary>
    /// The lines of <paramref name="reader"/>, numbered from 1; a line longer than the limit is an
    /// <see cref="InvalidDataException"/> naming <paramref name="source"/>:line, read no further than the limit.
    /// </summary>
    public static IEnumerable<(int Number, string Text)> Read(TextReader reader, string source)
    {
        var line = new StringBuilder();
        int number = 0, next;
        while (true)
        {
            line.Clear();
            while ((next = reader.Read()) >= 0 && next != '\n')
            {
                if (line.Length >= DataReader.MaxLineBytes)
                    throw new InvalidDataException($"{source}:{number + 1}: line longer than {DataReader.MaxLineBytes >> 20} Mi characters (not a text file?)");
                line.Append((char)next);
            }
            if (next < 0 && line.Length == 0) yield break;
            number++;
            if (line.Length > 0 && line[^1] == '\r') line.Length--;
            yield return (number, line.ToString());
            if (next < 0) yield break;
        }
    }
}
