using System.CommandLine;
using System.Text.Json;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Training;

namespace AdapterSharp.Cli.Commands;

/// <summary><c>adaptersharp eval --adapter DIR</c>: the adapter's metrics on its task's dev set, or on given data.</summary>
static class EvalCommand
{
    public static Command Create()
    {
        var open = new AdapterOpenOptions(defaultBatch: 128);
        var task = new Option<string?>("--task") { Description = "GLUE or token-classification task (default: the task the adapter was trained on)." };
        var evalSplit = new Option<string>("--eval-split")
        {
            Description = "Which split of the task: dev, or test where it has labels (conll2003).", DefaultValueFactory = _ => "dev",
        };
        evalSplit.AcceptOnlyFromAmong("dev", "test");
        var data = new Option<string?>("--data") { Description = "The task's folder." };
        var devFile = new Option<string?>("--dev")
        {
            Description = "Evaluation file (.tsv, .csv, .jsonl) with named columns; for a token-classification adapter, CoNLL or JSONL {\"tokens\", \"tags\"}.",
        };
        var textColumn = new Option<string?>("--text-column");
        var pairColumn = new Option<string?>("--text-pair-column");
        var labelColumn = new Option<string?>("--label-column");
        var skipBad = new Option<bool>("--skip-bad-rows");
        var docStride = new Option<int>("--doc-stride")
        {
            Description = "Question answering: pieces shared by consecutive windows of a long context.", DefaultValueFactory = _ => 128,
        };
        var command = new Command("eval", "Score an adapter on labelled data with its task's metrics (prints JSON).")
        {
            task, evalSplit, data, devFile, textColumn, pairColumn, labelColumn, skipBad, docStride,
        };
        open.AddTo(command);
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            int batchSize = open.BatchSize(parse);
            using var loaded = open.Open(parse);
            var manifest = loaded.Manifest;
            var request = new DataRequest
            {
                Task = parse.GetValue(task) ?? (parse.GetValue(devFile) is null ? manifest.Task : null),
                DataDir = parse.GetValue(data),
                TrainFile = parse.GetValue(devFile),
                DevFile = parse.GetValue(devFile),
                TextColumn = parse.GetValue(textColumn),
                TextPairColumn = parse.GetValue(pairColumn),
                LabelColumn = parse.GetValue(labelColumn),
                Regression = manifest.Head.IsRegression,
                Head = manifest.Head.Kind,
                SkipBadRows = parse.GetValue(skipBad),
                EvalSplit = parse.GetValue(evalSplit)!,
                DocStride = parse.GetValue(docStride),
            };
            if (request.Task is null && request.DevFile is null)
                throw new UsageException("the adapter records no task: pass --task or --dev with column options");
            var taskData = TrainingJob.LoadData(request);
            int skipped = 0;
            var dev = taskData.ChoiceDev is { } choiceQuestions
                ? EncodedDataset.EncodeChoices(choiceQuestions, loaded.Encoder.Tokenizer, manifest.MaxLength)
                : taskData.QaDev is { } questions
                ? EncodedDataset.EncodeQa(questions, loaded.Encoder.Tokenizer, manifest.MaxLength, taskData.DocStride)
                : taskData.TaggedDev is { } tagged
                ? EncodedDataset.EncodeTagged(tagged, loaded.Encoder.Tokenizer, manifest.Head, manifest.MaxLength, labelAllPieces: false,
                    request.SkipBadRows, out skipped)
                : EncodedDataset.Encode(taskData.Dev, loaded.Encoder.Tokenizer, manifest.Head, manifest.MaxLength, request.SkipBadRows, out skipped);
            if (dev.Count == 0) throw new UsageException($"{taskData.TaskName}: no usable evaluation rows");
            var metrics = Trainer.Evaluate(loaded.Model, dev, manifest.Head, taskData.Metrics, batchSize, loaded.Device);
            var result = new Dictionary<string, object> { ["adapter"] = manifest.Name, ["task"] = taskData.TaskName, ["examples"] = dev.Count };
            if (skipped + taskData.Skipped > 0) result["skipped"] = skipped + taskData.Skipped;
            foreach (var (name, value) in metrics) result[name] = Math.Round(value, 6);
            Console.WriteLine(JsonSerializer.Serialize(result));
            return 0;
        }));
        return command;
    }
}
