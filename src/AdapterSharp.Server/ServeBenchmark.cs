using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Serialization;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using static TorchSharp.torch;

namespace AdapterSharp.Server;

/// <summary>How a load-test client writes its requests (see <c>POST /v1/predict</c>).</summary>
public enum RequestForm
{
    /// <summary><c>{"adapter": A, "inputs": [...]}</c>: one adapter per request ("single").</summary>
    OneAdapter,

    /// <summary><c>{"inputs": [{"adapter", "text"}, ...]}</c>: each input names its own adapter ("mixed").</summary>
    PerInput,

    /// <summary>Each client alternates between the two ("both").</summary>
    Alternating,
}

/// <summary>What <c>adaptersharp bench serve</c> runs: the server, its adapters, and the clients that load it.</summary>
public sealed record ServeBenchmarkOptions
{
    public string Model { get; init; } = BuiltInModels.MiniLmL6.Id;
    public string? Vocab { get; init; }
    public string Precision { get; init; } = "auto";

    /// <summary>Adapter folders to serve; when empty, <see cref="AdapterCount"/> adapters are made in a temporary folder.</summary>
    public IReadOnlyList<string> AdapterDirs { get; init; } = [];

    public int AdapterCount { get; init; } = 8;

    /// <summary>The adapter names the clients ask for; default: every adapter loaded. A name not loaded gets 404s.</summary>
    public IReadOnlyList<string>? Targets { get; init; }

    public int Clients { get; init; } = 32;
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(5);
    public int InputsPerRequest { get; init; } = 1;
    public RequestForm Form { get; init; } = RequestForm.Alternating;

    /// <summary>A request that takes longer fails as a timeout; it also bounds how long the run waits after its end.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);

    public int Seed { get; init; }

    /// <summary>Texts to send; default: SST-2 dev sentences when the GLUE data is found, else built-in sentences.</summary>
    public IReadOnlyList<string>? Texts { get; init; }

    /// <summary>The server's batching and limits; it always binds 127.0.0.1 on an ephemeral port.</summary>
    public ServerOptions Server { get; init; } = new();

    public void Validate()
    {
        if (AdapterDirs.Count == 0 && AdapterCount < 1) throw new ArgumentException($"--adapters-count must be at least 1, got {AdapterCount}");
        if (Clients < 1) throw new ArgumentException($"--clients must be at least 1, got {Clients}");
        if (Duration <= TimeSpan.Zero) throw new ArgumentException("--duration must be positive");
        if (Warmup < TimeSpan.Zero) throw new ArgumentException("--warmup must not be negative");
        if (RequestTimeout <= TimeSpan.Zero) throw new ArgumentException("--request-timeout must be positive");
        if (InputsPerRequest < 1) throw new ArgumentException($"--inputs-per-request must be at least 1, got {InputsPerRequest}");
        if (InputsPerRequest > Server.MaxInputs)
            throw new ArgumentException($"--inputs-per-request {InputsPerRequest} is more than the server's --max-inputs {Server.MaxInputs}");
        if (Texts is { Count: 0 }) throw new ArgumentException("no texts to send");
        (Server with { Host = "127.0.0.1", Port = 0 }).Validate();
    }
}

/// <summary>
/// What a load test measured over its window (after the warm-up): client-side latency of successful requests,
/// throughput, errors by kind over the whole run (warm-up and drain included), the server's batch sizes, and the
/// process's memory (server and clients share it) sampled every second.
/// </summary>
public sealed record ServeBenchmarkReport
{
    public string Workload { get; init; } = "serve";
    public required string Model { get; init; }
    public required string Device { get; init; }
    public int Adapters { get; init; }
    public int Clients { get; init; }
    public int InputsPerRequest { get; init; }
    public required string Form { get; init; }
    public int MaxBatch { get; init; }
    public int MaxWaitMs { get; init; }
    public int ForwardCost { get; init; }
    public required string Texts { get; init; }
    public double WarmupS { get; init; }
    public double DurationS { get; init; }

