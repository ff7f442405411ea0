using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using AdapterSharp.Checkpoints;
using static TorchSharp.torch;

namespace AdapterSharp.Server;

/// <summary>What <c>adaptersharp bench soak</c> runs.</summary>
public sealed record SoakOptions
{
    public string Model { get; init; } = BuiltInModels.MiniLmL6.Id;
    public string Precision { get; init; } = "auto";
    public TimeSpan Duration { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Load before the memory baseline is taken; part of <see cref="Duration"/>.</summary>
    public TimeSpan Warmup { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>Clients sending well-formed requests, one after another.</summary>
    public int Clients { get; init; } = 64;

    /// <summary>Adapters served; the last two are unloaded and loaded again throughout.</summary>
    public int Adapters { get; init; } = 8;

    public int Seed { get; init; }

    /// <summary>Working-set growth from the end of the warm-up to the end that fails the run (0.10: 10%).</summary>
    public double MaxMemoryGrowth { get; init; } = 0.10;

    /// <summary>The server's options (it binds 127.0.0.1 on an ephemeral port, with the adapters' folder as its root).</summary>
    public ServerOptions Server { get; init; } = new();

    public void Validate()
    {
        if (Duration < TimeSpan.FromSeconds(10)) throw new ArgumentException("--duration must be at least 10 s");
        if (Warmup < TimeSpan.Zero || Warmup >= Duration) throw new ArgumentException("--warmup must be at least 0 and shorter than --duration");
        if (Clients < 1) throw new ArgumentException($"--clients must be at least 1, got {Clients}");
        if (Clients + Server.QueueCapacity + 64 + 16 > Server.MaxConnections)
            throw new ArgumentException($"--clients {Clients} with a burst of {Server.QueueCapacity + 64} needs more than the server's {Server.MaxConnections} connections");
        if (Adapters < 3) throw new ArgumentException($"--adapters must be at least 3 (two are unloaded and reloaded), got {Adapters}");
        if (MaxMemoryGrowth <= 0) throw new ArgumentException("--max-memory-growth must be positive");
        (Server with { Host = "127.0.0.1", Port = 0 }).Validate();
    }
}

/// <summary>One kind of traffic: what it was answered, against what it may be answered.</summary>
public sealed record SoakCategory
{
    public required string Description { get; init; }
    public required IReadOnlyList<string> Expected { get; init; }
    public long Sent { get; init; }
    public required IReadOnlyDictionary<string, long> Outcomes { get; init; }
    public long Unexpected { get; init; }

    /// <summary>The first unexpected outcome with its body or error, for the log.</summary>
    public string? FirstUnexpected { get; init; }
}

public sealed record SoakReport
{
    public string Workload { get; init; } = "soak";
    public required string Model { get; init; }
    public required string Device { get; init; }
    public int Adapters { get; init; }
    public int Clients { get; init; }
    public double DurationS { get; init; }
    public double WarmupS { get; init; }
    public bool Interrupted { get; init; }
    public required IReadOnlyDictionary<string, SoakCategory> Categories { get; init; }

    /// <summary>Well-formed requests answered neither with predictions nor with 503 (a timeout, a 5xx, a dropped connection).</summary>
    public long Lost { get; init; }

    public long WellFormedAnswered { get; init; }
    public double P50Ms { get; init; }
    public double P90Ms { get; init; }
    public double P99Ms { get; init; }
    public double MaxMs { get; init; }

    /// <summary>Working set and GC heap (after a full collection) at the end of the warm-up and at the end.</summary>
    public double BaselineWorkingSetMb { get; init; }
    public double EndWorkingSetMb { get; init; }
    public double WorkingSetGrowth { get; init; }
    public double BaselineManagedHeapMb { get; init; }
    public double EndManagedHeapMb { get; init; }

    /// <summary>Every 10 s: seconds since the start, working set, GC heap size (no collection forced).</summary>
    public IReadOnlyList<double[]> Memory { get; init; } = [];

    /// <summary>The server's own count of rejections by reason (<c>/metrics</c>).</summary>
    public IReadOnlyDictionary<string, long> ServerRejections { get; init; } = new Dictionary<string, long>();

    public long ServerClientGone { get; init; }
    public int HealthzStatus { get; init; }
    public bool Passed { get; init; }
    public IReadOnlyList<string> Failures { get; init; } = [];

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };
}

/// <summary>
/// <c>adaptersharp bench soak</c>: the real server on loopback under a bounded mixed load for a duration. Well-formed
/// requests over the adapters from N clients, and beside them a fault mix: malformed bodies, bodies over the size
/// limit, clients that hang up mid-request, bodies trickled slower than the server's minimum rate, sockets that send
/// nothing, unknown adapters, two adapters unloaded and loaded again all along (with clients asking for them), and
/// every 30 s a burst of requests above the queue's capacity. Each category's answers are checked against the ones it
/// may get; the run fails on any other answer, any well-formed request lost (answered neither with predictions nor
/// with 503), working-set growth beyond the limit after the warm-up, or a server that no longer answers /healthz.
/// Server and clients share the process (as in <c>bench serve</c>); the memory figures cover both.
/// </summary>
public static class SoakBenchmark
{
    sealed class Tally(string description, params string[] expected)
    {
        public readonly string Description = description;
        public readonly HashSet<string> Expected = [.. expected];
        public readonly ConcurrentDictionary<string, long> Outcomes = new(StringComparer.Ordinal);
        public long Sent, Unexpected;
        public string? FirstUnexpected;

