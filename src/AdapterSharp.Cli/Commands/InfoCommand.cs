using System.CommandLine;
using System.Diagnostics;
using AdapterSharp.Checkpoints;
using Spectre.Console;

namespace AdapterSharp.Cli.Commands;

/// <summary><c>adaptersharp info --model M</c>: architecture, parameter counts by component, dtype, origin.</summary>
static class InfoCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var vocab = CommonOptions.Vocab();
        var command = new Command("info", "Describe a pretrained encoder: architecture, parameters, dtype, origin.") { model, vocab };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            var clock = Stopwatch.StartNew();
            var encoder = Pretrained.Load(parse.GetValue(model)!, parse.GetValue(vocab), Run.StderrLog);
            using var module = encoder.CreateModel(); // proves the weights fit the config
            Print(encoder, clock.Elapsed);
            return 0;
        }));
        return command;
    }

    static void Print(PretrainedEncoder encoder, TimeSpan loadTime)
    {
        var c = encoder.Config;
        var architecture = new Table().AddColumns("architecture", "");
        architecture.AddRow("model", Markup.Escape(encoder.Id));
        architecture.AddRow("origin", Markup.Escape(encoder.Origin));
        architecture.AddRow("weights", Markup.Escape(encoder.WeightsPath));
        architecture.AddRow("stored dtype", encoder.StoredDType.ToString());
        architecture.AddRow("layers", c.NumHiddenLayers.ToString());
        architecture.AddRow("hidden size", c.HiddenSize.ToString());
        architecture.AddRow("attention heads", $"{c.NumAttentionHeads} (head size {c.HeadSize})");
        architecture.AddRow("feed-forward size", c.IntermediateSize.ToString());
        architecture.AddRow("activation", c.HiddenAct);
        architecture.AddRow("vocabulary", $"{c.VocabSize} (tokenizer: {encoder.Tokenizer.VocabSize})");
        architecture.AddRow("max positions", c.MaxPositionEmbeddings.ToString());
        architecture.AddRow("layer_norm_eps", c.LayerNormEps.ToString("g"));
        architecture.AddRow("pooler", encoder.HasPooler ? "yes" : "no");
        AnsiConsole.Write(architecture);

        var counts = ParameterCounts.ByComponent(encoder.Weights);
        long total = counts.Sum(kv => kv.Value);
        var parameters = new Table().AddColumns("component", "parameters", "share");
        foreach (var (component, count) in counts)
            parameters.AddRow(component, count.ToString("N0"), $"{100.0 * count / total:F1}%");
        parameters.AddRow("[bold]total[/]", $"[bold]{total:N0}[/]", "100%");
        AnsiConsole.Write(parameters);
        Console.WriteLine($"total parameters: {ParameterCounts.Humanize(total)} ({total:N0}); loaded in {loadTime.TotalSeconds:F1} s");
    }
}
