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
            Assert.Equal(expected[i].Length, actual[i].Length);
            for (int k = 0; k < expected[i].Length; k++)
                Assert.True(Math.Abs(expected[i][k] - actual[i][k]) <= 1e-5, $"input {i} output {k}: {actual[i][k]} vs {expected[i][k]}");
        }
    }
}