        public void Add(string outcome, string? detail = null)
        {
            Interlocked.Increment(ref Sent);
            Outcomes.AddOrUpdate(outcome, 1, (_, n) => n + 1);
            if (Expected.Contains(outcome)) return;
            Interlocked.Increment(ref Unexpected);
            Interlocked.CompareExchange(ref FirstUnexpected, $"{outcome}: {detail}", null);
        }

        public SoakCategory Report() => new()
        {
            Description = Description,
            Expected = [.. Expected.Order(StringComparer.Ordinal)],
            Sent = Sent,
            Outcomes = new SortedDictionary<string, long>(Outcomes, StringComparer.Ordinal),
            Unexpected = Unexpected,
            FirstUnexpected = FirstUnexpected is { Length: > 300 } long_ ? long_[..300] + "…" : FirstUnexpected,
        };
    }

    public static async Task<SoakReport> RunAsync(SoakOptions options, Device device, Action<string>? log = null, CancellationToken interrupt = default)
    {
        options.Validate();
        var encoder = Pretrained.Load(options.Model, null, log);
        var root = Directory.CreateTempSubdirectory("adaptersharp-soak-").FullName;
        try
        {
            var dirs = ServeBenchmark.MakeAdapters(encoder, options.Adapters, root, options.Seed);
            var names = dirs.Select(d => Path.GetFileName(d)).ToArray();
            using var host = ModelHost.Open(encoder, device, options.Precision);
            foreach (var dir in dirs) host.Load(dir);
            var serverOptions = options.Server with { Host = "127.0.0.1", Port = 0, AdaptersRoot = root };
            await using var server = InferenceServer.Create(serverOptions, host);
            await server.StartAsync(CancellationToken.None);
            log?.Invoke($"soak: {names.Length} adapters at {server.Url}, {options.Clients} clients and the fault mix for " +
                        $"{options.Duration.TotalMinutes:0.#} min ({options.Warmup.TotalSeconds:0} s warm-up)");
            var report = await LoadAsync(server, serverOptions, options, names, log, interrupt);
            using (var stopping = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
                await server.StopAsync(stopping.Token);
            return report with
            {
                Model = encoder.Id,
                Device = device.type == TorchSharp.DeviceType.CUDA ? "cuda" : "cpu",
                Adapters = names.Length,
                Clients = options.Clients,
            };
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    static async Task<SoakReport> LoadAsync(InferenceServer server, ServerOptions serverOptions, SoakOptions options, string[] names,
        Action<string>? log, CancellationToken interrupt)
    {
        var stable = names[..^2];
        var churned = names[^2..];
        var tallies = new Dictionary<string, Tally>
        {
            ["well_formed"] = new("predict requests for adapters that stay loaded, one to four inputs, single and mixed", "200", "503"),
            ["churned_adapter"] = new("predict requests for the two adapters being unloaded and loaded again", "200", "404", "503"),
            ["malformed"] = new("bodies that are not a valid request: broken JSON, wrong types, unknown fields, lone surrogates, deep nesting, too many inputs",
                "400", "413", "503"),
            ["oversize"] = new("bodies over --max-body-bytes", "413"),
            ["disconnect"] = new("clients that hang up before the answer", "cancelled", "200", "503"),
            ["slow_body"] = new("bodies trickled at 2 bytes/s", "408", "closed"),
            ["idle_socket"] = new("sockets that connect and send nothing", "closed"),
            ["unknown_adapter"] = new("predict requests naming an adapter never loaded", "404", "503"),
            ["load_unload"] = new("DELETE and POST /v1/adapters of the churned adapters, all along", "201", "204", "404", "409"),
            ["large_bodies"] = new("every 20 s, 100 bodies of 0.9 × --max-body-bytes at once (one long text each)", "200", "503"),
            ["burst"] = new("every 30 s, --queue-capacity + 64 requests at once, each on its own connection", "200", "503"),
        };
        var texts = BuiltInTexts;
        var clock = Stopwatch.StartNew();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(interrupt);
        var latencies = new ConcurrentBag<double>();
        long warmupEndTicks = (long)(options.Warmup.TotalSeconds * Stopwatch.Frequency);

        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = options.Clients + 32, UseProxy = false };
        using var http = new HttpClient(handler) { BaseAddress = server.Url, Timeout = TimeSpan.FromSeconds(60) };
        // Above the queue's capacity, but within --max-connections with everything else (beyond it Kestrel resets connections).
        int burstSize = serverOptions.QueueCapacity + 64;
        using var burstHandler = new SocketsHttpHandler { MaxConnectionsPerServer = burstSize, UseProxy = false };
        using var burstHttp = new HttpClient(burstHandler) { BaseAddress = server.Url, Timeout = TimeSpan.FromSeconds(60) };

        async Task Loop(Func<Random, Task> body, int seed, TimeSpan pause)
        {
            var random = new Random(HashCode.Combine(options.Seed, seed));
            while (!stop.IsCancellationRequested)
            {
                await body(random);
                if (pause > TimeSpan.Zero) await Delay(pause, stop.Token);
            }
        }

        async Task WellFormed(Random random, string[] adapters, Tally tally)
        {
            int inputs = random.Next(1, 5);
            bool mixed = random.Next(2) == 0;
            var body = Request(random, texts, inputs, mixed ? null : adapters[random.Next(adapters.Length)], mixed ? adapters : null);
            long start = clock.ElapsedTicks;
            var (outcome, detail) = await Post(http, "/v1/predict", body, inputs, CancellationToken.None);
            if (outcome == "200" && start >= warmupEndTicks) latencies.Add((clock.ElapsedTicks - start) * 1e3 / Stopwatch.Frequency);
            tally.Add(outcome, detail);
        }

        var tasks = new List<Task>();
        for (int c = 0; c < options.Clients; c++)
            tasks.Add(Loop(r => WellFormed(r, stable, tallies["well_formed"]), c, TimeSpan.Zero));
        for (int c = 0; c < 2; c++)
            tasks.Add(Loop(r => WellFormed(r, churned, tallies["churned_adapter"]), 100 + c, TimeSpan.FromMilliseconds(20)));
        tasks.Add(Loop(async r =>
        {
            var (outcome, detail) = await Post(http, "/v1/predict", Malformed(r, stable), null, CancellationToken.None);
            tallies["malformed"].Add(outcome, detail);
        }, 200, TimeSpan.FromMilliseconds(50)));
        tasks.Add(Loop(async r =>
        {
            // Sent with Expect: 100-continue, as clients sending large bodies do: the server refuses on Content-Length alone.
            var body = Encoding.UTF8.GetBytes("{\"adapter\": \"" + stable[0] + "\", \"inputs\": [\"" + new string('x', (int)serverOptions.MaxBodyBytes) + "\"]}");
            using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = server.Url, Timeout = TimeSpan.FromSeconds(60) };
            client.DefaultRequestHeaders.ExpectContinue = true;
            var (outcome, detail) = await Post(client, "/v1/predict", body, null, CancellationToken.None);
            tallies["oversize"].Add(outcome, detail);
        }, 300, TimeSpan.FromMilliseconds(500)));
        tasks.Add(Loop(async r =>
        {
            using var hangUp = new CancellationTokenSource(TimeSpan.FromMilliseconds(r.Next(1, 200)));
            var (outcome, detail) = await Post(http, "/v1/predict", Request(r, texts, r.Next(1, 65), stable[r.Next(stable.Length)], null), null, hangUp.Token);
            tallies["disconnect"].Add(outcome, detail);
        }, 400, TimeSpan.FromMilliseconds(100)));
        for (int c = 0; c < 2; c++)
            tasks.Add(Loop(async _ => tallies["slow_body"].Add(await SlowBody(server.Url, stop.Token)), 500 + c, TimeSpan.FromSeconds(1)));
        tasks.Add(Loop(async _ => tallies["idle_socket"].Add(await IdleSocket(server.Url, serverOptions.IdleTimeout, stop.Token)), 600, TimeSpan.FromSeconds(1)));
        tasks.Add(Loop(async r =>
        {
            var (outcome, detail) = await Post(http, "/v1/predict", Request(r, texts, 1, $"never-loaded-{r.Next(100)}", null), 1, CancellationToken.None);
            tallies["unknown_adapter"].Add(outcome, detail);
        }, 700, TimeSpan.FromMilliseconds(100)));
        tasks.Add(Loop(async r =>
        {
            var name = churned[r.Next(churned.Length)];
            var (outcome, detail) = await Send(http, HttpMethod.Delete, $"/v1/adapters/{name}", null, CancellationToken.None);
            tallies["load_unload"].Add(outcome, detail);
            await Delay(TimeSpan.FromMilliseconds(r.Next(50, 500)), stop.Token);
            (outcome, detail) = await Post(http, "/v1/adapters", Encoding.UTF8.GetBytes($"{{\"path\": \"{name}\"}}"), null, CancellationToken.None);
            tallies["load_unload"].Add(outcome, detail);
        }, 800, TimeSpan.FromMilliseconds(200)));
        tasks.Add(Loop(async r =>
        {
            await Delay(TimeSpan.FromSeconds(20), stop.Token);
            if (stop.IsCancellationRequested) return;
            var text = string.Join(' ', Enumerable.Repeat("long", (int)(serverOptions.MaxBodyBytes * 0.9 / 5)));
            var body = Encoding.UTF8.GetBytes("{\"adapter\": \"" + stable[0] + "\", \"inputs\": [\"" + text + "\"]}");
            await Task.WhenAll(Enumerable.Range(0, 100).Select(async _ =>
            {
                var (outcome, detail) = await Post(burstHttp, "/v1/predict", body, 1, CancellationToken.None);
                tallies["large_bodies"].Add(outcome, detail);
            }));
        }, 950, TimeSpan.Zero));
        tasks.Add(Loop(async r =>
        {
            await Delay(TimeSpan.FromSeconds(30), stop.Token);
            if (stop.IsCancellationRequested) return;
            var burst = Enumerable.Range(0, burstSize).Select(async i =>
            {
                var (outcome, detail) = await Post(burstHttp, "/v1/predict", Request(r, texts, 1, stable[i % stable.Length], null), 1, CancellationToken.None);
                tallies["burst"].Add(outcome, detail);
            });
            await Task.WhenAll(burst);
        }, 900, TimeSpan.Zero));

        // Memory: a sample every 10 s; a full collection at the end of the warm-up and at the end, for the comparison.
        var memory = new List<double[]>();
        double Seconds() => clock.Elapsed.TotalSeconds;
        (double WorkingSet, double Heap) Collected()
        {
            // Retained memory, not what the allocators keep free for reuse: an aggressive collection decommits the
            // managed heap's free space, and the C allocator's free pages go back too (the server's worker does that
            // every 10 s by itself).
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            AdapterSharp.Native.HostMemory.Trim();
            return (Environment.WorkingSet / 1048576.0, GC.GetGCMemoryInfo().HeapSizeBytes / 1048576.0);
        }
        (double WorkingSet, double Heap) baseline = default;
        bool baselined = options.Warmup == TimeSpan.Zero;
        if (baselined) baseline = Collected();
        var end = options.Duration;
        while (clock.Elapsed < end && !interrupt.IsCancellationRequested)
        {
            await Delay(TimeSpan.FromSeconds(Math.Min(10, (end - clock.Elapsed).TotalSeconds)), interrupt);
            if (!baselined && clock.Elapsed >= options.Warmup)
            {
                baseline = Collected();
                baselined = true;
                log?.Invoke($"soak: warm-up over at {Seconds():0} s: working set {baseline.WorkingSet:0} MB, GC heap {baseline.Heap:0} MB");
            }
            memory.Add([Math.Round(Seconds(), 1), Math.Round(Environment.WorkingSet / 1048576.0, 1), Math.Round(GC.GetGCMemoryInfo().HeapSizeBytes / 1048576.0, 1)]);
            if (memory.Count % 6 == 0)
                log?.Invoke($"soak: {Seconds():0} s, working set {memory[^1][1]:0} MB, well-formed answered {tallies["well_formed"].Sent}, " +
                            $"unexpected {tallies.Values.Sum(t => t.Unexpected)}");
        }
        var duration = clock.Elapsed;
        stop.Cancel();
        var all = Task.WhenAll(tasks);
        if (await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(90), CancellationToken.None)) != all)
            log?.Invoke("soak: some clients did not finish within 90 s of the end");
        var final = Collected();
        if (!baselined) baseline = final;

