using System.Globalization;
using System.Text.Json;

namespace AdapterSharp.Data;

/// <summary>An answer: its text and where it starts in the context (UTF-16 units).</summary>
public sealed record QaAnswer(string Text, int Start);

/// <summary>
/// One extractive question: its id, question, context and gold answers (the first is what training uses; all count in
/// scoring), where it came from (<see cref="Where"/>: file:line, or file and question id), and its article's index.
/// </summary>
public sealed record QaExample(string Id, string Question, string Context, IReadOnlyList<QaAnswer> Answers, string Where, int Article);

/// <summary>What a QA reader kept and what it skipped.</summary>
public sealed record LoadedQaData(IReadOnlyList<QaExample> Examples, int Articles, int Skipped, string? FirstSkipReason);

/// <summary>
/// Reads extractive QA data: the SQuAD v1.1 JSON format (<c>{"data": [{"title", "paragraphs": [{"context", "qas":
/// [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}</c>) and JSONL with <c>question</c>, <c>context</c>
/// and <c>answers</c> (HF's <c>{"text": [...], "answer_start": [...]}</c> or a list of <c>{"text", "answer_start"}</c>),
/// <c>id</c> optional. <c>answer_start</c> counts code points, as SQuAD and Python do; it is kept as a UTF-16 index. An
/// answer whose text is not at its offset, a missing field or a question without an answer is an error naming the file
/// and the question (or line), or, with <c>skipBadRows</c>, a skipped question.
/// </summary>
public static class QaDataReader
{
    /// <summary>The largest SQuAD JSON file read whole (SQuAD v1.1 train is 30 MB).</summary>
    public const long MaxJsonBytes = 1L << 30;

    public static LoadedQaData Read(string path, bool skipBadRows = false)
    {
        if (!File.Exists(path)) throw new DataFormatException($"{path}: file not found");
        var format = Path.GetExtension(path).ToLowerInvariant();
        return format == ".jsonl" ? ReadJsonLines(path, skipBadRows) : ReadSquad(path, skipBadRows);
    }

