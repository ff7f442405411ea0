using System.Text;
using System.Text.Json;
using AdapterSharp.Checkpoints;

namespace AdapterSharp.Text;

/// <summary>The model inputs for one text or text pair: <c>[CLS] a [SEP]</c> or <c>[CLS] a [SEP] b [SEP]</c>.</summary>
/// <param name="TokenTypeIds">0 for the first segment with its [CLS] and [SEP], 1 for the second with its [SEP].</param>
/// <param name="Offsets">
/// Per position, the range of the input text it came from, in UTF-16 units (.NET and JavaScript string indices;
/// HF's <c>return_offsets_mapping</c> counts code points instead, which differ only past U+FFFF); (0, 0) for [CLS]
/// and [SEP]. For a pair, ranges of the second part index <c>textPair</c>. Null unless asked for.
/// </param>
/// <param name="WordIds">
/// Per position, the word it belongs to (−1 for [CLS] and [SEP]): for text, the words the pre-tokenizer split
/// (whitespace and punctuation apart, as HF's <c>word_ids()</c>); for words given already split, their index. Null
/// unless asked for.
/// </param>
public sealed record BertEncoding(int[] InputIds, int[] TokenTypeIds, string[] Tokens,
    (int Start, int End)[]? Offsets = null, int[]? WordIds = null)
{
    public int Length => InputIds.Length;
}

/// <summary>
/// BERT's WordPiece tokenizer, giving the same ids as transformers' <c>BertTokenizer</c> (backed by HF tokenizers):
/// <see cref="BasicTokenizer"/> normalises and splits words, <see cref="WordPiece"/> splits words into pieces, and
/// special tokens written in the text ("[CLS]", "[MASK]", …, case-sensitive) are matched first and kept whole.
/// Immutable, so one instance can serve many threads.
/// </summary>
public sealed class BertTokenizer
{
    public const string ClsToken = "[CLS]", SepToken = "[SEP]", PadToken = "[PAD]", MaskToken = "[MASK]";
    const string DefaultUnkToken = "[UNK]";

    readonly string?[] _idToToken;
    readonly BasicTokenizer _basic;
    readonly WordPiece _wordPiece;
    // Matched in the raw text before normalisation (tokenizers' added tokens with normalized=false), longest first.
    readonly (string Token, int Id)[] _specialTokens;
    readonly Lazy<string> _sha256;

    BertTokenizer(Dictionary<string, int> vocab, string?[] idToToken, string source, bool lowerCase, bool stripAccents,
        bool tokenizeChineseChars, bool cleanText, string unkToken, string subwordPrefix, int maxInputCharsPerWord,
        IEnumerable<(string Token, int Id)> extraSpecialTokens)
    {
        _idToToken = idToToken;
        Source = source;
        int Require(string token) => vocab.TryGetValue(token, out int id)
            ? id
            : throw new CheckpointException($"{source}: vocabulary has no {token} token");
        ClsId = Require(ClsToken);
        SepId = Require(SepToken);
        PadId = Require(PadToken);
        UnkId = Require(unkToken);
        MaskId = vocab.TryGetValue(MaskToken, out int mask) ? mask : null;
        UnkToken = unkToken;

        _basic = new BasicTokenizer(lowerCase, stripAccents, tokenizeChineseChars, cleanText);
        _wordPiece = new WordPiece(vocab, UnkId, subwordPrefix, maxInputCharsPerWord);
        var specials = new List<(string Token, int Id)> { (ClsToken, ClsId), (SepToken, SepId), (PadToken, PadId), (unkToken, UnkId) };
        if (MaskId is int maskId) specials.Add((MaskToken, maskId));
        _specialTokens = specials.Concat(extraSpecialTokens)
            .DistinctBy(t => t.Item1)
            .OrderByDescending(t => t.Item1.Length)
            .ToArray();
        var options = $"lower={lowerCase}|accents={stripAccents}|chinese={tokenizeChineseChars}|clean={cleanText}|unk={unkToken}|prefix={subwordPrefix}|max={maxInputCharsPerWord}";
        _sha256 = new(() => Fingerprint(vocab, options, _specialTokens));
    }

    /// <summary>
    /// SHA-256 (hex) of everything that decides the ids a text becomes: each token and its id, the normaliser's
    /// options, the subword prefix, the word length limit and the tokens matched before normalisation. The same
    /// tokenizer read from vocab.txt or from tokenizer.json has the same fingerprint.
    /// </summary>
    public string Sha256() => _sha256.Value;

