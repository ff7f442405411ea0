using System.Globalization;
using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Training;

/// <summary>
/// Multi-task training: tasks drawn in the configured proportions, each step touching only its own task's
/// parameters, one independent best checkpoint per task.
/// </summary>
[Collection(SequentialCollection.Name)]
public class MultiTaskTests
{
    static readonly HeadConfig Sentiment = HeadConfig.Classification(["neg", "pos"]);
    static readonly HeadConfig Length = HeadConfig.Regression();

    /// <summary>The sentiment task of <see cref="TinyTask"/> relabelled as regression: the number of words / 10.</summary>
    static List<Example> LengthExamples(int count, int seed) =>
        TinyTask.Examples(count, seed)
            .Select(e => e with { Label = (e.Text.Split(' ').Length / 10.0).ToString(CultureInfo.InvariantCulture) })
            .ToList();

    static (TrainingTask Sentiment, TrainingTask Length) Tasks(int sentimentCount = 160, int lengthCount = 96)
    {
        var tokenizer = TinyTask.Tokenizer();
        EncodedDataset Encode(List<Example> examples, HeadConfig head) => EncodedDataset.Encode(examples, tokenizer, head, 32, false, out _);
        return (new TrainingTask("sentiment", Encode(TinyTask.Examples(sentimentCount, 1), Sentiment), Encode(TinyTask.Examples(48, 2), Sentiment), ["accuracy"]),
            new TrainingTask("length", Encode(LengthExamples(lengthCount, 3), Length), Encode(LengthExamples(32, 4), Length), ["pearson", "spearman"]));
    }

    static AdapterModel Model(MethodConfig? method = null)
    {
        var model = new AdapterModel(TinyBert.Create(3, addPooler: false));
        manual_seed(7);
        model.AddAdapter("sentiment", method ?? BottleneckConfig.Houlsby, Sentiment);
        model.AddAdapter("length", method ?? BottleneckConfig.Houlsby, Length);
        return model;
    }

    static readonly TrainOptions Quick = new() { Epochs = 2, BatchSize = 16, LearningRate = 3e-3, TimeBudget = null };

    static Dictionary<string, byte[]> Snapshot(AdapterModel model, string name) =>
        model.AdapterTensors(name).ToDictionary(kv => kv.Key, kv => kv.Value.Bytes);

    [Fact]
    public void Sampling_probabilities_follow_size_to_the_power_one_over_T()
    {
        int[] sizes = [100, 400];
        Assert.Equal([0.2, 0.8], TaskSampling.Proportional.Probabilities(sizes), new ToleranceComparer(1e-12));
        Assert.Equal([0.5, 0.5], TaskSampling.Uniform.Probabilities(sizes), new ToleranceComparer(1e-12));
        Assert.Equal([1 / 3.0, 2 / 3.0], new TaskSampling(2).Probabilities(sizes), new ToleranceComparer(1e-12)); // √100 : √400
        Assert.Equal([0.5, 0.5], new TaskSampling(1e9).Probabilities(sizes), new ToleranceComparer(1e-6));
        Assert.Equal(TaskSampling.Proportional, TaskSampling.Parse("proportional"));
        Assert.Equal(TaskSampling.Uniform, TaskSampling.Parse("Uniform"));
        Assert.Equal(new TaskSampling(2.5), TaskSampling.Parse("temperature:2.5"));
        foreach (var bad in new[] { "temperature:0", "temperature:-1", "temperature:", "size", "temperature:x" })
            Assert.Contains($"--sampling: '{bad}' is not proportional, uniform or temperature:T", Assert.Throws<ArgumentException>(() => TaskSampling.Parse(bad)).Message);
    }

    [Fact]
    public void Drawn_tasks_match_the_probabilities_and_repeat_with_the_seed()
    {
        double[] weights = [0.2, 0.3, 0.5, 0.0];
        int[] Draws(int seed)
        {
            var random = new Random(seed);
            return Enumerable.Range(0, 20_000).Select(_ => TaskSampling.Pick(weights, random)).ToArray();
        }
        var draws = Draws(5);
        Assert.Equal(draws, Draws(5));
        Assert.NotEqual(draws, Draws(6));
        for (int i = 0; i < weights.Length; i++)
        {
            double share = draws.Count(d => d == i) / (double)draws.Length;
            // 20,000 draws: the standard error of a share is at most 0.0035; 0.012 is over 3 of them.
            Assert.True(Math.Abs(share - weights[i]) < 0.012, $"task {i}: drawn {share:F4}, expected {weights[i]}");
        }
    }

