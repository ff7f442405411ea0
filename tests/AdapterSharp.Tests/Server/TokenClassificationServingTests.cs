using System.Text.Json.Nodes;
using AdapterSharp.Adapters;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Server;

/// <summary>A token-classification adapter served over HTTP, alone and in one batch with a classification adapter.</summary>
[Collection(nameof(ServerCollection))]
public sealed class TokenClassificationServingTests
{
    static readonly string[] Texts = ["good w1 w2 bad w3", "w4, good  w5 w6 w7 w8 w9 good", "w10 unknownword bad w11 w12"];

    /// <summary>What the "tags" adapter alone gives for each text, decoded from <see cref="Trainer.Predict"/>.</summary>
    static Prediction[] Expected()
    {
        var encoder = Pretrained.Load(ServerFiles.ModelDir);
        using var model = AdapterModel.FromPretrained(encoder);
        var manifest = AdapterFiles.Load(ServerFiles.Tags, model, BaseModelIdentity.Of(encoder));
        model.Active = "tags";
        var encodings = Texts.Select(t => encoder.Tokenizer.EncodeWithOffsets(t, null, manifest.MaxLength)).ToArray();
        var outputs = Trainer.Predict(model, EncodedDataset.Unlabelled(encodings), 64, CPU);
        return Texts.Select((t, i) => Prediction.From(manifest.Head, outputs[i], new DecodeInput(t, null, encodings[i]))).ToArray();
    }

    static void AssertEntities(Prediction expected, JsonNode actual, string at)
    {
        var entities = actual["entities"]!.AsArray();
        Assert.True(expected.Entities!.Count == entities.Count, $"{at}: {entities.Count} entities, expected {expected.Entities.Count}: {actual.ToJsonString()}");
        for (int k = 0; k < entities.Count; k++)
        {
            var (want, got) = (expected.Entities[k], entities[k]!);
            Assert.Equal((want.Type, want.Text, want.Start, want.End),
                (got["type"]!.GetValue<string>(), got["text"]!.GetValue<string>(), got["start"]!.GetValue<int>(), got["end"]!.GetValue<int>()));
            Assert.True(Math.Abs(want.Score - got["score"]!.GetValue<double>()) < 1e-5, $"{at}: entity {k} score");
        }
    }

    [Fact]
    public async Task A_question_answering_adapter_is_refused_at_load_not_at_its_first_request()
    {
        var dir = Path.Combine(ServerFiles.Root, "qa-head");
        var encoder = Pretrained.Load(ServerFiles.ModelDir);
        using (var model = TrainingJob.CreateModel(encoder, "qa", AdapterSharp.Adapters.Methods.BottleneckConfig.Houlsby with { AdapterSize = 4 }, HeadConfig.QuestionAnswering(), 5))
            AdapterFiles.Save(dir, new AdapterManifest
            {
                Name = "qa", Config = model.Adapters["qa"], Head = HeadConfig.QuestionAnswering(), BaseModel = BaseModelIdentity.Of(encoder), MaxLength = 32,
            }, model.AdapterTensors("qa"));
        await using var server = await RunningServer.StartAsync(new AdapterSharp.Server.ServerOptions { AdaptersRoot = ServerFiles.Root }, load: []);
        var (status, body) = await server.PostAsync("/v1/adapters", new JsonObject { ["path"] = "qa-head" });
        Assert.Equal(400, status);
        Assert.Contains("question-answering adapters are not served yet", body!["error"]!.GetValue<string>());
    }

    [Fact]
    public async Task Entities_and_labels_come_back_for_a_batch_that_mixes_head_kinds()
    {
        var expected = Expected();
        Assert.Contains(expected, p => p.Entities!.Count > 0); // the random adapter does tag something
        var sent = ServerFiles.Expected("sent", [.. Texts.Select(t => (t, (string?)null))]);
        await using var server = await RunningServer.StartAsync(new AdapterSharp.Server.ServerOptions { AdaptersRoot = ServerFiles.Root }, load: ["sent"]);
        Assert.Equal(201, (await server.PostAsync("/v1/adapters", new JsonObject { ["path"] = "tags" })).Status);

        // One request, rows of both adapters interleaved: one mixed batch.
        var inputs = new JsonArray();
        for (int i = 0; i < Texts.Length; i++)
        {
            inputs.Add(new JsonObject { ["adapter"] = "tags", ["text"] = Texts[i] });
            inputs.Add(new JsonObject { ["adapter"] = "sent", ["text"] = Texts[i] });
        }
        var (status, body) = await server.PostAsync("/v1/predict", new JsonObject { ["inputs"] = inputs });

        Assert.True(status == 200, body?.ToJsonString());
        var predictions = body!["predictions"]!.AsArray();
        for (int i = 0; i < Texts.Length; i++)
        {
            AssertEntities(expected[i], predictions[2 * i]!, $"inputs[{2 * i}]");
            Assert.Equal("tags", predictions[2 * i]!["adapter"]!.GetValue<string>());
            ServerFiles.AssertSame(sent[i], predictions[2 * i + 1]!, $"inputs[{2 * i + 1}]");
        }

        var (infoStatus, info) = await server.SendAsync(HttpMethod.Get, "/v1/adapters/tags");
        Assert.Equal(200, infoStatus);
        Assert.Equal("token-classification", info!["kind"]!.GetValue<string>());
    }
}
