using System.Text.Json;

namespace AdapterSharp.Data;

/// <summary>One sentence of a token-classification file: its words, one tag per word, and where it starts.</summary>
public sealed record TaggedSentence(string[] Tokens, string[] Tags, string Source, int Line);

/// <summary>What a tagged-data reader kept and what it skipped.</summary>
public sealed record LoadedTaggedData(IReadOnlyList<TaggedSentence> Sentences, int Skipped, string? FirstSkipReason);

/// <summary>
/// Reads token-classification data: the CoNLL format (a word per line, columns split by spaces or tabs, the word first
/// and its tag last; a blank line between sentences; <c>-DOCSTART-</c> lines skipped) and JSONL
/// (<c>{"tokens": [...], "tags": [...]}</c> per line). A bad sentence is an error at file:line, or is counted and left
/// out with <c>skipBadRows</c>.
/// </summary>
public static class TaggedDataReader
{
    /// <summary>By extension: <c>.jsonl</c>/<c>.json</c> are JSON lines, anything else the CoNLL format.</summary>
    public static LoadedTaggedData Read(string path, bool skipBadRows = false, string tokensField = "tokens", string tagsField = "tags")
    {
        var format = Path.GetExtension(path).ToLowerInvariant();
        return format is ".jsonl" or ".json" ? ReadJsonLines(path, skipBadRows, tokensField, tagsField) : ReadConll(path, skipBadRows);
    }

    static LoadedTaggedData ReadConll(string path, bool skipBadRows)
    {
        var kept = new List<TaggedSentence>();
        int skipped = 0;
        string? firstSkip = null;
        var tokens = new List<string>();
        var tags = new List<string>();
        int start = 0;
        string? problem = null;

        void End()
        {
            if (tokens.Count > 0 || problem is not null)
            {
                if (problem is null) kept.Add(new TaggedSentence([.. tokens], [.. tags], path, start));
                else if (!skipBadRows) throw new DataFormatException(problem);
                else
                {
                    skipped++;
                    firstSkip ??= problem;
                }
            }
            tokens.Clear();
            tags.Clear();
            problem = null;
        }

        foreach (var (line, text, error) in DataReader.ReadLines(path))
        {
            var fields = text.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (error is null && fields.Length == 0)
            {
                End();
                continue;
            }
            if (error is null && fields[0] == "-DOCSTART-")
            {
                End();
                continue;
            }
            if (tokens.Count == 0 && problem is null) start = line;
            if (problem is not null) continue; // the rest of a bad sentence
            if (error is not null) problem = $"{path}:{line}: {error}";
            else if (fields.Length < 2) problem = $"{path}:{line}: expected a word and its tag (columns split by spaces or tabs), found one column '{Shorten(fields[0])}'";
            else if (Tag(fields[^1]) is { } tagProblem) problem = $"{path}:{line}: {tagProblem}";
            else
            {
                tokens.Add(fields[0]);
                tags.Add(fields[^1]);
            }
        }
        End();
        return new LoadedTaggedData(kept, skipped, firstSkip);
    }

    static LoadedTaggedData ReadJsonLines(string path, bool skipBadRows, string tokensField, string tagsField)
    {
        var kept = new List<TaggedSentence>();
        int skipped = 0;
        string? firstSkip = null;
        foreach (var (line, text, error) in DataReader.ReadLines(path))
        {
            if (error is null && text.Trim().Length == 0) continue;
            string? problem = error;
            TaggedSentence? sentence = null;
            if (problem is null)
            {
                try
                {
                    using var document = JsonStrict.Parse(text);
                    (sentence, problem) = FromJson(document.RootElement, tokensField, tagsField, path, line);
                }
                catch (JsonException e)
                {
                    problem = $"invalid JSON: {e.Message.Split(" LineNumber")[0]}";
                }
                catch (InvalidOperationException e)
                {
                    problem = $"invalid JSON string: {e.Message}";
                }
            }
            if (problem is null)
            {
                kept.Add(sentence!);
                continue;
            }
            var message = $"{path}:{line}: {problem}";
            if (!skipBadRows) throw new DataFormatException(message);
            skipped++;
            firstSkip ??= message;
        }
        return new LoadedTaggedData(kept, skipped, firstSkip);
    }

