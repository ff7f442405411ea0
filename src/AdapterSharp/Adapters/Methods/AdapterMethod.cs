namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// One tuning method: its configuration record (presets of it, each named), its modules, and the injector that
/// puts them into a model for one adapter. Each lives in its own folder under <c>Adapters/Methods/</c> and is
/// listed once in <see cref="MethodRegistry"/>; freezing, saving, loading, removal, mixed batches and precision
/// need nothing more from it, because the injector records what it creates (<see cref="AdapterInjection"/>).
/// </summary>
public abstract class AdapterMethod
{
    /// <summary>What <c>--method</c> can pick, each preset named by its <see cref="MethodConfig.Method"/>; all of one record type.</summary>
    public abstract IReadOnlyList<MethodConfig> Presets { get; }

    /// <summary>The record type of its configuration.</summary>
    public Type ConfigType => Presets[0].GetType();

    /// <summary>Puts the modules of <paramref name="config"/> into the model, through <paramref name="injection"/>.</summary>
    public abstract void Inject(MethodConfig config, AdapterInjection injection);
}

/// <summary>A method whose configuration is a <typeparamref name="TConfig"/>.</summary>
public abstract class AdapterMethod<TConfig> : AdapterMethod where TConfig : MethodConfig
{
    public sealed override void Inject(MethodConfig config, AdapterInjection injection) => Inject((TConfig)config, injection);

    protected abstract void Inject(TConfig config, AdapterInjection injection);
}
