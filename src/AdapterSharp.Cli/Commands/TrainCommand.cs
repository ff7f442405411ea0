using System.CommandLine;
using AdapterSharp.Adapters.Methods;
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
        var task = new Option<string?>("--task")
        {
            Description = $"GLUE task ({GlueTasks.Names}), token-classification task ({string.Join("|", TaggingTasks.All.Select(t => t.Name))}) or question-answering task ({string.Join("|", QaTasks.All.Select(t => t.Name))}); default sst2 unless --train is given.",
        };
        var tasks = new Option<string?>("--tasks")
        {
            Description = "Multi-task: GLUE tasks, comma-separated (e.g. mrpc,stsb); one adapter and head each, trained in one run, saved to <run>/<task>/adapter.",
        };
        var sampling = new Option<string?>("--sampling")
        {
            Description = "With --tasks, how each step's task is drawn: proportional (to training-set size, the default), uniform, or temperature:T (p ∝ size^(1/T)).",
        };
        var data = new Option<string?>("--data")
        {
            Description = "The task's folder (default $ADAPTERSHARP_DATA/glue/<TASK>, else ../shared/datasets/glue/<TASK>); with --tasks, the GLUE folder holding the tasks' folders.",
        };
        var trainFile = new Option<string?>("--train") { Description = "Training file (.tsv, .csv or .jsonl) with named columns." };
        var devFile = new Option<string?>("--dev") { Description = "Evaluation file, same format as --train." };
        var textColumn = new Option<string?>("--text-column") { Description = "Column holding the text." };
        var pairColumn = new Option<string?>("--text-pair-column") { Description = "Column holding the second text of a pair." };
        var labelColumn = new Option<string?>("--label-column") { Description = "Column holding the label (or score with --regression)." };
        var regression = new Option<bool>("--regression") { Description = "The label is a number: train a regression head (MSE)." };
        var head = new Option<string?>("--head")
        {
            Description = "Head for --train/--dev: classification (default), regression, token-classification (CoNLL files: word first, tag last; or JSONL {\"tokens\", \"tags\"}) question-answering (SQuAD JSON, or JSONL {\"question\", \"context\", \"answers\"}) or multiple-choice (JSONL {\"context\", \"question\"?, \"choices\", \"label\"}).",
        };
        var docStride = new Option<int>("--doc-stride")
        {
            Description = "Question answering: pieces shared by consecutive windows of a context longer than --max-length allows.", DefaultValueFactory = _ => 128,
        };
        var labelAllPieces = new Option<bool>("--label-all-pieces") { Description = "Token classification: label every piece of a word, not only the first." };
        var evalSplit = new Option<string>("--eval-split")
        {
            Description = "Which split evaluates: dev, or test where the task's test set has labels (conll2003).", DefaultValueFactory = _ => "dev",
        };
        evalSplit.AcceptOnlyFromAmong("dev", "test");
        var skipBad = new Option<bool>("--skip-bad-rows") { Description = "Skip unusable rows (and report how many) instead of stopping." };
        var name = new Option<string?>("--name") { Description = "Adapter name (default: the task)." };
        var method = new MethodOptions();
        var stack = new Option<string?>("--stack") { Description = "Train the new adapter on top of these frozen adapter folders (comma-separated, bottom first): Stack(DIR…, new)." };
        var fuse = new Option<string?>("--fuse") { Description = "With --method fusion: the adapter folders to fuse, comma-separated (DIR1,DIR2,…)." };
        var lr = new Option<double?>("--lr") { Description = "Peak learning rate (default 1e-3; 2e-5 for full and top-k)." };
        var baseLr = new Option<double?>("--base-lr")
        {
            Description = "Peak learning rate of the base layers a method fine-tunes beside its own modules (--train-top-k; default 2e-5 there, else --lr).",
        };
        var epochs = new Option<int>("--epochs") { Description = "Epochs.", DefaultValueFactory = _ => 3 };
        var batch = new Option<int>("--batch-size") { Description = "Examples per step.", DefaultValueFactory = _ => 32 };
        var accumulation = new Option<int>("--grad-accum") { Description = "Batches per optimizer step.", DefaultValueFactory = _ => 1 };
        var maxLength = new Option<int>("--max-length")
        {
            Description = "Tokens per example, special tokens included (question answering: per window, default 384).", DefaultValueFactory = _ => 128,
        };
        var seed = new Option<int>("--seed") { Description = "Random seed.", DefaultValueFactory = _ => 42 };
        var warmup = new Option<double>("--warmup") { Description = "Warmup share of the steps.", DefaultValueFactory = _ => 0.1 };
        var weightDecay = new Option<double>("--weight-decay") { Description = "AdamW weight decay (not on biases and LayerNorms).", DefaultValueFactory = _ => 0.01 };
        var budget = new Option<string?>("--time-budget")
        {
            Description = "Stop after this long (e.g. 10m, 90s, 1h; 'none'), keeping the best checkpoint. Default: 10m, or none when --epochs is given.",
        };
        var evalSteps = new Option<int?>("--eval-steps") { Description = "Also evaluate every N optimizer steps." };
        var patience = new Option<int?>("--patience") { Description = "Early stopping: evaluations without improvement." };
        var randomBatches = new Option<bool>("--random-batches") { Description = "Plain random batches instead of length-bucketed ones." };
        var output = new Option<string?>("--output", "-o") { Description = "Run folder (default runs/<name>-<time>)." };
        var graphs = CommonOptions.CudaGraphs();
        var fused = CommonOptions.FusedKernels();

        var command = new Command("train", "Train an adapter (or a baseline) on a task; the best checkpoint goes to <run>/adapter (with --tasks, one adapter per task, to <run>/<task>/adapter).")
        {
            model, vocab, device, precision, task, tasks, sampling, data, trainFile, devFile, textColumn, pairColumn, labelColumn, regression, head,
            labelAllPieces, evalSplit, docStride, skipBad, name,
            lr, baseLr, epochs, batch, accumulation, maxLength, seed, warmup, weightDecay, budget, evalSteps, patience, randomBatches, output, graphs, fused, fuse, stack,
        };
        method.AddTo(command);
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            var fuseDirs = parse.GetValue(fuse)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            bool fusion = string.Equals(parse.GetValue(method.Method), "fusion", StringComparison.OrdinalIgnoreCase);
            if (fusion && fuseDirs is null) throw new UsageException("--method fusion needs --fuse DIR1,DIR2,… (the adapter folders to fuse)");
            if (!fusion && fuseDirs is not null) throw new UsageException("--fuse goes with --method fusion");
            var config = fusion ? BaselineConfig.Head with { Method = "fusion" } : method.Build(parse);
            if (parse.GetValue(baseLr) is not null && !config.ModifiesBase)
                throw new UsageException($"--base-lr applies where base layers train (--train-top-k, full, top-k), not to --method {config.Method} alone");
            var taskList = parse.GetValue(tasks) is { } list
                ? ParseTasks(list, parse, task, name, [trainFile, devFile, textColumn, pairColumn, labelColumn, regression, head, labelAllPieces, evalSplit, docStride])
                : null;
            if (taskList is null && parse.GetValue(sampling) is not null) throw new UsageException("--sampling applies to --tasks only");
            if (taskList is not null && (fusion || parse.GetValue(stack) is not null)) throw new UsageException("--tasks trains plain adapters: no --method fusion or --stack");
            var torchDevice = Devices.Resolve(parse.GetValue(device)!, Run.StderrLog);
            bool useGraphs = CommonOptions.ResolveCudaGraphs(parse.GetValue(graphs)!, torchDevice);
            var kernels = CommonOptions.ResolveFusedKernels(parse.GetValue(fused)!, torchDevice);
            if (useGraphs && parse.GetValue(graphs) == "on" && parse.GetValue(accumulation) > 1)
                throw new UsageException("--cuda-graphs on: steps with --grad-accum above 1 run eagerly; use --cuda-graphs auto or off");
            var taskName = parse.GetValue(task) ?? (parse.GetValue(trainFile) is null ? "sst2" : null);
            var budgetChoice = TimeBudget(parse, budget, epochs);
            var request = new TrainRequest
            {
                Model = parse.GetValue(model)!,
                Vocab = parse.GetValue(vocab),
                Device = parse.GetValue(device)!,
                Precision = parse.GetValue(precision)!,
                Kernels = kernels,
                TimeBudgetNote = budgetChoice.Note,
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
                    Head = parse.GetValue(head),
                    LabelAllPieces = parse.GetValue(labelAllPieces),
                    EvalSplit = parse.GetValue(evalSplit)!,
                    DocStride = parse.GetValue(docStride),
                },
                Method = config,
                Fuse = fuseDirs,
                Stack = parse.GetValue(stack)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                AdapterName = parse.GetValue(name),
                // Question answering reads a question and a context window: 384 positions unless told otherwise, as HF's run_qa.
                MaxLength = parse.GetResult(maxLength) is { Implicit: false } || !(parse.GetValue(head) == "question-answering"
                    || (parse.GetValue(trainFile) is null && taskName is not null && QaTasks.Find(taskName) is not null)
                    || taskList?.Any(t => QaTasks.Find(t.Name) is not null) == true)
                    ? parse.GetValue(maxLength) : 384,
                Options = new TrainOptions
                {
                    // full and top-k fine-tune the base alone; anything with modules or LayerNorm copies of its own beside base
                    // layers (a hybrid) trains those at the adapter rate and the base layers at the base rate.
                    LearningRate = parse.GetValue(lr) ?? (BaseOnly(config) ? 2e-5 : fusion ? 5e-5 : 1e-3),
                    BaseLearningRate = parse.GetValue(baseLr) ?? (config.ModifiesBase && !BaseOnly(config) ? 2e-5 : null),
                    Epochs = parse.GetValue(epochs),
                    BatchSize = parse.GetValue(batch),
                    GradientAccumulation = parse.GetValue(accumulation),
                    Seed = parse.GetValue(seed),
                    WarmupRatio = parse.GetValue(warmup),
                    WeightDecay = parse.GetValue(weightDecay),
                    TimeBudget = budgetChoice.Budget,
                    EvalEverySteps = parse.GetValue(evalSteps),
                    EarlyStoppingPatience = parse.GetValue(patience),
                    BucketByLength = !parse.GetValue(randomBatches),
                    CudaGraphs = useGraphs,
                    Sampling = parse.GetValue(sampling) is { } s ? TaskSampling.Parse(s) : TaskSampling.Proportional,
                },
                Output = parse.GetValue(output)
                         ?? Path.Combine("runs", $"{(taskList is null ? parse.GetValue(name) ?? taskName ?? "custom" : string.Join("+", taskList.Select(t => t.Name)))}" +
                                                 $"-{config.Method}-{DateTime.Now:yyyyMMdd-HHmmss}"),
            };
            if (taskList is not null)
            {
                var root = parse.GetValue(data);
                request = request with
                {
                    Tasks = taskList.Select(t => new DataRequest
                    {
                        Task = t.Name,
                        DataDir = root is null ? null : Path.Combine(root, t.Folder),
                        SkipBadRows = parse.GetValue(skipBad),
                    }).ToList(),
                };
            }
            if (taskList is not null)
            {
                var multi = ProgressView.Run(observe => TrainingJob.RunMultiTask(request, Run.StderrLog, observe, torchDevice), multiTask: true);
                Report(multi);
                return 0;
            }
            var summary = ProgressView.Run(observe => TrainingJob.Run(request, Run.StderrLog, observe, torchDevice));
            Report(summary);
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// The tasks of <c>--tasks a,b,c</c> (GLUE, CoNLL-2003, SQuAD: heads of any kind train together), as (name, folder
    /// under <c>--data</c>), refusing what a multi-task run cannot take: options of single-task runs (--task, --name,
    /// your own files), unknown, empty or repeated names.
    /// </summary>
    static List<(string Name, string Folder)> ParseTasks(string list, ParseResult parse, Option task, Option name, Option[] fileOptions)
    {
        if (parse.GetResult(task) is { Implicit: false }) throw new UsageException("--tasks and --task cannot be combined: list every task in --tasks");
        if (parse.GetResult(name) is { Implicit: false }) throw new UsageException("--name names a single-task run's adapter; with --tasks each adapter is named after its task");
        if (fileOptions.FirstOrDefault(o => parse.GetResult(o) is { Implicit: false }) is { } file)
            throw new UsageException($"--tasks takes named tasks only, not {file.Name}; train on your own files one task per run");
        var result = new List<(string Name, string Folder)>();
        foreach (var part in list.Split(','))
        {
            var trimmed = part.Trim();
            if (trimmed.Length == 0) throw new UsageException($"--tasks: empty task name in '{list}'");
            var glue = GlueTasks.All.FirstOrDefault(t => t.Name.Equals(trimmed, StringComparison.OrdinalIgnoreCase)
                                                         || t.Folder.Equals(trimmed, StringComparison.OrdinalIgnoreCase));
            (string Name, string Folder) found = glue is not null ? (glue.Name, glue.Folder)
                : TaggingTasks.Find(trimmed) is { } tagging ? (tagging.Name, tagging.Folder)
                : QaTasks.Find(trimmed) is { } qa ? (qa.Name, qa.Folder)
                : throw new UsageException($"--tasks: unknown task '{trimmed}' (expected {GlueTasks.Names}|{string.Join("|", TaggingTasks.All.Select(t => t.Name))}|{string.Join("|", QaTasks.All.Select(t => t.Name))})");
            if (result.Contains(found)) throw new UsageException($"--tasks: '{found.Name}' is listed twice");
            result.Add(found);
        }
        return result;
    }

    static void Report(MultiTaskSummary summary)
    {
        var result = summary.Result;
        Console.WriteLine($"stopped: {result.StopReason} after {result.Steps} steps in {result.Elapsed.TotalMinutes:F1} min ({result.ExamplesPerSecond:F0} examples/s)");
        foreach (var task in summary.Tasks)
        {
            var best = task.Result.Best is { } b
                ? $"best {Figures(b)} (epoch {b.Epoch}, step {b.Step})"
                : "no evaluation";
            Console.WriteLine($"{task.Task}: {task.Result.Steps} steps, {best}; adapter: {task.AdapterDir}");
        }
        Console.WriteLine($"metrics: {Path.Combine(summary.RunDir, "metrics.jsonl")}");
    }

    static void Report(TrainingSummary summary)
    {
        var result = summary.Result;
        Console.WriteLine($"stopped: {result.StopReason} after {result.Steps} steps in {result.Elapsed.TotalMinutes:F1} min ({result.ExamplesPerSecond:F0} examples/s)");
        if (result.Best is { } best)
            Console.WriteLine($"best: {Figures(best)} (epoch {best.Epoch}, step {best.Step})");
        Console.WriteLine($"adapter: {summary.AdapterDir}");
        Console.WriteLine($"metrics: {Path.Combine(summary.RunDir, "metrics.jsonl")}");
    }

    /// <summary>"10m", "90s", "1h30m", "2h", "45" (minutes) or "none".</summary>
    /// <summary>
    /// The run's time budget: the one given; else none where the user asked for a number of epochs (so that it is not
    /// cut silently); else the default 10 minutes; with a line for the log saying which, when it was not given.
    /// </summary>
    static (TimeSpan? Budget, string? Note) TimeBudget(ParseResult parse, Option<string?> budget, Option<int> epochs)
    {
        if (parse.GetValue(budget) is { } given) return (ParseDuration(given, "--time-budget"), null);
        if (parse.GetResult(epochs) is { Implicit: false })
            return (null, $"time budget: none (--epochs {parse.GetValue(epochs)} given; --time-budget to set one)");
        return (TimeSpan.FromMinutes(10), "time budget: 10 min, the default (--time-budget or --epochs to change it)");
    }

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

    /// <summary>An evaluation's metrics and whole-adapter figures; per-site figures (<c>learned_size/…</c>) stay in metrics.jsonl.</summary>
    internal static string Figures(Evaluation e) =>
        string.Join(", ", e.Metrics.Where(m => !m.Key.Contains('/', StringComparison.Ordinal)).Select(m => $"{m.Key} {m.Value:F4}"));

    /// <summary>Whether the method trains base layers and nothing of its own besides the head (full, top-k).</summary>
    static bool BaseOnly(MethodConfig config) => config.ModifiesBase && config is BaselineConfig { TrainLayerNorms: false };
}

