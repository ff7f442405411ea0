using System.Text.Json.Nodes;
using AdapterSharp.Server;

namespace AdapterSharp.Tests.Server;

[Collection(nameof(ServerCollection))]
public class AdapterManagementTests
{
    static readonly ServerOptions WithRoot = new() { AdaptersRoot = ServerFiles.Root };

    [Fact]
    public async Task Listing_adapters_gives_name_method_task_labels_parameters_and_base()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent", "score"]);
        var (status, body) = await server.SendAsync(HttpMethod.Get, "/v1/adapters");
        Assert.Equal(200, status);
        var adapters = body!["adapters"]!.AsArray();
        Assert.Equal(["score", "sent"], adapters.Select(a => a!["name"]!.GetValue<string>()));
        var sent = adapters[1]!;
        Assert.Equal("houlsby", sent["method"]!.GetValue<string>());
        Assert.Equal("tiny", sent["task"]!.GetValue<string>());
        Assert.Equal("classification", sent["kind"]!.GetValue<string>());
        Assert.Equal(["neg", "pos"], sent["labels"]!.AsArray().Select(l => l!.GetValue<string>()));
        Assert.True(sent["trainable_parameters"]!.GetValue<long>() > 0);
        Assert.Equal(server.Host.Identity.Id, sent["base_model"]!.GetValue<string>());
        Assert.Null(adapters[0]!["labels"]);
        Assert.Equal("regression", adapters[0]!["kind"]!.GetValue<string>());
        var (one, oneBody) = await server.SendAsync(HttpMethod.Get, "/v1/adapters/sent");
        Assert.Equal(200, one);
        Assert.Equal(sent.ToJsonString(), oneBody!.ToJsonString());
        Assert.Equal(404, (await server.SendAsync(HttpMethod.Get, "/v1/adapters/nope")).Status);

