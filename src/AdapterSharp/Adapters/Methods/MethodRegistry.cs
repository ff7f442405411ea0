namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// Every tuning method, in one place: adding a method means a folder under <c>Adapters/Methods/</c> and one line in
/// <see cref="All"/> (or, from outside the library, <see cref="Register"/>). <c>--method</c> names resolve here, and
/// <c>adapter_config.json</c> is read by its method key.
/// </summary>
public static class MethodRegistry
{
    static readonly List<AdapterMethod> All =
    [
        new BottleneckMethod(),
        new BaselineMethod(),
        new HierarchicalMethod(),
        new SharedMethod(),
        new DynamicMethod(),
        new LoraMethod(),
    ];

    static readonly Dictionary<string, (AdapterMethod Method, MethodConfig Preset)> ByName =
        All.SelectMany(m => m.Presets.Select(p => (p.Method, (m, p)))).ToDictionary(e => e.Method, e => e.Item2, StringComparer.OrdinalIgnoreCase);

    static readonly Lock Guard = new();

    /// <summary>Every preset, in registry order.</summary>
    public static IReadOnlyList<MethodConfig> Presets { get; private set; } = All.SelectMany(m => m.Presets).ToArray();

    /// <summary>
    /// Adds a method defined outside the library (before any model or folder uses it): its presets become <c>--method</c>
    /// names and <c>adapter_config.json</c> method keys. A preset name already taken is an <see cref="ArgumentException"/>.
    /// </summary>
    public static void Register(AdapterMethod method)
    {
        lock (Guard)
        {
            if (method.Presets.Count == 0) throw new ArgumentException("a method needs at least one preset", nameof(method));
            if (method.Presets.FirstOrDefault(p => string.IsNullOrEmpty(p.Method) || ByName.ContainsKey(p.Method)) is { } taken)
                throw new ArgumentException($"method name '{taken.Method}' is empty or taken", nameof(method));
            if (method.Presets.Any(p => p.GetType() != method.ConfigType))
                throw new ArgumentException("a method's presets must share one record type", nameof(method));
            foreach (var preset in method.Presets) ByName[preset.Method] = (method, preset);
            All.Add(method);
            Presets = All.SelectMany(m => m.Presets).ToArray();
        }
    }

    public static string Names => string.Join(", ", Presets.Select(p => p.Method));

    /// <summary>The preset named <paramref name="name"/> (any case), or an <see cref="ArgumentException"/> listing them.</summary>
    public static MethodConfig Get(string name) =>
        Find(name) is { } entry ? entry.Preset
            : throw new ArgumentException($"--method: unknown method '{name}' (expected one of {Names})");

    /// <summary>The record type that configurations named <paramref name="name"/> have, or null for an unknown name.</summary>
    public static Type? ConfigType(string name) => Find(name)?.Method.ConfigType;

    static (AdapterMethod Method, MethodConfig Preset)? Find(string name)
    {
        lock (Guard) return ByName.TryGetValue(name, out var entry) ? entry : null;
    }

    /// <summary>The method that injects <paramref name="config"/>.</summary>
    public static AdapterMethod For(MethodConfig config)
    {
        if (Find(config.Method) is not { } entry)
            throw new ArgumentException($"unknown method '{config.Method}' (expected one of {Names})");
        if (!entry.Method.ConfigType.IsInstanceOfType(config))
            throw new ArgumentException($"method '{config.Method}' takes a {entry.Method.ConfigType.Name}, not a {config.GetType().Name}");
        return entry.Method;
    }
}
