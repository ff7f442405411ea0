using AdapterSharp.Checkpoints;

namespace AdapterSharp.Tests.Checkpoints;

/// <summary>What a writer killed part way leaves beside a folder is tidied, and a folder caught between its two renames comes back.</summary>
public sealed class AtomicFolderTests : IDisposable
{
    readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    const int GoneProcess = int.MaxValue - 1; // no process has this id

    string Hidden(string name, string kind, int pid)
    {
        var path = Path.Combine(dir.Path, $".{name}.{kind}-{pid}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        File.WriteAllText(Path.Combine(path, "content.txt"), kind);
        return path;
    }

    [Fact]
    public void A_write_removes_staging_folders_of_writers_that_are_gone_and_keeps_those_of_running_ones()
    {
        var gone = Hidden("adapter", "tmp", GoneProcess);
        var running = Hidden("adapter", "tmp", Environment.ProcessId);
        AtomicFolder.Write(Path.Combine(dir.Path, "adapter"), staging => File.WriteAllText(Path.Combine(staging, "new.txt"), "new"));
        Assert.False(Directory.Exists(gone));
        Assert.True(Directory.Exists(running));
        Assert.Equal("new", File.ReadAllText(Path.Combine(dir.Path, "adapter", "new.txt")));
    }

    [Fact]
    public void A_folder_left_aside_between_the_two_renames_is_what_the_next_read_finds()
    {
        var target = Path.Combine(dir.Path, "adapter");
        AdapterFiles.Save(target, new AdapterManifest { Name = "kept", Head = AdapterSharp.Heads.HeadConfig.Regression() }, new Dictionary<string, TensorData>());
        // As if killed after the first rename of a new save: the old folder aside, the new staging one unfinished.
        var aside = Path.Combine(dir.Path, $".adapter.old-{GoneProcess}-{Guid.NewGuid():N}");
        Directory.Move(target, aside);
        var staging = Hidden("adapter", "tmp", GoneProcess);

        Assert.Equal("kept", AdapterFiles.ReadManifest(target).Name);
        Assert.False(Directory.Exists(aside));
        Assert.False(Directory.Exists(staging));
    }

    [Fact]
    public void An_old_copy_beside_a_present_folder_is_removed()
    {
        var target = Path.Combine(dir.Path, "adapter");
        AdapterFiles.Save(target, new AdapterManifest { Name = "current", Head = AdapterSharp.Heads.HeadConfig.Regression() }, new Dictionary<string, TensorData>());
        var aside = Hidden("adapter", "old", GoneProcess);
        AtomicFolder.Recover(target);
        Assert.False(Directory.Exists(aside));
        Assert.Equal("current", AdapterFiles.ReadManifest(target).Name);
    }

    [Fact]
    public void A_failed_fill_leaves_the_old_folder_and_no_staging()
    {
        var target = Path.Combine(dir.Path, "model");
        AtomicFolder.Write(target, staging => File.WriteAllText(Path.Combine(staging, "a.txt"), "old"));
        Assert.Throws<IOException>(() => AtomicFolder.Write(target, _ => throw new IOException("disk full")));
        Assert.Equal("old", File.ReadAllText(Path.Combine(target, "a.txt")));
        Assert.Single(Directory.EnumerateFileSystemEntries(dir.Path));
    }
}
