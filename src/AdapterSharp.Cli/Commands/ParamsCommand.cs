using System.CommandLine;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Heads;
using AdapterSharp.Training;

namespace AdapterSharp.Cli.Commands;

/// <summary><c>adaptersharp params</c>: trainable vs total parameters of a method on a model, PEFT style.</summary>
static class ParamsCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var vocab = CommonOptions.Vocab();
        var labels = new Option<int>("--num-labels") { Description = "Head outputs (1 = regression).", DefaultValueFactory = _ => 2 };
        var method = new MethodOptions();
        var command = new Command("params", "Count trainable and total parameters for a tuning method.") { model, vocab, labels };
        method.AddTo(command);
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            int outputs = parse.GetValue(labels);
            if (outputs < 1) throw new UsageException($"--num-labels must be at least 1, got {outputs}");
            var head = outputs == 1 ? HeadConfig.Regression() : HeadConfig.Classification(Enumerable.Range(0, outputs).Select(i => i.ToString()));
            bool fusion = string.Equals(parse.GetValue(method.Method), "fusion", StringComparison.OrdinalIgnoreCase);
            var config = fusion ? BottleneckConfig.Houlsby : method.Build(parse);
            var encoder = Pretrained.Load(parse.GetValue(model)!, parse.GetValue(vocab), Run.StderrLog);
            using var adapterModel = TrainingJob.CreateModel(encoder, fusion ? "a" : "task", config, head, seed: 0);
            if (fusion)
            {
                // What a fusion trains does not depend on how many adapters it fuses, only on their sites (houlsby: two per layer).
                adapterModel.AddAdapter("b", config, head);
                adapterModel.AddFusion("task", new FusionConfig { Adapters = ["a", "b"] }, head);
            }
            long trainable = adapterModel.TrainOnly("task").Sum(p => p.Parameter.numel());
            long total = adapterModel.parameters().Sum(p => p.numel());
            Console.WriteLine($"trainable params: {trainable:N0} || all params: {total:N0} || trainable%: {100.0 * trainable / total:F4}");
            return 0;
        }));
        return command;
    }
}
