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
            if (loaded.Manifest.Head.Kind == "multiple-choice")
            {
                Choose(loaded, parse.GetValue(texts) ?? [], parse.GetValue(input), batchSize);
                return 0;
            }
            var inputs = ReadInputs(parse.GetValue(texts) ?? [], parse.GetValue(input));
            var head = loaded.Manifest.Head;
            var tokenizer = loaded.Encoder.Tokenizer;
            if (head.Kind == "question-answering")
            {
                AnswerQuestions(loaded, inputs, batchSize);
                return 0;
            }
            bool offsets = HeadKind.For(head).NeedsOffsets;
            var encodings = inputs.Select(i => offsets
                ? tokenizer.EncodeWithOffsets(i.Text, i.Pair, loaded.Manifest.MaxLength)
                : tokenizer.Encode(i.Text, i.Pair, loaded.Manifest.MaxLength)).ToArray();
            var outputs = Trainer.Predict(loaded.Model, EncodedDataset.Unlabelled(encodings), batchSize, loaded.Device);
            for (int i = 0; i < inputs.Count; i++)
            {
                var row = new Dictionary<string, object> { ["text"] = inputs[i].Text };
                if (inputs[i].Pair is { } pair) row["text_pair"] = pair;
                Prediction prediction;
                try
                {
                    prediction = Prediction.From(head, outputs[i], new DecodeInput(inputs[i].Text, inputs[i].Pair, encodings[i]));
                }
                catch (InvalidDataException e)
                {
                    throw new InvalidDataException($"input {i + 1}: {e.Message}");
                }
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
                Console.WriteLine(JsonSerializer.Serialize(row));
            }
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// Question answering: each input is a question and its context (<c>text</c> and <c>text_pair</c>, or <c>question</c>
    /// and <c>context</c>), cut into windows as in training; the answer is the best span over them.
    /// </summary>
    static void AnswerQuestions(LoadedAdapter loaded, List<(string Text, string? Pair)> inputs, int batchSize)
    {
        var examples = inputs.Select((input, i) => new QaExample($"{i + 1}", input.Text,
            input.Pair is { Length: > 0 } context ? context : throw new UsageException($"input {i + 1}: a question needs its context (text_pair, or \"context\")"),
            [], $"input {i + 1}", 0)).ToArray();
        var data = EncodedDataset.EncodeQa(examples, loaded.Encoder.Tokenizer, loaded.Manifest.MaxLength, Math.Min(128, loaded.Manifest.MaxLength / 3));
        var outputs = Trainer.Predict(loaded.Model, data, batchSize, loaded.Device);
        var answers = QuestionAnsweringHead.Answers(data.Qa!, outputs);
        for (int i = 0; i < inputs.Count; i++)
        {
            var row = new Dictionary<string, object>
            {
                ["question"] = inputs[i].Text, ["answer"] = answers[i].Text, ["start"] = answers[i].Start, ["end"] = answers[i].End,
                ["score"] = Math.Round(answers[i].Score, 4),
            };
            Console.WriteLine(JsonSerializer.Serialize(row));
        }
    }

    /// <summary>
    /// Multiple choice: JSONL questions <c>{"context", "question"?, "choices": [...]}</c> from <c>--input</c> or stdin, each
    /// answered with the best choice and every choice's probability.
    /// </summary>
    static void Choose(LoadedAdapter loaded, string[] arguments, string? path, int batchSize)
    {
        if (arguments.Length > 0) throw new UsageException("a multiple-choice adapter reads JSONL questions {\"context\", \"choices\": [...]} from --input or stdin, not texts as arguments");
        using var reader = path is null or "-" ? Console.In : new StreamReader(File.Exists(path) ? path : throw new UsageException($"{path}: file not found"));
        var source = path is null or "-" ? "<stdin>" : path;
        var questions = new List<ChoiceExample>();
        foreach (var (lineNumber, line) in TextLines.Read(reader, source))
        {
            if (line.Trim().Length == 0) continue;
            var (example, problem) = ChoiceDataReader.FromLine(line, source, lineNumber, requireLabel: false);
            questions.Add(example ?? throw new InvalidDataException($"{source}:{lineNumber}: {problem}"));
        }
        if (questions.Count == 0) throw new UsageException($"{source}: no questions to answer");
        var answers = new Dictionary<string, object>[questions.Count];
        // Questions may differ in how many choices they have: each group of the same count runs as its own data set.
        foreach (var group in questions.Select((q, i) => (q, i)).GroupBy(p => p.q.Choices.Length))
        {
            var members = group.ToArray();
            var data = EncodedDataset.EncodeChoices([.. members.Select(m => m.q)], loaded.Encoder.Tokenizer, loaded.Manifest.MaxLength);
            var outputs = Trainer.Predict(loaded.Model, data, batchSize, loaded.Device);
            for (int k = 0; k < members.Length; k++)
            {
                int n = group.Key;
                var (choice, probabilities) = MultipleChoiceHead.Choose([.. Enumerable.Range(0, n).Select(c => outputs[k * n + c][0])]);
                answers[members[k].i] = new Dictionary<string, object>
                {
                    ["context"] = members[k].q.Context, ["choice"] = choice, ["text"] = members[k].q.Choices[choice],
                    ["probabilities"] = probabilities.Select(p => Math.Round(p, 6)).ToArray(),
                };
            }
        }
        foreach (var answer in answers) Console.WriteLine(JsonSerializer.Serialize(answer));
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