        var (healthz, _) = await Send(http, HttpMethod.Get, "/healthz", null, CancellationToken.None);
        var sorted = latencies.Order().ToArray();
        var wellFormed = tallies["well_formed"];
        long lost = wellFormed.Unexpected;
        double growth = baseline.WorkingSet > 0 ? (final.WorkingSet - baseline.WorkingSet) / baseline.WorkingSet : 0;
        var failures = new List<string>();
        foreach (var (name, tally) in tallies)
            if (tally.Unexpected > 0) failures.Add($"{name}: {tally.Unexpected} unexpected answers (first: {tally.FirstUnexpected})");
        if (lost > 0) failures.Add($"{lost} well-formed requests lost");
        if (growth > options.MaxMemoryGrowth)
            failures.Add($"working set grew {growth:P1} after the warm-up ({baseline.WorkingSet:0} → {final.WorkingSet:0} MB), more than {options.MaxMemoryGrowth:P0}");
        if (healthz != "200") failures.Add($"/healthz answered {healthz} at the end");
        if (wellFormed.Outcomes.GetValueOrDefault("200") == 0) failures.Add("no well-formed request was answered");
        var metrics = server.Metrics;
        string[] reasons = ["busy", "queue_full", "invalid_request", "too_large", "not_found", "unknown_adapter", "client_gone", "model_failure",
            "internal", "timeout", "unavailable", "stopping"];
        return new SoakReport
        {
            Model = "",
            Device = "",
            DurationS = Math.Round(duration.TotalSeconds, 1),
            WarmupS = options.Warmup.TotalSeconds,
            Interrupted = interrupt.IsCancellationRequested,
            Categories = tallies.ToDictionary(t => t.Key, t => t.Value.Report()),
            Lost = lost,
            WellFormedAnswered = wellFormed.Outcomes.GetValueOrDefault("200"),
            P50Ms = Percentile(sorted, 0.50),
            P90Ms = Percentile(sorted, 0.90),
            P99Ms = Percentile(sorted, 0.99),
            MaxMs = sorted.Length == 0 ? 0 : Math.Round(sorted[^1], 1),
            BaselineWorkingSetMb = Math.Round(baseline.WorkingSet, 1),
            EndWorkingSetMb = Math.Round(final.WorkingSet, 1),
            WorkingSetGrowth = Math.Round(growth, 4),
            BaselineManagedHeapMb = Math.Round(baseline.Heap, 1),
            EndManagedHeapMb = Math.Round(final.Heap, 1),
            Memory = memory,
            ServerRejections = reasons.Select(r => (r, metrics.Rejected(r))).Where(p => p.Item2 > 0).ToDictionary(p => p.r, p => p.Item2),
            ServerClientGone = metrics.Dropped("client_gone"),
            HealthzStatus = int.TryParse(healthz, out int code) ? code : 0,
            Passed = failures.Count == 0 && !interrupt.IsCancellationRequested,
            Failures = failures,
        };
    }

