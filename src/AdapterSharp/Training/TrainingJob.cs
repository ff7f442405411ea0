using System.Text.Json;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Training;

/// <summary>Where training data comes from: a GLUE task folder, or train/dev files with named columns.</summary>
public sealed record DataRequest
{
    /// <summary>A GLUE task name; with <see cref="TrainFile"/> unset, its files come from <see cref="DataDir"/>.</summary>
    public string? Task { get; init; }
    public string? DataDir { get; init; }
    public string? TrainFile { get; init; }
    public string? DevFile { get; init; }
    public string? TextColumn { get; init; }
    public string? TextPairColumn { get; init; }
    public string? LabelColumn { get; init; }
    public bool Regression { get; init; }
    public bool SkipBadRows { get; init; }

    /// <summary>The head's kind for <see cref="TrainFile"/>/<see cref="DevFile"/> (null: classification, or regression with <see cref="Regression"/>).</summary>
    public string? Head { get; init; }

    /// <summary>Token classification: label every piece of a word, not only its first.</summary>
    public bool LabelAllPieces { get; init; }

    /// <summary>Which split of a task evaluates: dev, or test where the task's test set has labels (CoNLL-2003).</summary>
    public string EvalSplit { get; init; } = "dev";

    /// <summary>Extractive QA: pieces shared by consecutive windows of a long context.</summary>
    public int DocStride { get; init; } = 128;
}

/// <summary>Everything <c>adaptersharp train</c> needs, as one record.</summary>
public sealed record TrainRequest
{
    public string Model { get; init; } = BuiltInModels.MiniLmL6.Id;
    public string? Vocab { get; init; }
    public DataRequest Data { get; init; } = new() { Task = "sst2" };
    public MethodConfig Method { get; init; } = BottleneckConfig.Houlsby;
    public string? AdapterName { get; init; }

    /// <summary>
    /// Adapter folders to fuse: train an AdapterFusion over them (frozen) and a new head instead of an adapter;
    /// <see cref="Method"/> is then unused.
    /// </summary>
    public IReadOnlyList<string>? Fuse { get; init; }

    /// <summary>
    /// Adapter folders to train the new adapter on top of, bottom first: they load frozen, and the new adapter
    /// trains as the last of <c>Stack(…, new)</c>.
    /// </summary>
    public IReadOnlyList<string>? Stack { get; init; }
    public TrainOptions Options { get; init; } = new();
    public int MaxLength { get; init; } = 128;
    public string Output { get; init; } = "runs/run";
    public string Device { get; init; } = "cpu";

    /// <summary>Matrix-product precision: auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.</summary>
    public string Precision { get; init; } = "auto";

    /// <summary>Whether sublayer ends may run as the fused CUDA kernels (<c>--fused-kernels</c>).</summary>
    public FusedKernels Kernels { get; init; } = FusedKernels.Auto;

    /// <summary>How the time budget was chosen, for the log when training starts (null: nothing to say).</summary>
    public string? TimeBudgetNote { get; init; }

    /// <summary>
    /// Multi-task runs (<see cref="TrainingJob.RunMultiTask"/>): one adapter and head per task, named after it,
    /// trained together on one base; <see cref="Data"/> and <see cref="AdapterName"/> are then unused.
    /// </summary>
    public IReadOnlyList<DataRequest> Tasks { get; init; } = [];
}

/// <summary>
/// A labelled data set ready for training: examples (or tagged sentences, for token classification), task metadata and
/// what was skipped.
/// </summary>
public sealed record TaskData(
    string TaskName, IReadOnlyList<Example> Train, IReadOnlyList<Example> Dev, bool Regression, string[] Metrics, int Skipped, string? FirstSkip)
{
    public IReadOnlyList<TaggedSentence>? TaggedTrain { get; init; }
    public IReadOnlyList<QaExample>? QaTrain { get; init; }
    public IReadOnlyList<ChoiceExample>? ChoiceTrain { get; init; }
    public IReadOnlyList<ChoiceExample>? ChoiceDev { get; init; }
    public IReadOnlyList<QaExample>? QaDev { get; init; }
    public int DocStride { get; init; } = 128;
    public IReadOnlyList<TaggedSentence>? TaggedDev { get; init; }
    public bool LabelAllPieces { get; init; }
}

