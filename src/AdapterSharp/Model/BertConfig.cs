using System.Text.Json;
using System.Text.Json.Serialization;

namespace AdapterSharp.Model;

/// <summary>
/// A BERT encoder's architecture, read straight from a HuggingFace <c>config.json</c>. Immutable; call
/// <see cref="Validate"/> (done by <see cref="Load"/>) before building a model from it.
/// </summary>
public sealed record BertConfig
{
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "bert";
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; } = 30522;
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; } = 768;
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; } = 12;
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; } = 12;
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; } = 3072;
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "gelu";
    [JsonPropertyName("hidden_dropout_prob")] public double HiddenDropoutProb { get; init; } = 0.1;
    [JsonPropertyName("attention_probs_dropout_prob")] public double AttentionProbsDropoutProb { get; init; } = 0.1;
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 512;
    [JsonPropertyName("type_vocab_size")] public int TypeVocabSize { get; init; } = 2;

    // BERT's epsilon is 1e-12, not PyTorch's 1e-5 default: the wrong one shifts every hidden state (a bug
    // ML.NET's TorchSharp RoBERTa shipped with).
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; init; } = 1e-12;
    [JsonPropertyName("pad_token_id")] public int PadTokenId { get; init; }
    [JsonPropertyName("position_embedding_type")] public string PositionEmbeddingType { get; init; } = "absolute";

    [JsonIgnore] public int HeadSize => HiddenSize / NumAttentionHeads;

    static readonly string[] SupportedActivations = ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish"];

    static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        AllowTrailingCommas = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowDuplicateProperties = false,
    };

    /// <summary>Reads and validates a HuggingFace <c>config.json</c>.</summary>
    public static BertConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException($"{path}: file not found");
        BertConfig? config;
        try
        {
            config = JsonSerializer.Deserialize<BertConfig>(File.ReadAllText(path), JsonOptions);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: invalid JSON at line {e.LineNumber + 1}: {e.Message.Split('.')[0]}");
        }
        if (config is null) throw new ModelFormatException($"{path}: empty config");
        config.Validate(path);
        return config;
    }

    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Throws <see cref="ModelFormatException"/> naming <paramref name="source"/> if anything is off.</summary>
    public void Validate(string source = "config")
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new ModelFormatException($"{source}: {problem}");
        }

        Require(ModelType == "bert", $"model_type '{ModelType}' is not a BERT encoder (expected 'bert')");
        // Bounds well above any BERT-family encoder, checked before anything is allocated from them.
        Require(VocabSize is > 0 and <= 1 << 21, $"vocab_size must be between 1 and {1 << 21}, got {VocabSize}");
        Require(HiddenSize is > 0 and <= 16384, $"hidden_size must be between 1 and 16384, got {HiddenSize}");
        Require(NumHiddenLayers is > 0 and <= 256, $"num_hidden_layers must be between 1 and 256, got {NumHiddenLayers}");
        Require(NumAttentionHeads is > 0 and <= 1024, $"num_attention_heads must be between 1 and 1024, got {NumAttentionHeads}");
        Require(HiddenSize % NumAttentionHeads == 0,
            $"hidden_size {HiddenSize} is not a multiple of num_attention_heads {NumAttentionHeads}");
        Require(IntermediateSize is > 0 and <= 65536, $"intermediate_size must be between 1 and 65536, got {IntermediateSize}");
        Require(MaxPositionEmbeddings is > 0 and <= 65536, $"max_position_embeddings must be between 1 and 65536, got {MaxPositionEmbeddings}");
        Require(TypeVocabSize is > 0 and <= 1024, $"type_vocab_size must be between 1 and 1024, got {TypeVocabSize}");
        Require(PadTokenId >= 0 && PadTokenId < VocabSize, $"pad_token_id {PadTokenId} is not in the vocabulary (0-{VocabSize - 1})");
        Require(LayerNormEps > 0 && LayerNormEps < 1, $"layer_norm_eps must be in (0, 1), got {LayerNormEps}");
        Require(HiddenDropoutProb is >= 0 and < 1, $"hidden_dropout_prob must be in [0, 1), got {HiddenDropoutProb}");
        Require(AttentionProbsDropoutProb is >= 0 and < 1,
            $"attention_probs_dropout_prob must be in [0, 1), got {AttentionProbsDropoutProb}");
        Require(SupportedActivations.Contains(HiddenAct),
            $"hidden_act '{HiddenAct}' is not supported (expected one of {string.Join(", ", SupportedActivations)})");
        Require(PositionEmbeddingType == "absolute",
            $"position_embedding_type '{PositionEmbeddingType}' is not supported (only 'absolute')");
    }
}

/// <summary>A model file or configuration that cannot be used: the message names the file and the problem.</summary>
/// <summary>A model, adapter or fusion folder that cannot be used; the message is one line (control characters escaped).</summary>
public sealed class ModelFormatException(string message, Exception? inner = null) : Exception(Messages.OneLine(message), inner);
