using AdapterSharp.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// <c>--model</c> that cannot be used: missing, unknown, an incomplete or invalid HF directory, a config that
/// does not match the weights. Each is one <c>error:</c> line naming the file (or id) and the problem.
/// </summary>
public sealed class ModelErrorTests(TinyModelFiles tiny) : IClassFixture<TinyModelFiles>
{
    [Fact]
    public void A_valid_tiny_model_directory_loads()
    {
        var result = CliRunner.Run("info", "--model", tiny.ModelDirectory());

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("hidden size", result.Stdout);
    }

    [Fact]
    public void A_missing_model_directory_is_one_line_naming_it()
    {
        CliAssert.OneLineError(CliRunner.Run("info", "--model", "/no/such/dir"), "/no/such/dir", "unknown model");
    }

    [Fact]
    public void An_unknown_model_id_is_one_line_naming_it_and_the_built_in_ids()
    {
        CliAssert.OneLineError(CliRunner.Run("info", "--model", "nonexistent-id"), "nonexistent-id", "unknown model", "minilm-l6");
    }

    [Fact]
    public void With_verbose_the_error_line_is_followed_by_the_stack_trace()
    {
        var result = CliRunner.Run("info", "--model", "/no/such/dir", "--verbose");

        Assert.Equal(1, result.ExitCode);
        Assert.StartsWith("error: /no/such/dir: unknown model", result.Stderr);
        Assert.Contains("   at ", result.Stderr);
    }

    [Fact]
    public void A_directory_without_config_json_names_the_missing_file()
    {
        var dir = tiny.ModelDirectory();
        File.Delete(Path.Combine(dir, "config.json"));

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), Path.Combine(dir, "config.json"), "file not found");
    }

    [Fact]
    public void A_directory_without_weights_names_the_directory_and_the_expected_files()
    {
        var dir = tiny.ModelDirectory();
        File.Delete(Path.Combine(dir, "model.safetensors"));

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), dir, "no weights", "model.safetensors", "pytorch_model.bin");
    }

    [Fact]
    public void A_directory_without_a_vocabulary_names_the_directory_and_suggests_vocab()
    {
        var dir = tiny.ModelDirectory();
        File.Delete(Path.Combine(dir, "vocab.txt"));

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), dir, "no tokenizer", "vocab.txt", "--vocab");
    }

    [Fact]
    public void A_config_json_that_is_not_JSON_names_the_file_and_the_line()
    {
        var dir = tiny.ModelDirectory();
        File.WriteAllText(Path.Combine(dir, "config.json"), "{\n  \"hidden_size\": 32,\n  oops\n}\n");

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), Path.Combine(dir, "config.json"), "invalid JSON at line 3");
    }

    [Fact]
    public void A_hidden_size_that_the_heads_do_not_divide_is_rejected_with_both_numbers()
    {
        var dir = tiny.ModelDirectory(tiny.Config with { NumAttentionHeads = 5 });

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir),
            Path.Combine(dir, "config.json"), "hidden_size 32 is not a multiple of num_attention_heads 5");
    }

    [Fact]
    public void A_renamed_tensor_is_reported_as_missing_under_its_expected_name()
    {
        const string query = "encoder.layer.1.attention.self.query.weight";
        var weights = tiny.Weights.ToDictionary(p => p.Key == query ? "encoder.layer.1.attention.self.qwery.weight" : p.Key, p => p.Value);
        var dir = tiny.ModelDirectory(weights: weights);

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir),
            Path.Combine(dir, "model.safetensors"), "weights do not match the config", $"missing '{query}'");
    }

    [Fact]
    public void A_tensor_the_model_does_not_have_is_reported_as_unexpected()
    {
        var weights = new Dictionary<string, TensorData>(tiny.Weights)
        {
            ["encoder.layer.1.extra.weight"] = tiny.Weights["encoder.layer.1.output.dense.bias"],
        };
        var dir = tiny.ModelDirectory(weights: weights);

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir),
            Path.Combine(dir, "model.safetensors"), "unexpected tensor 'encoder.layer.1.extra.weight'");
    }

    [Fact]
    public void A_config_whose_shapes_differ_from_the_weights_names_the_tensor_and_both_shapes()
    {
        var dir = tiny.ModelDirectory(tiny.Config with { TypeVocabSize = 3 });

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir),
            Path.Combine(dir, "model.safetensors"),
            "'embeddings.token_type_embeddings.weight' has shape [2, 32], the config needs [3, 32]");
    }
}