public sealed record TrainingSummary(string RunDir, string AdapterDir, TrainResult Result, long TrainableParameters, long TotalParameters);

/// <summary>A multi-task run: where each task's adapter went, and the run's result.</summary>
public sealed record MultiTaskSummary(string RunDir, IReadOnlyList<TaskSummary> Tasks, MultiTaskResult Result, long TotalParameters);

public sealed record TaskSummary(string Task, string AdapterDir, TaskResult Result, long TrainableParameters);

/// <summary>
/// The whole training run behind <c>adaptersharp train</c>: load the base and the data, add the adapter, train,
/// keep the best checkpoint in <c>&lt;run&gt;/adapter</c> and append each evaluation to <c>&lt;run&gt;/metrics.jsonl</c>.
/// </summary>
public static class TrainingJob
{
    public static TaskData LoadData(DataRequest request)
    {
        if (request.Head is not null) HeadKind.For(request.Head);
        if (request.Regression && request.Head is not null and not "regression")
            throw new ArgumentException($"--regression and --head {request.Head} exclude each other");
        if (request.Head == "token-classification" || (request.TrainFile is null && request.Task is { } name && TaggingTasks.Find(name) is not null))
            return LoadTagged(request);
        if (request.Head == "multiple-choice")
        {
            if (request.TrainFile is null || request.DevFile is null) throw new ArgumentException("--head multiple-choice needs --train and --dev (JSONL)");
            var train = ChoiceDataReader.Read(request.TrainFile, request.SkipBadRows);
            var dev = ChoiceDataReader.Read(request.DevFile, request.SkipBadRows);
            return new TaskData(request.Task ?? Path.GetFileNameWithoutExtension(request.TrainFile), [], [], false,
                HeadKind.For("multiple-choice").DefaultMetrics, train.Skipped + dev.Skipped, train.FirstSkipReason ?? dev.FirstSkipReason)
            {
                ChoiceTrain = train.Examples,
                ChoiceDev = dev.Examples,
            };
        }
        if (request.Head == "question-answering" || (request.TrainFile is null && request.Task is { } qaName && QaTasks.Find(qaName) is not null))
            return LoadQa(request);
        if (request.EvalSplit != "dev") throw new ArgumentException($"--eval-split {request.EvalSplit}: GLUE's test sets have no labels; only dev");
        if (request.TrainFile is not null || request.DevFile is not null)
        {
            if (request.TrainFile is null || request.DevFile is null)
                throw new ArgumentException("--train and --dev go together");
            if (request.TextColumn is null || request.LabelColumn is null)
                throw new ArgumentException("--train/--dev need --text-column and --label-column");
            var columns = new ColumnSpec(request.TextColumn, request.TextPairColumn, request.LabelColumn);
            var train = DataReader.Read(request.TrainFile, columns, request.SkipBadRows);
            var dev = DataReader.Read(request.DevFile, columns, request.SkipBadRows);
            bool regression = request.Regression || request.Head == "regression";
            string[] metrics = HeadKind.For(regression ? "regression" : "classification").DefaultMetrics;
            return new TaskData(request.Task ?? Path.GetFileNameWithoutExtension(request.TrainFile), train.Examples, dev.Examples,
                regression, metrics, train.Skipped + dev.Skipped, train.FirstSkipReason ?? dev.FirstSkipReason);
        }
        var task = GlueTasks.Get(request.Task ?? "sst2");
        var dir = request.DataDir ?? GlueTasks.DefaultDirectory(task);
        if (!Directory.Exists(dir)) throw new DataFormatException($"{dir}: data folder not found");
        var trainData = GlueTasks.Read(task, Path.Combine(dir, task.TrainFile), request.SkipBadRows);
        var devData = GlueTasks.Read(task, Path.Combine(dir, task.DevFile), request.SkipBadRows);
        return new TaskData(task.Name, trainData.Examples, devData.Examples, task.IsRegression, task.Metrics,
            trainData.Skipped + devData.Skipped, trainData.FirstSkipReason ?? devData.FirstSkipReason);
    }