    [Fact]
    public void A_step_of_one_task_leaves_the_other_tasks_adapter_and_head_bit_identical()
    {
        using var model = Model();
        var (sentiment, length) = Tasks();
        var trainer = new Trainer(model, Quick with { LogEverySteps = 1 }, CPU);
        var previous = new Dictionary<string, Dictionary<string, byte[]>>
        {
            ["sentiment"] = Snapshot(model, "sentiment"),
            ["length"] = Snapshot(model, "length"),
        };
        var stepped = new List<string>();
        trainer.Progress += p =>
        {
            stepped.Add(p.Task);
            foreach (var name in previous.Keys.ToList())
            {
                var now = Snapshot(model, name);
                int changed = now.Count(kv => !kv.Value.AsSpan().SequenceEqual(previous[name][kv.Key]));
                // Warmup starts from a learning rate of 0, so the first step moves nothing.
                if (name == p.Task && p.LearningRate > 0) Assert.True(changed > 0, $"step {p.Step} trained {name} but changed none of its tensors");
                else Assert.True(changed == 0, $"step {p.Step} trained {p.Task} but changed {changed} tensors of {name}");
                previous[name] = now;
            }
        };
        var result = trainer.TrainTasks([sentiment, length]);

        Assert.Equal(result.Steps, stepped.Count);
        Assert.Contains("sentiment", stepped);
        Assert.Contains("length", stepped);
        Assert.Equal(result.Steps, result.Tasks.Sum(t => t.Steps));
    }

    [Fact]
    public void Every_task_is_evaluated_each_epoch_with_its_own_metrics_and_best()
    {
        using var model = Model();
        var (sentiment, length) = Tasks();
        var improved = new List<Evaluation>();
        var result = new Trainer(model, Quick, CPU).TrainTasks([sentiment with { OnImproved = improved.Add }, length with { OnImproved = improved.Add }]);

        // 160 / 16 + 96 / 16 = 16 steps per epoch of the run.
        Assert.Equal(32, result.Steps);
        var sentimentResult = result.Tasks.Single(t => t.Adapter == "sentiment");
        var lengthResult = result.Tasks.Single(t => t.Adapter == "length");
        Assert.Equal([16L, 32L], sentimentResult.History.Select(e => e.Step));
        Assert.Equal([16L, 32L], lengthResult.History.Select(e => e.Step));
        Assert.All(sentimentResult.History, e => Assert.Equal(["accuracy"], e.Metrics.Keys));
        Assert.All(lengthResult.History, e => Assert.Equal(["pearson", "spearman"], e.Metrics.Keys.Order()));
        Assert.Equal(sentimentResult.History.MaxBy(e => e.Metrics["accuracy"]), sentimentResult.Best);
        Assert.Equal(lengthResult.History.MaxBy(e => e.Metrics["pearson"]), lengthResult.Best);
        Assert.Contains(sentimentResult.Best, improved);
        Assert.Contains(lengthResult.Best, improved);
        Assert.True(sentimentResult.Best!.Metrics["accuracy"] > 0.6, $"sentiment accuracy {sentimentResult.Best.Metrics["accuracy"]}");
    }

    [Fact]
    public void The_same_seed_gives_the_same_task_order_and_bit_identical_adapters_on_the_cpu()
    {
        (List<string> Order, Dictionary<string, byte[]> Tensors) Run()
        {
            using var model = Model();
            var (sentiment, length) = Tasks(64, 48);
            var order = new List<string>();
            var trainer = new Trainer(model, Quick with { Epochs = 1, LogEverySteps = 1 }, CPU);
            trainer.Progress += p => order.Add(p.Task);
            trainer.TrainTasks([sentiment, length]);
            var tensors = Snapshot(model, "sentiment").Concat(Snapshot(model, "length").Select(kv => KeyValuePair.Create("length/" + kv.Key, kv.Value)));
            return (order, tensors.ToDictionary());
        }
        var first = Run();
        var second = Run();
        Assert.Equal(first.Order, second.Order);
        Assert.All(first.Tensors, kv => Assert.True(kv.Value.AsSpan().SequenceEqual(second.Tensors[kv.Key]), kv.Key));
    }

    [Fact]
    public void A_time_budget_stops_the_run_after_a_final_evaluation_of_every_task()
    {
        using var model = Model();
        var (sentiment, length) = Tasks(64, 48);
        var result = new Trainer(model, Quick with { Epochs = 10_000, TimeBudget = TimeSpan.FromSeconds(3) }, CPU).TrainTasks([sentiment, length]);

        Assert.StartsWith("time budget of", result.StopReason);
        Assert.All(result.Tasks, t => Assert.Equal(result.Steps, t.History[^1].Step));
    }

