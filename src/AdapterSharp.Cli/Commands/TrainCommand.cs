using System.CommandLine;
using System.Globalization;
using AdapterSharp.Adapters;
using AdapterSharp.Data;
using AdapterSharp.Training;
using Spectre.Console;

namespace AdapterSharp.Cli.Commands;

/// <summary>
/// <c>adaptersharp train</c>: with no options, minilm-l6 + houlsby-64 on SST-2 within 10 minutes.
/// </summary>
static class TrainCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var vocab = CommonOptions.Vocab();
        var device = CommonOptions.Device();
        var precision = CommonOptions.Precision();
        var task = new Option<string?>("--task") { Description = $"GLUE task ({GlueTasks.Names}); default sst2 unless --train is given." };
        var data = new Option<string?>("--data") { Description = "The task's folder (default $ADAPTERSHARP_DATA/glue/<TASK>, else ../shared/datasets/glue/<TASK>)." };
        var trainFile = new Option<string?>("--train") { Description = "Training file (.tsv, .csv or .jsonl) with named columns." };
        var devFile = new Option<string?>("--dev") { Description = "Evaluation file, same format as --train." };
        var textColumn = new Option<string?>("--text-column") { Description = "Column holding the text." };
        var pairColumn = new Option<string?>("--text-pair-column") { Description = "Column holding the second text of a pair." };
        var labelColumn = new Option<string?>("--label-column") { Description = "Column holding the label (or score with --regression)." };
        var regression = new Option<bool>("--regression") { Description = "The label is a number: train a regression head (MSE)." };
        var skipBad = new Option<bool>("--skip-bad-rows") { Description = "Skip unusable rows (and report how many) instead of stopping." };
        var name = new Option<string?>("--name") { Description = "Adapter name (default: the task)." };
        var method = new MethodOptions();
        var stack = new Option<string?>("--stack") { Description = "Train the new adapter on top of these frozen adapter folders (comma-separated, bottom first): Stack(DIR…, new)." };
        var fuse = new Option<string?>("--fuse") { Description = "With --method fusion: the adapter folders to fuse, comma-separated (DIR1,DIR2,…)." };
        var lr = new Option<double?>("--lr") { Description = "Peak learning rate (default 1e-3; 2e-5 for full and top-k)." };
        var epochs = new Option<int>("--epochs") { Description = "Epochs.", DefaultValueFactory = _ => 3 };
        var batch = new Option<int>("--batch-size") { Description = "Examples per step.", DefaultValueFactory = _ => 32 };
        var accumulation = new Option<int>("--grad-accum") { Description = "Batches per optimizer step.", DefaultValueFactory = _ => 1 };
        var maxLength = new Option<int>("--max-length") { Description = "Tokens per example, special tokens included.", DefaultValueFactory = _ => 128 };
        var seed = new Option<int>("--seed") { Description = "Random seed.", DefaultValueFactory = _ => 42 };
        var warmup = new Option<double>("--warmup") { Description = "Warmup share of the steps.", DefaultValueFactory = _ => 0.1 };
        var weightDecay = new Option<double>("--weight-decay") { Description = "AdamW weight decay (not on biases and LayerNorms).", DefaultValueFactory = _ => 0.01 };
        var budget = new Option<string>("--time-budget") { Description = "Stop after this long (e.g. 10m, 90s, 1h; 'none'), keeping the best checkpoint.", DefaultValueFactory = _ => "10m" };
        var evalSteps = new Option<int?>("--eval-steps") { Description = "Also evaluate every N optimizer steps." };
        var patience = new Option<int?>("--patience") { Description = "Early stopping: evaluations without improvement." };
        var randomBatches = new Option<bool>("--random-batches") { Description = "Plain random batches instead of length-bucketed ones." };
        var output = new Option<string?>("--output", "-o") { Description = "Run folder (default runs/<name>-<time>)." };

        var command = new Command("train", "Train an adapter (or a baseline) on a task; the best checkpoint goes to <run>/adapter.")
        {
            model, vocab, device, precision, task, data, trainFile, devFile, textColumn, pairColumn, labelColumn, regression, skipBad, name,
            lr, epochs, batch, accumulation, maxLength, seed, warmup, weightDecay, budget, evalSteps, patience, randomBatches, output, fuse, stack,
        };
        method.AddTo(command);
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            var fuseDirs = parse.GetValue(fuse)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            bool fusion = string.Equals(parse.GetValue(method.Method), "fusion", StringComparison.OrdinalIgnoreCase);
            if (fusion && fuseDirs is null) throw new UsageException("--method fusion needs --fuse DIR1,DIR2,… (the adapter folders to fuse)");
            if (!fusion && fuseDirs is not null) throw new UsageException("--fuse goes with --method fusion");
            var config = fusion ? Methods.Head with { Method = "fusion" } : method.Build(parse);
            var taskName = parse.GetValue(task) ?? (parse.GetValue(trainFile) is null ? "sst2" : null);
            var request = new TrainRequest
            {
                Model = parse.GetValue(model)!,
                Vocab = parse.GetValue(vocab),
                Device = parse.GetValue(device)!,
                Precision = parse.GetValue(precision)!,
                Data = new DataRequest
                {
                    Task = taskName,
                    DataDir = parse.GetValue(data),
                    TrainFile = parse.GetValue(trainFile),
                    DevFile = parse.GetValue(devFile),
                    TextColumn = parse.GetValue(textColumn),
                    TextPairColumn = parse.GetValue(pairColumn),
                    LabelColumn = parse.GetValue(labelColumn),
                    Regression = parse.GetValue(regression),
                    SkipBadRows = parse.GetValue(skipBad),
                },
                Method = config,
                Fuse = fuseDirs,
                Stack = parse.GetValue(stack)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                AdapterName = parse.GetValue(name),
                MaxLength = parse.GetValue(maxLength),
                Options = new TrainOptions
                {
                    LearningRate = parse.GetValue(lr) ?? (config.ModifiesBase ? 2e-5 : fusion ? 5e-5 : 1e-3),
                    Epochs = parse.GetValue(epochs),
                    BatchSize = parse.GetValue(batch),
                    GradientAccumulation = parse.GetValue(accumulation),
                    Seed = parse.GetValue(seed),
                    WarmupRatio = parse.GetValue(warmup),
                    WeightDecay = parse.GetValue(weightDecay),
                    TimeBudget = ParseDuration(parse.GetValue(budget)!, "--time-budget"),
                    EvalEverySteps = parse.GetValue(evalSteps),
                    EarlyStoppingPatience = parse.GetValue(patience),
                    BucketByLength = !parse.GetValue(randomBatches),
                },
                Output = parse.GetValue(output)
                         ?? Path.Combine("runs", $"{parse.GetValue(name) ?? taskName ?? "custom"}-{config.Method}-{DateTime.Now:yyyyMMdd-HHmmss}"),
            };
            var torchDevice = Devices.Resolve(request.Device, Run.StderrLog);
            var summary = ProgressView.Run(observe => TrainingJob.Run(request, Run.StderrLog, observe, torchDevice));
            Report(summary);
            return 0;
        }));
        return command;
    }

    static void Report(TrainingSummary summary)
    {
        var result = summary.Result;
        Console.WriteLine($"stopped: {result.StopReason} after {result.Steps} steps in {result.Elapsed.TotalMinutes:F1} min ({result.ExamplesPerSecond:F0} examples/s)");
        if (result.Best is { } best)
            Console.WriteLine($"best: {string.Join(", ", best.Metrics.Select(m => $"{m.Key} {m.Value:F4}"))} (epoch {best.Epoch}, step {best.Step})");
        Console.WriteLine($"adapter: {summary.AdapterDir}");
        Console.WriteLine($"metrics: {Path.Combine(summary.RunDir, "metrics.jsonl")}");
    }

    /// <summary>"10m", "90s", "1h30m", "2h", "45" (minutes) or "none".</summary>
    public static TimeSpan? ParseDuration(string text, string option)
    {
        text = text.Trim().ToLowerInvariant();
        if (text is "none" or "0" or "off") return null;
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var minutes) && minutes > 0)
            return TimeSpan.FromMinutes(minutes);
        var total = TimeSpan.Zero;
        var number = "";
        foreach (char c in text)
        {
            if (char.IsDigit(c) || c == '.') number += c;
            else if (c is 'h' or 'm' or 's' && double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            {
                total += c switch { 'h' => TimeSpan.FromHours(value), 'm' => TimeSpan.FromMinutes(value), _ => TimeSpan.FromSeconds(value) };
                number = "";
            }
            else throw new UsageException($"{option}: '{text}' is not a duration like 10m, 90s or 1h30m");
        }
        if (number.Length > 0 || total <= TimeSpan.Zero)
            throw new UsageException($"{option}: '{text}' is not a duration like 10m, 90s or 1h30m");
        return total;
    }
}

