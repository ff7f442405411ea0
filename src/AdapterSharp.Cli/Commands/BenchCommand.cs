using System.CommandLine;
using System.Text.Json;
using AdapterSharp.Benchmarks;
using AdapterSharp.Checkpoints;
using AdapterSharp.Server;

namespace AdapterSharp.Cli.Commands;

/// <summary>
/// <c>adaptersharp bench train|infer</c>: fixed-shape throughput, one JSON line per workload, with the fields of
/// shared/bench/hf_adapter_reference.py (plus tflops and mfu). <c>--suite</c> runs the reference's workloads.
/// <c>bench mixed</c>: one batch over K adapters; <c>bench serve</c>: a load test of the HTTP server;
/// <c>bench kernels</c>: our fused CUDA kernels checked and timed against libtorch's operators.
/// </summary>
static class BenchCommand
{
    static readonly Workload[] Suite =
    [
        new("bert-base", "adapter", 64, 128),
        new("bert-base", "full", 64, 128),
        new("bert-base", "adapter", 256, 128),
        new("minilm-l6", "adapter", 128, 64),
    ];

    public static Command Create()
    {
        var bench = new Command("bench", "Benchmarks that print JSON lines.");
        bench.Subcommands.Add(Workloads("train", "Time training steps (forward, backward, AdamW).", TrainingBenchmark.Train));
        bench.Subcommands.Add(Workloads("infer", "Time forward passes (no gradients).", TrainingBenchmark.Infer));
        bench.Subcommands.Add(Mixed());
        bench.Subcommands.Add(Serve());
        bench.Subcommands.Add(Kernels());
        bench.Subcommands.Add(Tokenize());
        bench.Subcommands.Add(Kill());
        bench.Subcommands.Add(Soak());
        return bench;
    }

