using System.CommandLine;
using AdapterSharp.Cli;
using AdapterSharp.Cli.Commands;

var root = new RootCommand("AdapterSharp: adapter tuning and serving for pretrained BERT encoders.");
root.Options.Add(CommonOptions.Verbose);
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(TokenizeCommand.Create());
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(PredictCommand.Create());
root.Subcommands.Add(ParamsCommand.Create());
root.Subcommands.Add(ConvertCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(ServeCommand.Create());
var parse = root.Parse(args);
// A mistyped option or value is a usage error like any other: one line, not the whole help text. With no
// arguments at all, the help is what the user wants.
if (parse.Errors.Count > 0 && args.Length > 0)
{
    Console.Error.WriteLine($"error: {string.Join("; ", parse.Errors.Select(e => e.Message))} (see --help)");
    return 1;
}
return parse.Invoke();
