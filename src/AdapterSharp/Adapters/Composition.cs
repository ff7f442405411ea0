namespace AdapterSharp.Adapters;

/// <summary>
/// How several loaded adapters combine in one forward pass (set with <see cref="AdapterModel.Composition"/>).
/// A single active adapter needs none: <see cref="AdapterModel.Active"/> keeps its own, faster path.
/// </summary>
public abstract record AdapterComposition
{
    /// <summary>The adapters it reads, in order.</summary>
    public abstract IReadOnlyList<string> Adapters { get; }

    /// <summary>The head that turns its output into predictions.</summary>
    public abstract string Head { get; }
}

/// <summary>
/// At every site, each adapter in turn transforms what the one before produced:
/// <c>h₁ = h + A₁(h)</c>, <c>h₂ = h₁ + A₂(h₁)</c>, … (e.g. a domain adapter, then a task adapter). The site's
/// LayerNorm is the last present adapter's own copy if it trains one, else the base's. Adapters missing at a
/// site are skipped there. The head is the last adapter's.
/// </summary>
public sealed record Stack : AdapterComposition
{
    public Stack(params string[] adapters)
    {
        if (adapters.Length == 0) throw new ArgumentException("Stack: name at least one adapter");
        if (adapters.Distinct(StringComparer.Ordinal).Count() != adapters.Length)
            throw new ArgumentException($"Stack: an adapter appears twice in ({string.Join(", ", adapters)})");
        Names = adapters;
    }

    string[] Names { get; }

    public override IReadOnlyList<string> Adapters => Names;

    public override string Head => Names[^1];

    public override string ToString() => $"Stack({string.Join(", ", Names)})";
}

/// <summary>
/// AdapterFusion (Pfeiffer et al. 2021): at every site where all of <see cref="Adapters"/> have a bottleneck,
/// fusion <see cref="Fusion"/> attends over their outputs (see <see cref="AdapterFusion"/>). Its head is the fusion's.
/// </summary>
public sealed record Fuse(string Fusion, IReadOnlyList<string> FusedAdapters) : AdapterComposition
{
    public override IReadOnlyList<string> Adapters => FusedAdapters;

    public override string Head => Fusion;

    public override string ToString() => $"Fuse({Fusion}: {string.Join(", ", FusedAdapters)})";
}