    static (TaggedSentence?, string?) FromJson(JsonElement row, string tokensField, string tagsField, string path, int line)
    {
        if (row.ValueKind != JsonValueKind.Object) return (null, "expected a JSON object");
        string[]? List(string name, bool tags, out string? problem)
        {
            problem = null;
            if (!row.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
            {
                problem = $"missing field \"{name}\"";
                return null;
            }
            if (value.ValueKind != JsonValueKind.Array)
            {
                problem = $"field \"{name}\" must be a list";
                return null;
            }
            var items = new List<string>();
            int index = 0;
            foreach (var item in value.EnumerateArray())
            {
                string? text = item.ValueKind switch
                {
                    JsonValueKind.String => item.GetString(),
                    // Tags given as class numbers (as HF datasets store them) are kept as their text.
                    JsonValueKind.Number when tags => item.GetRawText(),
                    _ => null,
                };
                if (text is null)
                {
                    problem = $"{name}[{index}] must be a string{(tags ? " or a number" : "")}";
                    return null;
                }
                if (text.Trim().Length == 0 || (!tags && text.Any(char.IsWhiteSpace)))
                {
                    problem = $"{name}[{index}] is {(text.Trim().Length == 0 ? "empty" : "more than one word (it holds white space)")}";
                    return null;
                }
                if (tags && Tag(text) is { } tagProblem)
                {
                    problem = $"{name}[{index}]: {tagProblem}";
                    return null;
                }
                items.Add(text);
                index++;
            }
            return [.. items];
        }
        var tokens = List(tokensField, tags: false, out var problem);
        if (problem is not null) return (null, problem);
        var tags = List(tagsField, tags: true, out problem);
        if (problem is not null) return (null, problem);
        if (tokens!.Length == 0) return (null, $"\"{tokensField}\" is empty");
        if (tokens.Length != tags!.Length)
            return (null, $"{tokens.Length} tokens but {tags.Length} tags");
        return (new TaggedSentence(tokens, tags, path, line), null);
    }

    /// <summary>Why <paramref name="tag"/> cannot be a tag, or null.</summary>
    static string? Tag(string tag) =>
        tag.Any(char.IsControl) ? $"tag '{Shorten(tag)}' contains a control character" : null;

    static string Shorten(string text) =>
        Messages.OneLine(text.Length <= 80 ? text : text[..80] + "…");
}

/// <summary>A token-classification task as distributed: its folder and the files of its splits.</summary>
public sealed record TaggingTask(string Name, string Folder, string TrainFile, string DevFile, string TestFile, string[] Metrics)
{
    /// <summary>The evaluation file for <c>--eval-split</c> <paramref name="split"/> (dev or test).</summary>
    public string EvalFile(string split) => split switch
    {
        "dev" => DevFile,
        "test" => TestFile,
        _ => throw new ArgumentException($"--eval-split: '{split}' is not dev or test"),
    };
}

public static class TaggingTasks
{
    public static readonly IReadOnlyList<TaggingTask> All =
    [
        new("conll2003", "conll2003", "train.txt", "valid.txt", "test.txt", ["f1", "precision", "recall", "accuracy"]),
    ];

    public static TaggingTask? Find(string name) =>
        All.FirstOrDefault(t => t.Name.Equals(name, StringComparison.OrdinalIgnoreCase));

    /// <summary><c>$ADAPTERSHARP_DATA/&lt;Folder&gt;</c>, else <c>../shared/datasets/&lt;Folder&gt;</c> (see <see cref="DataFolders"/>).</summary>
    public static string DefaultDirectory(TaggingTask task) => DataFolders.Find(task.Folder, $"data for {task.Name}");
}
