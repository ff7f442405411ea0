using System.Diagnostics;
using System.Threading.Channels;
using AdapterSharp.Heads;
using Microsoft.AspNetCore.Http;

namespace AdapterSharp.Server;

/// <summary>
/// The single thread that owns the model (TorchSharp modules are not safe for concurrent forwards). Prediction
/// requests and adapter loads/unloads share one bounded queue, in arrival order: the worker takes a request,
/// then, for at most <c>maxWait</c>, more requests while their inputs fit in <c>maxBatch</c>, runs them as one
/// batch, and completes each request. A load or unload runs alone between batches, so a request sees an adapter
/// wholly or not at all, and a request is never split across batches.
/// </summary>
sealed class InferenceWorker
{
    abstract class Work;

    sealed class PredictionJob(IReadOnlyList<BatchInput> inputs, CancellationToken aborted) : Work
    {
        public IReadOnlyList<BatchInput> Inputs { get; } = inputs;
        public CancellationToken Aborted { get; } = aborted;
        public TaskCompletionSource<Prediction[]> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    sealed class ControlJob(Action run) : Work
    {
        public Action Run { get; } = run;
    }

    readonly Channel<Work> queue;
    readonly ModelHost host;
    readonly IBatchRunner runner;
    readonly int maxBatch;
    readonly long maxWaitTicks;
    readonly Action<int> observeBatch;
    readonly Action<Exception, IReadOnlyList<BatchInput>> logFailure;
    readonly Action<string> observeDropped;
    readonly Thread thread;