    static string Fingerprint(Dictionary<string, int> vocab, string options, (string Token, int Id)[] specials)
    {
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        void Add(string text) => hash.AppendData(Encoding.UTF8.GetBytes(text.Replace("\\", "\\\\").Replace("\n", "\\n") + "\n"));
        Add(options);
        foreach (var (token, id) in specials.OrderBy(s => s.Token, StringComparer.Ordinal)) Add($"special {id} {token}");
        foreach (var (token, id) in vocab.OrderBy(e => e.Key, StringComparer.Ordinal)) Add($"{id} {token}");
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>Where the vocabulary came from (a file path), for messages.</summary>
    public string Source { get; }

    /// <summary>Number of ids (one more than the largest), i.e. the rows the word-embedding matrix needs.</summary>
    public int VocabSize => _idToToken.Length;
    public int ClsId { get; }
    public int SepId { get; }
    public int PadId { get; }
    public int UnkId { get; }
    /// <summary>Null when the vocabulary has no [MASK] token.</summary>
    public int? MaskId { get; }
    public string UnkToken { get; }
    public bool LowerCase => _basic.LowerCase;

    /// <summary>Reads a BERT vocab.txt: one token per line, the id is the line number. LF or CRLF line ends.</summary>
    public static BertTokenizer FromVocabFile(string path, bool lowerCase = true)
    {
        if (!File.Exists(path)) throw new CheckpointException($"{path}: file not found");
        return FromVocabBytes(File.ReadAllBytes(path), lowerCase, path);
    }

    /// <summary>A vocab.txt's bytes (UTF-8), e.g. read from an embedded resource. <paramref name="source"/> names it in errors.</summary>
    public static BertTokenizer FromVocabBytes(byte[] bytes, bool lowerCase = true, string source = "vocab.txt")
    {
        var text = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetString(bytes);
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..];
        var lines = text.Split('\n');
        // A final line ending does not start another token (as Python's readlines()).
        int count = lines[^1].Length == 0 ? lines.Length - 1 : lines.Length;
        // Vocabularies written on Windows end lines with CRLF; without this every token would keep a '\r'.
        return FromVocab(lines.Take(count).Select(line => line.EndsWith('\r') ? line[..^1] : line), lowerCase, source);
    }

    /// <summary>Tokens in id order.</summary>
    public static BertTokenizer FromVocab(IEnumerable<string> tokens, bool lowerCase = true, string source = "vocabulary")
    {
        var idToToken = tokens.ToArray<string?>();
        if (idToToken.Length == 0) throw new CheckpointException($"{source}: vocabulary is empty");
        var vocab = new Dictionary<string, int>(idToToken.Length, StringComparer.Ordinal);
        // A repeated token keeps its last id, as transformers' load_vocab does.
        for (int id = 0; id < idToToken.Length; id++) vocab[idToToken[id]!] = id;
        return new BertTokenizer(vocab, idToToken, source, lowerCase, stripAccents: lowerCase, tokenizeChineseChars: true,
            cleanText: true, DefaultUnkToken, "##", 100, []);
    }

    /// <summary>
    /// Reads an HF tokenizer.json with a WordPiece model: its vocabulary, unknown token, subword prefix and word
    /// length limit, the BertNormalizer's options, and its added tokens (matched in raw text like the specials).
    /// </summary>
    public static BertTokenizer FromTokenizerJson(string path)
    {
        if (!File.Exists(path)) throw new CheckpointException($"{path}: file not found");
        JsonDocument document;
        try
        {
            document = JsonStrict.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{path}: not valid JSON ({e.Message})");
        }
        using (document)
        {
            try
            {
                return FromTokenizerJson(document.RootElement, path);
            }
            catch (InvalidOperationException)
            {
                throw new CheckpointException($"{path}: a token or name is not valid Unicode (an escaped lone surrogate)");
            }
        }
    }

    /// <summary>The largest token id a vocabulary may use (vocab_size's bound): a larger one would size a table by it.</summary>
    const int MaxTokenId = (1 << 21) - 1;