    [Fact]
    public void Each_saved_adapter_loads_alone_onto_the_base_with_identical_predictions()
    {
        var dir = TinyTask.CreateModelDir(seed: 13);
        var encoder = Pretrained.Load(dir);
        var (sentiment, length) = Tasks(96, 64);
        var expected = new Dictionary<string, float[][]>();
        using (var model = AdapterModel.FromPretrained(encoder))
        {
            manual_seed(1);
            model.AddAdapter("sentiment", BottleneckConfig.Houlsby, Sentiment);
            model.AddAdapter("length", BottleneckConfig.Pfeiffer, Length);
            new Trainer(model, Quick with { Epochs = 1 }, CPU).TrainTasks([sentiment, length]);
            foreach (var (task, head) in new[] { (sentiment, Sentiment), (length, Length) })
            {
                AdapterFiles.Save(Path.Combine(dir, task.Adapter), new AdapterManifest
                {
                    Name = task.Adapter,
                    Config = model.Adapters[task.Adapter],
                    Head = head,
                    BaseModel = BaseModelIdentity.Of(encoder),
                    MaxLength = 32,
                }, model.AdapterTensors(task.Adapter));
                model.Active = task.Adapter;
                expected[task.Adapter] = Trainer.Predict(model, task.Dev, 16, CPU);
            }
        }

        foreach (var task in new[] { sentiment, length })
        {
            using var alone = AdapterModel.FromPretrained(encoder);
            AdapterFiles.Load(Path.Combine(dir, task.Adapter), alone, BaseModelIdentity.Of(encoder));
            Assert.Equal([task.Adapter], alone.Adapters.Keys);
            alone.Active = task.Adapter;
            var actual = Trainer.Predict(alone, task.Dev, 16, CPU);
            for (int i = 0; i < actual.Length; i++) Assert.Equal(expected[task.Adapter][i], actual[i]);
        }
    }

    [Fact]
    public void Adapters_that_change_the_base_cannot_train_together()
    {
        using var model = new AdapterModel(TinyBert.Create(3, addPooler: false));
        model.AddAdapter("full", MethodRegistry.Get("full"), Sentiment);
        var error = Assert.Throws<ArgumentException>(() => model.AddAdapter("other", BottleneckConfig.Houlsby, Sentiment));
        Assert.Contains("changed the base weights", error.Message);

        var request = new TrainRequest
        {
            Method = MethodRegistry.Get("full"),
            Tasks = [new DataRequest { Task = "mrpc", DataDir = "/no/such" }, new DataRequest { Task = "stsb", DataDir = "/no/such" }],
        };
        var jobError = Assert.Throws<ArgumentException>(() => TrainingJob.RunMultiTask(request));
        Assert.Contains("--method full changes the base weights", jobError.Message);
    }

    [Fact]
    public void The_multi_task_job_writes_one_adapter_folder_per_task_and_one_metrics_file_with_the_task()
    {
        var dir = TinyTask.CreateModelDir(seed: 17);
        string Write(string name, IEnumerable<Example> examples) => TinyTask.WriteTsv(dir, name, examples);
        var summary = TrainingJob.RunMultiTask(new TrainRequest
        {
            Model = dir,
            Tasks =
            [
                new DataRequest
                {
                    Task = "sentiment", TrainFile = Write("s-train.tsv", TinyTask.Examples(96, 1)),
                    DevFile = Write("s-dev.tsv", TinyTask.Examples(32, 2)), TextColumn = "sentence", LabelColumn = "label",
                },
                new DataRequest
                {
                    Task = "length", TrainFile = Write("l-train.tsv", LengthExamples(64, 3)),
                    DevFile = Write("l-dev.tsv", LengthExamples(32, 4)), TextColumn = "sentence", LabelColumn = "label",
                    Regression = true,
                },
            ],
            Options = Quick with { Sampling = TaskSampling.Uniform },
            MaxLength = 32,
            Output = Path.Combine(dir, "run"),
        });

        Assert.Equal(["sentiment", "length"], summary.Tasks.Select(t => t.Task));
        var lines = File.ReadAllLines(Path.Combine(summary.RunDir, "metrics.jsonl"));
        Assert.Equal(4, lines.Length);
        Assert.Equal(2, lines.Count(l => l.StartsWith("{\"task\":\"sentiment\"", StringComparison.Ordinal) && l.Contains("\"accuracy\":")));
        Assert.Equal(2, lines.Count(l => l.StartsWith("{\"task\":\"length\"", StringComparison.Ordinal) && l.Contains("\"pearson\":")));
        foreach (var task in summary.Tasks)
        {
            Assert.Equal(Path.Combine(summary.RunDir, task.Task, "adapter"), task.AdapterDir);
            var manifest = AdapterFiles.ReadManifest(task.AdapterDir);
            Assert.Equal(task.Task, manifest.Name);
            Assert.Equal(task.Task, manifest.Task);
            Assert.Equal(task.Result.Best!.Metrics.Keys.Order(), manifest.Metrics!.Keys.Order());
            Assert.All(task.Result.Best.Metrics, m => Assert.Equal(m.Value, manifest.Metrics[m.Key]));
        }
    }

    sealed class ToleranceComparer(double tolerance) : IEqualityComparer<double>
    {
        public bool Equals(double x, double y) => Math.Abs(x - y) <= tolerance;
        public int GetHashCode(double obj) => 0;
    }
}