/// <summary>
/// Training progress: a Spectre.Console progress display (loss, learning rate, examples/s, ETA, last
/// evaluation) on a terminal; a plain line every 15 seconds and one per evaluation otherwise.
/// </summary>
static class ProgressView
{
    /// <param name="multiTask">Show each task's loss, and which task each evaluation is of.</param>
    public static T Run<T>(Func<Action<Trainer>, T> body, bool multiTask = false)
    {
        string Describe(TrainProgress p) => multiTask ? DescribeTasks(p) : DescribeOne(p);
        string DescribeEval(Evaluation e) => multiTask ? $"{e.Adapter}: {DescribeOne(e)}" : DescribeOne(e);
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
                trainer.Evaluated += e => Console.WriteLine(DescribeEval(e));
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
                        evaluations.Add(DescribeEval(e));
                        evaluation.Description = Markup.Escape(DescribeEval(e));
                    };
                });
                training.Value = training.MaxValue;
                evaluation.IsIndeterminate = false;
                evaluation.Value = evaluation.MaxValue;
            });
        foreach (var line in evaluations) Console.WriteLine(line);
        return result;
    }

    static string DescribeOne(TrainProgress p) =>
        $"loss {p.Loss:F4} lr {p.LearningRate:0.00e0} {p.ExamplesPerSecond:F0} ex/s";

    static string DescribeTasks(TrainProgress p) =>
        $"loss {string.Join(" ", (p.TaskLosses ?? new Dictionary<string, double>()).Select(t => $"{t.Key} {(double.IsNaN(t.Value) ? "-" : t.Value.ToString("F4"))}"))} " +
        $"lr {p.LearningRate:0.00e0} {p.ExamplesPerSecond:F0} ex/s";

    static string DescribeOne(Evaluation e) =>
        $"eval epoch {e.Epoch} step {e.Step}: {TrainCommand.Figures(e)} " +
        $"(train loss {e.Loss:F4}, {e.Elapsed.TotalMinutes:F1} min)";
}