    static BertTokenizer FromTokenizerJson(JsonElement root, string path)
    {
        {
            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
                throw new CheckpointException($"{path}: no \"model\" object");
            string? modelType = GetString(model, "type");
            if (modelType is not null and not "WordPiece")
                throw new CheckpointException($"{path}: model type is {modelType}, not WordPiece");
            if (!model.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object)
                throw new CheckpointException($"{path}: model has no \"vocab\" map");

            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var entry in vocabJson.EnumerateObject())
            {
                if (!entry.Value.TryGetInt32(out int id) || id is < 0 or > MaxTokenId)
                    throw new CheckpointException($"{path}: vocab entry '{entry.Name}' has no valid id (a whole number from 0 to {MaxTokenId})");
                vocab[entry.Name] = id;
            }
            var added = new List<(string Token, int Id)>();
            if (root.TryGetProperty("added_tokens", out var addedJson) && addedJson.ValueKind == JsonValueKind.Array)
            {
                foreach (var token in addedJson.EnumerateArray())
                {
                    if (GetString(token, "content") is not { Length: > 0 } content
                        || !token.TryGetProperty("id", out var idJson) || !idJson.TryGetInt32(out int id) || id is < 0 or > MaxTokenId)
                        throw new CheckpointException($"{path}: an added token has no content or id");
                    added.Add((content, id));
                    vocab.TryAdd(content, id);
                }
            }
            if (vocab.Count == 0) throw new CheckpointException($"{path}: vocabulary is empty");

            var idToToken = new string?[vocab.Values.Max() + 1];
            foreach (var (token, id) in vocab) idToToken[id] ??= token;

            bool lowerCase = true, tokenizeChineseChars = true, cleanText = true;
            bool? stripAccents = null;
            if (root.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind == JsonValueKind.Object)
            {
                string? type = GetString(normalizer, "type");
                if (type != "BertNormalizer")
                    throw new CheckpointException($"{path}: normalizer is {type ?? "untyped"}; only BertNormalizer is supported");
                lowerCase = GetBool(normalizer, "lowercase") ?? true;
                stripAccents = GetBool(normalizer, "strip_accents");
                tokenizeChineseChars = GetBool(normalizer, "handle_chinese_chars") ?? true;
                cleanText = GetBool(normalizer, "clean_text") ?? true;
            }
            if (root.TryGetProperty("pre_tokenizer", out var preTokenizer) && preTokenizer.ValueKind == JsonValueKind.Object
                && GetString(preTokenizer, "type") is { } preType && preType != "BertPreTokenizer")
                throw new CheckpointException($"{path}: pre-tokenizer is {preType}; only BertPreTokenizer is supported");

            return new BertTokenizer(vocab, idToToken, path, lowerCase, stripAccents ?? lowerCase, tokenizeChineseChars,
                cleanText, GetString(model, "unk_token") ?? DefaultUnkToken,
                GetString(model, "continuing_subword_prefix") ?? "##",
                model.TryGetProperty("max_input_chars_per_word", out var max) && max.TryGetInt32(out int m) ? m : 100,
                added);
        }