    /// <param name="observeDropped">Told of each request not answered with predictions, by reason (see <see cref="ServerMetrics.ObserveDropped"/>).</param>
    /// <param name="logFailure">Told of a request whose inputs failed in the model (the response says only that it failed).</param>
    public InferenceWorker(ModelHost host, IBatchRunner runner, ServerOptions options, Action<int> observeBatch,
        Action<string>? observeDropped = null, Action<Exception, IReadOnlyList<BatchInput>>? logFailure = null)
    {
        this.observeDropped = observeDropped ?? (_ => { });
        this.host = host;
        this.runner = runner;
        maxBatch = options.MaxBatch;
        maxWaitTicks = options.MaxWaitMs * Stopwatch.Frequency / 1000;
        this.observeBatch = observeBatch;
        this.logFailure = logFailure ?? ((e, _) => Console.Error.WriteLine($"inference failed: {e}"));
        queue = Channel.CreateBounded<Work>(new BoundedChannelOptions(options.QueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        thread = new Thread(Loop) { Name = "adaptersharp-inference", IsBackground = true };
    }

    /// <summary>Requests and control items waiting.</summary>
    public int QueueDepth => queue.Reader.Count;

    public void Start() => thread.Start();

    /// <summary>
    /// Queues a request's inputs (every adapter named must be loaded when its batch runs, else 404); 503 when
    /// the queue is full or the server is stopping. A request whose <paramref name="aborted"/> fires (its client hung
    /// up) before its batch runs is dropped without costing a forward pass.
    /// </summary>
    public Task<Prediction[]> Predict(IReadOnlyList<BatchInput> inputs, CancellationToken aborted = default)
    {
        var job = new PredictionJob(inputs, aborted);
        if (!queue.Writer.TryWrite(job))
            throw new ApiException(StatusCodes.Status503ServiceUnavailable, "the inference queue is full or the server is stopping; retry later");
        return job.Completion.Task;
    }

    /// <summary>Runs <paramref name="action"/> on the worker thread between batches, after what is queued now.</summary>
    public async Task<T> Execute<T>(Func<T> action)
    {
        var completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var job = new ControlJob(() =>
        {
            try
            {
                completion.SetResult(action());
            }
            catch (Exception e)
            {
                completion.SetException(e);
            }
        });
        try
        {
            // A full queue delays a load or unload rather than refusing it.
            await queue.Writer.WriteAsync(job);
        }
        catch (ChannelClosedException)
        {
            throw new ApiException(StatusCodes.Status503ServiceUnavailable, "the server is stopping");
        }
        return await completion.Task;
    }

    /// <summary>Stops taking work; what is queued still runs, then the thread ends.</summary>
    public void Complete() => queue.Writer.TryComplete();

    public bool Join(TimeSpan timeout) => !thread.IsAlive || thread.Join(timeout);

    void Loop()
    {
        var reader = queue.Reader;
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            if (!reader.TryRead(out var work)) continue;
            if (work is ControlJob control)
            {
                control.Run();
                continue;
            }
            var batch = Gather((PredictionJob)work);
            RunBatch(batch);
        }
    }

    List<PredictionJob> Gather(PredictionJob first)
    {
        var batch = new List<PredictionJob> { first };
        int count = first.Inputs.Count;
        long deadline = Stopwatch.GetTimestamp() + maxWaitTicks;
        var reader = queue.Reader;
        while (count < maxBatch)
        {
            if (reader.TryPeek(out var next))
            {
                // A control item or a request that would overflow the batch waits for the next round.
                if (next is not PredictionJob job || count + job.Inputs.Count > maxBatch) break;
                reader.TryRead(out _);
                batch.Add(job);
                count += job.Inputs.Count;
                continue;
            }
            long remaining = deadline - Stopwatch.GetTimestamp();
            if (remaining <= 0) break;
            var wait = reader.WaitToReadAsync().AsTask();
            if (!wait.Wait(TimeSpan.FromSeconds((double)remaining / Stopwatch.Frequency)) || !wait.Result) break;
        }
        return batch;
    }

    void RunBatch(List<PredictionJob> batch)
    {
        var loaded = host.Adapters;
        var runnable = new List<PredictionJob>(batch.Count);
        foreach (var job in batch)
        {
            if (job.Aborted.IsCancellationRequested)
            {
                observeDropped("client_gone");
                job.Completion.TrySetCanceled(job.Aborted);
                continue;
            }
            var missing = job.Inputs.Select(i => i.Adapter).FirstOrDefault(a => !loaded.ContainsKey(a));
            if (missing is null) runnable.Add(job);
            else job.Completion.SetException(new ApiException(StatusCodes.Status404NotFound, $"no adapter named '{missing}'"));
        }
        if (runnable.Count == 0) return;
        if (Run(runnable, loaded) is not { } failure) return;
        if (runnable.Count == 1)
        {
            Fail(runnable[0], failure);
            return;
        }
        // One request's inputs can fail a batch they share (an input the model cannot take): run each request alone,
        // so that the others are answered and only the failing one gets the error.
        foreach (var job in runnable)
            if (Run([job], loaded) is { } alone)
                Fail(job, alone);
    }

    /// <summary>Runs <paramref name="jobs"/> as one batch and completes them; the exception if the batch failed (jobs left open).</summary>
    Exception? Run(List<PredictionJob> jobs, IReadOnlyDictionary<string, AdapterInfo> loaded)
    {
        try
        {
            var inputs = jobs.SelectMany(j => j.Inputs).ToList();
            observeBatch(inputs.Count);
            var outputs = runner.Run(inputs);
            int position = 0;
            foreach (var job in jobs)
            {
                var predictions = new Prediction[job.Inputs.Count];
                for (int i = 0; i < predictions.Length; i++, position++)
                {
                    var adapter = job.Inputs[i].Adapter;
                    predictions[i] = Prediction.From(loaded[adapter].Head, outputs[position]) with { Adapter = adapter };
                }
                job.Completion.SetResult(predictions);
            }
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    /// <summary>
    /// Answers a request that failed on its own: an <see cref="ApiException"/> as it is; anything else, whose message may
    /// hold the model's internals, as a 500 that says only that, logged in full on the server.
    /// </summary>
    void Fail(PredictionJob job, Exception e)
    {
        if (e is ApiException)
        {
            job.Completion.TrySetException(e);
            return;
        }
        logFailure(e, job.Inputs);
        observeDropped("model_failure");
        job.Completion.TrySetException(new ApiException(StatusCodes.Status500InternalServerError,
            "the model failed on this request's inputs; the server log has the details"));
    }
}
