using System.Buffers.Binary;
using AdapterSharp.Checkpoints;
using AdapterSharp.Tests.Checkpoints;

namespace AdapterSharp.Tests.Cli;

/// <summary>Truncated and corrupt weight files, and ONNX files that are not BERT encoders.</summary>
public sealed class CorruptFileTests(TinyModelFiles tiny) : IClassFixture<TinyModelFiles>
{
    static void Truncate(string path)
    {
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
    }

    [Fact]
    public void A_truncated_model_safetensors_is_one_line_saying_truncated()
    {
        var dir = tiny.ModelDirectory();
        var weights = Path.Combine(dir, "model.safetensors");
        Truncate(weights);

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), weights, "truncated");
    }

    [Fact]
    public void A_model_safetensors_with_a_garbage_header_says_the_header_is_not_JSON()
    {
        var dir = tiny.ModelDirectory();
        var weights = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        bytes.AsSpan(8, headerLength).Fill((byte)'#');
        File.WriteAllBytes(weights, bytes);

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), weights, "header is not valid JSON");
    }

    [Fact]
    public void A_model_safetensors_of_random_bytes_is_rejected_naming_it()
    {
        var dir = tiny.ModelDirectory();
        var weights = Path.Combine(dir, "model.safetensors");
        var bytes = new byte[4096];
        new Random(7).NextBytes(bytes);
        File.WriteAllBytes(weights, bytes);

        CliAssert.OneLineError(CliRunner.Run("info", "--model", dir), weights, "header length");
    }

    [Fact]
    public void A_truncated_onnx_file_is_one_line_saying_truncated()
    {
        var onnx = tiny.OnnxFile();
        Truncate(onnx);

        CliAssert.OneLineError(CliRunner.Run("info", "--model", onnx, "--vocab", VocabBeside(onnx)),
            onnx, "not a readable ONNX model: truncated");
    }

    [Fact]
    public void An_onnx_file_of_random_bytes_is_rejected_naming_it()
    {
        var path = Path.Combine(tiny.NewDirectory(), "random.onnx");
        var bytes = new byte[4096];
        new Random(3).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);

        CliAssert.OneLineError(CliRunner.Run("info", "--model", path, "--vocab", VocabBeside(path)), path, "not ");
    }

    [Fact]
    public void A_valid_onnx_graph_that_is_not_BERT_is_rejected_naming_the_first_missing_tensor()
    {
        var graph = new ProtoWriter()
            .Message(1, ProtoWriter.Node("MatMul", ["x", "W"], ["h"]))
            .Message(1, ProtoWriter.Node("Add", ["h", "classifier.bias"], ["y"]))
            .Message(5, ProtoWriter.Tensor("W", Tensors.Random(TensorDType.F32, [4, 2], seed: 1), dataType: 1))
            .Message(5, ProtoWriter.Tensor("classifier.bias", Tensors.Random(TensorDType.F32, [2], seed: 2), dataType: 1));
        var path = Path.Combine(tiny.NewDirectory(), "classifier.onnx");
        File.WriteAllBytes(path, ProtoWriter.Model(graph).ToArray());

        CliAssert.OneLineError(CliRunner.Run("info", "--model", path, "--vocab", VocabBeside(path)),
            path, "not a BERT encoder graph", "embeddings.word_embeddings.weight");
    }

    [Fact]
    public void An_onnx_model_without_a_vocabulary_asks_for_vocab()
    {
        var onnx = tiny.OnnxFile();

        CliAssert.OneLineError(CliRunner.Run("info", "--model", onnx), onnx, "no vocabulary", "--vocab");
    }

    [Fact]
    public void An_onnx_model_with_vocab_loads()
    {
        var onnx = tiny.OnnxFile();

        var result = CliRunner.Run("info", "--model", onnx, "--vocab", VocabBeside(onnx));

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("ONNX file", result.Stdout);
    }

    /// <summary>A valid vocab.txt written next to (not named like) the model, so --vocab is never the problem.</summary>
    string VocabBeside(string model)
    {
        var path = Path.Combine(Path.GetDirectoryName(model)!, "words.txt");
        tiny.WriteVocab(path);
        return path;
    }
}
