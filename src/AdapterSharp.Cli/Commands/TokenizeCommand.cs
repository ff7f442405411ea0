using System.CommandLine;
using System.Text.Json;
using AdapterSharp.Checkpoints;
using AdapterSharp.Text;

namespace AdapterSharp.Cli.Commands;

/// <summary>
/// <c>adaptersharp tokenize --model M [FILE]</c>: JSONL lines <c>{"text": …, "text_pair"?: …}</c> in (FILE or
/// stdin), JSONL lines with <c>input_ids</c>, <c>token_type_ids</c> and <c>tokens</c> out.
/// </summary>
static class TokenizeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var vocab = CommonOptions.Vocab();
        var maxLength = new Option<int?>("--max-length")
        {
            Description = "Truncate (longest_first) to this many tokens, special tokens included.",
        };
        var input = new Argument<string?>("file")
        {
            Description = "JSONL input; '-' or omitted reads standard input.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var command = new Command("tokenize", "Tokenize JSONL texts (and text pairs) exactly as HuggingFace BertTokenizer does.")
        {
            model, vocab, maxLength, input,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            int? max = parse.GetValue(maxLength);
            if (max is < 2) throw new UsageException($"--max-length must be at least 2, got {max}");
            var tokenizer = LoadTokenizer(parse.GetValue(model)!, parse.GetValue(vocab));
            var path = parse.GetValue(input);
            using var reader = path is null or "-" ? Console.In : OpenInput(path);
            Tokenize(tokenizer, reader, path is null or "-" ? "<stdin>" : path, max, Console.Out);
            return 0;
        }));
        return command;
    }

    static BertTokenizer LoadTokenizer(string model, string? vocab)
    {
        // Only the vocabulary is needed; for a vocab file given outright, skip loading the weights.
        if (vocab is not null && !BuiltInModels.TryGet(model, out _) && !Directory.Exists(model) && !File.Exists(model))
            return vocab.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
                ? BertTokenizer.FromTokenizerJson(vocab)
                : BertTokenizer.FromVocabFile(vocab);
        return Pretrained.Load(model, vocab, Run.StderrLog).Tokenizer;
    }

    static StreamReader OpenInput(string path) =>
        File.Exists(path) ? new StreamReader(path) : throw new UsageException($"{path}: file not found");

    public static void Tokenize(BertTokenizer tokenizer, TextReader reader, string source, int? maxLength, TextWriter output)
    {
        using var buffer = new MemoryStream();
        foreach (var (lineNumber, line) in AdapterSharp.Data.TextLines.Read(reader, source))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            var (text, pair) = Parse(line, $"{source}:{lineNumber}");
            var encoding = tokenizer.Encode(text, pair, maxLength);
            buffer.SetLength(0);
            using (var json = new Utf8JsonWriter(buffer))
            {
                json.WriteStartObject();
                json.WriteStartArray("input_ids");
                foreach (var id in encoding.InputIds) json.WriteNumberValue(id);
                json.WriteEndArray();
                json.WriteStartArray("token_type_ids");
                foreach (var id in encoding.TokenTypeIds) json.WriteNumberValue(id);
                json.WriteEndArray();
                json.WriteStartArray("tokens");
                foreach (var token in encoding.Tokens) json.WriteStringValue(token);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            output.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
        }
    }

    static (string Text, string? Pair) Parse(string line, string place)
    {
        JsonDocument document;
        try
        {
            document = AdapterSharp.JsonStrict.Parse(line);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{place}: invalid JSON: {e.Message.Split(" LineNumber")[0]}");
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{place}: expected a JSON object with a \"text\" field");
            if (!root.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{place}: missing string field \"text\"");
            string? pair = null;
            if (root.TryGetProperty("text_pair", out var p) && p.ValueKind != JsonValueKind.Null)
            {
                if (p.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{place}: \"text_pair\" must be a string");
                pair = p.GetString();
            }
            return (text.GetString()!, pair);
        }
    }
}
