using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Server;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Server;

/// <summary>
/// Server tests run alone: every server start builds modules, and module construction draws from TorchSharp's
/// global random generator, which tests that seed it and build two models in a row (FlatAdamWTests) rely on.
/// </summary>
[CollectionDefinition(nameof(ServerCollection), DisableParallelization = true)]
public sealed class ServerCollection;

/// <summary>
/// Files every server test shares, made once: the tiny model, and an adapters root holding three adapters
/// saved on it — "sent" (houlsby, neg/pos), "topic" (pfeiffer, three labels) and "score" (regression) — plus
/// a folder outside the root with a valid adapter in it.
/// </summary>
static class ServerFiles
{
    static readonly Lazy<(string Model, string Root, string Outside)> Files = new(Create);

    public static string ModelDir => Files.Value.Model;
    public static string Root => Files.Value.Root;
    public static string Outside => Files.Value.Outside;

    public static readonly (string Name, MethodConfig Config, HeadConfig Head)[] Adapters =
    [
        ("sent", BottleneckConfig.Houlsby, HeadConfig.Classification(["neg", "pos"])),
        ("topic", BottleneckConfig.Pfeiffer with { AdapterSize = 8 }, HeadConfig.Classification(["a", "b", "c"])),
        ("score", BottleneckConfig.Houlsby with { AdapterSize = 4 }, HeadConfig.Regression()),
    ];

    public static string AdapterDir(string name) => Path.Combine(Root, name);

    static (string, string, string) Create()
    {
        var model = TinyTask.CreateModelDir(seed: 41);
        var root = Directory.CreateTempSubdirectory("adaptersharp-serve-root-").FullName;
        var outside = Directory.CreateTempSubdirectory("adaptersharp-serve-outside-").FullName;
        var encoder = Pretrained.Load(model);
        int seed = 100;
        foreach (var (name, config, head) in Adapters)
        {
            using var adapterModel = TrainingJob.CreateModel(encoder, name, config, head, seed++);
            // Random heads alone would leave the adapters near identity; move every adapter tensor off its init
            // so that each adapter computes something of its own.
            using (no_grad())
                foreach (var tensor in adapterModel.Record(name).Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.2);
            var manifest = new AdapterManifest
            {
                Name = name, Config = config, Head = head, BaseModel = BaseModelIdentity.Of(encoder), Task = "tiny", MaxLength = 32,
            };
            AdapterFiles.Save(Path.Combine(root, name), manifest, adapterModel.AdapterTensors(name));
            if (name == "sent") AdapterFiles.Save(Path.Combine(outside, "sent"), manifest, adapterModel.AdapterTensors(name));
        }
        return (model, root, outside);
    }

    static readonly Lazy<string> TagsFolder = new(() =>
    {
        var encoder = Pretrained.Load(ModelDir);
        var head = HeadConfig.TokenClassification(["B-X", "I-X", "O"]);
        using var model = TrainingJob.CreateModel(encoder, "tags", BottleneckConfig.Houlsby with { AdapterSize = 4 }, head, 77);
        using (no_grad())
        {
            foreach (var tensor in model.Record("tags").Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.5);
            // O unlikely: every word is B-X or I-X as the weights decide, so that the texts hold entities of several lengths.
            model.named_parameters().Single(p => p.name == "heads.tags.classifier.bias").parameter[2] = -10f;
        }
        var dir = Path.Combine(Root, "tags");
        AdapterFiles.Save(dir, new AdapterManifest
        {
            Name = "tags", Config = model.Adapters["tags"], Head = head, BaseModel = BaseModelIdentity.Of(encoder), Task = "tiny", MaxLength = 32,
        }, model.AdapterTensors("tags"));
        return dir;
    });

    /// <summary>Makes (once) "tags" in <c>root/tags</c>: a token-classification adapter (tags B-X, I-X, O), not loaded by default.</summary>
    public static string Tags => TagsFolder.Value;

    static readonly Lazy<string> FusionFolders = new(CreateFusions);

    /// <summary>
    /// Makes (once) fusion "mix" in <c>root/mix</c> over adapters "fa" and "fb" in <c>root/mix-parts/</c>, and fusion
    /// "far" in <c>root/far</c> over an adapter "fo" that lies outside the root, and adapter "st" in <c>root/st</c>
    /// stacked on "sa" in <c>root/stack-parts/</c>. Returns "mix".
    /// </summary>
    public static string Fusion => FusionFolders.Value;