    /// <summary>True when the run was interrupted (Ctrl-C) and the window ended early; the figures cover what ran.</summary>
    public bool Interrupted { get; init; }
    public long Requests { get; init; }
    public long Inputs { get; init; }
    public double RequestsPerS { get; init; }
    public double InputsPerS { get; init; }
    public double MeanMs { get; init; }
    public double P50Ms { get; init; }
    public double P90Ms { get; init; }
    public double P99Ms { get; init; }
    public double MaxMs { get; init; }

    /// <summary>Failed requests by HTTP status code, or timeout, connection, bad_body.</summary>
    public required IReadOnlyDictionary<string, long> Errors { get; init; }

    public string? FirstError { get; init; }
    public long Batches { get; init; }
    public double MeanBatch { get; init; }
    public double WorkingSetStartMb { get; init; }
    public double WorkingSetEndMb { get; init; }
    public double WorkingSetSlopeMbPerMin { get; init; }

    /// <summary>The working set once a second through the window, first and last included.</summary>
    public IReadOnlyList<double> WorkingSetMb { get; init; } = [];

    /// <summary>
    /// The GC heap after the last collection, which is what survives rather than what was allocated since; a full
    /// collection is forced at each end of the window (outside the GC counts).
    /// </summary>
    public double ManagedHeapStartMb { get; init; }

    public double ManagedHeapEndMb { get; init; }
    public double ManagedHeapSlopeMbPerMin { get; init; }
    public int Gen0Collections { get; init; }
    public int Gen1Collections { get; init; }
    public int Gen2Collections { get; init; }

    [JsonIgnore] public long ErrorCount => Errors.Values.Sum();

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };
}

/// <summary>
/// <c>adaptersharp bench serve</c>: starts the real server (<see cref="ModelHost"/> + <see cref="InferenceServer"/>,
/// as <c>serve</c> does) on an ephemeral loopback port, and runs N clients that each send one
/// <c>POST /v1/predict</c> after another, round-robin over the adapters, for the warm-up and then the measured
/// duration. Bounded: clients stop at the end, a request times out after <see cref="ServeBenchmarkOptions.RequestTimeout"/>,
/// and the server is stopped gracefully (queued requests answered) before it returns.
/// </summary>
public static class ServeBenchmark
{
    /// <summary>Used when no SST-2 dev set is found: movie-review-like sentences of 2 to ~50 words.</summary>
    static readonly string[] BuiltInTexts =
    [
        "a gorgeous, witty, seductive movie.",
        "dull.",
        "it 's a charming and often affecting journey.",
        "unflinchingly bleak and desperate",
        "the acting, costumes, music, cinematography and sound are all astounding given the production 's austere locales.",
        "too slow for a younger crowd, too shallow for an older one.",
        "a sometimes tedious film.",
        "the story is also as unoriginal as they come, already having been recycled more times than i 'd care to count.",
        "it 's slow -- very, very slow.",
        "there is a freedom to watching stunts that are this crude, this fast-paced and this insane.",
        "a well-made and often lovely depiction of the mysteries of friendship.",
        "this is a film well worth seeing, talking and singing heads and all.",
        "what really surprises about wisegirls is its low-key quality and genuine tenderness.",
        "the messy emotions raging throughout this three-hour effort are instantly recognizable, allowing the film to paradoxically feel familiar and foreign at the same time, which is no small feat for a director still finding a voice of his own.",
        "nothing happens, and it happens to flat characters.",
        "an utterly compelling ` who wrote it ' in which the reputation of the most famous author who ever lived comes into question.",
        "bad.",
        "one of the greatest family-oriented, fantasy-adventure movies ever.",
        "the film 's hero is a bore and his innocence soon becomes a questionable kind of inexcusable dumb innocence, and the plot holds no surprises for anyone who has seen more than two or three thrillers in the last decade.",
        "a warm, funny, engaging film.",
        "it 's a lovely film with lovely performances by buy and accorsi.",
        "exactly what you 'd expect.",
        "a muddled limp biscuit of a movie, a vampire soap opera that does n't make much sense even on its own terms, full of characters who never come alive and scenes that go on and on without any sense of where they are headed or why.",
        "moving and important.",
    ];

