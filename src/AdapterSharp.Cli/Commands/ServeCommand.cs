using System.CommandLine;
using AdapterSharp.Checkpoints;
using AdapterSharp.Server;

namespace AdapterSharp.Cli.Commands;

/// <summary>
/// <c>adaptersharp serve --adapters DIR… [--adapters-root ROOT]</c>: an HTTP inference server for many adapters
/// on one base model (see <see cref="InferenceServer"/>). Prints <c>listening on URL</c> once bound; SIGTERM or
/// Ctrl-C stops it after the requests in hand are answered.
/// </summary>
static class ServeCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m")
        {
            Description = $"Base model: a built-in id ({BuiltInModels.Names}), a HuggingFace model directory or an .onnx file " +
                          $"(default: the one the first adapter records, else {BuiltInModels.MiniLmL6.Id}).",
        };
        var vocab = CommonOptions.Vocab();
        var device = CommonOptions.Device();
        var precision = CommonOptions.Precision();
        var adapters = new Option<string[]>("--adapters", "-a")
        {
            Description = "Adapter folders to load at start, each under the name its adapter_config.json gives.",
            AllowMultipleArgumentsPerToken = true,
        };
        var root = new Option<string?>("--adapters-root")
        {
            Description = "The folder under which POST /v1/adapters may load adapters (run-time loading is off without it).",
        };
        var defaults = new ServerOptions();
        var host = new Option<string>("--host") { Description = "Address to bind; other than loopback only with --api-key-file.", DefaultValueFactory = _ => defaults.Host };
        var port = new Option<int>("--port", "-p") { Description = "Port to bind; 0 picks a free one.", DefaultValueFactory = _ => defaults.Port };
        var apiKeyFile = new Option<string?>("--api-key-file") { Description = "File holding the key that clients send as 'Authorization: Bearer <key>'." };
        var maxBatch = new Option<int>("--max-batch") { Description = "Inputs per forward batch.", DefaultValueFactory = _ => defaults.MaxBatch };
        var forwardCost = new Option<int?>("--forward-cost")
        {
            Description = "A forward's fixed cost in padded tokens: batches are cut by length where padding costs more (default 256 on the CPU; none on a GPU).",
        };
        var maxWait = new Option<int>("--max-wait-ms") { Description = "How long a batch waits for more requests after its first.", DefaultValueFactory = _ => defaults.MaxWaitMs };
        var capacity = new Option<int>("--queue-capacity") { Description = "Requests that may wait for the model; more are answered 503.", DefaultValueFactory = _ => defaults.QueueCapacity };
        var maxBody = new Option<long>("--max-body-bytes") { Description = "Largest request body; larger ones are answered 413.", DefaultValueFactory = _ => defaults.MaxBodyBytes };
        var maxInflight = new Option<long>("--max-inflight-bytes")
        {
            Description = "Request body bytes held at once by requests not yet answered; more are answered 503.",
            DefaultValueFactory = _ => defaults.MaxInflightBytes,
        };
        var maxInputs = new Option<int>("--max-inputs") { Description = "Most inputs per request; more are answered 413.", DefaultValueFactory = _ => defaults.MaxInputs };
        var maxConnections = new Option<int>("--max-connections") { Description = "Open connections at most; more wait.", DefaultValueFactory = _ => defaults.MaxConnections };
        var idleTimeout = new Option<int>("--idle-timeout-s")
        {
            Description = "Seconds a connection may stay idle (before its first request, between requests); bodies must then arrive at 1 KiB/s or faster.",
            DefaultValueFactory = _ => (int)defaults.IdleTimeout.TotalSeconds,
        };
        var command = new Command("serve", "Serve predictions over HTTP for many adapters on one base model.")
        {
            model, vocab, device, precision, adapters, root, host, port, apiKeyFile, maxBatch, maxWait, forwardCost, capacity, maxBody, maxInflight, maxInputs, maxConnections, idleTimeout,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            var keyFile = parse.GetValue(apiKeyFile);
            var options = new ServerOptions
            {
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                AdaptersRoot = parse.GetValue(root),
                ApiKey = keyFile is null ? null : ServerOptions.ReadApiKey(keyFile),
                MaxBatch = parse.GetValue(maxBatch),
                MaxWaitMs = parse.GetValue(maxWait),
                ForwardCost = parse.GetValue(forwardCost),
                QueueCapacity = parse.GetValue(capacity),
                MaxBodyBytes = parse.GetValue(maxBody),
                MaxInflightBytes = parse.GetValue(maxInflight),
                MaxInputs = parse.GetValue(maxInputs),
                MaxConnections = parse.GetValue(maxConnections),
                IdleTimeout = TimeSpan.FromSeconds(parse.GetValue(idleTimeout)),
            };
            options.Validate(); // before the model loads: a refusal to start should be quick
            var dirs = parse.GetValue(adapters) ?? [];
            var baseModel = parse.GetValue(model)
                            ?? (dirs.Length == 0 ? BuiltInModels.MiniLmL6.Id
                                : FusionFiles.IsFusionFolder(dirs[0]) ? FusionFiles.ReadManifest(dirs[0]).BaseModel.Id
                                : AdapterFiles.ReadManifest(dirs[0]).BaseModel.Id);
            using var modelHost = ModelHost.Open(baseModel, Devices.Resolve(parse.GetValue(device)!, Run.StderrLog),
                parse.GetValue(precision)!, parse.GetValue(vocab), Run.StderrLog);
            foreach (var dir in dirs)
            {
                AdapterInfo info;
                try
                {
                    info = modelHost.Load(dir);
                }
                catch (ApiException e)
                {
                    throw new UsageException($"{dir}: {e.Message}");
                }
                Console.Error.WriteLine($"loaded adapter '{info.Name}' ({info.Method}{(info.Task is null ? "" : $", {info.Task}")}) from {dir}");
            }
            return Serve(options, modelHost).GetAwaiter().GetResult();
        }));
        return command;
    }

    static async Task<int> Serve(ServerOptions options, ModelHost modelHost)
    {
        await using var server = InferenceServer.Create(options, modelHost);
        await server.StartAsync();
        Console.WriteLine($"listening on {server.Url.GetLeftPart(UriPartial.Authority)}");
        Console.Out.Flush();
        await server.WaitForShutdownAsync();
        Console.Error.WriteLine("stopped");
        return 0;
    }
}
