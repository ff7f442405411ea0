using AdapterSharp.Text;

namespace AdapterSharp.Tests.Text;

/// <summary>
/// Offsets and word ids of <see cref="BertTokenizer.EncodeWithOffsets"/> and <see cref="BertTokenizer.EncodeWords"/>,
/// on texts whose pieces and places were worked out by hand (MiniLM's uncased vocabulary).
/// </summary>
public sealed class TokenizerOffsetTests
{
    static readonly Lazy<BertTokenizer> MiniLmTokenizer = new(() => MiniLm.Load().Tokenizer);
    static BertTokenizer Tokenizer => MiniLmTokenizer.Value;

    static (string Token, int Start, int End, int Word)[] Pieces(BertEncoding encoding) =>
        Enumerable.Range(0, encoding.Length).Select(i => (encoding.Tokens[i], encoding.Offsets![i].Start, encoding.Offsets[i].End, encoding.WordIds![i])).ToArray();

    [Fact]
    public void Words_and_punctuation_map_to_their_characters()
    {
        var encoding = Tokenizer.EncodeWithOffsets("Hello, world!");
        Assert.Equal(
            [("[CLS]", 0, 0, -1), ("hello", 0, 5, 0), (",", 5, 6, 1), ("world", 7, 12, 2), ("!", 12, 13, 3), ("[SEP]", 0, 0, -1)],
            Pieces(encoding));
    }

    [Fact]
    public void Accents_case_and_a_character_that_lowercases_to_two_keep_their_source_ranges()
    {
        // "Wörld" is stripped to "world" (one piece over the five source characters); U+0130 lowercases to "i" + U+0307,
        // whose mark is then stripped: "İstanbul" → "istanbul", still 8 source characters.
        var encoding = Tokenizer.EncodeWithOffsets("  Wörld İstanbul");
        Assert.Equal([("[CLS]", 0, 0, -1), ("world", 2, 7, 0), ("istanbul", 8, 16, 1), ("[SEP]", 0, 0, -1)], Pieces(encoding));
    }

    [Fact]
    public void Pieces_of_one_word_cover_it_in_turn_and_an_unknown_word_covers_all_of_it()
    {
        // A code point past U+FFFF is two UTF-16 units: offsets count units, so text[start..end] is the piece's text.
        var text = "tokenization a\U0001F600b";
        var encoding = Tokenizer.EncodeWithOffsets(text);
        var pieces = Pieces(encoding);
        Assert.Equal(("token", 0, 5, 0), pieces[1]);
        Assert.Equal(("##ization", 5, 12, 0), pieces[2]);
        Assert.Equal(("[UNK]", 13, 17, 1), pieces[3]);
        Assert.Equal("a\U0001F600b", text[13..17]);
    }

    [Fact]
    public void A_pair_indexes_each_text_and_truncation_cuts_offsets_with_the_ids()
    {
        var encoding = Tokenizer.EncodeWithOffsets("good film", "bad plot here", maxLength: 6);
        Assert.Equal(encoding.InputIds, Tokenizer.Encode("good film", "bad plot here", maxLength: 6).InputIds);
        // [CLS] good film [SEP] bad [SEP]? longest_first cuts the longer second text first: 6 - 3 = 3 pieces, 2 + 1.
        Assert.Equal(
            [("[CLS]", 0, 0, -1), ("good", 0, 4, 0), ("[SEP]", 0, 0, -1), ("bad", 0, 3, 0), ("plot", 4, 8, 1), ("[SEP]", 0, 0, -1)],
            Pieces(encoding));
    }

    [Fact]
    public void Ids_with_offsets_equal_ids_without_on_the_hf_fixture_texts()
    {
        foreach (var line in File.ReadLines(Path.Combine(TestPaths.FixturesDir, "tokenizer", "bert_uncased_cases.jsonl")))
        {
            using var document = System.Text.Json.JsonDocument.Parse(line);
            var text = document.RootElement.GetProperty("text").GetString()!;
            var max = document.RootElement.GetProperty("max_length").ValueKind == System.Text.Json.JsonValueKind.Number
                ? document.RootElement.GetProperty("max_length").GetInt32() : (int?)null;
            var plain = Tokenizer.Encode(text, maxLength: max);
            var withOffsets = Tokenizer.EncodeWithOffsets(text, maxLength: max);
            Assert.Equal(plain.InputIds, withOffsets.InputIds);
            Assert.All(withOffsets.Offsets!, o => Assert.True(0 <= o.Start && o.Start <= o.End && o.End <= text.Length, text));
        }
    }

    [Fact]
    public void Words_given_split_keep_their_index_across_the_pieces_inside_them()
    {
        var encoding = Tokenizer.EncodeWords(["EU", "rejects", "U.S."]);
        Assert.Equal([-1, 0, 1, 2, 2, 2, 2, -1], encoding.WordIds!);
        Assert.Equal(["[CLS]", "eu", "rejects", "u", ".", "s", ".", "[SEP]"], encoding.Tokens);
        // Cut to 5 positions: [CLS], three pieces, [SEP].
        var cut = Tokenizer.EncodeWords(["EU", "rejects", "U.S."], maxLength: 5);
        Assert.Equal([-1, 0, 1, 2, -1], cut.WordIds!);
        Assert.Equal(Tokenizer.ClsId, cut.InputIds[0]);
        Assert.Equal(Tokenizer.SepId, cut.InputIds[^1]);
    }
}