    /// <summary>Extractive QA: SQuAD split by article as its README defines, or --train/--dev in the SQuAD format or JSONL.</summary>
    static TaskData LoadQa(DataRequest request)
    {
        if (request.DocStride < 0) throw new ArgumentException($"--doc-stride must not be negative, got {request.DocStride}");
        IReadOnlyList<QaExample> train, dev;
        int skipped;
        string? firstSkip;
        string taskName;
        if (request.TrainFile is not null || request.DevFile is not null)
        {
            if (request.TrainFile is null || request.DevFile is null) throw new ArgumentException("--train and --dev go together");
            var trainData = QaDataReader.Read(request.TrainFile, request.SkipBadRows);
            var devData = QaDataReader.Read(request.DevFile, request.SkipBadRows);
            (train, dev) = (trainData.Examples, devData.Examples);
            skipped = trainData.Skipped + devData.Skipped;
            firstSkip = trainData.FirstSkipReason ?? devData.FirstSkipReason;
            taskName = request.Task ?? Path.GetFileNameWithoutExtension(request.TrainFile);
        }
        else
        {
            var task = QaTasks.Find(request.Task!) ?? throw new ArgumentException($"--task {request.Task} is not a question-answering task");
            if (request.EvalSplit != "dev") throw new ArgumentException($"--eval-split {request.EvalSplit}: {task.Name} has a dev split only");
            var dir = request.DataDir ?? QaTasks.DefaultDirectory(task);
            var all = QaDataReader.Read(Path.Combine(dir, task.File), request.SkipBadRows);
            (train, dev) = task.Split(all.Examples);
            skipped = all.Skipped;
            firstSkip = all.FirstSkipReason;
            taskName = task.Name;
        }
        return new TaskData(taskName, [], [], false, HeadKind.For("question-answering").DefaultMetrics, skipped, firstSkip)
        {
            QaTrain = train,
            QaDev = dev,
            DocStride = request.DocStride,
        };
    }

    /// <summary>Token classification: a tagging task's files, or --train/--dev in the CoNLL format or JSONL.</summary>
    static TaskData LoadTagged(DataRequest request)
    {
        LoadedTaggedData train, dev;
        string taskName;
        string[] metrics = HeadKind.For("token-classification").DefaultMetrics;
        if (request.TrainFile is not null || request.DevFile is not null)
        {
            if (request.TrainFile is null || request.DevFile is null)
                throw new ArgumentException("--train and --dev go together");
            if (request.TextPairColumn is not null) throw new ArgumentException("--text-pair-column does not apply to token classification");
            train = TaggedDataReader.Read(request.TrainFile, request.SkipBadRows, request.TextColumn ?? "tokens", request.LabelColumn ?? "tags");
            dev = TaggedDataReader.Read(request.DevFile, request.SkipBadRows, request.TextColumn ?? "tokens", request.LabelColumn ?? "tags");
            taskName = request.Task ?? Path.GetFileNameWithoutExtension(request.TrainFile);
        }
        else
        {
            var task = TaggingTasks.Find(request.Task!) ?? throw new ArgumentException($"--task {request.Task} is not a token-classification task");
            var dir = request.DataDir ?? TaggingTasks.DefaultDirectory(task);
            if (!Directory.Exists(dir)) throw new DataFormatException($"{dir}: data folder not found");
            train = TaggedDataReader.Read(Path.Combine(dir, task.TrainFile), request.SkipBadRows);
            dev = TaggedDataReader.Read(Path.Combine(dir, task.EvalFile(request.EvalSplit)), request.SkipBadRows);
            taskName = task.Name;
            metrics = task.Metrics;
        }
        return new TaskData(taskName, [], [], false, metrics, train.Skipped + dev.Skipped, train.FirstSkipReason ?? dev.FirstSkipReason)
        {
            TaggedTrain = train.Sentences,
            TaggedDev = dev.Sentences,
            LabelAllPieces = request.LabelAllPieces,
        };
    }

    /// <summary>
    /// Builds the model for training: the base without its pooler (the head reads the [CLS] vector of the last
    /// layer) plus adapter <paramref name="name"/>.
    /// </summary>
    public static AdapterModel CreateModel(PretrainedEncoder encoder, string name, MethodConfig method, HeadConfig head, int seed) =>
        OnBase(encoder, model =>
        {
            manual_seed(seed);
            model.AddAdapter(name, method, head);
            model.Active = name;
        });