    static LoadedQaData ReadSquad(string path, bool skipBadRows)
    {
        var length = new FileInfo(path).Length;
        if (length > MaxJsonBytes) throw new DataFormatException($"{path}: {length} bytes, more than the {MaxJsonBytes >> 20} MiB a SQuAD JSON file may have");
        JsonDocument document;
        try
        {
            document = JsonStrict.Parse(File.ReadAllBytes(path), JsonStrict.Document with { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new DataFormatException($"{path}: not valid JSON ({e.Message})");
        }
        using (document)
        {
            var kept = new Kept(path, skipBadRows);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Array)
                throw new DataFormatException($"{path}: expected an object with a \"data\" list (the SQuAD format)");
            int article = 0;
            foreach (var entry in data.EnumerateArray())
            {
                article++;
                var at = $"{path}: data[{article - 1}]";
                if (entry.ValueKind != JsonValueKind.Object || !entry.TryGetProperty("paragraphs", out var paragraphs) || paragraphs.ValueKind != JsonValueKind.Array)
                    throw new DataFormatException($"{at}: expected an object with a \"paragraphs\" list");
                int p = 0;
                foreach (var paragraph in paragraphs.EnumerateArray())
                {
                    var where = $"{at}.paragraphs[{p++}]";
                    if (paragraph.ValueKind != JsonValueKind.Object) throw new DataFormatException($"{where}: expected an object");
                    if (String(paragraph, "context", out var problem) is not { } context) throw new DataFormatException($"{where}: {problem}");
                    if (!paragraph.TryGetProperty("qas", out var qas) || qas.ValueKind != JsonValueKind.Array)
                        throw new DataFormatException($"{where}: missing list \"qas\"");
                    int q = 0;
                    foreach (var qa in qas.EnumerateArray())
                    {
                        var qaWhere = $"{where}.qas[{q++}]";
                        if (qa.ValueKind != JsonValueKind.Object)
                        {
                            kept.Reject(qaWhere, "expected an object");
                            continue;
                        }
                        if (qa.TryGetProperty("id", out var idElement) && idElement.ValueKind == JsonValueKind.String)
                            qaWhere = $"{path}: question {Shorten(idElement.GetString()!)}";
                        var (example, reason) = Example(qa, context, qaWhere, article, requireId: true);
                        if (example is null) kept.Reject(qaWhere, reason!);
                        else kept.Add(example);
                    }
                }
            }
            return kept.Result(article);
        }
    }

    static LoadedQaData ReadJsonLines(string path, bool skipBadRows)
    {
        var kept = new Kept(path, skipBadRows);
        foreach (var (line, text, error) in DataReader.ReadLines(path))
        {
            if (error is null && text.Trim().Length == 0) continue;
            var where = $"{path}:{line}";
            if (error is not null)
            {
                kept.Reject(where, error);
                continue;
            }
            try
            {
                using var document = JsonStrict.Parse(text);
                var row = document.RootElement;
                if (row.ValueKind != JsonValueKind.Object)
                {
                    kept.Reject(where, "expected a JSON object");
                    continue;
                }
                if (String(row, "context", out var problem) is not { } context)
                {
                    kept.Reject(where, problem!);
                    continue;
                }
                var (example, reason) = Example(row, context, where, article: 0, requireId: false, line);
                if (example is null) kept.Reject(where, reason!);
                else kept.Add(example);
            }
            catch (JsonException e)
            {
                kept.Reject(where, $"invalid JSON: {e.Message.Split(" LineNumber")[0]}");
            }
            catch (InvalidOperationException e)
            {
                kept.Reject(where, $"invalid JSON string: {e.Message}");
            }
        }
        return kept.Result(0);
    }

    static (QaExample?, string?) Example(JsonElement qa, string context, string where, int article, bool requireId, int line = 0)
    {
        string id;
        if (qa.TryGetProperty("id", out var idElement) && idElement.ValueKind is JsonValueKind.String or JsonValueKind.Number)
            id = idElement.ValueKind == JsonValueKind.String ? idElement.GetString()! : idElement.GetRawText();
        else if (requireId) return (null, "missing string \"id\"");
        else id = line.ToString(CultureInfo.InvariantCulture);
        if (String(qa, "question", out var problem) is not { } question) return (null, problem);
        if (!qa.TryGetProperty("answers", out var answersElement)) return (null, "missing \"answers\"");
        var answers = new List<QaAnswer>();
        if (answersElement.ValueKind == JsonValueKind.Array)
        {
            int k = 0;
            foreach (var answer in answersElement.EnumerateArray())
            {
                if (answer.ValueKind != JsonValueKind.Object) return (null, $"answers[{k}]: expected an object with \"text\" and \"answer_start\"");
                if (String(answer, "text", out problem) is not { } answerText) return (null, $"answers[{k}]: {problem}");
                if (!answer.TryGetProperty("answer_start", out var start) || !start.TryGetInt32(out int codePoints))
                    return (null, $"answers[{k}]: missing whole number \"answer_start\"");
                var (kept, reason) = Answer(context, answerText, codePoints, $"answers[{k}]");
                if (kept is null) return (null, reason);
                answers.Add(kept);
                k++;
            }
        }
        else if (answersElement.ValueKind == JsonValueKind.Object)
        {
            if (!answersElement.TryGetProperty("text", out var texts) || texts.ValueKind != JsonValueKind.Array
                || !answersElement.TryGetProperty("answer_start", out var starts) || starts.ValueKind != JsonValueKind.Array)
                return (null, "answers: expected lists \"text\" and \"answer_start\"");
            if (texts.GetArrayLength() != starts.GetArrayLength())
                return (null, $"answers: {texts.GetArrayLength()} texts but {starts.GetArrayLength()} answer_start values");
            for (int k = 0; k < texts.GetArrayLength(); k++)
            {
                if (texts[k].ValueKind != JsonValueKind.String || !starts[k].TryGetInt32(out int codePoints))
                    return (null, $"answers: text[{k}] must be a string and answer_start[{k}] a whole number");
                var (kept, reason) = Answer(context, texts[k].GetString()!, codePoints, $"answers.text[{k}]");
                if (kept is null) return (null, reason);
                answers.Add(kept);
            }
        }
        else return (null, "answers: expected a list or an object");
        if (answers.Count == 0) return (null, "no answer (extractive QA needs at least one)");
        return (new QaExample(id, question, context, answers, where, article), null);
    }

    /// <summary>The answer with its start as a UTF-16 index, or why it is not at its offset.</summary>
    static (QaAnswer?, string?) Answer(string context, string text, int codePoints, string at)
    {
        if (text.Length == 0) return (null, $"{at}: empty answer text");
        int start = Utf16Index(context, codePoints);
        if (start < 0 || start + text.Length > context.Length || string.CompareOrdinal(context, start, text, 0, text.Length) != 0)
            return (null, $"{at}: answer '{Shorten(text)}' is not at offset {codePoints} of the context");
        return (new QaAnswer(text, start), null);
    }

    /// <summary>The UTF-16 index of code point <paramref name="codePoints"/> of <paramref name="text"/>; −1 past the end.</summary>
    public static int Utf16Index(string text, int codePoints)
    {
        if (codePoints < 0) return -1;
        int index = 0;
        for (int k = 0; k < codePoints; k++)
        {
            if (index >= text.Length) return -1;
            index += char.IsHighSurrogate(text[index]) && index + 1 < text.Length && char.IsLowSurrogate(text[index + 1]) ? 2 : 1;
        }
        return index;
    }

    static string? String(JsonElement element, string name, out string? problem)
    {
        problem = null;
        if (!element.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.String)
        {
            problem = $"missing string \"{name}\"";
            return null;
        }
        string text;
        try
        {
            text = value.GetString()!;
        }
        catch (InvalidOperationException)
        {
            problem = $"\"{name}\" is not valid Unicode (a lone surrogate)";
            return null;
        }
        if (text.Trim().Length == 0)
        {
            problem = $"empty \"{name}\"";
            return null;
        }
        return text;
    }

    static string Shorten(string text) => Messages.OneLine(text.Length <= 60 ? text : text[..60] + "…");

    sealed class Kept(string path, bool skipBadRows)
    {
        readonly List<QaExample> examples = [];
        int skipped;
        string? firstSkip;

        public void Add(QaExample example) => examples.Add(example);

        public void Reject(string where, string problem)
        {
            var message = $"{where}: {problem}";
            if (!skipBadRows) throw new DataFormatException(message);
            skipped++;
            firstSkip ??= message;
        }

        public LoadedQaData Result(int articles) => new(examples, articles, skipped, firstSkip);

        public override string ToString() => path;
    }
}

/// <summary>
/// An extractive QA task as distributed. SQuAD v1.1 here is its dev set alone (the train set could not be had): as
/// ../shared/datasets/squad/README.md defines, articles 1-38 train and 39-48 evaluate.
/// </summary>
public sealed record QaTask(string Name, string Folder, string File, int TrainArticles)
{
    public (IReadOnlyList<QaExample> Train, IReadOnlyList<QaExample> Eval) Split(IReadOnlyList<QaExample> examples) =>
        ([.. examples.Where(e => e.Article <= TrainArticles)], [.. examples.Where(e => e.Article > TrainArticles)]);
}

public static class QaTasks
{
    public static readonly IReadOnlyList<QaTask> All = [new("squad", "squad", "dev-v1.1.json", 38)];

    public static QaTask? Find(string name) => All.FirstOrDefault(t => t.Name.Equals(name, StringComparison.OrdinalIgnoreCase));

    /// <summary><c>$ADAPTERSHARP_DATA/&lt;Folder&gt;</c>, else <c>../shared/datasets/&lt;Folder&gt;</c> (see <see cref="DataFolders"/>).</summary>
    public static string DefaultDirectory(QaTask task) => DataFolders.Find(task.Folder, $"data for {task.Name}");
}
