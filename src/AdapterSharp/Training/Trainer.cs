using System.Diagnostics;
using AdapterSharp.Adapters;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Training;

public sealed record TrainOptions
{
    public double LearningRate { get; init; } = 1e-3;
    public int Epochs { get; init; } = 3;
    public int BatchSize { get; init; } = 32;
    public int GradientAccumulation { get; init; } = 1;
    public double WarmupRatio { get; init; } = 0.1;
    public double WeightDecay { get; init; } = 0.01;
    public double MaxGradNorm { get; init; } = 1.0;
    public int Seed { get; init; } = 42;

    /// <summary>Evaluate every N optimizer steps as well as at each epoch's end; null: epochs only.</summary>
    public int? EvalEverySteps { get; init; }

    /// <summary>Stop after this many evaluations without improvement; null: never.</summary>
    public int? EarlyStoppingPatience { get; init; }

    /// <summary>
    /// Wall-clock limit for training and its evaluations. The learning-rate schedule is shortened to end
    /// when the budget does, and training stops after a final evaluation, keeping the best checkpoint.
    /// </summary>
    public TimeSpan? TimeBudget { get; init; }

    /// <summary>How often the loss is read back from the device (each read is a host synchronisation).</summary>
    public int LogEverySteps { get; init; } = 10;

    public int EvalBatchSize { get; init; } = 128;

    /// <summary>
    /// Sort examples by length within pools of 50 batches (less padding, faster); off: plain random batches,
    /// as HF's reference script draws them.
    /// </summary>
    public bool BucketByLength { get; init; } = true;

    /// <summary>
    /// On CUDA, capture each batch shape's step (forward, backward, clipping, AdamW) once as a CUDA graph and
    /// replay it (see <see cref="Native.CudaGraphs"/>): the host's per-operation cost leaves the loop. Batches are
    /// then padded to multiples of 16 tokens so that few shapes occur. Used only with gradient accumulation 1,
    /// after a few eager steps; ignored on CPU.
    /// </summary>
    public bool CudaGraphs { get; init; } = true;

    public void Validate()
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new ArgumentException(problem);
        }
        Require(LearningRate is > 0 and < 10, $"--lr must be positive, got {LearningRate}");
        Require(Epochs >= 1, $"--epochs must be at least 1, got {Epochs}");
        Require(BatchSize >= 1, $"--batch-size must be at least 1, got {BatchSize}");
        Require(GradientAccumulation >= 1, $"--grad-accum must be at least 1, got {GradientAccumulation}");
        Require(WarmupRatio is >= 0 and < 1, $"--warmup must be in [0, 1), got {WarmupRatio}");
        Require(WeightDecay >= 0, $"--weight-decay must be non-negative, got {WeightDecay}");
        Require(EvalEverySteps is null or >= 1, $"--eval-steps must be at least 1, got {EvalEverySteps}");
        Require(EarlyStoppingPatience is null or >= 1, $"--patience must be at least 1, got {EarlyStoppingPatience}");
        Require(TimeBudget is null || TimeBudget > TimeSpan.Zero, "--time-budget must be positive");
    }
}

public sealed record Evaluation(int Epoch, long Step, double Loss, IReadOnlyDictionary<string, double> Metrics, TimeSpan Elapsed);

public sealed record TrainProgress(
    long Step, long TotalSteps, int Epoch, double Loss, double LearningRate, double ExamplesPerSecond, TimeSpan Elapsed, TimeSpan? Remaining);

public sealed record TrainResult(
    Evaluation? Best, IReadOnlyList<Evaluation> History, long Steps, string StopReason, TimeSpan Elapsed, double ExamplesPerSecond);

/// <summary>Training diverged or cannot go on: the message says where and what to change.</summary>
public sealed class TrainingException(string message) : Exception(message);

/// <summary>
/// Trains one adapter of an <see cref="AdapterModel"/>: AdamW (no decay on biases and LayerNorms), linear warmup
/// then linear decay, gradient clipping and accumulation, length-bucketed batches, evaluation with the task's
/// metrics, best-checkpoint callback, early stopping and a time budget.
/// </summary>
public sealed class Trainer(AdapterModel model, string adapterName, TrainOptions options, Device device)
{
    public event Action<TrainProgress>? Progress;
    public event Action<Evaluation>? Evaluated;

