using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace AdapterSharp.Server;

/// <summary>The server's counters, histograms and gauges, written in Prometheus' text format for <c>GET /metrics</c>.</summary>
public sealed class ServerMetrics
{
    static readonly double[] LatencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    static readonly double[] BatchBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

    readonly ConcurrentDictionary<(string Route, string Method, int Status), StrongBox> requests = new();
    readonly ConcurrentDictionary<string, Histogram> latency = new(StringComparer.Ordinal);
    readonly Histogram batchSizes = new(BatchBuckets);

    sealed class StrongBox
    {
        public long Value;
    }

    sealed class Histogram(double[] bounds)
    {
        readonly long[] counts = new long[bounds.Length + 1]; // the last is +Inf
        double sum;
        long count;

        public void Observe(double value)
        {
            int bucket = 0;
            while (bucket < bounds.Length && value > bounds[bucket]) bucket++;
            lock (counts)
            {
                counts[bucket]++;
                sum += value;
                count++;
            }
        }

        public (long Count, double Sum) Totals()
        {
            lock (counts) return (count, sum);
        }

        public void Write(StringBuilder text, string name, string labels)
        {
            long[] snapshot;
            double total;
            long observed;
            lock (counts)
            {
                snapshot = (long[])counts.Clone();
                total = sum;
                observed = count;
            }
            string prefix = labels.Length > 0 ? labels + "," : "";
            long cumulative = 0;
            for (int i = 0; i < bounds.Length; i++)
            {
                cumulative += snapshot[i];
                text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{{prefix}le=\"{Number(bounds[i])}\"}} {cumulative}\n");
            }
            text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{{prefix}le=\"+Inf\"}} {observed}\n");
            string braces = labels.Length > 0 ? $"{{{labels}}}" : "";
            text.Append(CultureInfo.InvariantCulture, $"{name}_sum{braces} {Number(total)}\n");
            text.Append(CultureInfo.InvariantCulture, $"{name}_count{braces} {observed}\n");
        }
    }

    public void ObserveRequest(string route, string method, int status, TimeSpan elapsed)
    {
        Interlocked.Increment(ref requests.GetOrAdd((route, method, status), _ => new StrongBox()).Value);
        latency.GetOrAdd(route, _ => new Histogram(LatencyBuckets)).Observe(elapsed.TotalSeconds);
    }

    public void ObserveBatch(int inputs) => batchSizes.Observe(inputs);

    readonly System.Collections.Concurrent.ConcurrentDictionary<string, StrongBox> dropped = new(StringComparer.Ordinal);

    /// <summary>
    /// Counts a request the worker did not answer with predictions, by reason: <c>client_gone</c> (dropped before its
    /// batch ran), <c>model_failure</c> (its inputs failed in the model, answered 500 alone).
    /// </summary>
    public void ObserveDropped(string reason) => Interlocked.Increment(ref dropped.GetOrAdd(reason, _ => new StrongBox()).Value);

    /// <summary>The count of <see cref="ObserveDropped"/> for <paramref name="reason"/>.</summary>
    public long Dropped(string reason) => dropped.TryGetValue(reason, out var box) ? Interlocked.Read(ref box.Value) : 0;

    readonly System.Collections.Concurrent.ConcurrentDictionary<string, StrongBox> rejected = new(StringComparer.Ordinal);

    /// <summary>Counts a request answered with an error status, by <see cref="ApiException.Reason"/>.</summary>
    public void ObserveRejected(string reason) => Interlocked.Increment(ref rejected.GetOrAdd(reason, _ => new StrongBox()).Value);

    /// <summary>The count of <see cref="ObserveRejected"/> for <paramref name="reason"/>.</summary>
    public long Rejected(string reason) => rejected.TryGetValue(reason, out var box) ? Interlocked.Read(ref box.Value) : 0;

    /// <summary>Batches the worker has run so far, and the inputs in them.</summary>
    public (long Batches, long Inputs) BatchTotals()
    {
        var (count, sum) = batchSizes.Totals();
        return (count, (long)sum);
    }

    /// <summary>Everything, with the gauges' current values.</summary>
    public string Render(int queueDepth, int adaptersLoaded, long inflightBytes = 0)
    {
        var text = new StringBuilder();
        Header(text, "adaptersharp_http_requests_total", "counter", "HTTP requests by route, method and status code.");
        foreach (var ((route, method, status), box) in requests.OrderBy(r => r.Key))
            text.Append(CultureInfo.InvariantCulture,
                $"adaptersharp_http_requests_total{{route=\"{Escape(route)}\",method=\"{method}\",status=\"{status}\"}} {Interlocked.Read(ref box.Value)}\n");
        Header(text, "adaptersharp_http_request_duration_seconds", "histogram", "Time from request to response, by route.");
        foreach (var (route, histogram) in latency.OrderBy(r => r.Key, StringComparer.Ordinal))
            histogram.Write(text, "adaptersharp_http_request_duration_seconds", $"route=\"{Escape(route)}\"");
        Header(text, "adaptersharp_batch_size", "histogram", "Inputs per batch that the inference worker ran.");
        batchSizes.Write(text, "adaptersharp_batch_size", "");
        Header(text, "adaptersharp_requests_dropped_total", "counter", "Requests the worker did not answer with predictions, by reason.");
        foreach (var (reason, box) in dropped.OrderBy(d => d.Key, StringComparer.Ordinal))
            text.Append(CultureInfo.InvariantCulture, $"adaptersharp_requests_dropped_total{{reason=\"{reason}\"}} {Interlocked.Read(ref box.Value)}\n");
        Header(text, "adaptersharp_requests_rejected_total", "counter", "Requests answered with an error status, by reason.");
        foreach (var (reason, box) in rejected.OrderBy(d => d.Key, StringComparer.Ordinal))
            text.Append(CultureInfo.InvariantCulture, $"adaptersharp_requests_rejected_total{{reason=\"{reason}\"}} {Interlocked.Read(ref box.Value)}\n");
        Header(text, "adaptersharp_inflight_body_bytes", "gauge", "Request body bytes held by requests not yet answered (see --max-inflight-bytes).");
        text.Append(CultureInfo.InvariantCulture, $"adaptersharp_inflight_body_bytes {inflightBytes}\n");
        Header(text, "adaptersharp_queue_depth", "gauge", "Requests waiting for the inference worker.");
        text.Append(CultureInfo.InvariantCulture, $"adaptersharp_queue_depth {queueDepth}\n");
        Header(text, "adaptersharp_adapters_loaded", "gauge", "Adapters loaded on the base model.");
        text.Append(CultureInfo.InvariantCulture, $"adaptersharp_adapters_loaded {adaptersLoaded}\n");
        return text.ToString();
    }

    static void Header(StringBuilder text, string name, string type, string help) =>
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} {type}\n");

    static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal)
        .Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
