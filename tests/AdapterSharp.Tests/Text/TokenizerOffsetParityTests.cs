using AdapterSharp.Text;

namespace AdapterSharp.Tests.Text;

/// <summary>
/// Parity with HF tokenizers' <c>return_offsets_mapping</c> and <c>word_ids()</c> on every text of
/// ../shared/fixtures/tokenizer (alone and paired, whole and cut to 16): Fixtures/hf_offsets.jsonl was written by
/// scripts/hf_offsets_fixture.py with transformers' BertTokenizerFast on the GPU host. HF counts code points, we count
/// UTF-16 units: its offsets are converted before comparing.
/// </summary>
public sealed class TokenizerOffsetParityTests
{
    static readonly string FixturePath = Path.Combine(AppContext.BaseDirectory, "Fixtures", "hf_offsets.jsonl");

    public static TheoryData<int> Cases()
    {
        var data = new TheoryData<int>();
        int count = File.ReadLines(FixturePath).Count(l => l.Trim().Length > 0);
        for (int i = 0; i < count; i++) data.Add(i);
        return data;
    }

    /// <summary>A code-point offset of <paramref name="text"/> as a UTF-16 index.</summary>
    static int Utf16(string text, int codePoints)
    {
        int index = 0;
        for (int k = 0; k < codePoints; k++) index += char.IsHighSurrogate(text[index]) ? 2 : 1;
        return index;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Offsets_and_word_ids_equal_hf(int index)
    {
        var line = File.ReadLines(FixturePath).Where(l => l.Trim().Length > 0).ElementAt(index);
        var node = System.Text.Json.Nodes.JsonNode.Parse(line)!;
        var text = node["text"]!.GetValue<string>();
        var pair = node["text_pair"]?.GetValue<string>();
        int? max = node["max_length"]?.GetValue<int>();
        var ids = node["input_ids"]!.AsArray().Select(v => v!.GetValue<int>()).ToArray();
        var words = node["word_ids"]!.AsArray().Select(v => v!.GetValue<int>()).ToArray();
        var typeIds = MiniLm.Load().Tokenizer.Encode(text, pair, max).TokenTypeIds;
        var offsets = node["offsets"]!.AsArray().Select((o, i) =>
        {
            var source = typeIds[i] == 0 ? text : pair!;
            return (Utf16(source, o![0]!.GetValue<int>()), Utf16(source, o[1]!.GetValue<int>()));
        }).ToArray();

        var encoding = MiniLm.Load().Tokenizer.EncodeWithOffsets(text, pair, max);

        Assert.Equal(ids, encoding.InputIds);
        Assert.Equal(offsets, encoding.Offsets!.Select(o => (o.Start, o.End)).ToArray());
        Assert.Equal(words, encoding.WordIds!);
    }
}