        var (health, healthBody) = await server.SendAsync(HttpMethod.Get, "/healthz");
        Assert.Equal(200, health);
        Assert.Equal("ok", healthBody!["status"]!.GetValue<string>());
        Assert.Equal(2, healthBody["adapters"]!.GetValue<int>());
    }

    [Fact]
    public async Task Loading_from_the_root_serves_the_adapter_and_a_second_load_under_the_same_name_is_409()
    {
        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = "topic" });
        Assert.Equal(201, status);
        Assert.Equal("topic", body!["name"]!.GetValue<string>());

        var (predicted, answer) = await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "topic", ["inputs"] = ServerFiles.InputsJson(ServerFiles.Texts) });
        Assert.Equal(200, predicted);
        var expected = ServerFiles.Expected("topic", ServerFiles.Texts);
        for (int i = 0; i < expected.Length; i++) ServerFiles.AssertSame(expected[i], answer!["predictions"]![i]!, $"inputs[{i}]");

        (status, body) = await server.PostAsync("/v1/adapters", new { path = Path.Combine(ServerFiles.Root, "topic") });
        Assert.Equal(409, status);
        Assert.Contains("already loaded", body!["error"]!.GetValue<string>());

        // The same folder under another name is another adapter.
        (status, _) = await server.PostAsync("/v1/adapters", new { name = "topic2", path = "topic" });
        Assert.Equal(201, status);
        Assert.Equal(2, server.Host.Adapters.Count);
    }

    [Fact]
    public async Task An_unknown_or_invalid_folder_is_400_with_the_loaders_message()
    {
        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = "does-not-exist" });
        Assert.Equal(400, status);
        Assert.EndsWith("does-not-exist: adapter folder not found", body!["error"]!.GetValue<string>());

        var broken = Directory.CreateDirectory(Path.Combine(ServerFiles.Root, $"broken-{Guid.NewGuid():N}")).FullName;
        File.WriteAllText(Path.Combine(broken, "adapter_config.json"), "{ not json");
        (status, body) = await server.PostAsync("/v1/adapters", new { path = Path.GetFileName(broken) });
        Assert.Equal(400, status);
        Assert.Contains("invalid adapter config", body!["error"]!.GetValue<string>());

        (status, body) = await server.PostAsync("/v1/adapters", new { path = "sent", name = "no/slashes" });
        Assert.Equal(400, status);
        Assert.Contains("must be 1-64 letters", body!["error"]!.GetValue<string>());

        (status, body) = await server.PostAsync("/v1/adapters", new { path = 3 });
        Assert.Equal(400, status);
        Assert.Equal("path: expected a string", body!["error"]!.GetValue<string>());
        Assert.Empty(server.Host.Adapters);
    }

    [Theory]
    [InlineData("../x")]
    [InlineData("sent/../../x")]
    [InlineData("OUTSIDE")] // an absolute path to a valid adapter outside the root
    [InlineData("/etc")]
    public async Task Paths_that_leave_the_root_are_403(string path)
    {
        if (path == "OUTSIDE") path = Path.Combine(ServerFiles.Outside, "sent");
        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        var (status, body) = await server.PostAsync("/v1/adapters", new { name = "x", path });
        Assert.Equal(403, status);
        Assert.Contains("outside the adapters root", body!["error"]!.GetValue<string>());
        Assert.Empty(server.Host.Adapters);
    }

    [Fact]
    public async Task A_symlink_inside_the_root_is_followed_only_while_it_stays_inside()
    {
        var id = Guid.NewGuid().ToString("N");
        var escape = Path.Combine(ServerFiles.Root, $"escape-{id}");
        Directory.CreateSymbolicLink(escape, Path.Combine(ServerFiles.Outside, "sent"));
        var inside = Path.Combine(ServerFiles.Root, $"alias-{id}");
        Directory.CreateSymbolicLink(inside, "sent"); // relative, to root/sent
        // A real folder inside the root whose weights file links outside.
        var mixed = Directory.CreateDirectory(Path.Combine(ServerFiles.Root, $"mixed-{id}")).FullName;
        File.Copy(Path.Combine(ServerFiles.Root, "sent", "adapter_config.json"), Path.Combine(mixed, "adapter_config.json"));
        File.CreateSymbolicLink(Path.Combine(mixed, "adapter_model.safetensors"), Path.Combine(ServerFiles.Outside, "sent", "adapter_model.safetensors"));

        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        var (status, body) = await server.PostAsync("/v1/adapters", new { name = "a", path = Path.GetFileName(escape) });
        Assert.Equal(403, status);
        Assert.Contains("outside the adapters root", body!["error"]!.GetValue<string>());

        (status, body) = await server.PostAsync("/v1/adapters", new { name = "b", path = Path.GetFileName(mixed) });
        Assert.Equal(403, status);
        Assert.Contains("adapter_model.safetensors links outside the adapters root", body!["error"]!.GetValue<string>());

        (status, _) = await server.PostAsync("/v1/adapters", new { name = "c", path = Path.GetFileName(inside) });
        Assert.Equal(201, status);
        Assert.Equal(["c"], server.Host.Adapters.Keys);
    }

    [Fact]
    public async Task Without_an_adapters_root_run_time_loading_is_403()
    {
        await using var server = await RunningServer.StartAsync(load: []);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = ServerFiles.AdapterDir("sent") });
        Assert.Equal(403, status);
        Assert.Contains("--adapters-root", body!["error"]!.GetValue<string>());
    }

    [Fact]
    public async Task Unloading_is_204_then_the_adapter_is_404_and_unknown_names_are_404()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent", "topic"]);
        var (status, body) = await server.SendAsync(HttpMethod.Delete, "/v1/adapters/sent");
        Assert.Equal(204, status);
        Assert.Null(body);
        Assert.Equal(["topic"], server.Host.Adapters.Keys);
        Assert.Equal(404, (await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("a") })).Status);
        Assert.Equal(404, (await server.SendAsync(HttpMethod.Get, "/v1/adapters/sent")).Status);
        (status, body) = await server.SendAsync(HttpMethod.Delete, "/v1/adapters/sent");
        Assert.Equal(404, status);
        Assert.Equal("no adapter named 'sent'", body!["error"]!.GetValue<string>());
        Assert.Equal(200, (await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "topic", ["inputs"] = new JsonArray("a") })).Status);
    }

    [Fact]
    public async Task Unloading_and_reloading_while_requests_flow_gives_each_request_all_its_results_or_404()
    {
        await using var server = await RunningServer.StartAsync(WithRoot with { MaxBatch = 8, MaxWaitMs = 2 }, load: ["sent", "topic"]);
        var expectedSent = ServerFiles.Expected("sent", ServerFiles.Texts);
        var expectedTopic = ServerFiles.Expected("topic", ServerFiles.Texts);
        var mixed = new JsonObject
        {
            ["inputs"] = new JsonArray([.. ServerFiles.Texts.Select((t, i) => (JsonNode)new JsonObject
            {
                ["adapter"] = i % 2 == 0 ? "sent" : "topic", ["text"] = t.Text, ["text_pair"] = t.Pair,
            })]),
        };
        int ok = 0, missing = 0;
        async Task Client(int seed)
        {
            for (int n = 0; n < 12; n++)
            {
                bool isMixed = (n + seed) % 2 == 0;
                var request = isMixed ? mixed.DeepClone() : new JsonObject { ["adapter"] = "sent", ["inputs"] = ServerFiles.InputsJson(ServerFiles.Texts) };
                var (status, body) = await server.PostAsync("/v1/predict", request);
                if (status == 404)
                {
                    Interlocked.Increment(ref missing);
                    await Task.Delay(10); // a 404 is instant: without a pause the clients would finish while it lasts
                    continue;
                }
                Assert.Equal(200, status);
                var predictions = body!["predictions"]!.AsArray();
                Assert.Equal(ServerFiles.Texts.Length, predictions.Count);
                for (int i = 0; i < predictions.Count; i++)
                    ServerFiles.AssertSame(isMixed && i % 2 == 1 ? expectedTopic[i] : expectedSent[i], predictions[i]!, $"inputs[{i}]");
                Interlocked.Increment(ref ok);
            }
        }
        var clients = Task.WhenAll(Client(0), Client(1), Client(2));
        for (int n = 0; n < 100 && !clients.IsCompleted; n++)
        {
            Assert.Equal(204, (await server.SendAsync(HttpMethod.Delete, "/v1/adapters/sent")).Status);
            await Task.Delay(10);
            Assert.Equal(201, (await server.PostAsync("/v1/adapters", new { path = "sent" })).Status);
            await Task.Delay(10);
        }
        await clients;
        Assert.Equal(36, ok + missing);
        Assert.True(ok > 0, "no request succeeded");
        Assert.True(server.Host.Adapters.ContainsKey("sent"));
    }
    [Fact]
    public async Task A_request_queued_before_an_unload_is_answered_in_full_and_one_queued_after_it_is_404()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"], gated: true);
        var request = new JsonObject { ["adapter"] = "sent", ["inputs"] = ServerFiles.InputsJson(ServerFiles.Texts) };
        var held = server.PostAsync("/v1/predict", request.DeepClone());
        await server.Gate!.WaitUntilHeldAsync();
        var before = server.PostAsync("/v1/predict", request.DeepClone());
        await PredictTests.WaitForQueueAsync(server, depth: 1);
        var unload = server.SendAsync(HttpMethod.Delete, "/v1/adapters/sent");
        await PredictTests.WaitForQueueAsync(server, depth: 2);
        var after = server.PostAsync("/v1/predict", request.DeepClone()); // the adapter is still listed: it queues
        await PredictTests.WaitForQueueAsync(server, depth: 3);
        server.Gate.Open();

        var expected = ServerFiles.Expected("sent", ServerFiles.Texts);
        foreach (var task in new[] { held, before })
        {
            var (status, body) = await task;
            Assert.Equal(200, status);
            for (int i = 0; i < expected.Length; i++) ServerFiles.AssertSame(expected[i], body!["predictions"]![i]!, $"inputs[{i}]");
        }
        Assert.Equal(204, (await unload).Status);
        Assert.Equal(404, (await after).Status);
    }
}