    /// <summary>The linear schedule: 0 → 1 over the warmup steps, then 1 → 0 at <paramref name="total"/>.</summary>
    public static double LearningRateFactor(long step, long warmup, long total) =>
        step < warmup ? (double)step / Math.Max(1, warmup) : Math.Max(0.0, (double)(total - step) / Math.Max(1, total - warmup));

    /// <param name="train">Training examples.</param>
    /// <param name="dev">Evaluation examples.</param>
    /// <param name="metrics">Metric names; the first is maximised.</param>
    /// <param name="onImproved">Called with each evaluation that beats the best so far (save the checkpoint there).</param>
    public TrainResult Train(EncodedDataset train, EncodedDataset dev, string[] metrics, Action<Evaluation>? onImproved = null)
    {
        options.Validate();
        if (train.Count == 0) throw new TrainingException("no training examples");
        if (dev.Count == 0) throw new TrainingException("no evaluation examples");
        var head = model.Head(adapterName).Config;
        var clock = Stopwatch.StartNew();
        var random = new Random(options.Seed);
        manual_seed(options.Seed);

        var trained = model.TrainOnly(adapterName);
        using var optimizer = new FlatAdamW(trained.Select(p => (p.Parameter, !NoDecay(p.Name))).ToList(), options.WeightDecay);

        long stepsPerEpoch = (train.Count + (long)options.BatchSize * options.GradientAccumulation - 1)
                             / ((long)options.BatchSize * options.GradientAccumulation);
        long plannedSteps = stepsPerEpoch * options.Epochs;
        long totalSteps = plannedSteps;
        long warmup = (long)(options.WarmupRatio * totalSteps);
        bool budgetPlanned = options.TimeBudget is null;
        TimeSpan evalCost = TimeSpan.Zero;

        var history = new List<Evaluation>();
        Evaluation? best = null;
        int sinceImprovement = 0;
        long step = 0, examplesSeen = 0;
        using var runningLoss = zeros(1, device: device);
        int lossTerms = 0;
        double lastLoss = double.NaN;
        string stopReason = "finished all epochs";
        var epochClock = Stopwatch.StartNew();
        long examplesAtSample = 0;
        double examplesPerSecond = 0;

        Evaluation RunEvaluation(int epoch)
        {
            var evalClock = Stopwatch.StartNew();
            var scores = Evaluate(model, dev, head, metrics, options.EvalBatchSize, device);
            evalCost = evalClock.Elapsed;
            var evaluation = new Evaluation(epoch, step, lastLoss, scores, clock.Elapsed);
            history.Add(evaluation);
            Evaluated?.Invoke(evaluation);
            if (double.IsNaN(scores[metrics[0]])) return evaluation;
            if (best is null || scores[metrics[0]] > best.Metrics[metrics[0]])
            {
                best = evaluation;
                sinceImprovement = 0;
                onImproved?.Invoke(evaluation);
            }
            else
            {
                sinceImprovement++;
            }
            model.train();
            return evaluation;
        }

        // Until the first evaluation has been timed, guess: forward only (~1/3 of a training step's work) over the dev set.
        TimeSpan EvalReserve(TimeSpan perStep) =>
            evalCost > TimeSpan.Zero ? evalCost : perStep * (dev.Count / (double)options.BatchSize) * 0.5;

        bool OutOfTime() => options.TimeBudget is { } budget && step > 0 && clock.Elapsed + EvalReserve(clock.Elapsed / step) >= budget;

        bool graphs = options.CudaGraphs && options.GradientAccumulation == 1 && device.type == DeviceType.CUDA && Native.CudaGraphs.Available;
        using var sideStream = graphs ? Native.CudaGraphs.UseSideStream(device) : null;
        using var stepGraphs = graphs ? new StepGraphs() : null;

        // One micro-batch's forward and backward; its loss joins the running sum on the device.
        void Accumulate(Tensor ids, Tensor? mask, Tensor types, Tensor labels, Tensor scores, int groupSize)
        {
            using var scope = NewDisposeScope();
            var logits = model.Logits(ids, mask, types).to_type(ScalarType.Float32);
            var loss = head.IsRegression ? F.mse_loss(logits[.., 0], scores) : F.cross_entropy(logits, labels);
            // Average over the micro-batches of this optimizer step (the last group of an epoch may be short).
            (groupSize > 1 ? loss / groupSize : loss).backward();
            runningLoss.add_(loss.detach());
        }

        // Clipping, the update with the scalars of the last Prepare, and fresh gradients: device work only.
        void Update()
        {
            if (options.MaxGradNorm > 0) optimizer.ClipGradNorm(options.MaxGradNorm);
            optimizer.Apply();
            optimizer.ZeroGrad();
        }

        model.train();
        long lastEvalStep = -1;
        using var onDevice = new DeviceBatches(train, device, lengthMultiple: graphs ? StepGraphs.LengthMultiple : 1);
        for (int epoch = 1; epoch <= options.Epochs; epoch++)
        {
            var batches = train.ShuffledBatches(options.BatchSize, random, options.BucketByLength);
            onDevice.Plan(batches);
            for (int b = 0; b < batches.Count; b++)
            {
                double lr = options.LearningRate * LearningRateFactor(step, warmup, totalSteps);
                using (var scope = NewDisposeScope())
                {
                    var (ids, mask, types, labels, scores) = onDevice.Get(b);
                    lossTerms++;
                    examplesSeen += batches[b].Length;
                    if (stepGraphs is not null && step >= StepGraphs.EagerSteps)
                    {
                        // The whole step, replayed: the graph for this shape reads its inputs from fixed tensors.
                        var graph = stepGraphs.For(ids, mask!, types, labels, scores, (i, m, t, l, s) =>
                        {
                            Accumulate(i, m, t, l, s, 1);
                            Update();
                        });
                        optimizer.Prepare(lr);
                        graph.Replay();
                    }
                    else
                    {
                        int accumulation = options.GradientAccumulation;
                        Accumulate(ids, mask, types, labels, scores, Math.Min(accumulation, batches.Count - (b - b % accumulation)));
                        bool boundary = (b + 1) % accumulation == 0 || b == batches.Count - 1;
                        if (!boundary) continue;
                        optimizer.Prepare(lr);
                        Update();
                    }
                }
                step++;

                if (options.TimeBudget is { } limit && step % 10 == 0)
                {
                    // Fit the schedule to the budget, from the speed measured so far (re-measured as it goes, since
                    // other load on the machine changes it): decay reaches zero when the time runs out.
                    var perStep = clock.Elapsed / step;
                    var left = limit - clock.Elapsed - EvalReserve(perStep);
                    long affordable = step + Math.Max(1, (long)(left / perStep));
                    totalSteps = Math.Min(plannedSteps, affordable);
                    if (!budgetPlanned) warmup = Math.Min(warmup, (long)(options.WarmupRatio * totalSteps));
                    budgetPlanned = true;
                }

                if (step % options.LogEverySteps == 0 || b == batches.Count - 1)
                {
                    lastLoss = runningLoss.item<float>() / Math.Max(1, lossTerms); // the one host sync per N steps
                    using (NewDisposeScope()) runningLoss.zero_();
                    lossTerms = 0;
                    if (!double.IsFinite(lastLoss))
                        throw new TrainingException(
                            $"loss became {lastLoss} at step {step} (epoch {epoch}, learning rate {lr:g3}); " +
                            "lower --lr or check the data; the best checkpoint so far is kept");
                    var seconds = epochClock.Elapsed.TotalSeconds;
                    if (seconds > 0) examplesPerSecond = (examplesSeen - examplesAtSample) / seconds;
                    Progress?.Invoke(new TrainProgress(step, totalSteps, epoch, lastLoss, lr, examplesPerSecond, clock.Elapsed,
                        examplesPerSecond > 0 ? Remaining(step, totalSteps, clock.Elapsed) : null));
                }

                if (options.EvalEverySteps is { } every && step % every == 0)
                {
                    RunEvaluation(epoch);
                    lastEvalStep = step;
                }
                if (options.EarlyStoppingPatience is { } patience && sinceImprovement >= patience)
                {
                    stopReason = $"early stopping: no improvement in {patience} evaluations";
                    goto Done;
                }
                if (OutOfTime() || (step >= totalSteps && totalSteps < plannedSteps))
                {
                    stopReason = $"time budget of {options.TimeBudget!.Value.TotalMinutes:g3} min reached";
                    if (lastEvalStep != step) RunEvaluation(epoch);
                    goto Done;
                }
            }
            if (lastEvalStep != step)
            {
                RunEvaluation(epoch);
                lastEvalStep = step;
            }
            if (options.EarlyStoppingPatience is { } p && sinceImprovement >= p)
            {
                stopReason = $"early stopping: no improvement in {p} evaluations";
                break;
            }
        }
    Done:
        model.eval();
        return new TrainResult(best, history, step, stopReason, clock.Elapsed,
            examplesSeen / Math.Max(1e-9, clock.Elapsed.TotalSeconds));
    }