    static string CreateFusions()
    {
        var encoder = Pretrained.Load(ModelDir);
        var identity = BaseModelIdentity.Of(encoder);
        var head = HeadConfig.Classification(["neg", "pos"]);
        void Save(string fusionName, string fusionDir, (string Name, string Dir)[] parts, int seed)
        {
            using var model = AdapterModel.FromPretrained(encoder);
            manual_seed(seed);
            foreach (var (name, _) in parts) model.AddAdapter(name, BottleneckConfig.Houlsby with { AdapterSize = 4 }, head);
            model.AddFusion(fusionName, new FusionConfig { Adapters = [.. parts.Select(p => p.Name)] }, head);
            using (no_grad())
                foreach (var (_, parameter) in model.named_parameters()) parameter.add_(randn_like(parameter) * 0.1);
            foreach (var (name, dir) in parts)
                AdapterFiles.Save(dir, new AdapterManifest { Name = name, Config = model.Adapters[name], Head = head, BaseModel = identity, MaxLength = 32 },
                    model.AdapterTensors(name));
            FusionFiles.Save(fusionDir, new FusionManifest
            {
                Name = fusionName,
                Adapters = [.. parts.Select(p => AdapterReference.Describe(p.Name, p.Dir, fusionDir))],
                Head = head,
                BaseModel = identity,
                Task = "tiny",
                MaxLength = 32,
            }, model.AdapterTensors(fusionName));
        }
        Save("mix", Path.Combine(Root, "mix"), [("fa", Path.Combine(Root, "mix-parts", "fa")), ("fb", Path.Combine(Root, "mix-parts", "fb"))], seed: 7);
        Save("far", Path.Combine(Root, "far"), [("fo", Path.Combine(Outside, "fo")), ("fp", Path.Combine(Root, "far-parts", "fp"))], seed: 8);

        // Adapter "st" stacked on "sa" (train --stack): sa in root/stack-parts/sa, st in root/st.
        using (var model = AdapterModel.FromPretrained(encoder))
        {
            manual_seed(9);
            var config = BottleneckConfig.Houlsby with { AdapterSize = 4 };
            model.AddAdapter("sa", config, head);
            model.AddAdapter("st", config, head);
            using (no_grad())
                foreach (var (_, parameter) in model.named_parameters()) parameter.add_(randn_like(parameter) * 0.1);
            string lowerDir = Path.Combine(Root, "stack-parts", "sa"), topDir = Path.Combine(Root, "st");
            AdapterFiles.Save(lowerDir, new AdapterManifest { Name = "sa", Config = config, Head = head, BaseModel = identity, MaxLength = 32 },
                model.AdapterTensors("sa"));
            AdapterFiles.Save(topDir, new AdapterManifest
            {
                Name = "st", Config = config, Head = head, BaseModel = identity, MaxLength = 32,
                StackedOn = [AdapterReference.Describe("sa", lowerDir, topDir)],
            }, model.AdapterTensors("st"));
        }

        // "sf" stacked on a full fine-tuning adapter "fullx" (hand-made: training refuses to stack on one).
        using (var model = AdapterModel.FromPretrained(encoder))
        {
            manual_seed(10);
            model.AddAdapter("fullx", BaselineConfig.Full, head);
            using (no_grad())
                foreach (var (_, parameter) in model.named_parameters()) parameter.add_(randn_like(parameter) * 0.5);
            string lowerDir = Path.Combine(Root, "stack-parts", "fullx"), topDir = Path.Combine(Root, "sf");
            AdapterFiles.Save(lowerDir, new AdapterManifest { Name = "fullx", Config = BaselineConfig.Full, Head = head, BaseModel = identity, MaxLength = 32 },
                model.AdapterTensors("fullx"));
            var config = BottleneckConfig.Houlsby with { AdapterSize = 4 };
            using var top = AdapterModel.FromPretrained(encoder);
            top.AddAdapter("sf", config, head);
            AdapterFiles.Save(topDir, new AdapterManifest
            {
                Name = "sf", Config = config, Head = head, BaseModel = identity, MaxLength = 32,
                StackedOn = [AdapterReference.Describe("fullx", lowerDir, topDir)],
            }, top.AdapterTensors("sf"));
        }
        return Path.Combine(Root, "mix");
    }

    /// <summary>
    /// Makes (once) one adapter of each newer method in the root, off its identity start: "lo" (lora on query, value and
    /// output), "hi" (hierarchical), "sh" (shared), "dy" (dynamic) and "hy" (houlsby plus the top layer). Returns their names.
    /// </summary>
    public static string[] MethodAdapters => MethodFolders.Value;

