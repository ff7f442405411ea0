using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using AdapterSharp.Server;
using AdapterSharp.Tests.Cli;

namespace AdapterSharp.Tests.Server;

/// <summary>Authentication, binding rules, metrics and shutdown.</summary>
[Collection(nameof(ServerCollection))]
public class ServiceTests
{
    [Fact]
    public async Task With_an_api_key_requests_without_it_or_with_another_are_401_and_healthz_stays_open()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { ApiKey = "s3cret" }, load: ["sent"]);
        var request = new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("good") };
        Assert.Equal(200, (await server.PostAsync("/v1/predict", request.DeepClone())).Status);

        server.Client.DefaultRequestHeaders.Authorization = null;
        using var missing = await server.Client.PostAsync("/v1/predict", new StringContent(request.ToJsonString()));
        Assert.Equal(401, (int)missing.StatusCode);
        Assert.Equal("Bearer", missing.Headers.WwwAuthenticate.Single().Scheme);
        Assert.Equal(401, (await server.SendAsync(HttpMethod.Get, "/v1/adapters")).Status);
        Assert.Equal(401, (await server.SendAsync(HttpMethod.Get, "/metrics")).Status);

        server.Client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "s3cret-not");
        var (status, body) = await server.PostAsync("/v1/predict", request.DeepClone());
        Assert.Equal(401, status);
        Assert.Contains("API key", body!["error"]!.GetValue<string>());
        server.Client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", "s3cret");
        Assert.Equal(401, (await server.SendAsync(HttpMethod.Get, "/v1/adapters")).Status);

        Assert.Equal(200, (await server.SendAsync(HttpMethod.Get, "/healthz")).Status);
    }

    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("::")]
    [InlineData("192.168.1.10")]
    public void A_non_loopback_host_without_an_api_key_is_refused(string host)
    {
        var error = Assert.Throws<ArgumentException>(() => new ServerOptions { Host = host }.Validate());
        Assert.Contains("--api-key-file", error.Message);
        new ServerOptions { Host = host, ApiKey = "k" }.Validate();
        new ServerOptions { Host = "localhost" }.Validate();
        new ServerOptions { Host = "::1" }.Validate();
    }

    [Fact]
    public async Task Metrics_name_requests_latency_batch_sizes_queue_depth_and_adapters()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent", "topic"]);
        Assert.Equal(200, (await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("a", "b", "c") })).Status);
        Assert.Equal(404, (await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "x", ["inputs"] = new JsonArray("a") })).Status);

        using var response = await server.Client.GetAsync("/metrics");
        Assert.Equal("text/plain", response.Content.Headers.ContentType!.MediaType);
        var text = await response.Content.ReadAsStringAsync();
        Assert.Contains("# TYPE adaptersharp_http_requests_total counter", text);
        Assert.Contains("adaptersharp_http_requests_total{route=\"/v1/predict\",method=\"POST\",status=\"200\"} 1", text);
        Assert.Contains("adaptersharp_http_requests_total{route=\"/v1/predict\",method=\"POST\",status=\"404\"} 1", text);
        Assert.Contains("# TYPE adaptersharp_http_request_duration_seconds histogram", text);
        Assert.Contains("adaptersharp_http_request_duration_seconds_count{route=\"/v1/predict\"} 2", text);
        Assert.Contains("# TYPE adaptersharp_batch_size histogram", text);
        Assert.Contains("adaptersharp_batch_size_bucket{le=\"4\"} 1", text);
        Assert.Contains("adaptersharp_batch_size_sum 3", text);
        Assert.Contains("# TYPE adaptersharp_queue_depth gauge", text);
        Assert.Contains("adaptersharp_queue_depth 0", text);
        Assert.Contains("# TYPE adaptersharp_adapters_loaded gauge", text);
        Assert.Contains("adaptersharp_adapters_loaded 2", text);
    }

    [Fact]
    public async Task Stopping_answers_the_requests_in_flight_and_queued_before_it_ends()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"], gated: true);
        var request = new JsonObject { ["adapter"] = "sent", ["inputs"] = ServerFiles.InputsJson(ServerFiles.Texts) };
        var inFlight = server.PostAsync("/v1/predict", request.DeepClone());
        await server.Gate!.WaitUntilHeldAsync();
        var queued = server.PostAsync("/v1/predict", request.DeepClone());
        await PredictTests.WaitForQueueAsync(server, depth: 1);

        var stop = server.Server.StopAsync();
        Assert.True(server.Server.Stopping.IsCancellationRequested);
        await Task.Delay(100);
        Assert.False(stop.IsCompleted, "the server stopped before answering what it held");
        server.Gate.Open();

        var expected = ServerFiles.Expected("sent", ServerFiles.Texts);
        foreach (var task in new[] { inFlight, queued })
        {
            var (status, body) = await task;
            Assert.Equal(200, status);
            for (int i = 0; i < expected.Length; i++) ServerFiles.AssertSame(expected[i], body!["predictions"]![i]!, $"inputs[{i}]");
        }
        await stop.WaitAsync(TimeSpan.FromSeconds(20));
    }

    [Fact]
    public void Serve_refuses_a_non_loopback_host_without_an_api_key_in_one_line()
    {
        var result = CliRunner.Run("serve", "--host", "0.0.0.0", "--port", "0");
        CliAssert.OneLineError(result, "--host 0.0.0.0", "--api-key-file");
    }

    [Fact]
    public async Task Serve_prints_the_bound_url_answers_and_exits_cleanly_on_sigterm()
    {
        var keyFile = Path.Combine(Directory.CreateTempSubdirectory("adaptersharp-key-").FullName, "key");
        File.WriteAllText(keyFile, "k3y\n");
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } dotnet ? dotnet : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[]
                 {
                     Path.Combine(AppContext.BaseDirectory, "AdapterSharp.Cli.dll"), "serve", "--model", ServerFiles.ModelDir,
                     "--adapters", ServerFiles.AdapterDir("sent"), ServerFiles.AdapterDir("score"), "--adapters-root", ServerFiles.Root,
                     "--port", "0", "--api-key-file", keyFile,
                 })
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            var line = await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.True(line is not null, $"no output; stderr: {(process.HasExited ? await stderr : "")}");
            Assert.Matches(@"^listening on http://127\.0\.0\.1:\d+$", line);
            using var client = new HttpClient { BaseAddress = new Uri(line!["listening on ".Length..]), Timeout = TimeSpan.FromSeconds(30) };
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "k3y");
            var health = JsonNode.Parse(await client.GetStringAsync("/healthz"))!;
            Assert.Equal(2, health["adapters"]!.GetValue<int>());
            using var response = await client.PostAsync("/v1/predict", new StringContent("{\"adapter\": \"score\", \"inputs\": [\"good\"]}"));
            Assert.Equal(200, (int)response.StatusCode);
            Assert.NotNull(JsonNode.Parse(await response.Content.ReadAsStringAsync())!["predictions"]![0]!["score"]);
        }
        finally
        {
            if (!process.HasExited) Process.Start("kill", ["-TERM", process.Id.ToString()])!.WaitForExit();
            using var exit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            try
            {
                await process.WaitForExitAsync(exit.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill();
            }
        }
        Assert.Equal(0, process.ExitCode);
        Assert.Contains("loaded adapter 'sent' (houlsby, tiny)", await stderr);
    }
}
