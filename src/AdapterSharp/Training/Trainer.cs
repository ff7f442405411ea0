using System.Diagnostics;
using AdapterSharp.Adapters;
using AdapterSharp.Data;
using AdapterSharp.Heads;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Training;

public sealed record TrainOptions
{
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>
    /// The learning rate of base parameters that a method fine-tunes beside its own modules (adapters plus the top k
    /// layers); null: <see cref="LearningRate"/>. It follows the same warmup and decay.
    /// </summary>
    public double? BaseLearningRate { get; init; }
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
    /// after a few eager steps of each task; ignored on CPU.
    /// </summary>
    public bool CudaGraphs { get; init; } = true;

    /// <summary>Multi-task runs: how each step's task is drawn (one task: unused).</summary>
    public TaskSampling Sampling { get; init; } = TaskSampling.Proportional;

    public void Validate()
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new ArgumentException(problem);
        }
        Require(LearningRate is > 0 and < 10, $"--lr must be positive, got {LearningRate}");
        Require(BaseLearningRate is null or (> 0 and < 10), $"--base-lr must be positive, got {BaseLearningRate}");
        Require(Epochs >= 1, $"--epochs must be at least 1, got {Epochs}");
        Require(BatchSize >= 1, $"--batch-size must be at least 1, got {BatchSize}");
        Require(GradientAccumulation >= 1, $"--grad-accum must be at least 1, got {GradientAccumulation}");
        Require(WarmupRatio is >= 0 and < 1, $"--warmup must be in [0, 1), got {WarmupRatio}");
        Require(WeightDecay >= 0, $"--weight-decay must be non-negative, got {WeightDecay}");
        Require(EvalEverySteps is null or >= 1, $"--eval-steps must be at least 1, got {EvalEverySteps}");
        Require(EarlyStoppingPatience is null or >= 1, $"--patience must be at least 1, got {EarlyStoppingPatience}");
        Require(TimeBudget is null || TimeBudget > TimeSpan.Zero, "--time-budget must be positive");
        Require(Sampling.Temperature > 0, $"--sampling temperature must be positive, got {Sampling.Temperature}");
    }
}

/// <summary>How a multi-task run picks each step's task: p_i ∝ n_i^(1/T) over the training-set sizes n_i.</summary>
/// <param name="Temperature">T = 1: in proportion to size; larger T flattens towards uniform (T = ∞); T &lt; 1 favours the largest task.</param>
public sealed record TaskSampling(double Temperature)
{
    public static readonly TaskSampling Proportional = new(1.0);
    public static readonly TaskSampling Uniform = new(double.PositiveInfinity);

    /// <summary><c>proportional</c>, <c>uniform</c> or <c>temperature:T</c> (T &gt; 0).</summary>
    public static TaskSampling Parse(string text)
    {
        var value = text.Trim().ToLowerInvariant();
        if (value == "proportional") return Proportional;
        if (value == "uniform") return Uniform;
        if (value.StartsWith("temperature:", StringComparison.Ordinal)
            && double.TryParse(value["temperature:".Length..], System.Globalization.NumberStyles.Float,
                System.Globalization.CultureInfo.InvariantCulture, out var t) && t > 0 && !double.IsNaN(t))
            return new TaskSampling(t);
        throw new ArgumentException($"--sampling: '{text}' is not proportional, uniform or temperature:T with T > 0");
    }

    /// <summary>The probability of each task, from the sizes of their training sets.</summary>
    public double[] Probabilities(IReadOnlyList<int> sizes)
    {
        // Logs keep n^(1/T) finite for large n and small T; subtracting the largest keeps exp() in range.
        var logits = sizes.Select(n => double.IsPositiveInfinity(Temperature) ? 0.0 : Math.Log(Math.Max(1, n)) / Temperature).ToArray();
        double top = logits.Max();
        var weights = logits.Select(l => Math.Exp(l - top)).ToArray();
        double sum = weights.Sum();
        return weights.Select(w => w / sum).ToArray();
    }

