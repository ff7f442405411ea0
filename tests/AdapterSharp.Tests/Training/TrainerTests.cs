using AdapterSharp.Adapters;
using AdapterSharp.Adapters.Methods;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using AdapterSharp.Model;
using AdapterSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Training;

[Collection(SequentialCollection.Name)]
public class TrainerTests
{
    static readonly HeadConfig Head = HeadConfig.Classification(["neg", "pos"]);

    static (EncodedDataset Train, EncodedDataset Dev) Data(int trainCount = 256, int devCount = 64)
    {
        var tokenizer = TinyTask.Tokenizer();
        return (EncodedDataset.Encode(TinyTask.Examples(trainCount, 1), tokenizer, Head, 32, false, out _),
            EncodedDataset.Encode(TinyTask.Examples(devCount, 2), tokenizer, Head, 32, false, out _));
    }

    static AdapterModel Model(MethodConfig method, int baseSeed = 3)
    {
        var model = new AdapterModel(TinyBert.Create(baseSeed, addPooler: false));
        manual_seed(7);
        model.AddAdapter("task", method, Head);
        return model;
    }

    static Dictionary<string, byte[]> Snapshot(nn.Module model) =>
        StateDict.Tensors(model).ToDictionary(kv => kv.Key, kv => StateDict.FromTensor(kv.Value).Bytes);

    static readonly TrainOptions Quick = new() { Epochs = 1, BatchSize = 16, LearningRate = 1e-3, TimeBudget = null };

    [Fact]
    public void Houlsby_adapters_learn_the_synthetic_task()
    {
        using var model = Model(BottleneckConfig.Houlsby);
        var (train, dev) = Data(512, 128);
        var result = new Trainer(model, "task", Quick with { Epochs = 8, LearningRate = 3e-3 }, CPU).Train(train, dev, ["accuracy"]);
        Assert.True(result.Best!.Metrics["accuracy"] >= 0.9, $"accuracy {result.Best.Metrics["accuracy"]}");
        Assert.Equal(8, result.History.Count);
    }

    [Fact]
    public void The_same_seed_gives_bit_identical_adapters_on_the_cpu()
    {
        var (train, dev) = Data(96, 16);
        Dictionary<string, byte[]> Run()
        {
            using var model = Model(BottleneckConfig.Houlsby);
            new Trainer(model, "task", Quick, CPU).Train(train, dev, ["accuracy"]);
            return model.AdapterTensors("task").ToDictionary(kv => kv.Key, kv => kv.Value.Bytes);
        }
        var first = Run();
        var second = Run();
        Assert.All(first, kv => Assert.True(kv.Value.AsSpan().SequenceEqual(second[kv.Key]), kv.Key));
    }

    [Fact]
    public void Training_steps_leave_the_live_tensor_count_flat()
    {
        using var model = Model(BottleneckConfig.Houlsby);
        var (train, dev) = Data(640, 16);
        var live = new Dictionary<long, long>();
        var trainer = new Trainer(model, "task", Quick with { BatchSize = 8, LogEverySteps = 1 }, CPU);
        trainer.Progress += p => live[p.Step] = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        trainer.Train(train, dev, ["accuracy"]);
        Assert.Equal(live[10], live[70]);
    }

    [Fact]
    public void A_nan_loss_stops_training_with_a_clear_error()
    {
        using var model = Model(BottleneckConfig.Houlsby);
        using (no_grad())
            StateDict.Tensors(model)["bert.encoder.layer.0.output.dense.weight"].fill_(float.NaN);
        var (train, dev) = Data(64, 16);
        var error = Assert.Throws<TrainingException>(() => new Trainer(model, "task", Quick, CPU).Train(train, dev, ["accuracy"]));
        Assert.Contains("loss became NaN at step", error.Message);
    }

    [Fact]
    public void A_saved_adapter_loads_back_with_identical_predictions_and_refuses_another_base()
    {
        var dir = TinyTask.CreateModelDir(seed: 11);
        var otherDir = TinyTask.CreateModelDir(seed: 12);
        var adapterDir = Path.Combine(dir, "run", "adapter");
        var encoder = Pretrained.Load(dir);
        var (train, dev) = Data(128, 48);

        float[][] expected;
        using (var model = TrainingJob.CreateModel(encoder, "tiny", BottleneckConfig.Houlsby, Head, seed: 5))
        {
            new Trainer(model, "tiny", Quick, CPU).Train(train, dev, ["accuracy"]);
            AdapterFiles.Save(adapterDir, new AdapterManifest
            {
                Name = "tiny",
                Config = BottleneckConfig.Houlsby,
                Head = Head,
                BaseModel = BaseModelIdentity.Of(encoder),
                MaxLength = 32,
            }, model.AdapterTensors("tiny"));
            expected = Trainer.Predict(model, dev, 16, CPU);
        }

        using (var fresh = AdapterModel.FromPretrained(encoder))
        {
            AdapterFiles.Load(adapterDir, fresh, BaseModelIdentity.Of(encoder));
            fresh.Active = "tiny";
            var actual = Trainer.Predict(fresh, dev, 16, CPU);
            for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i]);
        }

        var other = Pretrained.Load(otherDir);
        using var wrong = AdapterModel.FromPretrained(other);
        var error = Assert.Throws<ModelFormatException>(() => AdapterFiles.Load(adapterDir, wrong, BaseModelIdentity.Of(other)));
        Assert.Contains("cannot load this adapter onto this base", error.Message);
        Assert.Contains("different weights", error.Message);
    }

    [Fact]
    public void The_training_job_reads_tsv_files_and_keeps_the_best_checkpoint_and_metrics_lines()
    {
        var dir = TinyTask.CreateModelDir(seed: 21);
        var trainPath = TinyTask.WriteTsv(dir, "train.tsv", TinyTask.Examples(256, 3));
        var devPath = TinyTask.WriteTsv(dir, "dev.tsv", TinyTask.Examples(64, 4));
        var summary = TrainingJob.Run(new TrainRequest
        {
            Model = dir,
            Data = new DataRequest { TrainFile = trainPath, DevFile = devPath, TextColumn = "sentence", LabelColumn = "label" },
            Options = Quick with { Epochs = 3, LearningRate = 3e-3 },
            MaxLength = 32,
            Output = Path.Combine(dir, "run"),
        });
        var lines = File.ReadAllLines(Path.Combine(summary.RunDir, "metrics.jsonl"));
        Assert.Equal(3, lines.Length);
        Assert.All(lines, l => Assert.Contains("\"accuracy\":", l));
        var manifest = AdapterFiles.ReadManifest(summary.AdapterDir);
        Assert.Equal(summary.Result.Best!.Metrics["accuracy"], manifest.Metrics!["accuracy"]);
        Assert.Equal(["neg", "pos"], manifest.Head.Labels);
    }

    [Fact]
    public void The_schedule_warms_up_linearly_then_decays_to_zero()
    {
        Assert.Equal(0.0, Trainer.LearningRateFactor(0, 10, 100));
        Assert.Equal(0.5, Trainer.LearningRateFactor(5, 10, 100));
        Assert.Equal(1.0, Trainer.LearningRateFactor(10, 10, 100));
        Assert.Equal(0.5, Trainer.LearningRateFactor(55, 10, 100));
        Assert.Equal(0.0, Trainer.LearningRateFactor(100, 10, 100));
    }
}
