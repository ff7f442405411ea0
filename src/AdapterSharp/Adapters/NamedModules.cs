using TorchSharp;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters;

/// <summary>A module that holds what adapters added to the model: walks over the base's own modules do not enter it.</summary>
public interface IAdapterContainer
{
    /// <summary>Removes (and disposes) what is held under <paramref name="name"/>, if anything.</summary>
    void Remove(string name);
}

/// <summary>
/// Child modules by name that can be added and removed at any time, each appearing in the state dict under
/// its name. (TorchSharp's ModuleDict registers its children once, at construction, so later additions would
/// be invisible to parameters(), to(), state_dict() and training.)
/// </summary>
public class NamedModules<T> : nn.Module, IAdapterContainer where T : nn.Module
{
    readonly Dictionary<string, T> byName = new(StringComparer.Ordinal);

    public NamedModules() : base(nameof(NamedModules<T>)) => RegisterComponents();

    public IReadOnlyCollection<string> Names => byName.Keys;

    public int Count => byName.Count;

    public bool Contains(string name) => byName.ContainsKey(name);

    public bool TryGet(string name, out T module) => byName.TryGetValue(name, out module!);

    public T this[string name] => byName[name];

    public void Add(string name, T module)
    {
        byName.Add(name, module);
        register_module(name, module);
    }

    public void Remove(string name)
    {
        if (!byName.Remove(name, out var module)) return;
        _internal_submodules.Remove(name);
        module.Dispose();
    }
}