    /// <summary>Draws an index with probability proportional to <paramref name="weights"/> (zero: never).</summary>
    public static int Pick(IReadOnlyList<double> weights, Random random)
    {
        double u = random.NextDouble() * weights.Sum(), cumulative = 0;
        int last = -1;
        for (int i = 0; i < weights.Count; i++)
        {
            if (weights[i] <= 0) continue;
            cumulative += weights[i];
            last = i;
            if (u < cumulative) return i;
        }
        return last >= 0 ? last : throw new ArgumentException("no task has a positive weight", nameof(weights));
    }

    public override string ToString() =>
        Temperature == 1.0 ? "proportional" : double.IsPositiveInfinity(Temperature) ? "uniform" : $"temperature:{Temperature:g}";
}

/// <summary>One evaluation of one task's adapter (<paramref name="Adapter"/>) on its dev set.</summary>
public sealed record Evaluation(
    int Epoch, long Step, double Loss, IReadOnlyDictionary<string, double> Metrics, TimeSpan Elapsed, string Adapter = "");

/// <param name="Task">The adapter trained by the step just taken.</param>
/// <param name="TaskLosses">Each task's mean training loss since the last report (NaN: not sampled since).</param>
public sealed record TrainProgress(
    long Step, long TotalSteps, int Epoch, double Loss, double LearningRate, double ExamplesPerSecond, TimeSpan Elapsed, TimeSpan? Remaining,
    string Task = "", IReadOnlyDictionary<string, double>? TaskLosses = null);

public sealed record TrainResult(
    Evaluation? Best, IReadOnlyList<Evaluation> History, long Steps, string StopReason, TimeSpan Elapsed, double ExamplesPerSecond);

/// <summary>
/// One task of a (multi-task) run: the adapter it trains, already added to the model with its head; its data;
/// its metrics (the first is maximised); and a callback for each evaluation that beats its best so far.
/// </summary>
public sealed record TrainingTask(string Adapter, EncodedDataset Train, EncodedDataset Dev, string[] Metrics,
    Action<Evaluation>? OnImproved = null);

/// <summary>A task's share of a multi-task run: its best and every evaluation, its optimizer steps and examples.</summary>
public sealed record TaskResult(string Adapter, Evaluation? Best, IReadOnlyList<Evaluation> History, long Steps, long Examples);

public sealed record MultiTaskResult(IReadOnlyList<TaskResult> Tasks, long Steps, string StopReason, TimeSpan Elapsed, double ExamplesPerSecond);

/// <summary>Training diverged or cannot go on: the message says where and what to change.</summary>
public sealed class TrainingException(string message) : Exception(message);

/// <summary>
/// Trains adapters of an <see cref="AdapterModel"/>: AdamW (no decay on biases and LayerNorms), linear warmup
/// then linear decay, gradient clipping and accumulation, length-bucketed batches, evaluation with the task's
/// metrics, best-checkpoint callback, early stopping and a time budget.
/// <para>
/// Several tasks (<see cref="TrainTasks"/>) share the one loop: each optimizer step draws a task
/// (<see cref="TrainOptions.Sampling"/>), runs its batches through its adapter and head, and steps that task's
/// own AdamW, so the other tasks' parameters — moments, weight decay and all — stay exactly as they were.
/// The learning rate follows one schedule over the run's steps. An epoch of the run is the sum of the tasks'
/// optimizer steps per epoch; every task is evaluated at each run epoch's end (and every N steps) and keeps its
/// own best. One task is the single-task trainer: no task is drawn, and runs match step for step.
/// </para>
/// </summary>
public sealed class Trainer
{
    readonly AdapterModel model;
    readonly string? adapterName;
    readonly TrainOptions options;
    readonly Device device;

    /// <summary>A trainer for one adapter (<see cref="Train"/>).</summary>
    public Trainer(AdapterModel model, string adapterName, TrainOptions options, Device device)
        : this(model, options, device) => this.adapterName = adapterName;

