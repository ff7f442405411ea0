using System.Text.Json.Nodes;
using AdapterSharp.Adapters;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Server;

/// <summary>
/// Token-classification, question-answering and multiple-choice adapters served over HTTP, in one batch with a
/// classification adapter, each answering what it answers alone.
/// </summary>
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

    /// <summary>Saves (once per call) a random adapter with <paramref name="head"/> under the root.</summary>
    static string Save(string name, HeadConfig head, int seed)
    {
        var dir = Path.Combine(ServerFiles.Root, name);
        var encoder = Pretrained.Load(ServerFiles.ModelDir);
        using var model = TrainingJob.CreateModel(encoder, name, AdapterSharp.Adapters.Methods.BottleneckConfig.Houlsby with { AdapterSize = 4 }, head, seed);
        using (no_grad())
            foreach (var tensor in model.Record(name).Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.5);
        AdapterFiles.Save(dir, new AdapterManifest
        {
            Name = name, Config = model.Adapters[name], Head = head, BaseModel = BaseModelIdentity.Of(encoder), MaxLength = 16,
        }, model.AdapterTensors(name));
        return dir;
    }

    /// <summary>What adapter <paramref name="dir"/> alone answers for <paramref name="input"/>, by its head kind's rows and answer.</summary>
    static Prediction Alone(string dir, PredictInput input)
    {
        var encoder = Pretrained.Load(ServerFiles.ModelDir);
        using var model = AdapterModel.FromPretrained(encoder);
        var manifest = AdapterFiles.Load(dir, model, BaseModelIdentity.Of(encoder));
        model.Active = manifest.Name;
        var kind = HeadKind.For(manifest.Head);
        var rows = kind.EncodeInput(manifest.Head, input, encoder.Tokenizer, manifest.MaxLength);
        var outputs = Trainer.Predict(model, EncodedDataset.Unlabelled(rows), 64, CPU);
        return kind.Answer(manifest.Head, input, rows, outputs);
    }

    [Fact]
    public async Task Question_answering_and_multiple_choice_adapters_answer_in_one_batch_with_the_others()
    {
        var qaDir = Save("qa-served", HeadConfig.QuestionAnswering(), 5);
        var mcDir = Save("mc-served", HeadConfig.MultipleChoice(3), 6);
        // A context longer than the adapter's 16 positions: several windows, answered together.
        var qa = new PredictInput("good", "w1 w2 w3 bad w4 w5 w6 w7 w8 w9 good w10 w11 w12 w13 w14 bad w15 w16");
        var mc = new PredictInput("w1 w2 w3", null, ["w4 good", "w5 bad w6", "w7", "w8 w9 w10"]);
        var expectedQa = Alone(qaDir, qa);
        var expectedMc = Alone(mcDir, mc);
        var expectedTags = Expected()[0];

        await using var server = await RunningServer.StartAsync(new AdapterSharp.Server.ServerOptions { AdaptersRoot = ServerFiles.Root }, load: ["sent"]);
        foreach (var path in new[] { "qa-served", "mc-served", "tags" })
            Assert.Equal(201, (await server.PostAsync("/v1/adapters", new JsonObject { ["path"] = path })).Status);
        var inputs = new JsonArray
        {
            new JsonObject { ["adapter"] = "qa-served", ["question"] = qa.Text, ["context"] = qa.TextPair },
            new JsonObject { ["adapter"] = "tags", ["text"] = Texts[0] },
            new JsonObject { ["adapter"] = "mc-served", ["context"] = mc.Text, ["choices"] = new JsonArray([.. mc.Choices!.Select(c => (JsonNode)c)]) },
            new JsonObject { ["adapter"] = "sent", ["text"] = Texts[0] },
        };
        var (status, body) = await server.PostAsync("/v1/predict", new JsonObject { ["inputs"] = inputs });

        Assert.True(status == 200, body?.ToJsonString());
        var predictions = body!["predictions"]!.AsArray();
        var answer = predictions[0]!["answer"]!;
        Assert.Equal(expectedQa.Answer!.Text, answer["text"]!.GetValue<string>());
        Assert.Equal((expectedQa.Answer.Start, expectedQa.Answer.End), (answer["start"]!.GetValue<int>(), answer["end"]!.GetValue<int>()));
        Assert.Equal(qa.TextPair![expectedQa.Answer.Start..expectedQa.Answer.End], expectedQa.Answer.Text);
        AssertEntities(expectedTags, predictions[1]!, "inputs[1]");
        Assert.Equal(expectedMc.Choice, predictions[2]!["choice"]!.GetValue<int>());
        Assert.Equal(expectedMc.Label, predictions[2]!["label"]!.GetValue<string>());
        var probabilities = predictions[2]!["choice_probabilities"]!.AsArray().Select(p => p!.GetValue<double>()).ToArray();
        Assert.Equal(4, probabilities.Length);
        for (int k = 0; k < 4; k++) Assert.True(Math.Abs(expectedMc.ChoiceProbabilities![k] - probabilities[k]) < 1e-5, $"choice {k}");
        Assert.NotNull(predictions[3]!["label"]);

        // What each head needs from an input is checked before it is queued.
        var (missing, error) = await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "qa-served", ["inputs"] = new JsonArray("only a question") });
        Assert.Equal(400, missing);
        Assert.Contains("inputs[0]: a question needs its context", error!["error"]!.GetValue<string>());
        var (noChoices, error2) = await server.PostAsync("/v1/predict", new JsonObject { ["adapter"] = "mc-served", ["inputs"] = new JsonArray("w1") });
        Assert.Equal(400, noChoices);
        Assert.Contains("needs 2 to 64 \"choices\"", error2!["error"]!.GetValue<string>());
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