    static TimeSpan Remaining(long step, long total, TimeSpan elapsed) =>
        step == 0 ? TimeSpan.Zero : elapsed / step * Math.Max(0, total - step);

    /// <summary>Biases and LayerNorm parameters get no weight decay.</summary>
    public static bool NoDecay(string name) =>
        name.EndsWith(".bias", StringComparison.Ordinal) || name.Contains("LayerNorm", StringComparison.Ordinal);

    /// <summary>Scores <paramref name="data"/> with the active adapter: each metric by name.</summary>
    public static Dictionary<string, double> Evaluate(AdapterModel model, EncodedDataset data, HeadConfig head,
        IReadOnlyList<string> metrics, int batchSize, Device device)
    {
        var outputs = Predict(model, data, batchSize, device);
        var result = new Dictionary<string, double>();
        if (head.IsRegression)
        {
            var predicted = outputs.Select(o => (double)o[0]).ToList();
            var gold = data.Scores.Select(s => (double)s).ToList();
            foreach (var metric in metrics)
                result[metric] = metric switch
                {
                    "pearson" => Metrics.Pearson(predicted, gold),
                    "spearman" => Metrics.Spearman(predicted, gold),
                    _ => throw new ArgumentException($"metric '{metric}' does not apply to regression"),
                };
        }
        else
        {
            var predicted = outputs.Select(ArgMax).ToList();
            var gold = data.Labels.Select(l => (int)l).ToList();
            int positive = Array.IndexOf(head.Labels, "1") is var p and >= 0 ? p : 1;
            foreach (var metric in metrics)
                result[metric] = metric switch
                {
                    "accuracy" => Metrics.Accuracy(predicted, gold),
                    "f1" => Metrics.F1(predicted, gold, positive),
                    "mcc" => Metrics.Matthews(predicted, gold, positive),
                    _ => throw new ArgumentException($"metric '{metric}' does not apply to classification"),
                };
        }
        return result;
    }