    /// <summary>A trainer for the adapters its tasks name (<see cref="TrainTasks"/>).</summary>
    public Trainer(AdapterModel model, TrainOptions options, Device device)
    {
        this.model = model;
        this.options = options;
        this.device = device;
    }

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
        var name = adapterName ?? throw new InvalidOperationException("this trainer names no adapter: use TrainTasks");
        var result = TrainTasks([new TrainingTask(name, train, dev, metrics, onImproved)]);
        var task = result.Tasks[0];
        return new TrainResult(task.Best, task.History, result.Steps, result.StopReason, result.Elapsed, result.ExamplesPerSecond);
    }

    /// <summary>The state of one task during a run.</summary>
    sealed class TaskRun(int index, TrainingTask task, HeadConfig head, FlatAdamW optimizer, DeviceBatches onDevice, long stepsPerEpoch,
        StepGraphs? graphs) : IDisposable
    {
        public readonly StepGraphs? Graphs = graphs; // this task's captured steps (CUDA graphs), or null: eager
        public readonly int Index = index;
        public readonly TrainingTask Task = task;
        public readonly HeadConfig Head = head;
        public readonly HeadKind Kind = HeadKind.For(head);
        public readonly FlatAdamW Optimizer = optimizer;
        public readonly DeviceBatches OnDevice = onDevice;
        public readonly long StepsPerEpoch = stepsPerEpoch;
        public readonly List<Evaluation> History = [];
        public List<int[]> Batches = [];
        public int NextBatch; // of the current pass over the training set
        public long Steps, Examples;
        public int LossTerms;
        public double LastLoss = double.NaN;
        public Evaluation? Best;
        public int SinceImprovement;
        public bool Stopped; // early stopping: no longer drawn or evaluated
        public TimeSpan EvalCost;

        public void Dispose()
        {
            Graphs?.Dispose();
            Optimizer.Dispose();
            OnDevice.Dispose();
        }
    }

    /// <summary>
    /// Trains one adapter per task on the shared base (see the class summary). The tasks' adapters must leave
    /// the base frozen when there is more than one.
    /// </summary>
    public MultiTaskResult TrainTasks(IReadOnlyList<TrainingTask> tasks)
    {
        options.Validate();
        if (tasks.Count == 0) throw new ArgumentException("no tasks to train", nameof(tasks));
        if (tasks.GroupBy(t => t.Adapter).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"adapter '{twice.Key}' is listed for two tasks");
        string Where(TrainingTask t) => tasks.Count == 1 ? "" : $"{t.Adapter}: ";
        foreach (var t in tasks)
        {
            if (t.Train.Count == 0) throw new TrainingException($"{Where(t)}no training examples");
            if (t.Dev.Count == 0) throw new TrainingException($"{Where(t)}no evaluation examples");
        }
        var clock = Stopwatch.StartNew();
        var random = new Random(options.Seed);                       // batch orders
        var taskDraws = new Random(unchecked(options.Seed * 31 + 7)); // each step's task
        manual_seed(options.Seed);

        var trained = model.TrainEach(tasks.Select(t => t.Adapter).ToList());
        long examplesPerStep = (long)options.BatchSize * options.GradientAccumulation;
        bool graphs = options.CudaGraphs && options.GradientAccumulation == 1 && device.type == DeviceType.CUDA && Native.CudaGraphs.Available;
        // Graph capture needs a stream other than the default one; every operation of the run goes there.
        using var sideStream = graphs ? Native.CudaGraphs.UseSideStream(device) : null;
        var pool = graphs ? Native.CudaGraphs.NewPool() : default; // one pool for every task's graphs
        var runs = new List<TaskRun>();
        try
        {
            foreach (var t in tasks)
            {
                double baseScale = (options.BaseLearningRate ?? options.LearningRate) / options.LearningRate;
                var optimizer = new FlatAdamW(trained[t.Adapter].Select(p => (p.Parameter, p.Decay, p.OfBase ? baseScale : 1.0)).ToList(), options.WeightDecay);
                var onDevice = new DeviceBatches(t.Train, device, lengthMultiple: graphs ? StepGraphs.LengthMultiple : 1);
                runs.Add(new TaskRun(runs.Count, t, model.Head(t.Adapter).Config, optimizer, onDevice,
                    (t.Train.Count + examplesPerStep - 1) / examplesPerStep, graphs ? new StepGraphs(pool) : null));
            }
            return Loop(runs, clock, random, taskDraws);
        }
        finally
        {
            foreach (var run in runs) run.Dispose();
            model.eval();
        }
    }

    MultiTaskResult Loop(List<TaskRun> runs, Stopwatch clock, Random random, Random taskDraws)
    {
        var weights = options.Sampling.Probabilities(runs.Select(r => r.Task.Train.Count).ToList());
        bool multi = runs.Count > 1;
        long stepsPerEpoch = runs.Sum(r => r.StepsPerEpoch);
        long plannedSteps = stepsPerEpoch * options.Epochs;
        long totalSteps = plannedSteps;
        long warmup = (long)(options.WarmupRatio * totalSteps);
        bool budgetPlanned = options.TimeBudget is null;

        long step = 0, examplesSeen = 0, lastEvalStep = -1;
        double lr = 0;
        string stopReason = "finished all epochs";
        using var runningLoss = zeros(runs.Count, device: device); // per task, summed on the device between reads

        int EpochOf(long s) => (int)Math.Max(1, (s + stepsPerEpoch - 1) / stepsPerEpoch);

        void EvaluateAll()
        {
            foreach (var run in runs.Where(r => !r.Stopped))
            {
                var evalClock = Stopwatch.StartNew();
                model.Activate(run.Task.Adapter);
                var metrics = run.Task.Metrics;
                var scores = Evaluate(model, run.Task.Dev, run.Head, metrics, options.EvalBatchSize, device);
                run.EvalCost = evalClock.Elapsed;
                var evaluation = new Evaluation(EpochOf(step), step, run.LastLoss, scores, clock.Elapsed, run.Task.Adapter);
                run.History.Add(evaluation);
                Evaluated?.Invoke(evaluation);
                if (double.IsNaN(scores[metrics[0]])) continue;
                if (run.Best is null || scores[metrics[0]] > run.Best.Metrics[metrics[0]])
                {
                    run.Best = evaluation;
                    run.SinceImprovement = 0;
                    run.Task.OnImproved?.Invoke(evaluation);
                }
                else if (++run.SinceImprovement >= options.EarlyStoppingPatience)
                {
                    run.Stopped = true;
                }
            }
            lastEvalStep = step;
            model.train();
        }

        // Until a task's first evaluation has been timed, guess: forward only (~1/3 of a training step's work) over its dev set.
        TimeSpan EvalReserve(TimeSpan perStep) => runs.Where(r => !r.Stopped).Aggregate(TimeSpan.Zero, (sum, r) =>
            sum + (r.EvalCost > TimeSpan.Zero ? r.EvalCost : perStep * (r.Task.Dev.Count / (double)options.BatchSize) * 0.5));

        // The first steps carry one-off start-up costs, so the reserve is judged from step 10 on, as the schedule is fitted.
        bool OutOfTime() => options.TimeBudget is { } budget && step > 0
                            && (clock.Elapsed >= budget || (step >= 10 && clock.Elapsed + EvalReserve(clock.Elapsed / step) >= budget));

        TaskRun Draw()
        {
            var live = runs.Where(r => !r.Stopped).ToList();
            // A single live task draws nothing, so one task consumes the random numbers a single-task run does.
            return live.Count == 1 ? live[0] : runs[TaskSampling.Pick(runs.Select(r => r.Stopped ? 0 : weights[r.Index]).ToList(), taskDraws)];
        }

        // One micro-batch's forward and backward through the task's adapter; its loss joins the task's running sum.
        void Accumulate(TaskRun run, Tensor ids, Tensor? mask, Tensor types, Tensor labels, Tensor scores, int group)
        {
            using var scope = NewDisposeScope();
            using var pass = model.NewPass();
            var logits = model.Logits(ids, mask, types, pass).to_type(ScalarType.Float32);
            var loss = run.Kind.Loss(run.Head, logits, labels, scores, mask);
            // What adapters add to the objective (a size penalty, say) trains them but is not the task's loss.
            var objective = pass.AuxiliaryLoss() is { } auxiliary ? loss + auxiliary : loss;
            (group > 1 ? objective / group : objective).backward();
            runningLoss[run.Index].add_(loss.detach());
        }

        // Clipping, the update with the scalars of the last Prepare, and fresh gradients: device work only.
        void Update(TaskRun run)
        {
            if (options.MaxGradNorm > 0) run.Optimizer.ClipGradNorm(options.MaxGradNorm);
            run.Optimizer.Apply();
            run.Optimizer.ZeroGrad();
        }

        void TrainStep(TaskRun run)
        {
            if (run.NextBatch >= run.Batches.Count)
            {
                run.Batches = run.Task.Train.ShuffledBatches(options.BatchSize, random, options.BucketByLength);
                run.OnDevice.Plan(run.Batches);
                run.NextBatch = 0;
            }
            model.Activate(run.Task.Adapter);
            lr = options.LearningRate * LearningRateFactor(step, warmup, totalSteps);
            // After a few eager steps, a task with graphs replays its whole step (one batch: graphs imply no accumulation).
            bool replay = run.Graphs is not null && run.Steps >= StepGraphs.EagerSteps;
            // Average over the micro-batches of this optimizer step (the last group of a pass may be short).
            int group = replay ? 1 : Math.Min(options.GradientAccumulation, run.Batches.Count - run.NextBatch);
            for (int k = 0; k < group; k++, run.NextBatch++)
            {
                using var scope = NewDisposeScope();
                var (ids, mask, types, labels, scores) = run.OnDevice.Get(run.NextBatch);
                if (replay)
                {
                    // This task's graph for the batch's shape reads its inputs from fixed tensors, refilled here.
                    var graph = run.Graphs!.For(ids, mask!, types, labels, scores, (i, m, t, l, s) =>
                    {
                        Accumulate(run, i, m, t, l, s, 1);
                        Update(run);
                    });
                    run.Optimizer.Prepare(lr);
                    graph.Replay();
                }
                else
                {
                    Accumulate(run, ids, mask, types, labels, scores, group);
                }
                run.LossTerms++;
                run.Examples += run.Batches[run.NextBatch].Length;
                examplesSeen += run.Batches[run.NextBatch].Length;
            }
            if (!replay)
            {
                run.Optimizer.Prepare(lr);
                Update(run);
            }
            run.Steps++;
        }

        void Report(TaskRun stepped)
        {
            float[] sums;
            using (NewDisposeScope())
            {
                sums = runningLoss.cpu().data<float>().ToArray(); // the one host sync per N steps
                runningLoss.zero_();
            }
            var losses = new Dictionary<string, double>();
            foreach (var run in runs)
            {
                if (run.LossTerms > 0) run.LastLoss = sums[run.Index] / run.LossTerms;
                losses[run.Task.Adapter] = run.LossTerms > 0 ? run.LastLoss : double.NaN;
                if (run.LossTerms > 0 && !double.IsFinite(run.LastLoss))
                    throw new TrainingException(
                        $"loss became {run.LastLoss} at step {step} ({(multi ? $"task {run.Task.Adapter}, " : "")}epoch {EpochOf(step)}, " +
                        $"learning rate {lr:g3}); lower --lr or check the data; the best checkpoint so far is kept");
            }
            int terms = runs.Sum(r => r.LossTerms);
            double loss = runs.Sum(r => r.LossTerms > 0 ? r.LastLoss * r.LossTerms : 0) / Math.Max(1, terms);
            foreach (var run in runs) run.LossTerms = 0;
            double seconds = clock.Elapsed.TotalSeconds;
            double examplesPerSecond = seconds > 0 ? examplesSeen / seconds : 0;
            Progress?.Invoke(new TrainProgress(step, totalSteps, EpochOf(step), loss, lr, examplesPerSecond, clock.Elapsed,
                examplesPerSecond > 0 ? Remaining(step, totalSteps, clock.Elapsed) : null, stepped.Task.Adapter, losses));
        }

        model.train();
        while (step < totalSteps)
        {
            var current = Draw();
            TrainStep(current);
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

            bool epochEnd = step % stepsPerEpoch == 0;
            if (step % options.LogEverySteps == 0 || epochEnd) Report(current);
            if ((options.EvalEverySteps is { } every && step % every == 0) || epochEnd) EvaluateAll();
            if (runs.All(r => r.Stopped))
            {
                stopReason = $"early stopping: no improvement in {options.EarlyStoppingPatience} evaluations";
                break;
            }
            if (OutOfTime() || (step >= totalSteps && totalSteps < plannedSteps))
            {
                stopReason = $"time budget of {options.TimeBudget!.Value.TotalMinutes:g3} min reached";
                if (lastEvalStep != step) EvaluateAll();
                break;
            }
        }
        return new MultiTaskResult(
            runs.Select(r => new TaskResult(r.Task.Adapter, r.Best, r.History, r.Steps, r.Examples)).ToList(),
            step, stopReason, clock.Elapsed, examplesSeen / Math.Max(1e-9, clock.Elapsed.TotalSeconds));
    }

    static TimeSpan Remaining(long step, long total, TimeSpan elapsed) =>
        step == 0 ? TimeSpan.Zero : elapsed / step * Math.Max(0, total - step);

    /// <summary>
    /// Scores <paramref name="data"/> with the active adapter: each metric by name, then what the adapter's modules
    /// gathered while it ran (<see cref="AdapterModel.Statistics"/>: a dynamic adapter's chosen sizes, say).
    /// </summary>
    public static Dictionary<string, double> Evaluate(AdapterModel model, EncodedDataset data, HeadConfig head,
        IReadOnlyList<string> metrics, int batchSize, Device device)
    {
        var adapter = model.Composition?.Head ?? model.Active;
        if (adapter is not null) model.ResetStatistics(adapter);
        var outputs = Predict(model, data, batchSize, device);
        var result = HeadKind.For(head).Score(head, data, outputs, metrics);
        // After the task's metrics, which come first in logs and reports.
        if (adapter is not null)
            foreach (var (figure, value) in model.Statistics(adapter))
                result.TryAdd(figure, value);
        return result;
    }

    /// <summary>
    /// The head's raw outputs for every row, in input order: logits per label, or the score; for a head that reads
    /// every position, the row's positions' logits one after another (its own length × tags, no padding).
    /// </summary>
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
            if (perBatch.Count > 0 && perBatch[0].dim() == 3)
            {
                // (B, T, tags) per batch, T the batch's own: each row keeps its own positions.
                for (int b = 0; b < onDevice.Count; b++)
                {
                    var batch = perBatch[b].cpu();
                    var values = batch.data<float>().ToArray();
                    long time = batch.shape[1], width = batch.shape[2];
                    var rows = onDevice.Rows(b);
                    for (int k = 0; k < rows.Length; k++)
                        outputs[rows[k]] = values.AsSpan((int)(k * time * width), data.Ids[rows[k]].Length * (int)width).ToArray();
                }
            }
            else if (perBatch.Count > 0)
            {
                var all = cat(perBatch, 0).cpu(); // (N, outputs) in batch order
                var values = all.data<float>().ToArray();
                int width = (int)all.shape[1], position = 0;
                for (int b = 0; b < onDevice.Count; b++)
                    foreach (var row in onDevice.Rows(b))
                        outputs[row] = values.AsSpan(position++ * width, width).ToArray();
            }
        }
        if (wasTraining) model.train();
        return outputs;
    }
}
