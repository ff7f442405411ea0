using AdapterSharp.Heads;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using MinDataRate = Microsoft.AspNetCore.Server.Kestrel.Core.MinDataRate;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace AdapterSharp.Server;

/// <summary>
/// <c>adaptersharp serve</c>: Kestrel with minimal-API routes in front of one <see cref="InferenceWorker"/>.
/// <list type="bullet">
/// <item><c>POST /v1/predict</c>: predictions for texts, batched with concurrent requests</item>
/// <item><c>GET /v1/adapters</c>, <c>GET /v1/adapters/{name}</c>, <c>POST /v1/adapters</c> (from under the adapters root), <c>DELETE /v1/adapters/{name}</c></item>
/// <item><c>GET /healthz</c>, <c>GET /metrics</c> (Prometheus text)</item>
/// </list>
/// Errors are <c>{"error": "one line"}</c>. On stop (SIGTERM, Ctrl-C, <see cref="StopAsync"/>) the server stops
/// accepting, answers what is queued and in flight, and only then ends.
/// </summary>
public sealed class InferenceServer : IAsyncDisposable
{
    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
        // Quotes and non-ASCII text as they are, not \u0022: answers are JSON for API clients, never HTML.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    readonly ServerOptions options;
    readonly ModelHost host;
    readonly InferenceWorker worker;
    readonly AdaptersRoot? adaptersRoot;
    readonly byte[]? apiKeyHash;
    readonly WebApplication app;
    bool started;
    long inflightBytes;

    sealed record PredictResponse(string? Adapter, IReadOnlyList<Prediction> Predictions);

    sealed record AdapterList(IReadOnlyList<AdapterInfo> Adapters);

    sealed record Health(string Status, int Adapters);

    sealed record ErrorBody(string Error);

    InferenceServer(ServerOptions options, ModelHost host, IBatchRunner runner)
    {
        options.Validate();
        this.options = options;
        this.host = host;
        adaptersRoot = options.AdaptersRoot is null ? null : new AdaptersRoot(options.AdaptersRoot);
        apiKeyHash = options.ApiKey is null ? null : SHA256.HashData(Encoding.UTF8.GetBytes(options.ApiKey));
        app = Build();
        worker = new InferenceWorker(host, runner, options, Metrics.ObserveBatch, Metrics.ObserveDropped,
            (e, inputs) => app.Logger.LogError(e, "inference failed for a request of {Count} inputs ({Adapters})", inputs.Count,
                string.Join(", ", inputs.Select(i => i.Adapter).Distinct())));
    }

    /// <summary>
    /// A server for <paramref name="host"/>'s model; <paramref name="runner"/> defaults to one forward per
    /// adapter in a batch. The host's adapters may be loaded beforehand; once started, only the server changes them.
    /// </summary>
    public static InferenceServer Create(ServerOptions options, ModelHost host, IBatchRunner? runner = null) =>
        new(options, host, runner ?? new MixedBatchRunner(host, options.MaxBatch, options.ForwardCost));

    public ServerMetrics Metrics { get; } = new();

    /// <summary>The bound address (the real port when <see cref="ServerOptions.Port"/> is 0), once started.</summary>
    public Uri Url { get; private set; } = null!;

