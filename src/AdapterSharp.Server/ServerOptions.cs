using System.Net;

namespace AdapterSharp.Server;

/// <summary>What <c>adaptersharp serve</c> binds to, who it serves, and how it batches.</summary>
public sealed record ServerOptions
{
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>0 binds an ephemeral port (see <see cref="InferenceServer.Url"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>The folder under which <c>POST /v1/adapters</c> may load adapters; null turns run-time loading off.</summary>
    public string? AdaptersRoot { get; init; }

    /// <summary>When set, every route but <c>/healthz</c> wants <c>Authorization: Bearer &lt;key&gt;</c>.</summary>
    public string? ApiKey { get; init; }

    /// <summary>Inputs per forward batch; a single request with more inputs runs alone, in chunks of this size.</summary>
    public int MaxBatch { get; init; } = 64;

    /// <summary>How long the worker waits, after the first request of a batch, for more to fill it.</summary>
    public int MaxWaitMs { get; init; } = 5;

    /// <summary>
    /// A forward's fixed cost in padded tokens: a batch is cut into chunks by length where padding would cost more
    /// (see <see cref="MixedBatchRunner.ChunksByLength"/>); null: <see cref="MixedBatchRunner.DefaultForwardCost"/>.
    /// </summary>
    public int? ForwardCost { get; init; }

    /// <summary>Prediction requests waiting for the worker; one more is answered 503.</summary>
    public int QueueCapacity { get; init; } = 256;

    public long MaxBodyBytes { get; init; } = 1 << 20;

    /// <summary>
    /// Request body bytes held at once by requests not yet answered (a body without a Content-Length counts as
    /// <see cref="MaxBodyBytes"/>); one more is answered 503, so that many large bodies at once cannot take the
    /// process's memory. The default holds 32 maximal bodies, or thousands of ordinary ones.
    /// </summary>
    public long MaxInflightBytes { get; init; } = 32L << 20;

    public int MaxInputs { get; init; } = 256;

    /// <summary>Open connections at most; more wait in the listen backlog (Kestrel's MaxConcurrentConnections).</summary>
    public int MaxConnections { get; init; } = 512;

    /// <summary>
    /// How long a connection may stay idle between requests, or before its first one (Kestrel's keep-alive and
    /// request-headers timeouts); a body must then arrive at 1 KiB/s or faster after a 5 s grace.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(15);

    public IPAddress BindAddress =>
        string.Equals(Host, "localhost", StringComparison.OrdinalIgnoreCase) ? IPAddress.Loopback
        : IPAddress.TryParse(Host.Trim('[', ']'), out var address) ? address
        : throw new ArgumentException($"--host: '{Host}' is not an IP address or localhost");

    public void Validate()
    {
        var address = BindAddress;
        if (!IPAddress.IsLoopback(address) && string.IsNullOrEmpty(ApiKey))
            throw new ArgumentException(
                $"--host {Host} is reachable from other machines: give --api-key-file so that only clients with the key are served");
        if (Port is < 0 or > 65535) throw new ArgumentException($"--port must be 0-65535, got {Port}");
        if (MaxBatch < 1) throw new ArgumentException($"--max-batch must be at least 1, got {MaxBatch}");
        if (MaxWaitMs < 0) throw new ArgumentException($"--max-wait-ms must not be negative, got {MaxWaitMs}");
        if (ForwardCost < 0) throw new ArgumentException($"--forward-cost must not be negative, got {ForwardCost}");
        if (QueueCapacity < 1) throw new ArgumentException($"--queue-capacity must be at least 1, got {QueueCapacity}");
        if (MaxBodyBytes < 1024) throw new ArgumentException($"--max-body-bytes must be at least 1024, got {MaxBodyBytes}");
        if (MaxInflightBytes < MaxBodyBytes)
            throw new ArgumentException($"--max-inflight-bytes ({MaxInflightBytes}) must be at least --max-body-bytes ({MaxBodyBytes})");
        if (MaxInputs < 1) throw new ArgumentException($"--max-inputs must be at least 1, got {MaxInputs}");
        if (MaxConnections < 1) throw new ArgumentException($"--max-connections must be at least 1, got {MaxConnections}");
        if (IdleTimeout <= TimeSpan.Zero) throw new ArgumentException("--idle-timeout must be positive");
        if (AdaptersRoot is not null && !Directory.Exists(AdaptersRoot))
            throw new ArgumentException($"--adapters-root {AdaptersRoot}: folder not found");
    }

    /// <summary>The key in <paramref name="path"/>, surrounding whitespace (the file's final newline) removed.</summary>
    public static string ReadApiKey(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"--api-key-file {path}: file not found");
        var key = File.ReadAllText(path).Trim();
        if (key.Length == 0) throw new ArgumentException($"--api-key-file {path}: the file is empty");
        if (key.Any(char.IsWhiteSpace)) throw new ArgumentException($"--api-key-file {path}: the key must be one word");
        return key;
    }
}

/// <summary>A request the server refuses, with the HTTP status to answer and a one-line message.</summary>
public sealed class ApiException(int status, string message, string? reason = null) : Exception(Messages.OneLine(message))
{
    public int Status { get; } = status;

    /// <summary>Why, as <c>/metrics</c> counts it (<c>adaptersharp_requests_rejected_total{reason}</c>).</summary>
    public string Reason { get; } = reason ?? ReasonFor(status);

    public static string ReasonFor(int status) => status switch
    {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "too_large",
        415 => "unsupported_media_type",
        431 => "headers_too_large",
        500 => "internal",
        503 => "unavailable",
        _ => $"status_{status}",
    };
}
