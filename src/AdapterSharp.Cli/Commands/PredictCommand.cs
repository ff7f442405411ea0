using System.CommandLine;
using System.Text.Json;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Training;

namespace AdapterSharp.Cli.Commands;

/// <summary>
/// <c>adaptersharp predict --adapter DIR [TEXT…]</c>: texts from arguments, from <c>--input FILE</c> or from stdin
/// (one per line, or JSONL <c>{"text": …, "text_pair"?: …}</c>) → JSONL with the label and its probabilities, the score,
/// or the entities (type, text, start and end offsets in the text, score) of a token-classification adapter.
/// </summary>
static class PredictCommand
{
    public static Command Create()
    {
        var open = new AdapterOpenOptions(defaultBatch: 64);
        var input = new Option<string?>("--input", "-i") { Description = "File of texts: plain lines or JSONL; '-' for stdin." };
        var texts = new Argument<string[]>("texts") { Description = "Texts to classify (else --input or stdin).", Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("predict", "Predict with an adapter: JSONL per input with the label and probabilities, the score, or the entities.")
        {
            input, texts,
        };
        open.AddTo(command);
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            int batchSize = open.BatchSize(parse);
            using var loaded = open.Open(parse);
            var head = loaded.Manifest.Head;
            var kind = HeadKind.For(head);
            var inputs = head.Kind == "multiple-choice"
                ? ReadQuestions(parse.GetValue(texts) ?? [], parse.GetValue(input))
                : ReadInputs(parse.GetValue(texts) ?? [], parse.GetValue(input)).Select(i => new PredictInput(i.Text, i.Pair)).ToList();
            for (int i = 0; i < inputs.Count; i++)
                if (kind.CheckInput(inputs[i]) is { } problem) throw new UsageException($"input {i + 1}: {problem}");
            // Each input becomes its head's rows (one; a question's windows; a question's choices), all run together.
            var rows = inputs.Select(i => kind.EncodeInput(head, i, loaded.Encoder.Tokenizer, loaded.Manifest.MaxLength)).ToArray();
            var outputs = Trainer.Predict(loaded.Model, EncodedDataset.Unlabelled([.. rows.SelectMany(r => r)]), batchSize, loaded.Device);
            int position = 0;
            for (int i = 0; i < inputs.Count; i++)
            {
                Prediction prediction;
                try
                {
                    prediction = kind.Answer(head, inputs[i], rows[i], outputs[position..(position + rows[i].Count)]);
                }
                catch (InvalidDataException e)
                {
                    throw new InvalidDataException($"input {i + 1}: {e.Message}");
                }
                position += rows[i].Count;
                Console.WriteLine(JsonSerializer.Serialize(Row(head, inputs[i], prediction)));
            }
            return 0;
        }));
        return command;
    }

    /// <summary>One output line: the input, and what the head answers.</summary>
    static Dictionary<string, object> Row(HeadConfig head, PredictInput input, Prediction prediction)
    {
        var row = new Dictionary<string, object>();
        switch (head.Kind)
        {
            case "question-answering":
                row["question"] = input.Text;
                row["answer"] = prediction.Answer!.Text;
                row["start"] = prediction.Answer.Start;
                row["end"] = prediction.Answer.End;
                row["score"] = Math.Round(prediction.Answer.Score, 4);
                return row;
            case "multiple-choice":
                row["context"] = input.Text;
                row["choice"] = prediction.Choice!.Value;
                row["text"] = prediction.Label!;
                row["probabilities"] = prediction.ChoiceProbabilities!;
                return row;
        }
        row["text"] = input.Text;
        if (input.TextPair is { } pair) row["text_pair"] = pair;
        if (prediction.Score is { } score) row["score"] = score;
        else if (prediction.Entities is { } entities)
            row["entities"] = entities.Select(e => new Dictionary<string, object>
            {
                ["type"] = e.Type, ["text"] = e.Text, ["start"] = e.Start, ["end"] = e.End, ["score"] = e.Score,
            }).ToList();
        else
        {
            row["label"] = prediction.Label!;
            row["probabilities"] = prediction.Probabilities!;
        }
        return row;
    }

    /// <summary>
    /// Multiple-choice questions as JSONL <c>{"context", "question"?, "choices": [...]}</c> from <c>--input</c> or stdin
    /// (a question of any number of choices; its choices are scored against each other).
    /// </summary>
    static List<PredictInput> ReadQuestions(string[] arguments, string? path)
    {
        if (arguments.Length > 0) throw new UsageException("a multiple-choice adapter reads JSONL questions {\"context\", \"choices\": [...]} from --input or stdin, not texts as arguments");
        using var reader = path is null or "-" ? Console.In : new StreamReader(File.Exists(path) ? path : throw new UsageException($"{path}: file not found"));
        var source = path is null or "-" ? "<stdin>" : path;
        var questions = new List<PredictInput>();
        foreach (var (lineNumber, line) in TextLines.Read(reader, source))
        {
            if (line.Trim().Length == 0) continue;
            var (example, problem) = ChoiceDataReader.FromLine(line, source, lineNumber, requireLabel: false);
            if (example is null) throw new InvalidDataException($"{source}:{lineNumber}: {problem}");
            questions.Add(new PredictInput(example.Context, example.Prefix, example.Choices));
        }
        if (questions.Count == 0) throw new UsageException($"{source}: no questions to answer");
        return questions;
    }

    static List<(string Text, string? Pair)> ReadInputs(string[] arguments, string? path)
    {
        if (arguments.Length > 0)
        {
            if (path is not null) throw new UsageException("give texts as arguments or --input, not both");
            return arguments.Select(t => (t, (string?)null)).ToList();
        }
        using var reader = path is null or "-" ? Console.In : new StreamReader(File.Exists(path) ? path : throw new UsageException($"{path}: file not found"));
        var source = path is null or "-" ? "<stdin>" : path;
        var result = new List<(string, string?)>();
        foreach (var (lineNumber, line) in AdapterSharp.Data.TextLines.Read(reader, source))
        {
            if (line.Trim().Length == 0) continue;
            if (!line.TrimStart().StartsWith('{'))
            {
                result.Add((line, null));
                continue;
            }
            try
            {
                using var document = AdapterSharp.JsonStrict.Parse(line);
                var root = document.RootElement;
                // A question and its context are a text pair.
                bool question = root.TryGetProperty("question", out var questionText) && questionText.ValueKind == JsonValueKind.String;
                var text = question ? questionText : root.TryGetProperty("text", out var t) ? t : default;
                if (text.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{source}:{lineNumber}: missing string field \"text\" (or \"question\")");
                string? pair = root.TryGetProperty(question ? "context" : "text_pair", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString() : null;
                result.Add((text.GetString()!, pair));
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{source}:{lineNumber}: invalid JSON: {e.Message.Split(" LineNumber")[0]}");
            }
        }
        if (result.Count == 0) throw new UsageException($"{source}: no texts to predict");
        return result;
    }
}
