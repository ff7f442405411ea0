using System.CommandLine;
using System.Text.Json;
using AdapterSharp.Benchmarks;

namespace AdapterSharp.Cli.Commands;

/// <summary>
/// <c>adaptersharp bench train|infer</c>: fixed-shape throughput, one JSON line per workload, with the fields of
/// shared/bench/hf_adapter_reference.py (plus tflops and mfu). <c>--suite</c> runs the reference's workloads.
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
        return bench;
    }

    static Command Mixed()
    {
        var device = CommonOptions.Device();
        device.DefaultValueFactory = _ => "auto";
        var shape = new Option<string>("--shape") { DefaultValueFactory = _ => "minilm-l6" };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 128 };
        var seq = new Option<int>("--seq") { DefaultValueFactory = _ => 64 };
        var counts = new Option<string>("--adapters") { DefaultValueFactory = _ => "1,8,32,128", Description = "Adapter counts K to spread the batch over." };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 20 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 3 };
        var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "auto", Description = "auto (bf16 on CUDA), bf16 or fp32." };
        var command = new Command("mixed", "Forward throughput of a batch spread over K adapters: one per-row pass vs a loop over sub-batches.")
        {
            device, shape, batch, seq, counts, steps, warmup, dtype,
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
            foreach (var record in MixedBatchBenchmark.Run(parse.GetValue(shape)!, parse.GetValue(batch), parse.GetValue(seq), ks,
                         parse.GetValue(steps), parse.GetValue(warmup), target, type))
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
        var command = new Command(name, description) { device, shape, mode, batch, seq, steps, warmup, size, dtype, suite, graphs };
        command.SetAction(parse => Run.Guarded(parse, () =>
        {
            if (parse.GetValue(dtype) is not ("bf16" or "fp32")) throw new UsageException("--dtype must be bf16 or fp32");
            var target = Devices.Resolve(parse.GetValue(device)!, Run.StderrLog);
            bool useGraphs = CommonOptions.ResolveCudaGraphs(parse.GetValue(graphs)!, target);
            var workloads = parse.GetValue(suite)
                ? Suite.Select(w => w with { Steps = parse.GetValue(steps), Warmup = parse.GetValue(warmup), Dtype = parse.GetValue(dtype)!, Graphs = useGraphs })
                : [new Workload(parse.GetValue(shape)!, parse.GetValue(mode)!, parse.GetValue(batch), parse.GetValue(seq),
                    parse.GetValue(steps), parse.GetValue(warmup), parse.GetValue(size), parse.GetValue(dtype)!, useGraphs)];
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