/// <summary>
/// Training progress: a Spectre.Console progress display (loss, learning rate, examples/s, ETA, last
/// evaluation) on a terminal; a plain line every 15 seconds and one per evaluation otherwise.
/// </summary>
static class ProgressView
{
    public static T Run<T>(Func<Action<Trainer>, T> body)
    {
        var evaluations = new List<string>();
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            var lastLine = DateTime.MinValue;
            return body(trainer =>
            {
                trainer.Progress += p =>
                {
                    if (DateTime.UtcNow - lastLine < TimeSpan.FromSeconds(15)) return;
                    lastLine = DateTime.UtcNow;
                    Console.WriteLine($"step {p.Step}/{p.TotalSteps} {Describe(p)}");
                };
                trainer.Evaluated += e => Console.WriteLine(Describe(e));
            });
        }
        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new RemainingTimeColumn())
            .Start(context =>
            {
                var training = context.AddTask("training", maxValue: 1);
                var evaluation = context.AddTask("evaluation: none yet", maxValue: 1);
                evaluation.IsIndeterminate = true;
                result = body(trainer =>
                {
                    trainer.Progress += p =>
                    {
                        training.MaxValue = Math.Max(1, p.TotalSteps);
                        training.Value = p.Step;
                        training.Description = Markup.Escape($"epoch {p.Epoch} {Describe(p)}");
                    };
                    trainer.Evaluated += e =>
                    {
                        evaluations.Add(Describe(e));
                        evaluation.Description = Markup.Escape(Describe(e));
                    };
                });
                training.Value = training.MaxValue;
                evaluation.IsIndeterminate = false;
                evaluation.Value = evaluation.MaxValue;
            });
        foreach (var line in evaluations) Console.WriteLine(line);
        return result;
    }

    static string Describe(TrainProgress p) =>
        $"loss {p.Loss:F4} lr {p.LearningRate:0.00e0} {p.ExamplesPerSecond:F0} ex/s";

    static string Describe(Evaluation e) =>
        $"eval epoch {e.Epoch} step {e.Step}: {string.Join(", ", e.Metrics.Select(m => $"{m.Key} {m.Value:F4}"))} " +
        $"(train loss {e.Loss:F4}, {e.Elapsed.TotalMinutes:F1} min)";
}