    static Command Serve()
    {
        var model = new Option<string?>("--model", "-m")
        {
            Description = $"Base model (default: the one the first of --adapters records, else {BuiltInModels.MiniLmL6.Id}).",
        };
        var vocab = CommonOptions.Vocab();
        var device = CommonOptions.Device();
        device.DefaultValueFactory = _ => "auto";
        var precision = CommonOptions.Precision();
        var adapters = new Option<string[]>("--adapters", "-a")
        {
            Description = "Adapter folders to serve (default: make --adapters-count adapters with random weights).",
            AllowMultipleArgumentsPerToken = true,
        };
        var defaults = new ServeBenchmarkOptions();
        var count = new Option<int>("--adapters-count") { Description = "Adapters to make when --adapters is not given.", DefaultValueFactory = _ => defaults.AdapterCount };
        var clients = new Option<int>("--clients") { Description = "Concurrent clients, each sending one request after another.", DefaultValueFactory = _ => defaults.Clients };
        var duration = new Option<string>("--duration") { Description = "How long to measure, after the warm-up (e.g. 30s, 2m).", DefaultValueFactory = _ => "30s" };
        var warmup = new Option<string>("--warmup") { Description = "How long to load the server before measuring (0 for none).", DefaultValueFactory = _ => "5s" };
        var inputs = new Option<int>("--inputs-per-request") { Description = "Texts per request, each drawn at random.", DefaultValueFactory = _ => defaults.InputsPerRequest };
        var form = new Option<string>("--form")
        {
            Description = "single: {adapter, inputs}; mixed: an adapter per input; both: each client alternates.",
            DefaultValueFactory = _ => "both",
        };
        var timeout = new Option<string>("--request-timeout") { Description = "A request taking longer is an error.", DefaultValueFactory = _ => "30s" };
        var texts = new Option<string?>("--texts") { Description = "File of texts to send, one a line (default: SST-2 dev sentences if found, else built-in ones)." };
        var seed = new Option<int>("--seed") { Description = "Seeds the made adapters and each client's choice of texts.", DefaultValueFactory = _ => 0 };
        var server = new ServerOptions();
        var maxBatch = new Option<int>("--max-batch") { Description = "The server's inputs per forward batch.", DefaultValueFactory = _ => server.MaxBatch };
        var forwardCost = new Option<int?>("--forward-cost")
        {
            Description = "A forward's fixed cost in padded tokens: batches are cut by length where padding costs more (default 256 on the CPU; none on a GPU).",
        };
        var maxWait = new Option<int>("--max-wait-ms") { Description = "How long a batch waits for more requests.", DefaultValueFactory = _ => server.MaxWaitMs };
        var capacity = new Option<int>("--queue-capacity") { Description = "Requests that may wait for the model; more are 503.", DefaultValueFactory = _ => server.QueueCapacity };
        var command = new Command("serve",
            "Load-test the HTTP server on loopback: N clients for a duration; throughput, latency percentiles, errors, batch sizes, memory.")
        {
            model, vocab, device, precision, adapters, count, clients, duration, warmup, inputs, form, timeout, texts, seed, maxBatch, maxWait, forwardCost, capacity,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            var dirs = parse.GetValue(adapters) ?? [];
            var options = new ServeBenchmarkOptions
            {
                Model = parse.GetValue(model) ?? (dirs.Length > 0 ? AdapterFiles.ReadManifest(dirs[0]).BaseModel.Id : BuiltInModels.MiniLmL6.Id),
                Vocab = parse.GetValue(vocab),
                Precision = parse.GetValue(precision)!,
                AdapterDirs = dirs,
                AdapterCount = parse.GetValue(count),
                Clients = parse.GetValue(clients),
                Duration = Seconds(parse.GetValue(duration)!, "--duration", allowZero: false),
                Warmup = Seconds(parse.GetValue(warmup)!, "--warmup", allowZero: true),
                InputsPerRequest = parse.GetValue(inputs),
                Form = parse.GetValue(form) switch
                {
                    "single" => RequestForm.OneAdapter,
                    "mixed" => RequestForm.PerInput,
                    "both" => RequestForm.Alternating,
                    var other => throw new UsageException($"--form must be single, mixed or both, got '{other}'"),
                },
                RequestTimeout = Seconds(parse.GetValue(timeout)!, "--request-timeout", allowZero: false),
                Texts = parse.GetValue(texts) is { } file ? ReadTexts(file) : null,
                Seed = parse.GetValue(seed),
                Server = server with
                {
                    MaxBatch = parse.GetValue(maxBatch),
                    MaxWaitMs = parse.GetValue(maxWait),
                    ForwardCost = parse.GetValue(forwardCost),
                    QueueCapacity = parse.GetValue(capacity),
                },
            };
            options.Validate(); // before the model loads
            var target = Devices.Resolve(parse.GetValue(device)!, Run.StderrLog);
            // Ctrl-C ends the window early and still reports; a second Ctrl-C ends the process.
            using var interrupt = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                if (interrupt.IsCancellationRequested) return;
                e.Cancel = true;
                Console.Error.WriteLine("interrupted: ending the measurement, stopping the clients and the server");
                interrupt.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            ServeBenchmarkReport report;
            try
            {
                report = ServeBenchmark.RunAsync(options, target, Run.StderrLog, interrupt.Token).GetAwaiter().GetResult();
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
            PrintTable(report);
            Console.WriteLine(JsonSerializer.Serialize(report, ServeBenchmarkReport.Json));
            if (report.ErrorCount == 0) return 0;
            Console.Error.WriteLine($"error: {report.ErrorCount} requests failed ({string.Join(", ", report.Errors.Select(e => $"{e.Key}: {e.Value}"))}); first: {report.FirstError}");
            return 1;
        }));
        return command;
    }

    /// <summary>A duration like 30s or 2m; a bare number is seconds (not minutes, as for --time-budget).</summary>
    static TimeSpan Seconds(string text, string option, bool allowZero)
    {
        var trimmed = text.Trim();
        if (double.TryParse(trimmed, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var seconds)
            && (seconds > 0 || (allowZero && seconds == 0)))
            return TimeSpan.FromSeconds(seconds);
        if (allowZero && trimmed is "0s" or "0m") return TimeSpan.Zero;
        return trimmed != "none" && TrainCommand.ParseDuration(trimmed, option) is { } span
            ? span
            : throw new UsageException($"{option}: '{text}' is not a duration like 30s or 2m");
    }

    static string[] ReadTexts(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"--texts {path}: file not found");
        var lines = File.ReadLines(path).Where(l => l.Trim().Length > 0).ToArray();
        return lines.Length > 0 ? lines : throw new UsageException($"--texts {path}: the file holds no texts");
    }

    /// <summary>The report for people, on stderr; stdout keeps the one JSON line.</summary>
    static void PrintTable(ServeBenchmarkReport r)
    {
        var errors = r.ErrorCount == 0 ? "0" : string.Join(", ", r.Errors.Select(e => $"{e.Key}: {e.Value}"));
        var rows = new (string, string)[]
        {
            ("server", $"{r.Model} on {r.Device}, {r.Adapters} adapters, max batch {r.MaxBatch}, max wait {r.MaxWaitMs} ms, forward cost {r.ForwardCost} tokens"),
            ("load", $"{r.Clients} clients × {r.InputsPerRequest} input(s) per request, form {r.Form}, texts: {r.Texts}"),
            ("window", $"{r.DurationS:0.0} s after {r.WarmupS:0.#} s warm-up{(r.Interrupted ? " (interrupted: ended early)" : "")}"),
            ("throughput", $"{r.RequestsPerS:0.0} requests/s, {r.InputsPerS:0.0} inputs/s ({r.Requests} requests)"),
            ("latency ms", $"mean {r.MeanMs:0.0}  p50 {r.P50Ms:0.0}  p90 {r.P90Ms:0.0}  p99 {r.P99Ms:0.0}  max {r.MaxMs:0.0}"),
            ("errors", errors),
            ("batches", $"{r.Batches}, mean {r.MeanBatch:0.00} inputs"),
            ("working set MB", $"{r.WorkingSetStartMb:0.0} → {r.WorkingSetEndMb:0.0}, slope {r.WorkingSetSlopeMbPerMin:+0.00;-0.00} MB/min"),
            ("managed heap MB", $"{r.ManagedHeapStartMb:0.0} → {r.ManagedHeapEndMb:0.0}, slope {r.ManagedHeapSlopeMbPerMin:+0.00;-0.00} MB/min"),
            ("GCs", $"gen0 {r.Gen0Collections}, gen1 {r.Gen1Collections}, gen2 {r.Gen2Collections}"),
        };
        foreach (var (name, value) in rows) Console.Error.WriteLine($"{name,-16} {value}");
    }

    static Command Kernels()
    {
        var device = CommonOptions.Device();
        device.DefaultValueFactory = _ => "auto";
        var rows = new Option<long>("--rows") { DefaultValueFactory = _ => 32768, Description = "Rows (batch × sequence); 32768 is bert-base b256 × 128." };
        var hidden = new Option<long>("--hidden") { DefaultValueFactory = _ => 768 };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 20 };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
        var fused = CommonOptions.FusedKernels();
        var command = new Command("kernels",
            "The fused residual add + LayerNorm against libtorch's operators on random operands: relative differences of the outputs and "
            + "gradients (kernels vs the same arithmetic in operators, and that vs the unfused modules), and forward/backward times.")
        {
            device, rows, hidden, steps, seed, fused,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            if (parse.GetValue(rows) < 1 || parse.GetValue(hidden) < 1 || parse.GetValue(steps) < 1)
                throw new UsageException("--rows, --hidden and --steps must be positive");
            var target = Devices.Resolve(parse.GetValue(device)!, Run.StderrLog);
            var kernels = CommonOptions.ResolveFusedKernels(parse.GetValue(fused)!, target);
            if (target.type == TorchSharp.DeviceType.CUDA && (kernels == Model.FusedKernels.Off || !Native.CudaKernels.Available))
                Console.Error.WriteLine($"fused kernels off: {Native.CudaKernels.Problem ?? "--fused-kernels off"}");
            foreach (var record in KernelBenchmark.AddNormRecords(target, parse.GetValue(rows), parse.GetValue(hidden), parse.GetValue(steps), parse.GetValue(seed), kernels))
                Console.WriteLine(JsonSerializer.Serialize(record));
            return 0;
        }));
        return command;
    }

    static Command Soak()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        device.DefaultValueFactory = _ => "auto";
        var precision = CommonOptions.Precision();
        var defaults = new SoakOptions();
        var duration = new Option<string>("--duration") { Description = "How long to run, warm-up included (e.g. 10m).", DefaultValueFactory = _ => "10m" };
        var warmup = new Option<string>("--warmup") { Description = "Load before the memory baseline is taken.", DefaultValueFactory = _ => "1m" };
        var clients = new Option<int>("--clients") { Description = "Clients sending well-formed requests.", DefaultValueFactory = _ => defaults.Clients };
        var adapters = new Option<int>("--adapters") { Description = "Adapters served (the last two are unloaded and reloaded throughout).", DefaultValueFactory = _ => defaults.Adapters };
        var growth = new Option<double>("--max-memory-growth")
        {
            Description = "Working-set growth after the warm-up that fails the run (0.10 = 10%).",
            DefaultValueFactory = _ => defaults.MaxMemoryGrowth,
        };
        var seed = new Option<int>("--seed") { Description = "Seeds the adapters and the clients.", DefaultValueFactory = _ => 0 };
        var command = new Command("soak",
            "The real server on loopback under well-formed load and a fault mix for a duration; fails on an unexpected status, a lost request, memory growth or a dead /healthz.")
        {
            model, device, precision, duration, warmup, clients, adapters, growth, seed,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            var options = new SoakOptions
            {
                Model = parse.GetValue(model)!,
                Precision = parse.GetValue(precision)!,
                Duration = Seconds(parse.GetValue(duration)!, "--duration", allowZero: false),
                Warmup = Seconds(parse.GetValue(warmup)!, "--warmup", allowZero: true),
                Clients = parse.GetValue(clients),
                Adapters = parse.GetValue(adapters),
                MaxMemoryGrowth = parse.GetValue(growth),
                Seed = parse.GetValue(seed),
            };
            options.Validate();
            var target = Devices.Resolve(parse.GetValue(device)!, Run.StderrLog);
            using var interrupt = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                if (interrupt.IsCancellationRequested) return;
                e.Cancel = true;
                interrupt.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            SoakReport report;
            try
            {
                report = SoakBenchmark.RunAsync(options, target, Run.StderrLog, interrupt.Token).GetAwaiter().GetResult();
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
            foreach (var (name, category) in report.Categories)
                Console.Error.WriteLine($"{name,-16} {category.Sent,8} sent  {string.Join(", ", category.Outcomes.Select(o => $"{o.Key}: {o.Value}"))}" +
                                        (category.Unexpected > 0 ? $"  UNEXPECTED {category.Unexpected}" : ""));
            Console.Error.WriteLine($"well-formed latency p50 {report.P50Ms} ms, p90 {report.P90Ms} ms, p99 {report.P99Ms} ms; working set " +
                                    $"{report.BaselineWorkingSetMb} → {report.EndWorkingSetMb} MB ({report.WorkingSetGrowth:P1}); /healthz {report.HealthzStatus}");
            Console.WriteLine(JsonSerializer.Serialize(report, SoakReport.Json));
            foreach (var failure in report.Failures) Console.Error.WriteLine($"error: {failure}");
            return report.Passed ? 0 : 1;
        }));
        return command;
    }

    static Command Kill()
    {
        var defaults = new KillBenchmarkOptions();
        var trials = new Option<int>("--trials") { Description = "SIGKILLs per writer.", DefaultValueFactory = _ => defaults.Trials };
        var writers = new Option<string>("--writers")
        {
            Description = "Which writers, comma-separated: adapter (train over an earlier adapter), fusion, cache (first use of the built-in model), convert.",
            DefaultValueFactory = _ => KillBenchmarkOptions.AllWriters,
        };
        var seed = new Option<int>("--seed") { Description = "Seeds the kill moments.", DefaultValueFactory = _ => defaults.Seed };
        var work = new Option<string?>("--work-dir") { Description = "Where the runs write (default: a temporary folder, deleted after)." };
        var noDiskFull = new Option<bool>("--no-disk-full") { Description = "Skip the run of each writer under a file-size limit." };
        var command = new Command("kill",
            "Kill the real CLI with SIGKILL at random moments while it writes adapter, fusion and model folders; check each folder is the earlier one or a complete new one.")
        {
            trials, writers, seed, work, noDiskFull,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            if (parse.GetValue(trials) < 1) throw new UsageException("--trials must be at least 1");
            return KillBenchmark.Run(new KillBenchmarkOptions
            {
                Trials = parse.GetValue(trials),
                Writers = parse.GetValue(writers)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                Seed = parse.GetValue(seed),
                WorkDir = parse.GetValue(work),
                DiskFull = !parse.GetValue(noDiskFull),
            }, Run.StderrLog);
        }));
        return command;
    }

    static Command Tokenize()
    {
        var model = CommonOptions.Model();
        var vocab = CommonOptions.Vocab();
        var input = new Option<string?>("--input")
        {
            Description = "Texts, one a line, or a TSV whose first column is the text (a header line is skipped); default: SST-2 train.",
        };
        var maxLength = new Option<int>("--max-length") { DefaultValueFactory = _ => 128 };
        var repeats = new Option<int>("--repeats") { DefaultValueFactory = _ => 3, Description = "Timed passes over the texts (after one untimed)." };
        var command = new Command("tokenize", "Tokenizer throughput over a file of texts: sentences/s and pieces/s, median of the passes.")
        {
            model, vocab, input, maxLength, repeats,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            if (parse.GetValue(repeats) < 1 || parse.GetValue(maxLength) < 8) throw new UsageException("--repeats must be at least 1 and --max-length at least 8");
            var path = parse.GetValue(input) ?? Path.Combine(Data.GlueTasks.DefaultDirectory(Data.GlueTasks.Get("sst2")), "train.tsv");
            if (!File.Exists(path)) throw new UsageException($"--input: {path} not found");
            var lines = File.ReadLines(path).Select(line => line.Split('\t')[0]).Where(line => line.Length > 0).ToList();
            if (path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase) && lines.Count > 0) lines.RemoveAt(0);
            var tokenizer = Pretrained.Load(parse.GetValue(model)!, parse.GetValue(vocab), Run.StderrLog).Tokenizer;
            long Pass()
            {
                long pieces = 0;
                foreach (var line in lines) pieces += tokenizer.Encode(line, maxLength: parse.GetValue(maxLength)).InputIds.Length;
                return pieces;
            }
            long total = Pass();
            var seconds = new List<double>();
            for (int i = 0; i < parse.GetValue(repeats); i++)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                Pass();
                seconds.Add(clock.Elapsed.TotalSeconds);
            }
            double median = seconds.Order().ElementAt(seconds.Count / 2);
            Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["workload"] = "tokenize",
                ["input"] = path,
                ["sentences"] = lines.Count,
                ["pieces"] = total,
                ["seconds_median"] = Math.Round(median, 4),
                ["sentences_per_s"] = Math.Round(lines.Count / median),
                ["pieces_per_s"] = Math.Round(total / median),
            }));
            return 0;
        }));
        return command;
    }

    static Command Mixed()
    {
        var device = CommonOptions.Device();
        device.DefaultValueFactory = _ => "auto";
        var shape = new Option<string>("--shape") { DefaultValueFactory = _ => "minilm-l6" };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 128 };
        var seq = new Option<int>("--seq") { DefaultValueFactory = _ => 64 };
        var counts = new Option<string>("--adapters") { DefaultValueFactory = _ => "1,8,32,128", Description = "Adapter counts K to spread the batch over." };
        var methods = new Option<string>("--methods") { DefaultValueFactory = _ => "houlsby", Description = "The adapters' methods, taken in turn (e.g. houlsby,lora)." };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 20 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 3 };
        var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "auto", Description = "auto (bf16 on CUDA), bf16 or fp32." };
        var check = new Option<bool>("--check")
        {
            Description = "Also check each row of the mixed pass against that row run alone with its adapter (rows padded to random lengths): max |Δ| of the logits.",
        };
        var command = new Command("mixed", "Forward throughput of a batch spread over K adapters: one per-row pass vs a loop over sub-batches.")
        {
            device, shape, batch, seq, counts, methods, steps, warmup, dtype, check,
        };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            var target = Devices.Resolve(parse.GetValue(device)!, Run.StderrLog);
            var type = Devices.MatmulType(parse.GetValue(dtype)!, target) == TorchSharp.torch.ScalarType.BFloat16 ? "bf16" : "fp32";
            int[] ks;
            try
            {
                ks = parse.GetValue(counts)!.Split(',').Select(int.Parse).ToArray();
            }
            catch (FormatException)
            {
                throw new UsageException($"--adapters: '{parse.GetValue(counts)}' is not a comma-separated list of counts");
            }
            var methodList = parse.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var records = parse.GetValue(check)
                ? MixedBatchBenchmark.Check(parse.GetValue(shape)!, parse.GetValue(batch), parse.GetValue(seq), ks, target, type, methodList)
                : MixedBatchBenchmark.Run(parse.GetValue(shape)!, parse.GetValue(batch), parse.GetValue(seq), ks,
                    parse.GetValue(steps), parse.GetValue(warmup), target, type, methodList);
            foreach (var record in records)
                Console.WriteLine(JsonSerializer.Serialize(record));
            return 0;
        }));
        return command;
    }

    static Command Workloads(string name, string description, Func<Workload, TorchSharp.torch.Device, Dictionary<string, object>> run)
    {
        var device = CommonOptions.Device();
        device.DefaultValueFactory = _ => "auto";
        var shape = new Option<string>("--shape") { DefaultValueFactory = _ => "bert-base", Description = "bert-base, bert-large or minilm-l6." };
        var mode = new Option<string>("--mode") { DefaultValueFactory = _ => "adapter", Description = "adapter (houlsby) or full, as the reference; or any method (layernorm, head, pfeiffer, …) for ablations." };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 64 };
        var seq = new Option<int>("--seq") { DefaultValueFactory = _ => 128 };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 30 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 10 };
        var size = new Option<int>("--adapter-size") { DefaultValueFactory = _ => 64 };
        var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "bf16", Description = "bf16 or fp32 matrix products." };
        var suite = new Option<bool>("--suite") { Description = "Run the reference's workloads (bert-base b64/b256 × s128 adapter and full, minilm-l6 b128 × s64)." };
        var graphs = CommonOptions.CudaGraphs();
        var fused = CommonOptions.FusedKernels();
        var command = new Command(name, description) { device, shape, mode, batch, seq, steps, warmup, size, dtype, suite, graphs, fused };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            if (parse.GetValue(dtype) is not ("bf16" or "fp32")) throw new UsageException("--dtype must be bf16 or fp32");
            var target = Devices.Resolve(parse.GetValue(device)!, Run.StderrLog);
            bool useGraphs = CommonOptions.ResolveCudaGraphs(parse.GetValue(graphs)!, target);
            var kernels = CommonOptions.ResolveFusedKernels(parse.GetValue(fused)!, target);
            var workloads = parse.GetValue(suite)
                ? Suite.Select(w => w with { Steps = parse.GetValue(steps), Warmup = parse.GetValue(warmup), Dtype = parse.GetValue(dtype)!, Graphs = useGraphs, Kernels = kernels })
                : [new Workload(parse.GetValue(shape)!, parse.GetValue(mode)!, parse.GetValue(batch), parse.GetValue(seq),
                    parse.GetValue(steps), parse.GetValue(warmup), parse.GetValue(size), parse.GetValue(dtype)!, useGraphs, kernels)];
            foreach (var workload in workloads)
            {
                var record = run(workload, target);
                record["device"] = target.type == TorchSharp.DeviceType.CUDA ? "cuda" : "cpu";
                Console.WriteLine(JsonSerializer.Serialize(record));
            }
            return 0;
        }));
        return command;
    }
}
