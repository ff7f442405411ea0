using AdapterSharp.Server;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Server;

[Collection(nameof(ServerCollection))]
public class BatchRunnerTests
{
    [Fact]
    public void The_per_row_runner_gives_what_one_forward_per_adapter_gives()
    {
        using var host = ModelHost.Open(ServerFiles.ModelDir, CPU);
        foreach (var (name, _, _) in ServerFiles.Adapters) host.Load(ServerFiles.AdapterDir(name));
        var names = ServerFiles.Adapters.Select(a => a.Name).ToArray();
        var inputs = Enumerable.Range(0, 13)
            .Select(i => new BatchInput(names[i % names.Length], string.Join(' ', Enumerable.Repeat(i % 2 == 0 ? "good" : "bad", 1 + i % 5))))
            .ToList();
        var expected = new PerAdapterBatchRunner(host, maxBatch: 64).Run(inputs);
        var actual = new MixedBatchRunner(host, maxBatch: 5).Run(inputs); // chunks of 5 mixing every adapter
        for (int i = 0; i < inputs.Count; i++)
        {
            var (want, got) = (expected[i].Outputs.Single(), actual[i].Outputs.Single());
            Assert.Equal(want.Length, got.Length);
            for (int k = 0; k < want.Length; k++)
                Assert.True(Math.Abs(want[k] - got[k]) <= 1e-5, $"input {i} output {k}: {got[k]} vs {want[k]}");
        }
    }

    [Theory]
    [InlineData(new[] { 9, 9, 9, 9 }, 64, 16, 1)] // same length: nothing to save
    [InlineData(new[] { 5, 50 }, 64, 16, 2)] // 45 padded tokens cost more than a forward
    [InlineData(new[] { 10, 12 }, 64, 16, 1)] // 2 padded tokens don't
    [InlineData(new[] { 7, 7, 7, 7, 7 }, 2, 16, 3)] // the row limit
    [InlineData(new[] { 3, 60, 4, 59, 5, 58 }, 64, 16, 2)] // short ones together, long ones together
    [InlineData(new[] { 3, 60, 4, 59, 5, 58 }, 4, 1 << 20, 2)] // a costly forward: only the row limit splits
    public void Chunks_by_length_cover_every_row_once_and_split_where_padding_costs_more_than_a_forward(
        int[] lengths, int maxRows, int forwardCost, int expectedChunks)
    {
        var chunks = MixedBatchRunner.ChunksByLength(lengths, maxRows, forwardCost);

        Assert.Equal(expectedChunks, chunks.Count);
        Assert.Equal(Enumerable.Range(0, lengths.Length), chunks.SelectMany(c => c).Order());
        Assert.All(chunks, c => Assert.InRange(c.Length, 1, maxRows));
        // Sorted: no chunk holds a row longer than a row of a later chunk.
        for (int k = 1; k < chunks.Count; k++)
            Assert.True(chunks[k - 1].Max(i => lengths[i]) <= chunks[k].Min(i => lengths[i]));
    }
}
