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
return root.Parse(args).Invoke();