        static string? GetString(JsonElement e, string name) =>
            e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        static bool? GetBool(JsonElement e, string name) =>
            e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;
    }

    /// <summary>The text's tokens without [CLS]/[SEP] ("##" marks continuation pieces).</summary>
    public IReadOnlyList<string> Tokenize(string text) => Array.ConvertAll(TokenizeToIds(text), IdToToken);

    /// <summary>The text's token ids without [CLS]/[SEP].</summary>
    public int[] TokenizeToIds(string text)
    {
        var pieces = new Pieces(withOffsets: false);
        AppendPieces(text, pieces);
        return [.. pieces.Ids];
    }

    /// <summary>
    /// <c>[CLS] text [SEP]</c>, or <c>[CLS] text [SEP] textPair [SEP]</c>. An empty <paramref name="textPair"/> counts as
    /// none, as in transformers. <paramref name="maxLength"/> (special tokens included) cuts the pieces "longest_first"
    /// as HF tokenizers does: see <see cref="Truncate"/>.
    /// </summary>
    /// <remarks>
    /// Below 2 (3 for a pair) HF computes the room left for text in unsigned arithmetic, which wraps around, so
    /// nothing is cut beyond the per-text early stop and the result is longer than <paramref name="maxLength"/>; this
    /// method returns the same.
    /// </remarks>
    public BertEncoding Encode(string text, string? textPair = null, int? maxLength = null) =>
        Encode(text, textPair, maxLength, withOffsets: false);

    /// <summary>
    /// <see cref="Encode(string, string?, int?)"/> with <see cref="BertEncoding.Offsets"/> and
    /// <see cref="BertEncoding.WordIds"/>: where each piece is in the text, and which word it belongs to.
    /// </summary>
    public BertEncoding EncodeWithOffsets(string text, string? textPair = null, int? maxLength = null) =>
        Encode(text, textPair, maxLength, withOffsets: true);

    BertEncoding Encode(string text, string? textPair, int? maxLength, bool withOffsets)
    {
        if (maxLength < 0) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "must not be negative");
        bool isPair = !string.IsNullOrEmpty(textPair);
        var first = new Pieces(withOffsets);
        AppendPieces(text, first, maxLength);
        Pieces? second = null;
        if (isPair)
        {
            second = new Pieces(withOffsets);
            AppendPieces(textPair!, second, maxLength);
        }

        int room = (maxLength ?? int.MaxValue) - (isPair ? 3 : 2);
        if (maxLength is not null && room >= 0)
        {
            var (keepFirst, keepSecond) = Truncate(first.Ids.Count, second?.Ids.Count, room);
            first.Cut(keepFirst);
            second?.Cut(keepSecond);
        }
        return Assemble(first, second);
    }

    /// <summary>
    /// Words already split (a CoNLL sentence): <c>[CLS]</c>, each word's pieces, <c>[SEP]</c>, cut to
    /// <paramref name="maxLength"/> positions, with <see cref="BertEncoding.WordIds"/> giving each piece's word index and
    /// <see cref="BertEncoding.Offsets"/> its range within that word. As transformers with <c>is_split_into_words</c>: a
    /// word is still split at punctuation inside it ("U.S." is four pieces of one word).
    /// </summary>
    public BertEncoding EncodeWords(IReadOnlyList<string> words, int? maxLength = null)
    {
        if (maxLength < 0) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "must not be negative");
        var pieces = new Pieces(withOffsets: true);
        for (int w = 0; w < words.Count; w++)
        {
            int before = pieces.Ids.Count;
            AppendPieces(words[w], pieces, limit: null);
            for (int k = before; k < pieces.Ids.Count; k++) pieces.Words![k] = w;
            if (maxLength is { } max && pieces.Ids.Count >= max - 2) break;
        }
        if (maxLength is { } limit && limit >= 2 && pieces.Ids.Count > limit - 2) pieces.Cut(limit - 2);
        return Assemble(pieces, null);
    }

    BertEncoding Assemble(Pieces first, Pieces? second)
    {
        int length = 2 + first.Ids.Count + (second is null ? 0 : second.Ids.Count + 1);
        var inputIds = new int[length];
        var typeIds = new int[length];
        bool withOffsets = first.Offsets is not null;
        var offsets = withOffsets ? new (int, int)[length] : null;
        var wordIds = withOffsets ? new int[length] : null;
        wordIds?.AsSpan().Fill(-1);
        int i = 0;
        inputIds[i++] = ClsId;
        void Copy(Pieces pieces)
        {
            for (int k = 0; k < pieces.Ids.Count; k++, i++)
            {
                inputIds[i] = pieces.Ids[k];
                if (!withOffsets) continue;
                offsets![i] = pieces.Offsets![k];
                wordIds![i] = pieces.Words![k];
            }
        }
        Copy(first);
        inputIds[i++] = SepId;
        if (second is not null)
        {
            int secondStart = i;
            Copy(second);
            inputIds[i++] = SepId;
            typeIds.AsSpan(secondStart).Fill(1);
        }
        return new BertEncoding(inputIds, typeIds, Array.ConvertAll(inputIds, IdToToken), offsets, wordIds);
    }

    /// <summary>A text's pieces: ids, and with offsets also each piece's range in the text and its word's index.</summary>
    sealed class Pieces(bool withOffsets)
    {
        public readonly List<int> Ids = [];
        public readonly List<(int Start, int End)>? Offsets = withOffsets ? [] : null;
        public readonly List<int>? Words = withOffsets ? [] : null;
        public int WordCount;

        public void Cut(int keep)
        {
            if (Ids.Count <= keep) return;
            Ids.RemoveRange(keep, Ids.Count - keep);
            Offsets?.RemoveRange(keep, Offsets.Count - keep);
            Words?.RemoveRange(keep, Words.Count - keep);
        }
    }

    public string IdToToken(int id) =>
        (uint)id < (uint)_idToToken.Length && _idToToken[id] is { } token ? token : UnkToken;

    /// <summary>The token's id, or the unknown token's id when it is not in the vocabulary.</summary>
    public int TokenToId(string token) => _wordPiece.TryGetId(token, out int id) ? id : UnkId;

    /// <summary>
    /// The text's piece ids. With a <paramref name="limit"/> it stops after the first word that brings the count to the
    /// limit or past it, as tokenizers does when truncation is on (tokenize_with_limit). Special tokens count but do
    /// not stop it. Truncation proper comes later; this early stop matters only because it changes which of a pair
    /// is the longer.
    /// </summary>
    void AppendPieces(string text, Pieces pieces, int? limit = null)
    {
        var words = new List<Range>();
        int segmentStart = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (!TryMatchSpecial(text, i, out var special)) continue;
            if (!AppendSegment(text, segmentStart, i - segmentStart, pieces, words, limit)) return;
            pieces.Ids.Add(special.Id);
            pieces.Offsets?.Add((i, i + special.Token.Length));
            pieces.Words?.Add(pieces.WordCount++);
            i += special.Token.Length - 1;
            segmentStart = i + 1;
        }
        AppendSegment(text, segmentStart, text.Length - segmentStart, pieces, words, limit);
    }

    bool TryMatchSpecial(string text, int index, out (string Token, int Id) match)
    {
        foreach (var special in _specialTokens)
        {
            if (text.AsSpan(index).StartsWith(special.Token, StringComparison.Ordinal))
            {
                match = special;
                return true;
            }
        }
        match = default;
        return false;
    }

    /// <summary>Appends the pieces of <c>text[start..start+length]</c>; false once the limit is reached.</summary>
    bool AppendSegment(string text, int start, int length, Pieces pieces, List<Range> words, int? limit)
    {
        if (length == 0) return true;
        var alignment = pieces.Offsets is null ? null : new List<(int Start, int End)>(length + 8);
        string normalized = _basic.Normalize(text.AsSpan(start, length), alignment);
        words.Clear();
        BasicTokenizer.SplitWords(normalized, words);
        var ends = alignment is null ? null : new List<int>();
        foreach (var word in words)
        {
            int before = pieces.Ids.Count;
            ends?.Clear();
            _wordPiece.Tokenize(normalized.AsSpan()[word], pieces.Ids, ends);
            if (alignment is not null)
            {
                int wordStart = word.Start.GetOffset(normalized.Length), pieceStart = wordStart;
                foreach (int end in ends!)
                {
                    // A piece's range: from its first normalised unit's source to its last one's.
                    pieces.Offsets!.Add((start + alignment[pieceStart].Start, start + alignment[wordStart + end - 1].End));
                    pieces.Words!.Add(pieces.WordCount);
                    pieceStart = wordStart + end;
                }
                pieces.WordCount++;
            }
            if (pieces.Ids.Count >= limit) return false;
        }
        return true;
    }

    /// <summary>
    /// tokenizers' truncate_encodings for "longest_first" (cut from the right, no stride); <paramref name="room"/>
    /// excludes the special tokens. With a pair, when the shorter text fits beside the longer one cut to the rest,
    /// only the longer is cut; otherwise each keeps half the room, the odd place going to the longer (the second
    /// when they are equally long).
    /// </summary>
    /// <returns>How many pieces of each text to keep.</returns>
    static (int First, int Second) Truncate(int first, int? secondCount, int room)
    {
        if (secondCount is not int second) return (Math.Min(first, room), 0);
        if (first + second <= room) return (first, second);

        bool firstIsShorter = first <= second;
        int keepShorter = Math.Min(first, second);
        int keepLonger = keepShorter > room ? keepShorter : Math.Max(keepShorter, room - keepShorter);
        if (keepShorter + keepLonger > room)
        {
            keepShorter = room / 2;
            keepLonger = keepShorter + room % 2;
        }
        var (keepFirst, keepSecond) = firstIsShorter ? (keepShorter, keepLonger) : (keepLonger, keepShorter);
        return (Math.Min(first, keepFirst), Math.Min(second, keepSecond));
    }
}
