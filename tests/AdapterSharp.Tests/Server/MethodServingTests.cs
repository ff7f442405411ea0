using System.Text.Json.Nodes;
using AdapterSharp.Server;

namespace AdapterSharp.Tests.Server;

/// <summary>Every method served: each predicts alone as it does on its own, and mixed with others in one request.</summary>
[Collection(nameof(ServerCollection))]
public class MethodServingTests
{
    static readonly ServerOptions WithRoot = new() { AdaptersRoot = ServerFiles.Root };

    [Fact]
    public async Task Each_method_predicts_in_a_mixed_request_what_it_predicts_alone()
    {
        _ = ServerFiles.MethodAdapters;
        await using var server = await RunningServer.StartAsync(WithRoot, load: ["sent", "lo", "hi", "sh", "dy"]);
        // Two rounds over the texts, each input with the next adapter: lora, hierarchical and shared rows share the
        // per-row pass with "sent"; the dynamic adapter's rows get a pass of their own.
        string[] names = ["sent", "lo", "hi", "sh", "dy"];
        var inputs = new JsonArray();
        var expected = new List<(string Adapter, int Text)>();
        for (int i = 0; i < 2 * ServerFiles.Texts.Length; i++)
        {
            var (adapter, text) = (names[i % names.Length], i % ServerFiles.Texts.Length);
            var input = new JsonObject { ["adapter"] = adapter, ["text"] = ServerFiles.Texts[text].Text };
            if (ServerFiles.Texts[text].Pair is { } pair) input["text_pair"] = pair;
            inputs.Add(input);
            expected.Add((adapter, text));
        }
        var (status, answer) = await server.PostAsync("/v1/predict", new JsonObject { ["inputs"] = inputs });
        Assert.True(status == 200, answer?.ToJsonString());
        for (int i = 0; i < expected.Count; i++)
        {
            var (adapter, text) = expected[i];
            var alone = ServerFiles.Expected(adapter, [ServerFiles.Texts[text]]);
            ServerFiles.AssertSame(alone[0], answer!["predictions"]![i]!, $"inputs[{i}] ({adapter})");
        }

        var (_, listed) = await server.SendAsync(HttpMethod.Get, "/v1/adapters");
        var methods = listed!["adapters"]!.AsArray().ToDictionary(a => a!["name"]!.GetValue<string>(), a => a!["method"]!.GetValue<string>());
        Assert.Equal("lora", methods["lo"]);
        Assert.Equal("dynamic", methods["dy"]);
    }

    [Fact]
    public async Task A_hybrid_that_fine_tunes_base_layers_is_refused_in_one_line()
    {
        _ = ServerFiles.MethodAdapters;
        await using var server = await RunningServer.StartAsync(WithRoot, load: ["sent"]);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = "hy" });
        Assert.Equal(400, status);
        Assert.Contains("changes the shared base weights", body!["error"]!.GetValue<string>());
        Assert.Equal(["sent"], server.Host.Adapters.Keys);
    }
}
