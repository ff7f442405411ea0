using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using AdapterSharp.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>
/// Files built to make the loader allocate by a declared size, reach a generic error path, or fail only later: each is
/// one line naming the file and the field, before anything of that size exists.
/// </summary>
public sealed class HostileFileTests(TinyModelFiles tiny) : IClassFixture<TinyModelFiles>
{
    string ModelWithConfig(Action<JsonObject> change)
    {
        var dir = tiny.ModelDirectory();
        var path = Path.Combine(dir, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        change(json);
        File.WriteAllText(path, json.ToJsonString());
        return dir;
    }

    [Theory]
    [InlineData("num_hidden_layers", 100000, "num_hidden_layers must be between 1 and 256, got 100000")]
    [InlineData("hidden_size", 1 << 20, "hidden_size must be between 1 and 16384")]
    [InlineData("vocab_size", 1 << 30, "vocab_size must be between 1 and 2097152")]
    [InlineData("pad_token_id", 1000, "pad_token_id 1000 is not in the vocabulary (0-99)")]
    public void Config_sizes_beyond_any_bert_are_refused_before_allocating(string field, int value, string message)
    {
        var dir = ModelWithConfig(json => json[field] = value);
        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), Path.Combine(dir, "config.json"), message);
    }

    [Fact]
    public void A_vocabulary_with_more_tokens_than_the_model_has_rows_is_refused_at_load()
    {
        var dir = tiny.ModelDirectory();
        File.AppendAllText(Path.Combine(dir, "vocab.txt"), "extra1\nextra2\n");
        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), "the vocabulary has ids up to 101, but the model's vocab_size is 100");
    }

    [Fact]
    public void A_tokenizer_json_id_of_two_to_the_31_is_refused_not_allocated()
    {
        var dir = tiny.ModelDirectory();
        File.Delete(Path.Combine(dir, "vocab.txt"));
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"),
            "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[PAD]\": 0, \"[UNK]\": 1, \"[CLS]\": 2, \"[SEP]\": 3, \"big\": 2147483647}}}");
        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), "vocab entry 'big' has no valid id");
    }

    [Fact]
    public void A_lone_surrogate_in_a_safetensors_header_names_the_file()
    {
        var dir = tiny.ModelDirectory();
        var weights = Path.Combine(dir, "model.safetensors");
        var header = Encoding.UTF8.GetBytes("{\"a\\ud800\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}");
        var bytes = new byte[8 + header.Length + 4];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(weights, bytes);
        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), weights, "not valid Unicode");
    }

    [Theory]
    [InlineData("adapter_size", 1000000, "a bottleneck of 1000000 units (heads × size) is more than 8 × the model's hidden size 32")]
    [InlineData("heads", 1000000, "heads must be between 1 and 64, got 1000000")]
    public void An_adapter_config_size_beyond_the_model_is_refused_before_allocating(string field, int value, string message)
    {
        var model = tiny.ModelDirectory();
        var adapter = AdapterFolder(model, config => config[field] = value);
        CliAssert.OneLineError(CliRunner.Run("eval", "--adapter", adapter, "--model", model, "--dev", "none.tsv"), message);
    }

    [Theory]
    [InlineData("weights_sha256", "missing \"base_model.weights_sha256\"")]
    [InlineData("id", "missing \"base_model.id\"")]
    public void A_null_base_model_field_in_an_adapter_config_is_named(string field, string message)
    {
        var model = tiny.ModelDirectory();
        var adapter = AdapterFolder(model, _ => { }, baseModel => baseModel[field] = null);
        CliAssert.OneLineError(CliRunner.Run("predict", "--adapter", adapter, "--model", model, "the movie"), message);
    }

    [Fact]
    public void A_name_given_twice_in_config_json_is_refused_not_last_wins()
    {
        var dir = tiny.ModelDirectory();
        var path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, "{\"num_hidden_layers\": 64," + File.ReadAllText(path).TrimStart()[1..]);
        var result = CliRunner.Run("info", "--model", dir);
        CliAssert.OneLineError(result, path, "num_hidden_layers");
        Assert.Contains("duplicate", result.Stderr, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void A_tensor_named_twice_in_a_safetensors_header_is_refused()
    {
        var dir = tiny.ModelDirectory();
        var weights = Path.Combine(dir, "model.safetensors");
        var header = Encoding.UTF8.GetBytes("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
                                            + "\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}");
        var bytes = new byte[8 + header.Length + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(weights, bytes);
        var result = CliRunner.Run("info", "--model", dir);
        CliAssert.OneLineError(result, weights, "header names 'a' twice");
    }

    [Fact]
    public void A_name_given_twice_in_an_adapter_config_is_refused()
    {
        var model = tiny.ModelDirectory();
        var adapter = AdapterFolder(model, _ => { });
        var path = Path.Combine(adapter, AdapterFiles.ConfigFile);
        var text = File.ReadAllText(path);
        // The second adapter_size would silently win under a lenient reader; here it is an error naming the file.
        File.WriteAllText(path, text.Replace("\"adapter_size\":4", "\"adapter_size\":4,\"adapter_size\":8"));
        Assert.NotEqual(text, File.ReadAllText(path));
        var result = CliRunner.Run("predict", "--adapter", adapter, "--model", model, "the movie");
        CliAssert.OneLineError(result, path, "adapter_size");
    }

    [Fact]
    public void A_changed_value_in_a_sealed_adapter_config_is_refused_but_reformatting_is_not()
    {
        var model = tiny.ModelDirectory();
        var adapter = AdapterFolder(model, _ => { }, keepSeal: true); // rewritten compact: the seal still holds
        Assert.Equal(0, CliRunner.Run("predict", "--adapter", adapter, "--model", model, "the movie").ExitCode);

        var edited = AdapterFolder(model, config => config["adapter_size"] = 2, keepSeal: true);
        var result = CliRunner.Run("predict", "--adapter", edited, "--model", model, "the movie");
        CliAssert.OneLineError(result, Path.Combine(edited, AdapterFiles.ConfigFile), "changed after it was saved");
    }

    [Theory]
    [InlineData(-1)] // the last byte of the data
    [InlineData(12)] // a byte of the header (here: inside the first tensor's name or dtype)
    public void A_changed_byte_in_an_adapters_weights_is_refused(int offset)
    {
        var model = tiny.ModelDirectory();
        var adapter = AdapterFolder(model, _ => { }, keepSeal: true);
        var weights = Path.Combine(adapter, AdapterFiles.WeightsFile);
        var bytes = File.ReadAllBytes(weights);
        bytes[offset < 0 ? bytes.Length + offset : offset] ^= 0x01;
        File.WriteAllBytes(weights, bytes);
        var result = CliRunner.Run("predict", "--adapter", adapter, "--model", model, "the movie");
        CliAssert.OneLineError(result, weights, "not the weights saved with this folder");
    }

    [Theory]
    [InlineData("hidden_act", "relu", "it was trained with hidden_act 'gelu'")]
    [InlineData("layer_norm_eps", 0.5, "it was trained with layer_norm_eps 1E-12")]
    public void A_base_whose_config_changes_the_computation_is_refused(string field, object value, string message)
    {
        var model = tiny.ModelDirectory();
        var adapter = AdapterFolder(model, _ => { }, keepSeal: true);
        var path = Path.Combine(model, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        json[field] = value is string text ? JsonValue.Create(text) : JsonValue.Create((double)value);
        File.WriteAllText(path, json.ToJsonString());
        CliAssert.OneLineError(CliRunner.Run("predict", "--adapter", adapter, "--model", model, "the movie"), "cannot load this adapter onto this base", message);
    }

    [Fact]
    public void A_base_whose_vocabulary_was_truncated_is_refused()
    {
        var model = tiny.ModelDirectory();
        var adapter = AdapterFolder(model, _ => { }, keepSeal: true);
        var vocab = Path.Combine(model, "vocab.txt");
        var lines = File.ReadAllLines(vocab);
        File.WriteAllLines(vocab, lines[..^1]);
        CliAssert.OneLineError(CliRunner.Run("predict", "--adapter", adapter, "--model", model, "the movie"),
            "cannot load this adapter onto this base", "another tokenizer");
    }

    /// <summary>
    /// A saved adapter whose config is then changed; unless <paramref name="keepSeal"/>, its config_sha256 is
    /// removed, as in a folder saved before configs were sealed, so that the change reaches the validation.
    /// </summary>
    string AdapterFolder(string model, Action<JsonObject> changeConfig, Action<JsonObject>? changeBase = null, bool keepSeal = false)
    {
        var encoder = Pretrained.Load(model);
        var dir = Path.Combine(model, "adapter");
        var head = AdapterSharp.Heads.HeadConfig.Classification(["neg", "pos"]);
        var config = AdapterSharp.Adapters.Methods.BottleneckConfig.Houlsby with { AdapterSize = 4 };
        using (var adapterModel = AdapterSharp.Training.TrainingJob.CreateModel(encoder, "a", config, head, seed: 1))
            AdapterFiles.Save(dir, new AdapterManifest { Name = "a", Config = config, Head = head, BaseModel = BaseModelIdentity.Of(encoder), MaxLength = 32 },
                adapterModel.AdapterTensors("a"));
        var path = Path.Combine(dir, AdapterFiles.ConfigFile);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        changeConfig(json["config"]!.AsObject());
        changeBase?.Invoke(json["base_model"]!.AsObject());
        Assert.True(json.ContainsKey("config_sha256"), "a saved adapter config is sealed");
        if (!keepSeal) json.Remove("config_sha256");
        File.WriteAllText(path, json.ToJsonString());
        return dir;
    }
}