    /// <summary>Fires when a stop begins; queued work is still being answered.</summary>
    public CancellationToken Stopping => app.Lifetime.ApplicationStopping;

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        worker.Start();
        // Kestrel waits for in-flight requests after this; they wait for the worker, which drains the queue.
        app.Lifetime.ApplicationStopping.Register(worker.Complete);
        await app.StartAsync(cancellationToken);
        started = true;
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Url = new Uri(address);
    }

    /// <summary>Waits for a stop signal (SIGTERM, Ctrl-C), then stops gracefully.</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => app.WaitForShutdownAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken = default) => app.StopAsync(cancellationToken);

    public async ValueTask DisposeAsync()
    {
        if (started) await app.StopAsync();
        worker.Complete();
        worker.Join(TimeSpan.FromSeconds(30));
        await app.DisposeAsync();
    }

    WebApplication Build()
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = "AdapterSharp.Server",
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Logging.ClearProviders();
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace); // stdout is for "listening on"
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(60));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            var limits = kestrel.Limits;
            limits.MaxRequestBodySize = options.MaxBodyBytes;
            // Every dimension of a request and a connection is bounded: a client that opens sockets and sends nothing,
            // trickles a body, or sends huge headers holds nothing for long.
            limits.MaxConcurrentConnections = options.MaxConnections;
            limits.MaxConcurrentUpgradedConnections = 0;
            limits.KeepAliveTimeout = options.IdleTimeout;
            limits.RequestHeadersTimeout = options.IdleTimeout;
            limits.MinRequestBodyDataRate = new MinDataRate(bytesPerSecond: 1024, gracePeriod: TimeSpan.FromSeconds(5));
            limits.MaxRequestHeadersTotalSize = 16 * 1024;
            limits.MaxRequestHeaderCount = 50;
            limits.MaxRequestLineSize = 4 * 1024;
            kestrel.Listen(options.BindAddress, options.Port);
        });

        var app = builder.Build();
        app.Use(MeasureAsync);
        app.UseRouting();
        app.Use(AuthorizeAsync);
        app.Use(AnswerErrorsAsync);
        app.Use(BudgetBodiesAsync);
        app.MapPost("/v1/predict", PredictAsync);
        app.MapGet("/v1/adapters", context => WriteJsonAsync(context, 200, new AdapterList([.. host.Adapters.Values.OrderBy(a => a.Name, StringComparer.Ordinal)])));
        app.MapGet("/v1/adapters/{name}", context =>
        {
            var name = (string)context.Request.RouteValues["name"]!;
            return host.Adapters.TryGetValue(name, out var info)
                ? WriteJsonAsync(context, 200, info)
                : throw new ApiException(StatusCodes.Status404NotFound, $"no adapter named '{name}'", "unknown_adapter");
        });
        app.MapPost("/v1/adapters", LoadAsync);
        app.MapDelete("/v1/adapters/{name}", UnloadAsync);
        app.MapGet("/healthz", context => WriteJsonAsync(context, 200, new Health("ok", host.Adapters.Count)));
        app.MapGet("/metrics", async context =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await context.Response.WriteAsync(Metrics.Render(worker.QueueDepth, host.Adapters.Count, Interlocked.Read(ref inflightBytes)));
        });
        return app;
    }

    async Task PredictAsync(HttpContext context)
    {
        PredictRequest request;
        using (var body = await ReadJsonAsync(context))
            request = RequestBodies.Predict(body, options.MaxInputs);
        var loaded = host.Adapters;
        // Checked again by the worker when the batch runs: an unload may come in between.
        if (request.Inputs.Select(i => i.Adapter).FirstOrDefault(a => !loaded.ContainsKey(a)) is { } missing)
            throw new ApiException(StatusCodes.Status404NotFound, $"no adapter named '{missing}'", "unknown_adapter");
        // What each adapter's head needs from an input (a context for QA, choices for multiple choice), before it is queued.
        for (int i = 0; i < request.Inputs.Count; i++)
        {
            var input = request.Inputs[i];
            if (HeadKind.For(loaded[input.Adapter].Head).CheckInput(input.AsPredictInput()) is { } problem)
                throw new ApiException(StatusCodes.Status400BadRequest, $"inputs[{i}]: {problem} (adapter '{input.Adapter}')");
        }
        var predictions = await worker.Predict(request.Inputs, context.RequestAborted);
        var response = request.MixesAdapters
            ? new PredictResponse(null, predictions)
            : new PredictResponse(request.Adapter, [.. predictions.Select(p => p with { Adapter = null })]);
        await WriteJsonAsync(context, 200, response);
    }

    async Task LoadAsync(HttpContext context)
    {
        if (adaptersRoot is null)
            throw new ApiException(StatusCodes.Status403Forbidden, "loading adapters at run time is off: start the server with --adapters-root");
        LoadRequest request;
        using (var body = await ReadJsonAsync(context))
            request = RequestBodies.Load(body);
        var (path, name) = request;
        var dir = adaptersRoot.Resolve(path);
        AdapterInfo info;
        try
        {
            info = await worker.Execute(() => host.Load(dir, name, adaptersRoot.FindReferenced));
        }
        catch (Exception e) when (e is ModelFormatException or CheckpointException or DataFormatException or IOException
                                      or UnauthorizedAccessException or InvalidDataException)
        {
            throw Bad(e.Message);
        }
        context.Response.Headers.Location = $"/v1/adapters/{info.Name}";
        await WriteJsonAsync(context, StatusCodes.Status201Created, info);
    }

    async Task UnloadAsync(HttpContext context)
    {
        var name = (string)context.Request.RouteValues["name"]!;
        await worker.Execute(() =>
        {
            host.Unload(name);
            return true;
        });
        context.Response.StatusCode = StatusCodes.Status204NoContent;
    }

    async Task<JsonDocument> ReadJsonAsync(HttpContext context)
    {
        // Kestrel enforces the limit (MaxRequestBodySize) as the body is read, with or without a Content-Length.
        try
        {
            return await RequestBodies.ParseAsync(context.Request.Body, context.RequestAborted);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw TooLarge();
        }

        ApiException TooLarge() =>
            new(StatusCodes.Status413PayloadTooLarge, $"the request body is larger than {options.MaxBodyBytes} bytes (--max-body-bytes)");
    }

    async Task MeasureAsync(HttpContext context, RequestDelegate next)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            await next(context);
        }
        finally
        {
            var route = (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
            Metrics.ObserveRequest(route, context.Request.Method, context.Response.StatusCode, Stopwatch.GetElapsedTime(start));
        }
    }

    /// <summary>
    /// Holds a request's body bytes against <see cref="ServerOptions.MaxInflightBytes"/> until it is answered (its parsed
    /// inputs live that long, in the queue or the worker); over the limit it is answered 503 before its body is read.
    /// </summary>
    async Task BudgetBodiesAsync(HttpContext context, RequestDelegate next)
    {
        if (!HttpMethods.IsPost(context.Request.Method))
        {
            await next(context);
            return;
        }
        // A body that declares more than the limit can never be served: 413 now, not a 503 that invites a retry.
        if (context.Request.ContentLength > options.MaxBodyBytes)
            throw new ApiException(StatusCodes.Status413PayloadTooLarge,
                $"the request body is larger than {options.MaxBodyBytes} bytes (--max-body-bytes)");
        long cost = Math.Min(context.Request.ContentLength ?? options.MaxBodyBytes, options.MaxBodyBytes);
        if (Interlocked.Add(ref inflightBytes, cost) > options.MaxInflightBytes)
        {
            Interlocked.Add(ref inflightBytes, -cost);
            throw new ApiException(StatusCodes.Status503ServiceUnavailable,
                $"the server holds {options.MaxInflightBytes} bytes of requests already (--max-inflight-bytes); retry later", "busy");
        }
        try
        {
            await next(context);
        }
        finally
        {
            Interlocked.Add(ref inflightBytes, -cost);
        }
    }

    async Task AuthorizeAsync(HttpContext context, RequestDelegate next)
    {
        if (apiKeyHash is not null && context.Request.Path != "/healthz")
        {
            var header = context.Request.Headers.Authorization.ToString();
            bool ok = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)
                      && CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(header["Bearer ".Length..].Trim())), apiKeyHash);
            if (!ok)
            {
                Metrics.ObserveRejected("unauthorized");
                context.Response.Headers.WWWAuthenticate = "Bearer";
                await WriteJsonAsync(context, StatusCodes.Status401Unauthorized,
                    new ErrorBody("missing or wrong API key: send Authorization: Bearer <key>"));
                return;
            }
        }
        await next(context);
    }

    async Task AnswerErrorsAsync(HttpContext context, RequestDelegate next)
    {
        int status;
        string message, reason;
        try
        {
            await next(context);
            if (context.Response.StatusCode >= 400) Metrics.ObserveRejected(ApiException.ReasonFor(context.Response.StatusCode));
            return;
        }
        catch (ApiException e)
        {
            (status, message, reason) = (e.Status, e.Message, e.Reason);
        }
        catch (BadHttpRequestException e)
        {
            (status, message, reason) = (e.StatusCode, e.Message, ApiException.ReasonFor(e.StatusCode));
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            Metrics.ObserveRejected("client_gone");
            return; // the client went away
        }
        catch (Exception e)
        {
            app.Logger.LogError(e, "{Method} {Path} failed", context.Request.Method, context.Request.Path);
            // The message may hold internals (libtorch's frames, paths): the log has it, the client gets a plain line.
            (status, message, reason) = (StatusCodes.Status500InternalServerError, "internal error; the server log has the details", "internal");
        }
        Metrics.ObserveRejected(reason);
        if (context.Response.HasStarted) return;
        context.Response.Clear();
        if (status == StatusCodes.Status503ServiceUnavailable) context.Response.Headers.RetryAfter = "1";
        // The rest of an oversized body is not worth reading to keep the connection.
        if (status == StatusCodes.Status413PayloadTooLarge) context.Response.Headers.Connection = "close";
        await WriteJsonAsync(context, status, new ErrorBody(OneLine(message)));
    }

    static Task WriteJsonAsync<T>(HttpContext context, int status, T value)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(value, Json, context.RequestAborted);
    }

    static string OneLine(string message) => message.ReplaceLineEndings(" ");

    static ApiException Bad(string message) => new(StatusCodes.Status400BadRequest, message);
}
