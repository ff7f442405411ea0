using System.Text.Json.Nodes;
using AdapterSharp.Server;

namespace AdapterSharp.Tests.Server;

[Collection(nameof(ServerCollection))]
public class PredictTests
{
    [Fact]
    public async Task A_single_adapter_request_answers_what_Trainer_Predict_gives()
    {
        await using var server = await RunningServer.StartAsync();
        var (status, body) = await server.PostAsync("/v1/predict",
            new JsonObject { ["adapter"] = "sent", ["inputs"] = ServerFiles.InputsJson(ServerFiles.Texts) });

        Assert.Equal(200, status);
        Assert.Equal("sent", body!["adapter"]!.GetValue<string>());
        var predictions = body["predictions"]!.AsArray();
        var expected = ServerFiles.Expected("sent", ServerFiles.Texts);
        Assert.Equal(expected.Length, predictions.Count);
        for (int i = 0; i < expected.Length; i++)
        {
            ServerFiles.AssertSame(expected[i], predictions[i]!, $"inputs[{i}]");
            Assert.Null(predictions[i]!["adapter"]);
        }
    }

    [Fact]
    public async Task A_regression_adapter_answers_a_score()
    {
        await using var server = await RunningServer.StartAsync(load: ["score"]);
        var (status, body) = await server.PostAsync("/v1/predict",
            new JsonObject { ["adapter"] = "score", ["inputs"] = ServerFiles.InputsJson(ServerFiles.Texts) });

        Assert.Equal(200, status);
        var expected = ServerFiles.Expected("score", ServerFiles.Texts);
        var predictions = body!["predictions"]!.AsArray();
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Null(predictions[i]!["label"]);
            ServerFiles.AssertSame(expected[i], predictions[i]!, $"inputs[{i}]");
        }
    }

    [Fact]
    public async Task The_per_input_form_mixes_adapters_and_names_each_predictions_adapter()
    {
        await using var server = await RunningServer.StartAsync();
        string[] adapters = ["sent", "topic", "score", "topic", "sent", "score"];
        var inputs = new JsonArray();
        for (int i = 0; i < adapters.Length; i++)
        {
            var input = new JsonObject { ["adapter"] = adapters[i], ["text"] = ServerFiles.Texts[i].Text };
            if (ServerFiles.Texts[i].Pair is { } pair) input["text_pair"] = pair;
            inputs.Add(input);
        }
        var (status, body) = await server.PostAsync("/v1/predict", new JsonObject { ["inputs"] = inputs });

        Assert.Equal(200, status);
        Assert.Null(body!["adapter"]);
        var predictions = body["predictions"]!.AsArray();
        for (int i = 0; i < adapters.Length; i++)
        {
            Assert.Equal(adapters[i], predictions[i]!["adapter"]!.GetValue<string>());
            ServerFiles.AssertSame(ServerFiles.Expected(adapters[i], [ServerFiles.Texts[i]])[0], predictions[i]!, $"inputs[{i}]");
        }
    }

    [Fact]
    public async Task Concurrent_requests_for_two_adapters_are_batched_together_and_each_gets_its_own_results()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { MaxWaitMs = 50 }, gated: true);
        // The first request holds the worker at the gate, so the others queue up and form one batch after it.
        var first = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("good") });
        await server.Gate!.WaitUntilHeldAsync();
        var requests = Enumerable.Range(0, 10).Select(i =>
        {
            string adapter = i % 2 == 0 ? "sent" : "topic";
            var texts = ServerFiles.Texts.Skip(i % 3).Take(2 + i % 3).ToArray();
            return (Adapter: adapter, Texts: texts, Task: server.PostAsync("/v1/predict",
                new JsonObject { ["adapter"] = adapter, ["inputs"] = ServerFiles.InputsJson(texts) }));
        }).ToList();
        await WaitForQueueAsync(server, depth: requests.Count);
        server.Gate.Open();

        Assert.Equal(200, (await first).Status);
        foreach (var (adapter, texts, task) in requests)
        {
            var (status, body) = await task;
            Assert.Equal(200, status);
            Assert.Equal(adapter, body!["adapter"]!.GetValue<string>());
            var expected = ServerFiles.Expected(adapter, texts);
            var predictions = body["predictions"]!.AsArray();
            Assert.Equal(expected.Length, predictions.Count);
            for (int i = 0; i < expected.Length; i++) ServerFiles.AssertSame(expected[i], predictions[i]!, $"{adapter} inputs[{i}]");
        }
        Assert.Equal(2, server.Gate.BatchSizes.Count);
        Assert.Equal(requests.Sum(r => r.Texts.Length), server.Gate.BatchSizes[1]);
    }

    internal static async Task WaitForQueueAsync(RunningServer server, int depth)
    {
        for (int i = 0; i < 200; i++)
        {
            var metrics = await server.Client.GetStringAsync("/metrics");
            if (metrics.Contains($"adaptersharp_queue_depth {depth}\n", StringComparison.Ordinal)) return;
            await Task.Delay(25);
        }
        throw new TimeoutException($"the queue never reached {depth} requests");
    }

    [Fact]
    public async Task An_unknown_adapter_is_404()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"]);
        var (status, body) = await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "nope", ["inputs"] = new JsonArray("good") });
        Assert.Equal(404, status);
        Assert.Equal("no adapter named 'nope'", body!["error"]!.GetValue<string>());

        (status, _) = await server.PostAsync("/v1/predict", new JsonObject
        {
            ["inputs"] = new JsonArray(new JsonObject { ["adapter"] = "sent", ["text"] = "a" }, new JsonObject { ["adapter"] = "topic", ["text"] = "b" }),
        });
        Assert.Equal(404, status);
    }

    [Theory]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [\"a\"", "invalid JSON")]
    [InlineData("", "invalid JSON")]
    [InlineData("[\"a\"]", "body: expected a JSON object")]
    [InlineData("{\"adapter\": \"sent\"}", "inputs: required")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": \"a\"}", "inputs: expected a list")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": []}", "inputs: the list is empty")]
    [InlineData("{\"adapter\": 3, \"inputs\": [\"a\"]}", "adapter: expected a string, got a number")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [\"a\", \"b\", 7]}", "inputs[2]: expected a string, a [text, text_pair] pair or an")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [[\"a\", \"b\", \"c\"]]}", "inputs[0]: expected a [text, text_pair] pair of two strings")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [[\"a\", null]]}", "inputs[0]: expected a [text, text_pair] pair of two strings")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [{\"txt\": \"a\"}]}", "inputs[0]: unknown field \"txt\"")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [{\"text_pair\": \"a\"}]}", "inputs[0].text: required")]
    [InlineData("{\"adapter\": \"sent\", \"inputs\": [{\"text\": true}]}", "inputs[0].text: expected a string, got a boolean")]
    [InlineData("{\"inputs\": [\"a\"]}", "inputs[0]: no adapter")]
    [InlineData("{\"adapter\": \"sent\", \"input\": [\"a\"]}", "body: unknown field \"input\"")]
    public async Task Malformed_bodies_and_wrong_types_are_400_with_a_one_line_message(string body, string message)
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"]);
        var (status, answer) = await server.PostAsync("/v1/predict", body);
        Assert.Equal(400, status);
        var error = answer!["error"]!.GetValue<string>();
        Assert.StartsWith(message, error);
        Assert.DoesNotContain('\n', error);
    }

    [Fact]
    public async Task A_body_over_the_limit_or_too_many_inputs_is_413()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { MaxBodyBytes = 4096, MaxInputs = 8 }, load: ["sent"]);
        var big = new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray(new string('w', 8000)) };
        var (status, body) = await server.PostAsync("/v1/predict", big); // chunked: Kestrel's limit stops the read
        Assert.Equal(413, status);
        Assert.Contains("larger than 4096 bytes", body!["error"]!.GetValue<string>());
        (status, body) = await server.PostAsync("/v1/predict", big.ToJsonString()); // with a Content-Length
        Assert.Equal(413, status);
        Assert.Contains("larger than 4096 bytes", body!["error"]!.GetValue<string>());

        var many = new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray([.. Enumerable.Range(0, 9).Select(i => (JsonNode)$"w{i}")]) };
        (status, body) = await server.PostAsync("/v1/predict", many);
        Assert.Equal(413, status);
        Assert.Contains("9 inputs, more than the 8", body!["error"]!.GetValue<string>());

        var eight = new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray([.. Enumerable.Range(0, 8).Select(i => (JsonNode)$"w{i}")]) };
        Assert.Equal(200, (await server.PostAsync("/v1/predict", eight)).Status);
    }

    [Fact]
    public async Task A_full_queue_is_503_with_retry_after()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { QueueCapacity = 1 }, load: ["sent"], gated: true);
        var request = new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("good") };
        var held = server.PostAsync("/v1/predict", request.DeepClone());
        await server.Gate!.WaitUntilHeldAsync();
        var queued = server.PostAsync("/v1/predict", request.DeepClone());
        await WaitForQueueAsync(server, depth: 1);

        using var response = await server.Client.PostAsync("/v1/predict", new StringContent(request.ToJsonString()));
        Assert.Equal(503, (int)response.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(1), response.Headers.RetryAfter?.Delta);
        Assert.Contains("queue is full", await response.Content.ReadAsStringAsync());

        server.Gate.Open();
        Assert.Equal(200, (await held).Status);
        Assert.Equal(200, (await queued).Status);
    }

    [Fact]
    public async Task A_request_larger_than_max_batch_runs_whole_in_chunks()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { MaxBatch = 4 }, load: ["topic"]);
        var texts = Enumerable.Range(0, 11).Select(i => ($"w{i} good w{i + 1}", (string?)null)).ToArray();
        var (status, body) = await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "topic", ["inputs"] = ServerFiles.InputsJson(texts) });
        Assert.Equal(200, status);
        var expected = ServerFiles.Expected("topic", texts);
        for (int i = 0; i < expected.Length; i++) ServerFiles.AssertSame(expected[i], body!["predictions"]![i]!, $"inputs[{i}]");
    }
    [Fact]
    public async Task A_request_larger_than_a_batch_delays_a_later_small_one_by_at_most_one_batch()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { MaxBatch = 4, MaxWaitMs = 0 }, load: ["topic", "sent"], gated: true);
        var bigTexts = Enumerable.Range(0, 11).Select(i => ($"w{i} good w{i + 1}", (string?)null)).ToArray();
        var big = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "topic", ["inputs"] = ServerFiles.InputsJson(bigTexts) });
        await server.Gate!.WaitUntilHeldAsync(); // the big request's first 4 inputs are at the gate
        var small = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("fine") });
        await WaitForQueueAsync(server, depth: 2); // the small request, and the big one's rest
        server.Gate.Open();

        var (status, body) = await big;
        Assert.Equal(200, status);
        var expected = ServerFiles.Expected("topic", bigTexts);
        for (int i = 0; i < expected.Length; i++) ServerFiles.AssertSame(expected[i], body!["predictions"]![i]!, $"inputs[{i}]");
        Assert.Equal(200, (await small).Status);
        lock (server.Gate.BatchSizes)
        {
            Assert.Equal([4, 4, 4], server.Gate.BatchSizes);
            // The small request runs in the batch right after the one that was running when it came, first.
            Assert.Equal(new BatchInput("sent", "fine"), server.Gate.Batches[1][0]);
            Assert.Equal(bigTexts.Select(t => t.Item1), server.Gate.Batches.SelectMany(b => b).Where(i => i.Adapter == "topic").Select(i => i.Text));
        }
    }

    [Fact]
    public async Task An_unload_waits_for_a_request_of_that_adapter_that_is_running_in_pieces()
    {
        await using var server = await RunningServer.StartAsync(new ServerOptions { MaxBatch = 4, MaxWaitMs = 0 }, load: ["topic"], gated: true);
        var texts = Enumerable.Range(0, 11).Select(i => ($"w{i} good w{i + 1}", (string?)null)).ToArray();
        var big = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "topic", ["inputs"] = ServerFiles.InputsJson(texts) });
        await server.Gate!.WaitUntilHeldAsync();
        var unload = server.SendAsync(HttpMethod.Delete, "/v1/adapters/topic");
        await WaitForQueueAsync(server, depth: 2); // the big request's rest, and the unload behind it
        var after = server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "topic", ["inputs"] = new JsonArray("late") });
        await WaitForQueueAsync(server, depth: 3);
        server.Gate.Open();

        var (status, body) = await big;
        Assert.Equal(200, status);
        Assert.Equal(texts.Length, body!["predictions"]!.AsArray().Count);
        Assert.Equal(204, (await unload).Status);
        Assert.Equal(404, (await after).Status); // queued after the unload
    }

    [Fact]
    public async Task A_body_well_over_the_default_limit_is_413()
    {
        await using var server = await RunningServer.StartAsync(load: ["sent"]);
        var body = new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray(new string('w', 3 << 20)) }.ToJsonString();
        for (int i = 0; i < 3; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/predict")
            {
                Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json"),
            };
            // The server answers and closes at once; a client still writing the body would see a broken pipe
            // rather than the answer, so this one waits for "100 Continue", as clients sending large bodies do.
            request.Headers.ExpectContinue = true;
            using var response = await server.Client.SendAsync(request);
            Assert.Equal(413, (int)response.StatusCode);
            var answer = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            Assert.Contains($"larger than {1 << 20} bytes", answer["error"]!.GetValue<string>());
        }
        Assert.Equal(200, (await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "sent", ["inputs"] = new JsonArray("a") })).Status);
    }
}
