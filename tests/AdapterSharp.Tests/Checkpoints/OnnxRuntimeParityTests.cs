using Xunit.Abstractions;
using AdapterSharp.Text;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using static TorchSharp.torch;

namespace AdapterSharp.Tests.Checkpoints;

/// <summary>
/// The TorchSharp encoder loaded from the converted built-in weights against ONNX Runtime running the
/// original model.onnx from the package: a reference nobody here wrote.
/// </summary>
public class OnnxRuntimeParityTests(ITestOutputHelper output)
{
    static readonly (string Text, string? Pair)[] Inputs =
    [
        ("hide new secretions from the parental units", null),
        ("The movie was fantastic!", null),
        ("a", null),
        ("It's a charming and often affecting journey.", null),
        ("unflinchingly bleak and desperate", null),
        ("Naïve café owners in São Paulo can't stop smiling :)", null),
        ("The quick brown fox jumps over the lazy dog. " + "Again and again, " + "and once more.", null),
        ("东京 is a city; 北京 is another.", null),
        ("$5 <b>bold</b> claims, 100% guaranteed_or_not", null),
        ("the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .", null),
        ("What is the capital of France?", "Paris is the capital and most populous city of France."),
        ("He said the foodservice pie business doesn't fit the company's long-term growth strategy.",
            "The foodservice pie business does not fit our long-term growth strategy."),
        ("A man is playing a flute.", "A man is playing a bamboo flute."),
        ("A woman is slicing an onion.", "A man is dancing."),
        ("Short.", "A much longer second segment that goes on for quite a while to make the padding uneven."),
        ("The cat sat on the mat.", "The cat did not sit on the mat."),
        ("Revenue rose 7% to $1.2 billion.", "Sales increased by seven percent."),
        ("Is this a question?", "Yes."),
        ("[CLS] literal special tokens [SEP] in text", null),
        ("emoji 🙂 and symbols ™ ©", "tabs\tand\nnewlines"),
        ("Transformers are neural networks that use self-attention.", null),
        ("one two three four five six seven eight nine ten eleven twelve", "thirteen"),
    ];

    static (long[,] Ids, long[,] Mask, long[,] Types) Encode(BertTokenizer tokenizer, IEnumerable<(string Text, string? Pair)> inputs)
    {
        var encodings = inputs.Select(i => tokenizer.Encode(i.Text, i.Pair, 128)).ToList();
        int time = encodings.Max(e => e.InputIds.Length);
        var ids = new long[encodings.Count, time];
        var mask = new long[encodings.Count, time];
        var types = new long[encodings.Count, time];
        for (int b = 0; b < encodings.Count; b++)
            for (int t = 0; t < encodings[b].InputIds.Length; t++)
            {
                ids[b, t] = encodings[b].InputIds[t];
                mask[b, t] = 1;
                types[b, t] = encodings[b].TokenTypeIds[t];
            }
        return (ids, mask, types);
    }

    static float[] RunOnnx(long[,] ids, long[,] mask, long[,] types)
    {
        int batch = ids.GetLength(0), time = ids.GetLength(1);
        DenseTensor<long> Dense(long[,] values) => new(values.Cast<long>().ToArray(), [batch, time]);
        using var session = new InferenceSession(MiniLm.OnnxPath);
        using var results = session.Run(
        [
            NamedOnnxValue.CreateFromTensor("input_ids", Dense(ids)),
            NamedOnnxValue.CreateFromTensor("attention_mask", Dense(mask)),
            NamedOnnxValue.CreateFromTensor("token_type_ids", Dense(types)),
        ]);
        return results.First(r => r.Name == "last_hidden_state").AsEnumerable<float>().ToArray();
    }

    [Fact]
    public void Last_hidden_state_equals_onnx_runtime_on_padded_batches_of_singles_and_pairs()
    {
        var encoder = MiniLm.Load();
        using var model = encoder.CreateModel();
        model.eval();
        var (ids, mask, types) = Encode(encoder.Tokenizer, Inputs);
        Assert.True(Inputs.Length >= 20);

        var expected = RunOnnx(ids, mask, types);
        using var noGrad = no_grad();
        using var actual = model.call(tensor(ids), tensor(mask), tensor(types));
        var values = actual.data<float>().ToArray();

        Assert.Equal(expected.Length, values.Length);
        // Every real token of every input is compared. Padding positions carry no meaning (each
        // implementation fills them with whatever its masked attention yields) and differ more, through
        // LayerNorm of near-constant vectors; they are held to a looser bound.
        float worstReal = 0, worstPadding = 0;
        int time = ids.GetLength(1), hidden = encoder.Config.HiddenSize;
        for (int row = 0; row < ids.GetLength(0); row++)
            for (int t = 0; t < time; t++)
                for (int h = 0; h < hidden; h++)
                {
                    int i = (row * time + t) * hidden + h;
                    float difference = Math.Abs(values[i] - expected[i]);
                    if (mask[row, t] == 1) worstReal = Math.Max(worstReal, difference);
                    else worstPadding = Math.Max(worstPadding, difference);
                }
        output.WriteLine($"{Inputs.Length} inputs, padded to {time}: max |Δ| real tokens {worstReal:g3}, padding {worstPadding:g3}");
        Assert.True(worstReal <= 1e-4, $"max abs difference over real tokens {worstReal}");
        Assert.True(worstPadding <= 1e-3, $"max abs difference over padding {worstPadding}");
    }

    [Fact]
    public void The_same_input_alone_and_padded_inside_a_batch_gives_the_same_vectors()
    {
        var encoder = MiniLm.Load();
        using var model = encoder.CreateModel();
        model.eval();
        var (ids, mask, types) = Encode(encoder.Tokenizer, Inputs);
        float worst = 0;
        using var noGrad = no_grad();
        using var batched = model.call(tensor(ids), tensor(mask), tensor(types));
        for (int row = 0; row < Inputs.Length; row++)
        {
            var (aloneIds, aloneMask, aloneTypes) = Encode(encoder.Tokenizer, [Inputs[row]]);
            int length = aloneIds.GetLength(1);
            using var alone = model.call(tensor(aloneIds), tensor(aloneMask), tensor(aloneTypes));
            var difference = (alone[0] - batched[row, ..length]).abs().max().item<float>();
            Assert.True(difference <= 1e-5, $"input {row}: max difference {difference}");
            worst = Math.Max(worst, difference);
        }
        output.WriteLine($"alone vs padded in a batch of {Inputs.Length}: max |Δ| {worst:g3}");
    }
}
