using System.Text;
using System.Text.Json.Nodes;
using AdapterSharp.Checkpoints;
using AdapterSharp.Server;

namespace AdapterSharp.Tests.Server;

/// <summary>Requests and folders a hostile client sends: strings that are not Unicode, an adapter too long for the base, inputs the model fails on, clients that hang up.</summary>
[Collection(nameof(ServerCollection))]
public class HostileRequestTests
{
    static readonly ServerOptions WithRoot = new() { AdaptersRoot = ServerFiles.Root };

    [Theory]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [\"a\\ud800\"]}", "inputs[0]: not valid Unicode")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [[\"fine\", \"b\\udc00c\"]]}", "inputs[0][1]: not valid Unicode")]
    [InlineData("{\"inputs\": [{\"adapter\": \"sent\", \"text\": \"\\ud83d\"}]}", "inputs[0].text: not valid Unicode")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [\"ok\"], \"\\ud800\": 1}", "body: a name or string is not valid Unicode")]
    public async Task A_lone_surrogate_in_a_predict_body_is_400_at_its_place(string body, string message)
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"]);
        var (status, answer) = await server.SendAsync(HttpMethod.Post, "/v1/predict", body);
        Assert.Equal(400, status);
        Assert.StartsWith(message, answer!["error"]!.GetValue<string>());
    }

    [Fact]
    public async Task Bytes_that_are_not_utf8_in_a_predict_or_load_body_are_400()
    {
        await using var server = await RunningServer.StartAsync(WithRoot, load: ["sent"]);
        byte[] Raw(string before, string after) => [.. Encoding.UTF8.GetBytes(before), 0xFF, 0xFE, .. Encoding.UTF8.GetBytes(after)];
        var (status, answer) = await server.PostBytesAsync("/v1/predict", Raw("{\"adapter\": \"sent\", \"inputs\": [\"a", "b\"]}"));
        Assert.Equal(400, status);
        Assert.DoesNotContain("internal", answer!["error"]!.GetValue<string>());
        (status, answer) = await server.PostBytesAsync("/v1/adapters", Raw("{\"path\": \"se", "nt\"}"));
        Assert.Equal(400, status);
        (status, answer) = await server.SendAsync(HttpMethod.Post, "/v1/adapters", "{\"path\": \"sent\", \"name\": \"x\\ud800\"}");
        Assert.Equal(400, status);
        Assert.StartsWith("body: a name or string is not valid Unicode", answer!["error"]!.GetValue<string>());
    }

    [Fact]
    public async Task An_adapter_longer_than_the_base_positions_is_refused_at_load()
    {
        var dir = Path.Combine(ServerFiles.Root, "too-long");
        var source = AdapterFiles.ReadManifest(ServerFiles.AdapterDir("sent"));
        AdapterFiles.Save(dir, source with { Name = "too-long", MaxLength = 600 },
            Safetensors.Read(Path.Combine(ServerFiles.AdapterDir("sent"), AdapterFiles.WeightsFile)));
        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        var (status, answer) = await server.PostAsync("/v1/adapters", new { path = "too-long" });
        Assert.Equal(400, status);
        Assert.EndsWith("adapter_config.json: max_length 600 exceeds the base model's 64 positions", answer!["error"]!.GetValue<string>());
        Assert.Empty(server.Host.Adapters);
    }

    /// <summary>Fails any batch with an input "boom" in it, with a message full of internals.</summary>
    sealed class Boom(IBatchRunner inner) : IBatchRunner
    {
        public IReadOnlyList<InputResult> Run(IReadOnlyList<BatchInput> inputs) => inputs.Any(i => i.Text == "boom")
            ? throw new InvalidOperationException("index out of range\nframe #0: at::native::embedding (libtorch_cpu.so)")
            : inner.Run(inputs);
    }

    [Fact]
    public async Task A_request_the_model_fails_on_does_not_fail_the_others_of_its_batch_and_gets_no_internals()
    {
        GatedRunner? gate = null;
        await using var server = await RunningServer.StartAsync(load: ["sent"], wrap: inner => gate = new GatedRunner(new Boom(inner)));
        var holding = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("first") });
        await gate!.WaitUntilHeldAsync();
        // These two queue behind the held batch and run together after it.
        var failing = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("boom") });
        var fine = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("good w1", "bad") });
        await WaitForQueue(server, 2);
        gate.Open();
        Assert.Equal(200, (await holding).Status);
        var (status, body) = await fine;
        Assert.Equal(200, status);
        Assert.Equal(2, body!["predictions"]!.AsArray().Count);
        (status, body) = await failing;
        Assert.Equal(500, status);
        Assert.Equal("the model failed on this request's inputs; the server log has the details", body!["error"]!.GetValue<string>());
        Assert.Equal(1, server.Server.Metrics.Dropped("model_failure"));
    }

    [Fact]
    public async Task A_request_whose_client_hung_up_is_dropped_before_its_forward_pass()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"], gated: true);
        var holding = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("first") });
        await server.Gate!.WaitUntilHeldAsync();
        using (var hangUp = new CancellationTokenSource())
        {
            var abandoned = server.Client.PostAsync("/v1/predict",
                new StringContent("{\"adapter\": \"sent\", \"inputs\": [\"never run\", \"nor this\", \"nor that\"]}", Encoding.UTF8, "application/json"), hangUp.Token);
            await WaitForQueue(server, 1);
            await hangUp.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned);
        }
        await Task.Delay(200); // Kestrel notices the closed connection
        server.Gate.Open();
        Assert.Equal(200, (await holding).Status);
        for (int i = 0; i < 100 && server.Server.Metrics.Dropped("client_gone") == 0; i++) await Task.Delay(50);
        Assert.Equal(1, server.Server.Metrics.Dropped("client_gone"));
        lock (server.Gate.BatchSizes) Assert.Equal([1], server.Gate.BatchSizes); // only the held request ran
    }

    [Fact]
    public async Task A_request_running_in_pieces_whose_client_hung_up_stops_after_its_current_piece()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { MaxBatch = 4, MaxWaitMs = 0 }, load: ["sent"], gated: true);
        var inputs = string.Join(", ", Enumerable.Range(0, 11).Select(i => $"\"text {i}\""));
        using (var hangUp = new CancellationTokenSource())
        {
            var abandoned = server.Client.PostAsync("/v1/predict",
                new StringContent("{\"adapter\": \"sent\", \"inputs\": [" + inputs + "]}", Encoding.UTF8, "application/json"), hangUp.Token);
            await server.Gate!.WaitUntilHeldAsync(); // its first 4 inputs are running
            await hangUp.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned);
        }
        await Task.Delay(200); // Kestrel notices the closed connection
        server.Gate.Open();
        for (int i = 0; i < 100 && server.Server.Metrics.Dropped("client_gone") == 0; i++) await Task.Delay(50);
        Assert.Equal(1, server.Server.Metrics.Dropped("client_gone"));
        Assert.Equal(200, (await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("next") })).Status);
        lock (server.Gate.BatchSizes) Assert.Equal([4, 1], server.Gate.BatchSizes); // its other 7 inputs never ran
    }

    [Fact]
    public async Task A_body_nested_deeper_than_any_request_is_400()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"]);
        var deep = "{\"adapter\": \"sent\", \"inputs\": " + new string('[', 40) + new string(']', 40) + "}";
        var (status, answer) = await server.SendAsync(HttpMethod.Post, "/v1/predict", deep);
        Assert.Equal(400, status);
        Assert.Contains("depth", answer!["error"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_name_given_twice_in_a_body_is_400_not_last_wins()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"]);
        var (status, answer) = await server.SendAsync(HttpMethod.Post, "/v1/predict",
            "{\"adapter\": \"sent\", \"inputs\": [\"ok\"], \"adapter\": \"other\"}");
        Assert.Equal(400, status);
        Assert.Contains("Duplicate property 'adapter'", answer!["error"]!.GetValue<string>());
    }

    [Fact]
    public async Task Bodies_beyond_the_inflight_budget_are_503_and_the_budget_is_given_back()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { MaxBodyBytes = 4096, MaxInflightBytes = 8192 }, load: ["sent"], gated: true);
        // A 3,000-byte body: two fit in 8 KiB, a third does not.
        string Body(string text) => "{\"adapter\": \"sent\", \"inputs\": [\"" + text + "\"]}" + new string(' ', 3000 - 35 - text.Length);
        Assert.Equal(3000, Encoding.UTF8.GetByteCount(Body("first")));
        var first = server.SendAsync(HttpMethod.Post, "/v1/predict", Body("first"));
        await server.Gate!.WaitUntilHeldAsync();
        var second = server.SendAsync(HttpMethod.Post, "/v1/predict", Body("secnd"));
        await PredictTests.WaitForQueueAsync(server, depth: 1);

        var (status, answer) = await server.SendAsync(HttpMethod.Post, "/v1/predict", Body("third"));
        Assert.Equal(503, status);
        Assert.Contains("--max-inflight-bytes", answer!["error"]!.GetValue<string>());
        var metrics = await server.Client.GetStringAsync("/metrics");
        Assert.Contains("adaptersharp_inflight_body_bytes 6000\n", metrics);
        Assert.Contains("adaptersharp_requests_rejected_total{reason=\"busy\"} 1\n", metrics);
        // A body that declares more than --max-body-bytes can never fit: 413 even while the budget is full, not a 503
        // that invites a retry.
        var (oversize, oversizeAnswer) = await server.SendAsync(HttpMethod.Post, "/v1/predict", Body("big") + new string(' ', 2000));
        Assert.Equal(413, oversize);
        Assert.Contains("--max-body-bytes", oversizeAnswer!["error"]!.GetValue<string>());

        server.Gate.Open();
        Assert.Equal(200, (await first).Status);
        Assert.Equal(200, (await second).Status);
        Assert.Equal(200, (await server.SendAsync(HttpMethod.Post, "/v1/predict", Body("again"))).Status);
        Assert.Contains("adaptersharp_inflight_body_bytes 0\n", await server.Client.GetStringAsync("/metrics"));
    }

    [Fact]
    public async Task Metrics_count_every_rejection_by_reason()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"]);
        Assert.Equal(400, (await server.SendAsync(HttpMethod.Post, "/v1/predict", "{not json")).Status);
        Assert.Equal(404, (await server.SendAsync(HttpMethod.Post, "/v1/predict", "{\"adapter\": \"nope\", \"inputs\": [\"a\"]}")).Status);
        Assert.Equal(404, (await server.SendAsync(HttpMethod.Get, "/v1/nothing-here", null)).Status);
        Assert.Equal(403, (await server.SendAsync(HttpMethod.Post, "/v1/adapters", "{\"path\": \"sent\"}")).Status);
        var metrics = await server.Client.GetStringAsync("/metrics");
        Assert.Contains("adaptersharp_requests_rejected_total{reason=\"invalid_request\"} 1\n", metrics);
        Assert.Contains("adaptersharp_requests_rejected_total{reason=\"unknown_adapter\"} 1\n", metrics);
        Assert.Contains("adaptersharp_requests_rejected_total{reason=\"not_found\"} 1\n", metrics);
        Assert.Contains("adaptersharp_requests_rejected_total{reason=\"forbidden\"} 1\n", metrics);
    }

    [Fact]
    public async Task Idle_and_trickling_connections_are_closed()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { IdleTimeout = TimeSpan.FromSeconds(1) }, load: ["sent"]);
        // A socket that never sends a request.
        using var idle = new System.Net.Sockets.TcpClient();
        await idle.ConnectAsync(server.Server.Url.Host, server.Server.Url.Port);
        var buffer = new byte[256];
        using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        int read = await idle.GetStream().ReadAsync(buffer, wait.Token);
        Assert.Equal(0, read); // closed by the server, well before the test's 20 s

        // A body promised at 4 KB and sent a byte a second: past the 5 s grace it is below 1 KiB/s.
        using var slow = new System.Net.Sockets.TcpClient();
        await slow.ConnectAsync(server.Server.Url.Host, server.Server.Url.Port);
        var stream = slow.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes("POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"adapter\": \"sent\", \"inputs\": [\"a"));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var closed = false;
        try
        {
            while (clock.Elapsed < TimeSpan.FromSeconds(20))
            {
                await stream.WriteAsync("a"u8.ToArray()); // still inside a string: the body stays valid, only slow
                await Task.Delay(1000);
                if (slow.Client.Poll(0, System.Net.Sockets.SelectMode.SelectRead) && slow.Available == 0 || await Answered(stream))
                {
                    closed = true;
                    break;
                }
            }
        }
        catch (IOException)
        {
            closed = true;
        }
        Assert.True(closed, "the trickling connection was still open after 20 s");
    }

    /// <summary>Whether the server has sent something (an error response) on <paramref name="stream"/>.</summary>
    static async Task<bool> Answered(System.Net.Sockets.NetworkStream stream)
    {
        if (!stream.DataAvailable) return false;
        var buffer = new byte[512];
        return await stream.ReadAsync(buffer) >= 0;
    }

    static async Task WaitForQueue(RunningServer server, int depth)
    {
        for (int i = 0; i < 200; i++)
        {
            var (_, metrics) = await server.SendRawGetAsync("/metrics");
            if (metrics.Contains($"adaptersharp_queue_depth {depth}", StringComparison.Ordinal)) return;
            await Task.Delay(20);
        }
        throw new TimeoutException($"the queue never held {depth} requests");
    }
}
