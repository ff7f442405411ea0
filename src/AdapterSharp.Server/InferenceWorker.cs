using System.Diagnostics;
using System.Threading.Channels;
using AdapterSharp.Heads;
using Microsoft.AspNetCore.Http;

namespace AdapterSharp.Server;

/// <summary>
/// The single thread that owns the model (TorchSharp modules are not safe for concurrent forwards). Prediction
/// requests and adapter loads/unloads share one bounded queue, in arrival order. The worker fills each batch of at
/// most <c>maxBatch</c> inputs with, in this order: requests that did not fit the last batch, new requests (waiting up
/// to <c>maxWait</c> for more while there is room), and the rest of requests larger than a batch, least recently
/// served first. A request of at most <c>maxBatch</c> inputs runs whole in one batch; a larger one is cut into pieces
/// that take turns with the others, so a maximal request delays a small one by at most one batch. A load or unload
/// runs alone, after every request queued before it has finished and before any queued after it starts, so a request
/// sees an adapter wholly or not at all.
/// </summary>
sealed class InferenceWorker
{
    abstract class Work;

    sealed class PredictionJob(IReadOnlyList<BatchInput> inputs, CancellationToken aborted) : Work
    {
        public IReadOnlyList<BatchInput> Inputs { get; } = inputs;
        public CancellationToken Aborted { get; } = aborted;
        public TaskCompletionSource<Prediction[]> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        // Worker thread only: inputs handed to batches so far, inputs answered so far, and their predictions.
        public int Taken;
        public int Done;
        public Prediction[]? Results;

        public int Remaining => Inputs.Count - Taken;
        public bool Finished => Completion.Task.IsCompleted;
    }

    /// <summary>Inputs <c>[Start, Start + Count)</c> of a request, in one batch.</summary>
    readonly record struct Piece(PredictionJob Job, int Start, int Count);

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

    // Worker thread only: requests taken from the queue that did not fit a batch yet (arrival order), requests larger
    // than a batch with inputs still to run (least recently served first), and a load/unload waiting for both to empty.
    readonly List<PredictionJob> waiting = [];
    List<PredictionJob> partial = [];
    ControlJob? barrier;
    int pending;

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