    /// <summary>The head's raw outputs for every row, in input order: logits per label, or the score.</summary>
    public static float[][] Predict(AdapterModel model, EncodedDataset data, int batchSize, Device device)
    {
        bool wasTraining = model.training;
        model.eval();
        var outputs = new float[data.Count][];
        using (no_grad())
        using (var onDevice = new DeviceBatches(data, device))
        {
            onDevice.Plan(data.SortedBatches(batchSize));
            // Logits stay on the device until the end: one copy back instead of one per batch.
            var perBatch = new List<Tensor>();
            using var scope = NewDisposeScope();
            for (int b = 0; b < onDevice.Count; b++)
            {
                using var batchScope = NewDisposeScope(); // a batch's activations go as soon as its logits exist
                var (ids, mask, types, _, _) = onDevice.Get(b);
                perBatch.Add(model.Logits(ids, mask, types).to_type(ScalarType.Float32).MoveToOuterDisposeScope());
            }
            var all = cat(perBatch, 0).cpu(); // (N, outputs) in batch order
            var values = all.data<float>().ToArray();
            int width = (int)all.shape[1], position = 0;
            for (int b = 0; b < onDevice.Count; b++)
                foreach (var row in onDevice.Rows(b))
                    outputs[row] = values.AsSpan(position++ * width, width).ToArray();
        }
        if (wasTraining) model.train();
        return outputs;
    }

    static int ArgMax(float[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
