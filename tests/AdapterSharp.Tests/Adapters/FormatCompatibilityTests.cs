using System.Text.Json;
using AdapterSharp.Adapters;
using AdapterSharp.Checkpoints;
using AdapterSharp.Data;
using AdapterSharp.Training;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Adapters;

/// <summary>
/// Adapter, fusion and stacked folders written by an earlier version (Fixtures/v1, see its README) load and
/// predict what that version predicted.
/// </summary>
public class FormatCompatibilityTests
{
    static readonly string Root = Path.Combine(AppContext.BaseDirectory, "Fixtures", "v1");

    static readonly Dictionary<string, float[][]> Expected =
        JsonSerializer.Deserialize<Dictionary<string, float[][]>>(File.ReadAllText(Path.Combine(Root, "expected_logits.json")))!;

    static readonly string[] Texts = JsonSerializer.Deserialize<string[]>(File.ReadAllText(Path.Combine(Root, "inputs.json")))!;

    static PretrainedEncoder Base() => Pretrained.Load(Path.Combine(Root, "base"));

    static EncodedDataset Inputs(PretrainedEncoder encoder) =>
        EncodedDataset.Unlabelled(Texts.Select(t => (t, (string?)null)), encoder.Tokenizer, 32);

    static void AssertLogits(float[][] expected, float[][] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i].Length, actual[i].Length);
            for (int j = 0; j < expected[i].Length; j++)
                Assert.True(Math.Abs(expected[i][j] - actual[i][j]) <= 1e-6, $"{what}: row {i} logit {j}: {actual[i][j]}, expected {expected[i][j]}");
        }
    }

    public static TheoryData<string> Folders => new("houlsby", "pfeiffer", "parallel", "reverse", "multihead", "full", "top-k", "layernorm", "head");

    [Theory]
    [MemberData(nameof(Folders))]
    public void An_adapter_folder_of_the_first_format_predicts_as_it_did(string folder)
    {
        var encoder = Base();
        using var model = AdapterModel.FromPretrained(encoder);
        var manifest = AdapterFiles.Load(Path.Combine(Root, folder), model, BaseModelIdentity.Of(encoder));
        model.Active = manifest.Name;
        AssertLogits(Expected[folder], Trainer.Predict(model, Inputs(encoder), 8, CPU), folder);
    }

    [Fact]
    public void A_fusion_folder_of_the_first_format_predicts_as_it_did()
    {
        var encoder = Base();
        using var model = AdapterModel.FromPretrained(encoder);
        FusionFiles.Load(Path.Combine(Root, "fusion"), model, BaseModelIdentity.Of(encoder));
        AssertLogits(Expected["fusion"], Trainer.Predict(model, Inputs(encoder), 8, CPU), "fusion");
    }

    [Fact]
    public void A_stacked_adapter_of_the_first_format_predicts_as_it_did()
    {
        var encoder = Base();
        var identity = BaseModelIdentity.Of(encoder);
        using var model = AdapterModel.FromPretrained(encoder);
        var dir = Path.Combine(Root, "stacked");
        var manifest = AdapterFiles.ReadManifest(dir);
        foreach (var lower in manifest.StackedOn!)
            AdapterFiles.Load(lower.Find(dir, "is stacked on", "this adapter"), model, identity, lower.Name);
        AdapterFiles.Load(dir, model, identity);
        model.Composition = new Stack([.. manifest.StackedOn!.Select(a => a.Name), manifest.Name]);
        AssertLogits(Expected["stacked"], Trainer.Predict(model, Inputs(encoder), 8, CPU), "stacked");
    }

    [Fact]
    public void A_mixed_batch_over_first_format_folders_predicts_as_it_did()
    {
        var encoder = Base();
        var identity = BaseModelIdentity.Of(encoder);
        var rows = JsonSerializer.Deserialize<string?[]>(File.ReadAllText(Path.Combine(Root, "mixed_rows.json")))!;
        using var model = AdapterModel.FromPretrained(encoder);
        foreach (var name in new[] { "houlsby", "pfeiffer", "parallel", "reverse", "multihead", "layernorm", "head" })
            AdapterFiles.Load(Path.Combine(Root, name), model, identity);
        model.eval();
        var inputs = Inputs(encoder);
        using var noGrad = no_grad();
        var (ids, mask, types) = inputs.Collate(Enumerable.Range(0, Texts.Length).ToArray());
        var result = model.LogitsPerRow(ids, mask, types, rows);
        var values = result.Logits.data<float>().ToArray();
        int width = (int)result.Logits.shape[1];
        var actual = Enumerable.Range(0, Texts.Length).Select(b => values.AsSpan(b * width, result.Outputs[b]).ToArray()).ToArray();
        AssertLogits(Expected["mixed"], actual, "mixed");
    }
}
