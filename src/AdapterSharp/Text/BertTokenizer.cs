using System.Text;
using System.Text.Json;
using AdapterSharp.Checkpoints;

namespace AdapterSharp.Text;

/// <summary>The model inputs for one text or text pair: <c>[CLS] a [SEP]</c> or <c>[CLS] a [SEP] b [SEP]</c>.</summary>
/// <param name="TokenTypeIds">0 for the first segment with its [CLS] and [SEP], 1 for the second with its [SEP].</param>
public sealed record BertEncoding(int[] InputIds, int[] TokenTypeIds, string[] Tokens)
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
    public int[] TokenizeToIds(string text) => PieceIds(text).ToArray();

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
    public BertEncoding Encode(string text, string? textPair = null, int? maxLength = null)
    {
        if (maxLength < 0) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "must not be negative");
        bool isPair = !string.IsNullOrEmpty(textPair);
        var first = PieceIds(text, maxLength);
        var second = isPair ? PieceIds(textPair!, maxLength) : null;

        int room = (maxLength ?? int.MaxValue) - (isPair ? 3 : 2);
        if (maxLength is not null && room >= 0) Truncate(first, second, room);

        int length = 2 + first.Count + (second is null ? 0 : second.Count + 1);
        var inputIds = new int[length];
        var typeIds = new int[length];
        int i = 0;
        inputIds[i++] = ClsId;
        foreach (int id in first) inputIds[i++] = id;
        inputIds[i++] = SepId;
        if (second is not null)
        {
            int secondStart = i;
            foreach (int id in second) inputIds[i++] = id;
            inputIds[i++] = SepId;
            typeIds.AsSpan(secondStart).Fill(1);
        }
        return new BertEncoding(inputIds, typeIds, Array.ConvertAll(inputIds, IdToToken));
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
    List<int> PieceIds(string text, int? limit = null)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        var words = new List<Range>();
        int segmentStart = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (!TryMatchSpecial(text, i, out var special)) continue;
            if (!AppendSegment(text.AsSpan(segmentStart, i - segmentStart), ids, words, limit)) return ids;
            ids.Add(special.Id);
            i += special.Token.Length - 1;
            segmentStart = i + 1;
        }
        AppendSegment(text.AsSpan(segmentStart), ids, words, limit);
        return ids;
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

    /// <summary>Appends the segment's piece ids; false once the limit is reached.</summary>
    bool AppendSegment(ReadOnlySpan<char> segment, List<int> ids, List<Range> words, int? limit)
    {
        if (segment.IsEmpty) return true;
        string normalized = _basic.Normalize(segment);
        words.Clear();
        BasicTokenizer.SplitWords(normalized, words);
        foreach (var word in words)
        {
            _wordPiece.Tokenize(normalized.AsSpan()[word], ids);
            if (ids.Count >= limit) return false;
        }
        return true;
    }

    /// <summary>
    /// tokenizers' truncate_encodings for "longest_first" (cut from the right, no stride); <paramref name="room"/>
    /// excludes the special tokens. With a pair, when the shorter text fits beside the longer one cut to the rest,
    /// only the longer is cut; otherwise each keeps half the room, the odd place going to the longer (the second
    /// when they are equally long).
    /// </summary>
    static void Truncate(List<int> first, List<int>? second, int room)
    {
        if (second is null)
        {
            if (first.Count > room) first.RemoveRange(room, first.Count - room);
            return;
        }
        if (first.Count + second.Count <= room) return;

        bool firstIsShorter = first.Count <= second.Count;
        int keepShorter = Math.Min(first.Count, second.Count);
        int keepLonger = keepShorter > room ? keepShorter : Math.Max(keepShorter, room - keepShorter);
        if (keepShorter + keepLonger > room)
        {
            keepShorter = room / 2;
            keepLonger = keepShorter + room % 2;
        }
        var (keepFirst, keepSecond) = firstIsShorter ? (keepShorter, keepLonger) : (keepLonger, keepShorter);
        if (first.Count > keepFirst) first.RemoveRange(keepFirst, first.Count - keepFirst);
        if (second.Count > keepSecond) second.RemoveRange(keepSecond, second.Count - keepSecond);
    }
}