    /// <summary>Requests and control items waiting, in the queue or taken from it but not yet (wholly) run.</summary>
    public int QueueDepth => queue.Reader.Count + Volatile.Read(ref pending);

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
            throw new ApiException(StatusCodes.Status503ServiceUnavailable, "the inference queue is full or the server is stopping; retry later", "queue_full");
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
            throw new ApiException(StatusCodes.Status503ServiceUnavailable, "the server is stopping", "stopping");
        }
        return await completion.Task;
    }

    /// <summary>Stops taking work; what is queued still runs, then the thread ends.</summary>
    public void Complete() => queue.Writer.TryComplete();

    public bool Join(TimeSpan timeout) => !thread.IsAlive || thread.Join(timeout);

    void Loop()
    {
        var reader = queue.Reader;
        long lastTrim = Stopwatch.GetTimestamp();
        bool ranSinceTrim = false;
        while (true)
        {
            if (waiting.Count == 0 && partial.Count == 0)
            {
                if (barrier is { } control)
                {
                    barrier = null;
                    control.Run();
                    continue;
                }
                if (!reader.TryPeek(out _) && ranSinceTrim)
                {
                    // Idle: what the batches allocated goes back to the system before the wait.
                    Native.HostMemory.Trim();
                    (lastTrim, ranSinceTrim) = (Stopwatch.GetTimestamp(), false);
                }
                if (!reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult()) break;
            }
            var pieces = NextBatch();
            Volatile.Write(ref pending, waiting.Count + partial.Count + (barrier is null ? 0 : 1));
            if (pieces.Count > 0)
            {
                RunBatch(pieces);
                ranSinceTrim = true;
            }
            if (ranSinceTrim && Stopwatch.GetElapsedTime(lastTrim) >= TrimInterval)
            {
                // Never idle under a steady load: trim every so often anyway (milliseconds per interval).
                Native.HostMemory.Trim();
                (lastTrim, ranSinceTrim) = (Stopwatch.GetTimestamp(), false);
            }
        }
    }

    /// <summary>How often a busy worker gives the C allocator's free memory back (<see cref="Native.HostMemory.Trim"/>).</summary>
    static readonly TimeSpan TrimInterval = TimeSpan.FromSeconds(10);

    /// <summary>The next batch's pieces (see the class summary for the order); may be empty.</summary>
    List<Piece> NextBatch()
    {
        var pieces = new List<Piece>();
        int count = 0;
        long deadline = Stopwatch.GetTimestamp() + maxWaitTicks;

        for (int i = 0; i < waiting.Count;)
        {
            var job = waiting[i];
            if (!Offer(job, split: true))
            {
                i++;
                continue;
            }
            waiting.RemoveAt(i);
            if (!job.Finished && job.Remaining > 0) partial.Add(job);
        }
        ReadArrivals(wait: false);
        if (partial.Count > 0)
        {
            var unserved = new List<PredictionJob>();
            var served = new List<PredictionJob>();
            foreach (var job in partial)
            {
                if (!Offer(job, split: true)) unserved.Add(job);
                else if (!job.Finished && job.Remaining > 0) served.Add(job);
            }
            partial = [.. unserved, .. served];
        }
        ReadArrivals(wait: true);
        return pieces;

        // Takes new requests while there is room and no load/unload is next; a request that does not fit waits for
        // the next batch, and so do the requests behind it.
        void ReadArrivals(bool wait)
        {
            var reader = queue.Reader;
            while (count < maxBatch && barrier is null && waiting.Count == 0)
            {
                if (reader.TryRead(out var work))
                {
                    if (work is ControlJob control)
                    {
                        barrier = control;
                        return;
                    }
                    var job = (PredictionJob)work;
                    if (!Admit(job)) continue;
                    if (!Offer(job, split: true)) waiting.Add(job);
                    else if (!job.Finished && job.Remaining > 0) partial.Add(job);
                    continue;
                }
                long remaining = deadline - Stopwatch.GetTimestamp();
                if (!wait || remaining <= 0 || pieces.Count == 0) return;
                var next = reader.WaitToReadAsync().AsTask();
                if (!next.Wait(TimeSpan.FromSeconds((double)remaining / Stopwatch.Frequency)) || !next.Result) return;
            }
        }

        // Puts the job's next inputs into the batch: all of them if they fit; as many as fit if it is larger than a
        // batch and <paramref name="split"/>. False when it must wait. A finished or abandoned job is consumed.
        bool Offer(PredictionJob job, bool split)
        {
            if (job.Finished) return true;
            if (job.Aborted.IsCancellationRequested)
            {
                observeDropped("client_gone");
                job.Completion.TrySetCanceled(job.Aborted);
                return true;
            }
            int room = maxBatch - count;
            int take = job.Remaining <= room ? job.Remaining
                : split && job.Remaining > maxBatch && room > 0 ? room
                : 0;
            if (take == 0) return false;
            pieces.Add(new Piece(job, job.Taken, take));
            job.Taken += take;
            count += take;
            return true;
        }
    }

    /// <summary>False (and the request answered 404) when it names an adapter that is not loaded.</summary>
    bool Admit(PredictionJob job)
    {
        var loaded = host.Adapters;
        var missing = job.Inputs.Select(i => i.Adapter).FirstOrDefault(a => !loaded.ContainsKey(a));
        if (missing is null) return true;
        job.Completion.TrySetException(new ApiException(StatusCodes.Status404NotFound, $"no adapter named '{missing}'", "unknown_adapter"));
        return false;
    }

    void RunBatch(List<Piece> pieces)
    {
        var loaded = host.Adapters;
        if (Run(pieces, loaded) is not { } failure) return;
        if (pieces.Count == 1)
        {
            Fail(pieces[0].Job, failure);
            return;
        }
        // One request's inputs can fail a batch they share (an input the model cannot take): run each piece alone,
        // so that the others are answered and only the failing request gets the error.
        foreach (var piece in pieces)
            if (!piece.Job.Finished && Run([piece], loaded) is { } alone)
                Fail(piece.Job, alone);
    }

    /// <summary>Runs <paramref name="pieces"/> as one batch and records their predictions; the exception if the batch failed.</summary>
    Exception? Run(List<Piece> pieces, IReadOnlyDictionary<string, AdapterInfo> loaded)
    {
        IReadOnlyList<InputResult> outputs;
        try
        {
            var inputs = pieces.SelectMany(p => p.Job.Inputs.Skip(p.Start).Take(p.Count)).ToList();
            observeBatch(inputs.Count);
            outputs = runner.Run(inputs);
        }
        catch (Exception e)
        {
            return e;
        }
        int position = 0;
        foreach (var (job, start, count) in pieces)
        {
            try
            {
                var results = job.Results ??= new Prediction[job.Inputs.Count];
                for (int i = start; i < start + count; i++)
                {
                    var input = job.Inputs[i];
                    var head = loaded[input.Adapter].Head;
                    var result = outputs[position + i - start];
                    results[i] = HeadKind.For(head).Answer(head, input.AsPredictInput(), result.Rows, result.Outputs) with { Adapter = input.Adapter };
                }
                job.Done += count;
                if (job.Done == job.Inputs.Count) job.Completion.TrySetResult(results);
            }
            catch (Exception e)
            {
                Fail(job, e);
            }
            position += count;
        }
        return null;
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
            "the model failed on this request's inputs; the server log has the details", "model_failure"));
    }
}