    /// <summary>Heads for made-up adapters, in turn: two, three and five labels, and a regression score.</summary>
    static readonly HeadConfig[] Heads =
    [
        HeadConfig.Classification(["negative", "positive"]),
        HeadConfig.Classification(["a", "b", "c"]),
        HeadConfig.Regression(),
        HeadConfig.Classification(["1", "2", "3", "4", "5"]),
    ];

    readonly record struct Completion(long FinishedTicks, double LatencyMs, int Inputs);

    readonly record struct MemorySample(long Ticks, double WorkingSetMb, double ManagedHeapMb);

    /// <param name="interrupt">Ends the warm-up or the measured window early (the CLI's Ctrl-C); the clients then stop
    /// and the server shuts down as at the end of a full run.</param>
    public static async Task<ServeBenchmarkReport> RunAsync(ServeBenchmarkOptions options, Device device, Action<string>? log = null,
        CancellationToken interrupt = default)
    {
        options.Validate();
        var (texts, textSource) = options.Texts is { } given ? (given, $"{given.Count} given texts") : DefaultTexts();
        var encoder = Pretrained.Load(options.Model, options.Vocab, log);
        string? madeDir = null;
        try
        {
            var dirs = options.AdapterDirs;
            if (dirs.Count == 0)
            {
                madeDir = Directory.CreateTempSubdirectory("adaptersharp-bench-serve-").FullName;
                dirs = MakeAdapters(encoder, options.AdapterCount, madeDir, options.Seed);
                log?.Invoke($"made {dirs.Count} houlsby adapters with random weights in {madeDir}");
            }
            using var host = ModelHost.Open(encoder, device, options.Precision);
            foreach (var dir in dirs) host.Load(dir);
            var targets = options.Targets ?? [.. host.Adapters.Keys.Order(StringComparer.Ordinal)];
            var serverOptions = options.Server with { Host = "127.0.0.1", Port = 0 };
            await using var server = InferenceServer.Create(serverOptions, host);
            await server.StartAsync(CancellationToken.None); // an interrupt ends the window, not the start
            log?.Invoke($"serving {host.Adapters.Count} adapters at {server.Url}; {options.Clients} clients, " +
                        $"{options.Warmup.TotalSeconds:0.#} s warm-up, {options.Duration.TotalSeconds:0.#} s measured");
            var setup = new ServeBenchmarkReport
            {
                Model = encoder.Id,
                Device = device.type == TorchSharp.DeviceType.CUDA ? "cuda" : "cpu",
                Adapters = host.Adapters.Count,
                Clients = options.Clients,
                InputsPerRequest = options.InputsPerRequest,
                Form = options.Form switch { RequestForm.OneAdapter => "single", RequestForm.PerInput => "mixed", _ => "both" },
                MaxBatch = serverOptions.MaxBatch,
                MaxWaitMs = serverOptions.MaxWaitMs,
                ForwardCost = serverOptions.ForwardCost ?? MixedBatchRunner.DefaultForwardCost(device),
                Texts = textSource,
                WarmupS = options.Warmup.TotalSeconds,
                Errors = new Dictionary<string, long>(),
            };
            var report = await LoadAsync(server, options, targets, texts, setup, interrupt);
            using (var stopping = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
                await server.StopAsync(stopping.Token);
            return report;
        }
        finally
        {
            if (madeDir is not null) Directory.Delete(madeDir, recursive: true);
        }
    }

    /// <summary>
    /// <paramref name="count"/> Houlsby adapters on <paramref name="encoder"/>, "adapter-0"…, with houlsby-initialised
    /// (small, non-zero) weights and heads of varied widths, saved under <paramref name="root"/>.
    /// </summary>
    public static IReadOnlyList<string> MakeAdapters(PretrainedEncoder encoder, int count, string root, int seed)
    {
        var identity = BaseModelIdentity.Of(encoder);
        using var model = AdapterModel.FromPretrained(encoder);
        var dirs = new List<string>(count);
        for (int k = 0; k < count; k++)
        {
            var name = $"adapter-{k}";
            var head = Heads[k % Heads.Length];
            manual_seed(seed + k);
            model.AddAdapter(name, BottleneckConfig.Houlsby, head);
            var manifest = new AdapterManifest
            {
                Name = name, Config = BottleneckConfig.Houlsby, Head = head, BaseModel = identity, Task = "bench",
                MaxLength = Math.Min(128, encoder.Config.MaxPositionEmbeddings),
            };
            var dir = Path.Combine(root, name);
            AdapterFiles.Save(dir, manifest, model.AdapterTensors(name));
            model.RemoveAdapter(name);
            dirs.Add(dir);
        }
        return dirs;
    }

    static (IReadOnlyList<string> Texts, string Source) DefaultTexts()
    {
        try
        {
            var task = GlueTasks.Get("sst2");
            var path = Path.Combine(GlueTasks.DefaultDirectory(task), task.DevFile);
            if (File.Exists(path))
            {
                var texts = GlueTasks.Read(task, path, skipBadRows: true).Examples.Select(e => e.Text).ToArray();
                if (texts.Length > 0) return (texts, $"SST-2 dev ({texts.Length} sentences)");
            }
        }
        catch (DataFormatException)
        {
            // No GLUE data here: the built-in sentences do.
        }
        return (BuiltInTexts, $"built-in ({BuiltInTexts.Length} sentences)");
    }

    /// <returns><paramref name="setup"/> with what was measured.</returns>
    static async Task<ServeBenchmarkReport> LoadAsync(InferenceServer server, ServeBenchmarkOptions options,
        IReadOnlyList<string> targets, IReadOnlyList<string> texts, ServeBenchmarkReport setup, CancellationToken interrupt)
    {
        using var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = options.Clients,
            UseProxy = false,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
        };
        using var http = new HttpClient(handler) { BaseAddress = server.Url, Timeout = options.RequestTimeout };
        using var stopIssuing = new CancellationTokenSource();
        using var abort = new CancellationTokenSource();
        var errors = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        string? firstError = null;
        var clock = Stopwatch.StartNew();
        long nextAdapter = 0;

        async Task<List<Completion>> ClientAsync(int client)
        {
            var random = new Random(HashCode.Combine(options.Seed, client));
            var completions = new List<Completion>();
            var buffer = new ArrayBufferWriter<byte>();
            for (int i = 0; !stopIssuing.IsCancellationRequested; i++)
            {
                bool mixed = options.Form == RequestForm.PerInput || (options.Form == RequestForm.Alternating && (client + i) % 2 == 1);
                buffer.Clear();
                WriteRequest(buffer, mixed, options.InputsPerRequest, random, texts,
                    () => targets[(int)((Interlocked.Increment(ref nextAdapter) - 1) % targets.Count)]);
                long start = clock.ElapsedTicks;
                var error = await SendAsync(http, buffer.WrittenMemory, options.InputsPerRequest, abort.Token);
                long finished = clock.ElapsedTicks;
                if (error is null)
                {
                    completions.Add(new Completion(finished, (finished - start) * 1e3 / Stopwatch.Frequency, options.InputsPerRequest));
                    continue;
                }
                errors.AddOrUpdate(error.Value.Kind, 1, (_, n) => n + 1);
                Interlocked.CompareExchange(ref firstError, $"{error.Value.Kind}: {error.Value.Message}", null);
                // A failing server answers at once; don't spin on it.
                await Task.Delay(10, CancellationToken.None);
            }
            return completions;
        }

        var clients = Enumerable.Range(0, options.Clients).Select(c => Task.Run(() => ClientAsync(c))).ToArray();
        await Pause(options.Warmup, interrupt);
        // A full collection at each end of the window, so that the first and last heap samples are what is live.
        GC.Collect();
        var (startTicks, batchesBefore, gcBefore) = (clock.ElapsedTicks, server.Metrics.BatchTotals(), GcCounts());
        var samples = new List<MemorySample> { Sample(clock) };
        using (var timer = new PeriodicTimer(TimeSpan.FromSeconds(1)))
        {
            var end = startTicks + (long)(options.Duration.TotalSeconds * Stopwatch.Frequency);
            while (clock.ElapsedTicks < end && !interrupt.IsCancellationRequested)
            {
                var remaining = TimeSpan.FromSeconds((double)(end - clock.ElapsedTicks) / Stopwatch.Frequency);
                if (remaining < TimeSpan.FromSeconds(1))
                {
                    await Pause(remaining, interrupt);
                    break;
                }
                try
                {
                    await timer.WaitForNextTickAsync(interrupt);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                samples.Add(Sample(clock));
            }
        }
        var (endTicks, batchesAfter, gcAfter) = (clock.ElapsedTicks, server.Metrics.BatchTotals(), GcCounts());
        GC.Collect();
        samples.Add(Sample(clock));
        stopIssuing.Cancel();

        // Requests in flight finish (or time out); past that, they are cut off and count as errors.
        var all = Task.WhenAll(clients);
        if (await Task.WhenAny(all, Task.Delay(options.RequestTimeout + TimeSpan.FromSeconds(5), CancellationToken.None)) != all) abort.Cancel();
        var completions = (await all).SelectMany(c => c).Where(c => c.FinishedTicks >= startTicks && c.FinishedTicks <= endTicks).ToList();

        double seconds = (double)(endTicks - startTicks) / Stopwatch.Frequency;
        var latencies = completions.Select(c => c.LatencyMs).Order().ToArray();
        long inputs = completions.Sum(c => (long)c.Inputs);
        var workingSet = Trend(samples.Select(s => (s.Ticks, s.WorkingSetMb)).ToArray());
        var managed = Trend(samples.Select(s => (s.Ticks, s.ManagedHeapMb)).ToArray());
        long batches = batchesAfter.Batches - batchesBefore.Batches;
        return setup with
        {
            DurationS = Math.Round(seconds, 3),
            Interrupted = interrupt.IsCancellationRequested,
            Requests = latencies.Length,
            Inputs = inputs,
            RequestsPerS = seconds > 0 ? Math.Round(latencies.Length / seconds, 2) : 0,
            InputsPerS = seconds > 0 ? Math.Round(inputs / seconds, 2) : 0,
            MeanMs = Round(latencies.DefaultIfEmpty(0).Average()),
            P50Ms = Round(Percentile(latencies, 0.50)),
            P90Ms = Round(Percentile(latencies, 0.90)),
            P99Ms = Round(Percentile(latencies, 0.99)),
            MaxMs = Round(latencies.DefaultIfEmpty(0).Max()),
            Errors = new SortedDictionary<string, long>(errors, StringComparer.Ordinal),
            FirstError = firstError,
            Batches = batches,
            MeanBatch = batches == 0 ? 0 : Round((double)(batchesAfter.Inputs - batchesBefore.Inputs) / batches),
            WorkingSetStartMb = Round(samples[0].WorkingSetMb),
            WorkingSetEndMb = Round(samples[^1].WorkingSetMb),
            WorkingSetSlopeMbPerMin = Round(workingSet),
            WorkingSetMb = [.. samples.Select(s => Math.Round(s.WorkingSetMb, 1))],
            ManagedHeapStartMb = Round(samples[0].ManagedHeapMb),
            ManagedHeapEndMb = Round(samples[^1].ManagedHeapMb),
            ManagedHeapSlopeMbPerMin = Round(managed),
            Gen0Collections = gcAfter[0] - gcBefore[0],
            Gen1Collections = gcAfter[1] - gcBefore[1],
            Gen2Collections = gcAfter[2] - gcBefore[2],
        };
    }

    /// <summary>Waits <paramref name="time"/>, or less if <paramref name="interrupt"/> fires.</summary>
    static async Task Pause(TimeSpan time, CancellationToken interrupt)
    {
        if (time <= TimeSpan.Zero) return;
        try
        {
            await Task.Delay(time, interrupt);
        }
        catch (OperationCanceledException)
        {
        }
    }

    static void WriteRequest(IBufferWriter<byte> buffer, bool mixed, int inputs, Random random, IReadOnlyList<string> texts, Func<string> nextAdapter)
    {
        using var json = new Utf8JsonWriter(buffer);
        json.WriteStartObject();
        if (!mixed) json.WriteString("adapter", nextAdapter());
        json.WriteStartArray("inputs");
        for (int i = 0; i < inputs; i++)
        {
            var text = texts[random.Next(texts.Count)];
            if (!mixed)
            {
                json.WriteStringValue(text);
                continue;
            }
            json.WriteStartObject();
            json.WriteString("adapter", nextAdapter());
            json.WriteString("text", text);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }

    /// <summary>Null when the server answered 200 with one prediction per input; else the kind of failure and its message.</summary>
    static async Task<(string Kind, string Message)?> SendAsync(HttpClient http, ReadOnlyMemory<byte> body, int inputs, CancellationToken abort)
    {
        try
        {
            using var content = new ReadOnlyMemoryContent(body);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var response = await http.PostAsync("/v1/predict", content, abort);
            var answer = await response.Content.ReadAsByteArrayAsync(abort);
            if (!response.IsSuccessStatusCode)
                return (((int)response.StatusCode).ToString(), System.Text.Encoding.UTF8.GetString(answer));
            using var document = JsonDocument.Parse(answer);
            return document.RootElement.TryGetProperty("predictions", out var predictions) && predictions.GetArrayLength() == inputs
                ? null
                : ("bad_body", $"expected {inputs} predictions: {System.Text.Encoding.UTF8.GetString(answer)}");
        }
        catch (TaskCanceledException e) when (!abort.IsCancellationRequested)
        {
            return ("timeout", e.Message); // HttpClient.Timeout
        }
        catch (OperationCanceledException e)
        {
            return ("cancelled", e.Message);
        }
        catch (HttpRequestException e)
        {
            return ("connection", e.Message);
        }
        catch (JsonException e)
        {
            return ("bad_body", e.Message);
        }
    }

    static MemorySample Sample(Stopwatch clock) =>
        new(clock.ElapsedTicks, Environment.WorkingSet / 1048576.0, GC.GetGCMemoryInfo().HeapSizeBytes / 1048576.0);

    static int[] GcCounts() => [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];

    /// <summary>Least-squares slope in MB per minute.</summary>
    static double Trend((long Ticks, double Mb)[] points)
    {
        if (points.Length < 2) return 0;
        var minutes = points.Select(p => p.Ticks / (60.0 * Stopwatch.Frequency)).ToArray();
        double meanX = minutes.Average(), meanY = points.Average(p => p.Mb);
        double covariance = 0, variance = 0;
        for (int i = 0; i < points.Length; i++)
        {
            covariance += (minutes[i] - meanX) * (points[i].Mb - meanY);
            variance += (minutes[i] - meanX) * (minutes[i] - meanX);
        }
        return variance == 0 ? 0 : covariance / variance;
    }

    /// <summary>Nearest rank: the smallest value with at least <paramref name="p"/> of the values at or below it.</summary>
    static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? 0 : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    static double Round(double value) => Math.Round(value, 2);
}
