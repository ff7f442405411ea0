using System.Text.Json.Nodes;
using AdapterSharp.Heads;
using AdapterSharp.Server;

namespace AdapterSharp.Tests.Server;

/// <summary>Fusions and stacked adapters served: loaded with the adapters they use, from inside the adapters root only.</summary>
[Collection(nameof(ServerCollection))]
public class CompositionServingTests
{
    static readonly ServerOptions WithRoot = new() { AdaptersRoot = ServerFiles.Root };

    [Fact]
    public async Task A_fusion_folder_loads_with_its_adapters_and_predicts_as_the_fusion_does_alone_and_in_mixed_requests()
    {
        _ = ServerFiles.Fusion;
        await using var server = await RunningServer.StartAsync(WithRoot, load: ["sent"]);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = "mix" });
        Assert.True(status == 201, body?.ToJsonString());
        Assert.Equal("mix", body!["name"]!.GetValue<string>());
        Assert.Equal("fusion", body["method"]!.GetValue<string>());
        Assert.Equal(["fa", "fb"], body["fuses"]!.AsArray().Select(a => a!.GetValue<string>()));

        await AssertPredicts(server, "mix", ServerFiles.ExpectedFusion(ServerFiles.Texts));
        // Mixed with a plain adapter in one request: each row as its own adapter (or fusion) gives it.
        await AssertMixedPredicts(server, ["mix", "sent", "mix", "sent"], "mix", ServerFiles.ExpectedFusion);
    }

    /// <summary>A request for <paramref name="adapter"/> over all the texts gives <paramref name="expected"/>.</summary>
    static async Task AssertPredicts(RunningServer server, string adapter, Prediction[] expected)
    {
        var (status, answer) = await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = adapter, ["inputs"] = ServerFiles.InputsJson(ServerFiles.Texts) });
        Assert.Equal(200, status);
        for (int i = 0; i < expected.Length; i++) ServerFiles.AssertSame(expected[i], answer!["predictions"]![i]!, $"inputs[{i}]");
    }

    /// <summary>
    /// A per-input request, input i for <c>adapters[i]</c> ("sent" or <paramref name="composed"/>), gives for each input
    /// what its adapter gives alone (<paramref name="composedAlone"/> for the composed one).
    /// </summary>
    static async Task AssertMixedPredicts(RunningServer server, string[] adapters, string composed,
        Func<IReadOnlyList<(string Text, string? Pair)>, Prediction[]> composedAlone)
    {
        var inputs = new JsonArray();
        for (int i = 0; i < adapters.Length; i++) inputs.Add(new JsonObject { ["adapter"] = adapters[i], ["text"] = ServerFiles.Texts[i].Text });
        var (status, answer) = await server.PostAsync("/v1/predict", new JsonObject { ["inputs"] = inputs });
        Assert.Equal(200, status);
        for (int i = 0; i < adapters.Length; i++)
        {
            (string, string?)[] text = [(ServerFiles.Texts[i].Text, null)];
            var alone = adapters[i] == composed ? composedAlone(text) : ServerFiles.Expected(adapters[i], text);
            ServerFiles.AssertSame(alone[0], answer!["predictions"]![i]!, $"inputs[{i}] ({adapters[i]})");
        }
    }

    [Fact]
    public void At_start_up_a_fusion_folder_finds_its_adapters_where_it_recorded_them()
    {
        using var host = ModelHost.Open(ServerFiles.ModelDir, TorchSharp.torch.CPU);
        var info = host.Load(ServerFiles.Fusion); // as `serve --adapter DIR` does: no adapters root to keep to
        Assert.Equal(["fa", "fb"], info.Fuses!);
        Assert.Equal(["mix"], host.Adapters.Keys);
    }

    [Fact]
    public async Task Unloading_a_fusion_removes_its_adapters_and_it_can_load_again()
    {
        _ = ServerFiles.Fusion;
        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        Assert.Equal(201, (await server.PostAsync("/v1/adapters", new { path = "mix" })).Status);
        Assert.Equal(["fa", "fb"], server.Host.Model.Adapters.Keys.Order());
        Assert.Equal(204, (await server.SendAsync(HttpMethod.Delete, "/v1/adapters/mix")).Status);
        Assert.Empty(server.Host.Model.Adapters);
        Assert.Empty(server.Host.Model.Fusions);
        Assert.Equal(404, (await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "mix", ["inputs"] = new JsonArray("good") })).Status);
        Assert.Equal(201, (await server.PostAsync("/v1/adapters", new { path = "mix" })).Status);
    }

    [Fact]
    public async Task A_stacked_adapter_loads_on_its_lower_adapter_and_predicts_as_the_stack_does_then_unloads_with_it()
    {
        _ = ServerFiles.Fusion;
        await using var server = await RunningServer.StartAsync(WithRoot, load: ["sent"]);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = "st" });
        Assert.True(status == 201, body?.ToJsonString());
        Assert.Equal(["sa"], body!["stacked_on"]!.AsArray().Select(a => a!.GetValue<string>()));

        await AssertMixedPredicts(server, ["st", "sent", "st"], "st", ServerFiles.ExpectedStack);

        Assert.Equal(204, (await server.SendAsync(HttpMethod.Delete, "/v1/adapters/st")).Status);
        Assert.Equal(["sent"], server.Host.Model.Adapters.Keys);
    }

    [Fact]
    public async Task A_stack_on_an_adapter_that_changes_the_base_is_400_and_leaves_the_base_as_it_was()
    {
        _ = ServerFiles.Fusion;
        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = "sf" });
        Assert.Equal(400, status);
        Assert.Contains("full", body!["error"]!.GetValue<string>());
        Assert.Empty(server.Host.Model.Adapters);

        // The base is untouched: an adapter loaded now predicts as on a fresh base.
        Assert.Equal(201, (await server.PostAsync("/v1/adapters", new { path = "sent" })).Status);
        await AssertPredicts(server, "sent", ServerFiles.Expected("sent", ServerFiles.Texts));
    }

    [Fact]
    public async Task A_fusion_whose_adapter_lies_outside_the_root_is_403_and_loads_nothing()
    {
        _ = ServerFiles.Fusion;
        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = "far" });
        Assert.Equal(403, status);
        Assert.Contains("'fo'", body!["error"]!.GetValue<string>());
        Assert.Empty(server.Host.Model.Adapters);
        Assert.Empty(server.Host.Adapters);
    }

    [Fact]
    public async Task A_fusion_whose_adapter_name_is_taken_is_409_and_a_name_other_than_its_own_is_400()
    {
        _ = ServerFiles.Fusion;
        await using var server = await RunningServer.StartAsync(WithRoot, load: []);
        Assert.Equal(201, (await server.PostAsync("/v1/adapters", new { path = "mix-parts/fa" })).Status);
        var (status, body) = await server.PostAsync("/v1/adapters", new { path = "mix" });
        Assert.Equal(409, status);
        Assert.Contains("'fa'", body!["error"]!.GetValue<string>());
        Assert.Equal(["fa"], server.Host.Model.Adapters.Keys);

        (status, body) = await server.PostAsync("/v1/adapters", new { name = "other", path = "mix" });
        Assert.Equal(400, status);
        Assert.Contains("'mix'", body!["error"]!.GetValue<string>());
    }
}