    /// <summary>The base model, set up by <paramref name="setUp"/>; disposed again if that throws.</summary>
    static AdapterModel OnBase(PretrainedEncoder encoder, Action<AdapterModel> setUp)
    {
        var model = AdapterModel.FromPretrained(encoder);
        try
        {
            setUp(model);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Builds the model for training a fusion: the base, the adapters in <paramref name="dirs"/> (each checked
    /// against the base, loaded under its saved name), and fusion <paramref name="name"/> over them with a new head.
    /// </summary>
    public static AdapterModel CreateFusionModel(PretrainedEncoder encoder, BaseModelIdentity identity, string name,
        IReadOnlyList<string> dirs, HeadConfig head, int seed, List<(string Name, string Dir)> loaded)
    {
        if (dirs.Count < 2) throw new ArgumentException($"--fuse: name at least two adapter folders, got {dirs.Count}");
        return OnBase(encoder, model =>
        {
            LoadAll(model, dirs, identity, loaded, "--fuse");
            manual_seed(seed);
            model.AddFusion(name, new FusionConfig { Adapters = loaded.Select(l => l.Name).ToArray() }, head);
            model.ActivateFusion(name);
        });
    }

    /// <summary>
    /// Builds the model for training adapter <paramref name="name"/> on top of the adapters in
    /// <paramref name="dirs"/> (loaded frozen under their saved names): <c>Stack(…, name)</c> is active.
    /// </summary>
    public static AdapterModel CreateStackedModel(PretrainedEncoder encoder, BaseModelIdentity identity, string name,
        IReadOnlyList<string> dirs, MethodConfig method, HeadConfig head, int seed, List<(string Name, string Dir)> loaded)
    {
        return OnBase(encoder, model =>
        {
            LoadAll(model, dirs, identity, loaded, "--stack");
            if (loaded.Any(l => l.Name == name))
                throw new ArgumentException($"--stack: the new adapter's name '{name}' is taken by a stacked one; pass --name");
            manual_seed(seed);
            model.AddAdapter(name, method, head);
            model.Composition = new Stack([.. loaded.Select(l => l.Name), name]);
        });
    }

    static void LoadAll(AdapterModel model, IReadOnlyList<string> dirs, BaseModelIdentity identity, List<(string Name, string Dir)> loaded, string option)
    {
        foreach (var dir in dirs)
        {
            var manifest = AdapterFiles.ReadManifest(dir);
            if (loaded.FirstOrDefault(l => l.Name == manifest.Name) is { Dir: { } other })
                throw new ArgumentException($"{option}: {other} and {dir} both hold an adapter named '{manifest.Name}'");
            if (manifest.StackedOn is { Length: > 0 })
                throw new ArgumentException($"{option}: {dir} is itself stacked on other adapters; name them all instead");
            AdapterFiles.Load(dir, model, identity);
            loaded.Add((manifest.Name, dir));
        }
    }

    public static TrainingSummary Run(TrainRequest request, Action<string>? log = null,
        Action<Trainer>? observe = null, Device? device = null)
    {
        Validate(request);
        if (request.Fuse is not null && request.Stack is not null) throw new ArgumentException("--fuse and --stack exclude each other");
        // Fused and stacked adapters are checked before any data or model is loaded.
        foreach (var dir in request.Fuse ?? request.Stack ?? []) AdapterFiles.ReadManifest(dir);
        var data = LoadData(request.Data);
        var encoder = Pretrained.Load(request.Model, request.Vocab, log);
        var task = Encode(data, request.Data.SkipBadRows, encoder, request, log);

        bool fusion = request.Fuse is not null;
        string name = request.AdapterName ?? SafeName(fusion ? $"{data.TaskName}-fusion" : data.TaskName);
        var target = device ?? CPU;
        var identity = BaseModelIdentity.Of(encoder);
        var lower = new List<(string Name, string Dir)>(); // the fused or stacked adapters
        using var model = fusion ? CreateFusionModel(encoder, identity, name, request.Fuse!, task.Head, request.Options.Seed, lower)
            : request.Stack is { } stack ? CreateStackedModel(encoder, identity, name, stack, request.Method, task.Head, request.Options.Seed, lower)
            : CreateModel(encoder, name, request.Method, task.Head, request.Options.Seed);
        model.to(target);
        var trained = model.TrainOnly(name);
        model.Bert.Kernels = request.Kernels;
        model.UseMatmulType(Devices.MatmulType(request.Precision, target));
        long trainable = trained.Sum(p => p.Parameter.numel());
        long total = model.parameters().Sum(p => p.numel());
        if (lower.Count > 0)
            log?.Invoke($"{(fusion ? "fusion" : "stack")} '{name}' over {string.Join(", ", lower.Select(f => $"{f.Name} ({f.Dir})"))}");
        log?.Invoke($"{(fusion ? "fusion" : request.Method.Method)}: trainable params: {trainable:N0} || all params: {total:N0} || trainable%: {100.0 * trainable / total:F4}");

        var runDir = Path.GetFullPath(request.Output);
        Directory.CreateDirectory(runDir);
        var adapterDir = Path.Combine(runDir, "adapter");
        var metricsPath = Path.Combine(runDir, "metrics.jsonl");

        if (request.TimeBudgetNote is { } budgetNote) log?.Invoke(budgetNote);
        var trainer = new Trainer(model, name, request.Options, target);
        trainer.Evaluated += evaluation => AppendMetrics(metricsPath, evaluation, withTask: false);
        observe?.Invoke(trainer);
        // Described once: the fused or stacked adapters are frozen, so their hashes cannot change during training.
        var references = lower.Select(f => AdapterReference.Describe(f.Name, f.Dir, adapterDir)).ToArray();
        var result = trainer.Train(task.Train, task.Dev, data.Metrics, evaluation =>
        {
            if (fusion)
            {
                FusionFiles.Save(adapterDir, new FusionManifest
                {
                    Name = name,
                    Adapters = references,
                    Head = task.Head,
                    BaseModel = identity,
                    Task = data.TaskName,
                    MaxLength = request.MaxLength,
                    Metrics = evaluation.Metrics.ToDictionary(m => m.Key, m => m.Value),
                    TrainableParameters = trainable,
                }, model.AdapterTensors(name));
                return;
            }
            SaveAdapter(adapterDir, model, name, request, task.Head, identity, data.TaskName, evaluation, trainable,
                stackedOn: request.Stack is null ? null : references);
        });
        return new TrainingSummary(runDir, adapterDir, result, trainable, total);
    }

    /// <summary>
    /// The multi-task run behind <c>adaptersharp train --tasks</c>: one adapter and head per task of
    /// <see cref="TrainRequest.Tasks"/> on one frozen base, each named after its task; each task's best checkpoint
    /// in <c>&lt;run&gt;/&lt;task&gt;/adapter</c> (a complete adapter folder on its own), every evaluation in
    /// <c>&lt;run&gt;/metrics.jsonl</c> with a <c>task</c> field.
    /// </summary>
    public static MultiTaskSummary RunMultiTask(TrainRequest request, Action<string>? log = null,
        Action<Trainer>? observe = null, Device? device = null)
    {
        Validate(request);
        if (request.Tasks.Count == 0) throw new ArgumentException("--tasks: no tasks given");
        if (request.Method.ModifiesBase && request.Tasks.Count > 1)
            throw new ArgumentException(
                $"--method {request.Method.Method} changes the base weights, which the tasks' adapters share; " +
                "multi-task training needs a method that leaves the base frozen (houlsby, pfeiffer, parallel, ...)");
        var data = request.Tasks.Select(LoadData).ToList();
        var names = data.Select(d => SafeName(d.TaskName)).ToList();
        if (names.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"--tasks: '{twice.Key}' is listed twice");

        var encoder = Pretrained.Load(request.Model, request.Vocab, log);
        var encoded = data.Select((d, i) => Encode(d, request.Tasks[i].SkipBadRows, encoder, request, log)).ToList();
        var target = device ?? CPU;
        using var model = AdapterModel.FromPretrained(encoder);
        manual_seed(request.Options.Seed);
        for (int i = 0; i < names.Count; i++) model.AddAdapter(names[i], request.Method, encoded[i].Head);
        model.to(target);
        var trained = model.TrainEach(names);
        model.Bert.Kernels = request.Kernels;
        model.UseMatmulType(Devices.MatmulType(request.Precision, target));
        long total = model.parameters().Sum(p => p.numel());
        var trainable = names.ToDictionary(n => n, n => trained[n].Sum(p => p.Parameter.numel()));
        var probabilities = request.Options.Sampling.Probabilities(encoded.Select(e => e.Train.Count).ToList());
        log?.Invoke($"{request.Method.Method}: trainable params per task: " +
                    string.Join(", ", names.Select(n => $"{n} {trainable[n]:N0}")) + $" || all params: {total:N0}");
        log?.Invoke($"sampling {request.Options.Sampling}: " +
                    string.Join(", ", names.Select((n, i) => $"{n} {probabilities[i]:P1}")));

        var runDir = Path.GetFullPath(request.Output);
        Directory.CreateDirectory(runDir);
        var metricsPath = Path.Combine(runDir, "metrics.jsonl");
        var identity = BaseModelIdentity.Of(encoder);
        var adapterDirs = names.ToDictionary(n => n, n => Path.Combine(runDir, n, "adapter"));

        if (request.TimeBudgetNote is { } budgetNote) log?.Invoke(budgetNote);
        var trainer = new Trainer(model, request.Options, target);
        trainer.Evaluated += evaluation => AppendMetrics(metricsPath, evaluation, withTask: true);
        observe?.Invoke(trainer);
        var tasks = names.Select((n, i) => new TrainingTask(n, encoded[i].Train, encoded[i].Dev, data[i].Metrics, evaluation =>
            SaveAdapter(adapterDirs[n], model, n, request, encoded[i].Head, identity, data[i].TaskName, evaluation, trainable[n]))).ToList();
        var result = trainer.TrainTasks(tasks);
        return new MultiTaskSummary(runDir,
            result.Tasks.Select(t => new TaskSummary(t.Adapter, adapterDirs[t.Adapter], t, trainable[t.Adapter])).ToList(), result, total);
    }

    static void Validate(TrainRequest request)
    {
        request.Options.Validate();
        if (request.MaxLength < 8) throw new ArgumentException($"--max-length must be at least 8, got {request.MaxLength}");
    }

    sealed record EncodedTask(HeadConfig Head, EncodedDataset Train, EncodedDataset Dev);

    static EncodedTask Encode(TaskData data, bool skipBad, PretrainedEncoder encoder, TrainRequest request, Action<string>? log)
    {
        if (data.Skipped > 0)
            log?.Invoke($"{data.TaskName}: skipped {data.Skipped} bad rows (first: {data.FirstSkip})");
        if (request.MaxLength > encoder.Config.MaxPositionEmbeddings)
            throw new ArgumentException($"--max-length {request.MaxLength} exceeds the model's {encoder.Config.MaxPositionEmbeddings} positions");
        HeadConfig head;
        EncodedDataset train, dev;
        int skippedTrain, skippedDev;
        if (data.ChoiceTrain is { } choiceTrain)
        {
            if (choiceTrain.Count == 0) throw new DataFormatException($"{data.TaskName}: no training questions");
            int choices = choiceTrain[0].Choices.Length;
            if (data.ChoiceDev!.FirstOrDefault(e => e.Choices.Length != choices) is { } other)
                throw new DataFormatException($"{other.Source}:{other.Line}: {other.Choices.Length} choices where the training questions have {choices}");
            head = HeadConfig.MultipleChoice(choices);
            train = EncodedDataset.EncodeChoices(choiceTrain, encoder.Tokenizer, request.MaxLength);
            dev = EncodedDataset.EncodeChoices(data.ChoiceDev!, encoder.Tokenizer, request.MaxLength);
            log?.Invoke($"{data.TaskName}: {choiceTrain.Count} training and {data.ChoiceDev!.Count} evaluation questions of {choices} choices");
            return new EncodedTask(head, train, dev);
        }
        if (data.QaTrain is { } qaTrain)
        {
            head = HeadConfig.QuestionAnswering();
            train = EncodedDataset.EncodeQa(qaTrain, encoder.Tokenizer, request.MaxLength, data.DocStride);
            dev = EncodedDataset.EncodeQa(data.QaDev!, encoder.Tokenizer, request.MaxLength, data.DocStride);
            (skippedTrain, skippedDev) = (0, 0);
            log?.Invoke($"{data.TaskName}: {qaTrain.Count} training questions in {train.Count} windows, {data.QaDev!.Count} evaluation questions in {dev.Count} windows " +
                        $"(--max-length {request.MaxLength}, --doc-stride {data.DocStride})");
            return new EncodedTask(head, train, dev);
        }
        if (data.TaggedTrain is { } taggedTrain)
        {
            head = EncodedDataset.TokenHeadFor(taggedTrain);
            train = EncodedDataset.EncodeTagged(taggedTrain, encoder.Tokenizer, head, request.MaxLength, data.LabelAllPieces, skipBad, out skippedTrain);
            dev = EncodedDataset.EncodeTagged(data.TaggedDev!, encoder.Tokenizer, head, request.MaxLength, data.LabelAllPieces, skipBad, out skippedDev);
            int cut = CutWords(dev);
            if (cut > 0) log?.Invoke($"{data.TaskName}: {cut} evaluation words lie beyond --max-length {request.MaxLength}; they count as predicted '{TokenClassificationHead.Outside}'");
        }
        else
        {
            head = EncodedDataset.HeadFor(data.Train, data.Regression);
            train = EncodedDataset.Encode(data.Train, encoder.Tokenizer, head, request.MaxLength, skipBad, out skippedTrain);
            dev = EncodedDataset.Encode(data.Dev, encoder.Tokenizer, head, request.MaxLength, skipBad, out skippedDev);
        }
        if (skippedTrain + skippedDev > 0) log?.Invoke($"{data.TaskName}: skipped {skippedTrain + skippedDev} rows with unusable labels");
        log?.Invoke($"{data.TaskName}: {train.Count} training and {dev.Count} evaluation {(data.TaggedTrain is null ? "examples" : "sentences")}, " +
                    (head.IsRegression ? "regression" : $"{(data.TaggedTrain is null ? "labels" : "tags")} {string.Join(", ", head.Labels)}"));
        return new EncodedTask(head, train, dev);
    }

    /// <summary>Words of a tagged data set that got no piece (cut by the maximum length).</summary>
    static int CutWords(EncodedDataset data)
    {
        int cut = 0;
        for (int row = 0; row < data.Count; row++)
            cut += data.Tags![row].Length - (data.WordIds![row].Where(w => w >= 0).DefaultIfEmpty(-1).Max() + 1);
        return cut;
    }

    static void SaveAdapter(string dir, AdapterModel model, string name, TrainRequest request, HeadConfig head,
        BaseModelIdentity identity, string taskName, Evaluation evaluation, long trainable, AdapterReference[]? stackedOn = null) =>
        AdapterFiles.Save(dir, new AdapterManifest
        {
            Name = name,
            Config = request.Method,
            Head = head,
            BaseModel = identity,
            Task = taskName,
            MaxLength = request.MaxLength,
            Metrics = evaluation.Metrics.ToDictionary(m => m.Key, m => m.Value),
            TrainableParameters = trainable,
            StackedOn = stackedOn,
        }, model.AdapterTensors(name));

    static void AppendMetrics(string path, Evaluation evaluation, bool withTask)
    {
        var record = new Dictionary<string, object>();
        if (withTask) record["task"] = evaluation.Adapter;
        record["epoch"] = evaluation.Epoch;
        record["step"] = evaluation.Step;
        record["loss"] = double.IsFinite(evaluation.Loss) ? Math.Round(evaluation.Loss, 6) : null!;
        record["elapsed_s"] = Math.Round(evaluation.Elapsed.TotalSeconds, 1);
        foreach (var (metric, value) in evaluation.Metrics) record[metric] = double.IsFinite(value) ? Math.Round(value, 6) : null!;
        try
        {
            File.AppendAllText(path, JsonSerializer.Serialize(record) + "\n");
        }
        catch (Exception e) when (AtomicFile.TooLarge(e))
        {
            throw new IOException($"{path}: {AtomicFile.TooLargeMessage}", e);
        }
    }

    static string SafeName(string name)
    {
        var cleaned = new string(name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '-').ToArray());
        return cleaned.Length == 0 ? "adapter" : cleaned[..Math.Min(cleaned.Length, 64)];
    }
}
