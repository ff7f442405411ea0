namespace AdapterSharp.Tests;

/// <summary>
/// Tests that depend on TorchSharp's process-wide random generator (same seed → same result) run alone:
/// another test drawing random numbers on a parallel thread would change their sequence.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SequentialCollection
{
    public const string Name = "Sequential (global RNG)";
}
