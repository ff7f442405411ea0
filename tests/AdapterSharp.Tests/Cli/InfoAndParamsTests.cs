using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary><c>info</c> and <c>params</c> on the built-in minilm-l6 (6 layers, hidden 384).</summary>
public sealed class InfoAndParamsTests
{
    const int Layers = 6, Hidden = 384;
    const long BaseParameters = 22_713_216;

    public InfoAndParamsTests() => CliRunner.EnsureMiniLm();

    [Fact]
    public void Info_on_the_built_in_model_reports_its_parameter_count()
    {
        var result = CliRunner.Run("info", "--model", "minilm-l6");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("22.7M", result.Stdout);
        Assert.Contains("22,713,216", result.Stdout);
        Assert.Equal("", result.Stderr.Trim());
    }

    [Fact]
    public void The_first_run_in_a_fresh_home_converts_the_built_in_model_and_the_second_reuses_it()
    {
        using var home = new TempDirectory();
        var env = new Dictionary<string, string> { ["ADAPTERSHARP_HOME"] = home.Path };

        var first = CliRunner.Run(["info", "--model", "minilm-l6"], env: env);
        var second = CliRunner.Run(["info", "--model", "minilm-l6"], env: env);

        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Contains("Converting built-in minilm-l6", first.Stderr);
        Assert.True(File.Exists(Path.Combine(home.Path, "models", "minilm-l6", "model.safetensors")));
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.DoesNotContain("Converting", second.Stderr);
        Assert.Contains("22,713,216", second.Stdout);
    }

    [Fact]
    public void Params_for_houlsby_counts_two_adapters_per_layer_the_LayerNorms_and_the_head()
    {
        const int m = 64, d = Hidden, L = Layers;
        long adapters = 2L * L * (2 * m * d + m + d);     // down (d→m) and up (m→d) with biases, twice per layer
        long layerNorms = (2 * L + 1) * 2L * d;            // two per layer plus the embeddings', weight and bias
        long head = 2 * d + 2;                             // d → 2 labels
        long trainable = adapters + layerNorms + head;
        long all = BaseParameters - (d * d + d) + trainable; // training leaves the pooler out

        var result = CliRunner.Run("params", "--method", "houlsby");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(605_954, trainable);
        Assert.Equal($"trainable params: {trainable:N0} || all params: {all:N0} || trainable%: {100.0 * trainable / all:F4}",
            result.Stdout.Trim());
        Assert.Equal("trainable params: 605,954 || all params: 23,171,330 || trainable%: 2.6151", result.Stdout.Trim());
    }

    [Fact]
    public void Params_for_fusion_counts_query_key_value_and_layer_norm_at_each_houlsby_site_plus_the_head()
    {
        int L = 6, d = 384;
        long perSite = 2L * (d * d + d) + d * d + 2L * d; // query and key with biases, value without, LayerNorm
        long trainable = 2L * L * perSite + 2 * d + 2;

        var result = CliRunner.Run("params", "--method", "fusion");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.StartsWith($"trainable params: {trainable:N0} ||", result.Stdout.Trim());
    }

    [Fact]
    public void An_unknown_method_lists_the_valid_ones()
    {
        CliAssert.OneLineError(CliRunner.Run("params", "--method", "foo"),
            "--method", "'foo'", "houlsby", "pfeiffer", "parallel", "top-k");
    }

    [Fact]
    public void Layers_beyond_the_model_are_rejected()
    {
        CliAssert.OneLineError(CliRunner.Run("params", "--layers", "9-12"), "layer 9 does not exist", "0-5");
    }
}