    static readonly Lazy<string[]> MethodFolders = new(() =>
    {
        var encoder = Pretrained.Load(ModelDir);
        var identity = BaseModelIdentity.Of(encoder);
        (string Name, MethodConfig Config, HeadConfig Head)[] adapters =
        [
            ("lo", LoraConfig.Default with { Rank = 4, TargetModules = ["query", "value", "output"] }, HeadConfig.Classification(["neg", "pos"])),
            ("hi", HierarchicalConfig.Default with { AdapterSizes = [4, 8] }, HeadConfig.Classification(["a", "b", "c"])),
            ("sh", SharedConfig.Default with { AdapterSize = 8 }, HeadConfig.Regression()),
            ("dy", DynamicConfig.Default with { AdapterSize = 8, InitialFraction = 0.6 }, HeadConfig.Classification(["neg", "pos"])),
            ("hy", BottleneckConfig.Houlsby with { AdapterSize = 4, TrainTopLayers = 1 }, HeadConfig.Classification(["neg", "pos"])),
        ];
        int seed = 200;
        foreach (var (name, config, head) in adapters)
        {
            using var model = TrainingJob.CreateModel(encoder, name, config, head, seed++);
            using (no_grad())
                foreach (var tensor in model.Record(name).Tensors) tensor.Parameter.add_(randn_like(tensor.Parameter) * 0.2);
            AdapterFiles.Save(Path.Combine(Root, name), new AdapterManifest
            {
                Name = name, Config = config, Head = head, BaseModel = identity, Task = "tiny", MaxLength = 32,
            }, model.AdapterTensors(name));
        }
        return [.. adapters.Select(a => a.Name)];
    });

    /// <summary>What <see cref="Trainer.Predict"/> gives for <paramref name="inputs"/> with "st" stacked on "sa", on the base.</summary>
    public static Prediction[] ExpectedStack(IReadOnlyList<(string Text, string? Pair)> inputs)
    {
        _ = Fusion;
        var encoder = Pretrained.Load(ModelDir);
        using var model = AdapterModel.FromPretrained(encoder);
        var identity = BaseModelIdentity.Of(encoder);
        AdapterFiles.Load(Path.Combine(Root, "stack-parts", "sa"), model, identity);
        var manifest = AdapterFiles.Load(Path.Combine(Root, "st"), model, identity);
        model.Composition = new Stack("sa", "st");
        var data = EncodedDataset.Unlabelled(inputs, encoder.Tokenizer, manifest.MaxLength);
        return Trainer.Predict(model, data, 64, CPU).Select(o => Prediction.From(manifest.Head, o)).ToArray();
    }

    /// <summary>What <see cref="Trainer.Predict"/> gives for <paramref name="inputs"/> with fusion "mix" on the base.</summary>
    public static Prediction[] ExpectedFusion(IReadOnlyList<(string Text, string? Pair)> inputs)
    {
        var encoder = Pretrained.Load(ModelDir);
        using var model = AdapterModel.FromPretrained(encoder);
        var manifest = FusionFiles.Load(Fusion, model, BaseModelIdentity.Of(encoder)); // activates it
        var data = EncodedDataset.Unlabelled(inputs, encoder.Tokenizer, manifest.MaxLength);
        return Trainer.Predict(model, data, 64, CPU).Select(o => Prediction.From(manifest.Head, o)).ToArray();
    }

    /// <summary>What <see cref="Trainer.Predict"/> gives for <paramref name="inputs"/> with adapter <paramref name="name"/> alone on the base.</summary>
    public static Prediction[] Expected(string name, IReadOnlyList<(string Text, string? Pair)> inputs)
    {
        var encoder = Pretrained.Load(ModelDir);
        using var model = AdapterModel.FromPretrained(encoder);
        var manifest = AdapterFiles.Load(AdapterDir(name), model, BaseModelIdentity.Of(encoder));
        model.Active = name;
        var data = EncodedDataset.Unlabelled(inputs, encoder.Tokenizer, manifest.MaxLength);
        return Trainer.Predict(model, data, 64, CPU).Select(o => Prediction.From(manifest.Head, o)).ToArray();
    }

    public static readonly (string Text, string? Pair)[] Texts =
    [
        ("good w1 w2", null),
        ("bad w3", null),
        ("w4 w5 w6 w7 w8 good bad", null),
        ("w9", "w10 w11 good"),
        ("", null),
        ("w12 unknownword w13", "bad"),
    ];

    /// <summary>The inputs of a single-adapter request: strings, and [text, text_pair] for pairs.</summary>
    public static JsonArray InputsJson(IEnumerable<(string Text, string? Pair)> texts) =>
        new([.. texts.Select(t => t.Pair is null ? (JsonNode)JsonValue.Create(t.Text) : new JsonArray(t.Text, t.Pair))]);