    static readonly string[] BuiltInTexts =
    [
        "a gorgeous, witty, seductive movie.",
        "dull.",
        "it 's a charming and often affecting journey.",
        "too slow for a younger crowd, too shallow for an older one.",
        "the story is also as unoriginal as they come, already having been recycled more times than i 'd care to count.",
        "a well-made and often lovely depiction of the mysteries of friendship.",
        "nothing happens, and it happens to flat characters.",
        "one of the greatest family-oriented, fantasy-adventure movies ever.",
    ];

    /// <summary>A predict body: every input to <paramref name="adapter"/>, or each to one of <paramref name="mixed"/>.</summary>
    static byte[] Request(Random random, string[] texts, int inputs, string? adapter, string[]? mixed)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (adapter is not null) json.WriteString("adapter", adapter);
            json.WriteStartArray("inputs");
            for (int i = 0; i < inputs; i++)
            {
                var text = texts[random.Next(texts.Length)];
                if (mixed is null)
                {
                    json.WriteStringValue(text);
                    continue;
                }
                json.WriteStartObject();
                json.WriteString("adapter", mixed[random.Next(mixed.Length)]);
                json.WriteString("text", text);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    static byte[] Malformed(Random random, string[] adapters)
    {
        var adapter = adapters[random.Next(adapters.Length)];
        string body = random.Next(10) switch
        {
            0 => "{\"adapter\": \"" + adapter + "\", \"inputs\": [\"unterminated",
            1 => "{\"adapter\": 5, \"inputs\": [\"a\"]}",
            2 => "{\"adapter\": \"" + adapter + "\", \"inputs\": \"not a list\"}",
            3 => "{\"adapter\": \"" + adapter + "\", \"inputs\": [\"a\"], \"extra\": 1}",
            4 => "{\"adapter\": \"" + adapter + "\", \"inputs\": [\"a\\ud800b\"]}",
            5 => "{\"adapter\": \"" + adapter + "\", \"inputs\": " + new string('[', 64) + new string(']', 64) + "}",
            6 => "{\"adapter\": \"" + adapter + "\", \"inputs\": [" + string.Join(", ", Enumerable.Repeat("\"a\"", 300)) + "]}",
            7 => "{\"adapter\": \"" + adapter + "\", \"inputs\": []}",
            8 => "{\"adapter\": \"" + adapter + "\", \"adapter\": \"" + adapter + "\", \"inputs\": [\"a\"]}",
            _ => new string((char)random.Next(32, 127), random.Next(1, 200)),
        };
        var bytes = Encoding.UTF8.GetBytes(body);
        if (random.Next(20) == 0) bytes[random.Next(bytes.Length)] = 0xFF; // not UTF-8
        return bytes;
    }

    /// <summary>Posts <paramref name="body"/>; its outcome: the status code, or timeout, cancelled, connection, bad_body.</summary>
    static Task<(string Outcome, string? Detail)> Post(HttpClient http, string path, byte[] body, int? predictions, CancellationToken cancel) =>
        Send(http, HttpMethod.Post, path, body, cancel, predictions);

    static async Task<(string Outcome, string? Detail)> Send(HttpClient http, HttpMethod method, string path, byte[]? body,
        CancellationToken cancel, int? predictions = null)
    {
        try
        {
            using var request = new HttpRequestMessage(method, path);
            if (body is not null)
            {
                request.Content = new ByteArrayContent(body);
                request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            }
            using var response = await http.SendAsync(request, cancel);
            var text = await response.Content.ReadAsStringAsync(cancel);
            var status = ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (response.StatusCode == HttpStatusCode.OK && predictions is { } expected)
            {
                using var document = JsonDocument.Parse(text);
                if (!document.RootElement.TryGetProperty("predictions", out var list) || list.GetArrayLength() != expected)
                    return ("bad_body", text);
            }
            return (status, text);
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            return ("cancelled", null);
        }
        catch (TaskCanceledException e)
        {
            return ("timeout", e.Message);
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

    /// <summary>A request whose 1,000-byte body comes at 2 bytes a second: the server must give up on it.</summary>
    static async Task<string> SlowBody(Uri url, CancellationToken stop)
    {
        using var socket = new TcpClient();
        await socket.ConnectAsync(url.Host, url.Port, stop);
        var stream = socket.GetStream();
        var head = Encoding.ASCII.GetBytes($"POST /v1/predict HTTP/1.1\r\nHost: {url.Host}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n");
        try
        {
            await stream.WriteAsync(head, stop);
            var reading = ReadStatus(stream);
            for (int i = 0; i < 1000 && !reading.IsCompleted; i++)
            {
                await stream.WriteAsync("{"u8.ToArray(), CancellationToken.None);
                if (await Task.WhenAny(reading, Task.Delay(500, CancellationToken.None)) == reading) break;
            }
            return await reading;
        }
        catch (IOException)
        {
            return "closed";
        }
        catch (SocketException)
        {
            return "closed";
        }
    }

    /// <summary>A socket that connects and sends nothing: the server must close it after its idle timeout.</summary>
    static async Task<string> IdleSocket(Uri url, TimeSpan idleTimeout, CancellationToken stop)
    {
        using var socket = new TcpClient();
        await socket.ConnectAsync(url.Host, url.Port, stop);
        var reading = ReadStatus(socket.GetStream());
        var limit = Task.Delay(idleTimeout + TimeSpan.FromSeconds(30), CancellationToken.None);
        return await Task.WhenAny(reading, limit) == reading ? await reading : "still_open";
    }

    /// <summary>The status code of the response on <paramref name="stream"/>, or "closed" when the server closes it without one.</summary>
    static async Task<string> ReadStatus(NetworkStream stream)
    {
        var buffer = new byte[256];
        try
        {
            int read = await stream.ReadAsync(buffer);
            if (read == 0) return "closed";
            var line = Encoding.ASCII.GetString(buffer, 0, read);
            return line.StartsWith("HTTP/1.1 ", StringComparison.Ordinal) && line.Length >= 12 ? line[9..12] : "garbage";
        }
        catch (IOException)
        {
            return "closed";
        }
    }

    static async Task Delay(TimeSpan time, CancellationToken cancel)
    {
        if (time <= TimeSpan.Zero) return;
        try
        {
            await Task.Delay(time, cancel);
        }
        catch (OperationCanceledException)
        {
        }
    }

    static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? 0 : Math.Round(sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)], 1);
}
