namespace AdapterSharp.Data;

/// <summary>
/// A GLUE task as distributed in glue_data: its folder, files, columns (by header name, or by index where
/// the file has no header), whether it is regression, and its metrics (the first is the one to maximise).
/// </summary>
public sealed record GlueTask(
    string Name,
    string Folder,
    string TrainFile,
    string DevFile,
    bool HasHeader,
    string TextColumn,
    string? PairColumn,
    string LabelColumn,
    bool IsRegression,
    string[] Metrics)
{
    public string PrimaryMetric => Metrics[0];
}

public static class GlueTasks
{
    public static readonly IReadOnlyList<GlueTask> All =
    [
        new("sst2", "SST-2", "train.tsv", "dev.tsv", true, "sentence", null, "label", false, ["accuracy"]),
        // CoLA has no header: source, label, original label, sentence.
        new("cola", "CoLA", "train.tsv", "dev.tsv", false, "3", null, "1", false, ["mcc", "accuracy"]),
        new("mrpc", "MRPC", "train.tsv", "dev.tsv", true, "#1 String", "#2 String", "Quality", false, ["f1", "accuracy"]),
        new("stsb", "STS-B", "train.tsv", "dev.tsv", true, "sentence1", "sentence2", "score", true, ["pearson", "spearman"]),
        new("qnli", "QNLI", "train.tsv", "dev.tsv", true, "question", "sentence", "label", false, ["accuracy"]),
        new("rte", "RTE", "train.tsv", "dev.tsv", true, "sentence1", "sentence2", "label", false, ["accuracy"]),
        new("wnli", "WNLI", "train.tsv", "dev.tsv", true, "sentence1", "sentence2", "label", false, ["accuracy"]),
        new("mnli", "MNLI", "train.tsv", "dev_matched.tsv", true, "sentence1", "sentence2", "gold_label", false, ["accuracy"]),
        new("qqp", "QQP", "train.tsv", "dev.tsv", true, "question1", "question2", "is_duplicate", false, ["f1", "accuracy"]),
    ];

    public static string Names => string.Join("|", All.Select(t => t.Name));

    public static GlueTask Get(string name) =>
        All.FirstOrDefault(t => t.Name.Equals(name, StringComparison.OrdinalIgnoreCase)
                                || t.Folder.Equals(name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"--task: unknown task '{name}' (expected {Names}|{string.Join("|", TaggingTasks.All.Select(t => t.Name))}|{string.Join("|", QaTasks.All.Select(t => t.Name))})");

    /// <summary>
    /// The task's folder: <c>$ADAPTERSHARP_DATA/glue/&lt;Folder&gt;</c> when that variable is set, else
    /// <c>../shared/datasets/glue/&lt;Folder&gt;</c> from the current directory or above the application.
    /// </summary>
    public static string DefaultDirectory(GlueTask task) =>
        DataFolders.Find(Path.Combine("glue", task.Folder), $"GLUE data for {task.Name}");

    public static LoadedData Read(GlueTask task, string path, bool skipBadRows)
    {
        if (!task.HasHeader)
            return DataReader.ReadTsvByIndex(path, hasHeader: false, int.Parse(task.TextColumn),
                task.PairColumn is null ? null : int.Parse(task.PairColumn), int.Parse(task.LabelColumn), skipBadRows);
        return DataReader.Read(path, new ColumnSpec(task.TextColumn, task.PairColumn, task.LabelColumn), skipBadRows);
    }
}

/// <summary>Where the shared datasets are: <c>$ADAPTERSHARP_DATA</c>, else <c>../shared/datasets</c> here or above the application.</summary>
public static class DataFolders
{
    /// <summary>
    /// <c>$ADAPTERSHARP_DATA/&lt;relative&gt;</c> when that variable is set, else the first existing
    /// <c>../shared/datasets/&lt;relative&gt;</c> from the current directory or above the application; a
    /// <see cref="DataFormatException"/> naming <paramref name="what"/> when there is none.
    /// </summary>
    public static string Find(string relative, string what)
    {
        var root = Environment.GetEnvironmentVariable("ADAPTERSHARP_DATA");
        if (!string.IsNullOrWhiteSpace(root)) return Path.Combine(root, relative);
        var candidates = new List<string> { Path.Combine("..", "shared", "datasets", relative) };
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            candidates.Add(Path.Combine(dir.FullName, "shared", "datasets", relative));
        return candidates.FirstOrDefault(Directory.Exists)
               ?? throw new DataFormatException($"{candidates[0]}: {what} not found; pass --data DIR or set ADAPTERSHARP_DATA");
    }
}