    public static void AssertSame(Prediction expected, JsonNode actual, string at)
    {
        if (expected.Score is { } score)
        {
            Assert.True(Math.Abs(score - actual["score"]!.GetValue<double>()) < 1e-4, $"{at}: score {actual["score"]} != {score}");
            return;
        }
        Assert.Equal(expected.Label, actual["label"]!.GetValue<string>());
        var probabilities = actual["probabilities"]!.AsObject();
        Assert.Equal(expected.Probabilities!.Keys.Order(), probabilities.Select(p => p.Key).Order());
        foreach (var (label, p) in expected.Probabilities!)
            Assert.True(Math.Abs(p - probabilities[label]!.GetValue<double>()) < 1e-5, $"{at}: p({label}) {probabilities[label]} != {p}");
    }
}

/// <summary>A server on an ephemeral loopback port over the tiny model, with a client for it.</summary>
sealed class RunningServer : IAsyncDisposable
{
    RunningServer(InferenceServer server, ModelHost host, HttpClient client, GatedRunner? gate)
    {
        Server = server;
        Host = host;
        Client = client;
        Gate = gate;
    }

    public InferenceServer Server { get; }
    public ModelHost Host { get; }
    public HttpClient Client { get; }
    public GatedRunner? Gate { get; }

    /// <param name="load">Adapters loaded before the start (default: all three).</param>
    /// <param name="gated">Put a <see cref="GatedRunner"/> in front of the model.</param>
    /// <param name="wrap">Put another runner around the model's (one that fails on purpose, say).</param>
    public static async Task<RunningServer> StartAsync(ServerOptions? options = null, string[]? load = null, bool gated = false,
        Func<IBatchRunner, IBatchRunner>? wrap = null)
    {
        options ??= new ServerOptions();
        options = options with { Port = 0, Host = "127.0.0.1" };
        var host = ModelHost.Open(ServerFiles.ModelDir, CPU);
        foreach (var name in load ?? ServerFiles.Adapters.Select(a => a.Name).ToArray()) host.Load(ServerFiles.AdapterDir(name));
        IBatchRunner runner = new MixedBatchRunner(host, options.MaxBatch);
        if (wrap is not null) runner = wrap(runner);
        var gate = gated ? new GatedRunner(runner) : null;
        var server = InferenceServer.Create(options, host, gate ?? runner);
        await server.StartAsync();
        var client = new HttpClient { BaseAddress = server.Url, Timeout = TimeSpan.FromSeconds(30) };
        if (options.ApiKey is { } key) client.DefaultRequestHeaders.Authorization = new("Bearer", key);
        return new RunningServer(server, host, client, gate);
    }

    public async Task<(int Status, JsonNode? Body)> SendAsync(HttpMethod method, string path, object? body = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is string raw) request.Content = new StringContent(raw, System.Text.Encoding.UTF8, "application/json");
        else if (body is not null) request.Content = JsonContent.Create(body);
        using var response = await Client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    public Task<(int Status, JsonNode? Body)> PostAsync(string path, object body) => SendAsync(HttpMethod.Post, path, body);

    /// <summary>A GET whose answer is text (the metrics).</summary>
    public async Task<(int Status, string Body)> SendRawGetAsync(string path)
    {
        using var response = await Client.GetAsync(path);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>A request whose body is <paramref name="bytes"/> as they are (not valid UTF-8, say).</summary>
    public async Task<(int Status, JsonNode? Body)> PostBytesAsync(string path, byte[] bytes)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ByteArrayContent(bytes) };
        request.Content.Headers.ContentType = new("application/json");
        using var response = await Client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    public async ValueTask DisposeAsync()
    {
        Gate?.Open();
        Client.Dispose();
        await Server.DisposeAsync();
        Gate?.Dispose();
        Host.Dispose();
    }
}

/// <summary>A runner that holds each batch until the test opens the gate, and records batch sizes.</summary>
sealed class GatedRunner(IBatchRunner inner) : IBatchRunner, IDisposable
{
    readonly ManualResetEventSlim gate = new(false);
    readonly SemaphoreSlim entered = new(0);

    public List<int> BatchSizes { get; } = [];

    /// <summary>Each batch's inputs, in the order the batches ran (lock <see cref="BatchSizes"/>).</summary>
    public List<BatchInput[]> Batches { get; } = [];

    public IReadOnlyList<InputResult> Run(IReadOnlyList<BatchInput> inputs)
    {
        entered.Release();
        if (!gate.Wait(TimeSpan.FromSeconds(20))) throw new TimeoutException("the test never opened the gate");
        lock (BatchSizes)
        {
            BatchSizes.Add(inputs.Count);
            Batches.Add([.. inputs]);
        }
        return inner.Run(inputs);
    }

    /// <summary>Waits until the worker holds a batch at the gate.</summary>
    public async Task WaitUntilHeldAsync()
    {
        if (!await entered.WaitAsync(TimeSpan.FromSeconds(20))) throw new TimeoutException("the worker never reached the gate");
    }

    public void Open() => gate.Set();

    public void Dispose()
    {
        gate.Dispose();
        entered.Dispose();
    }
}
