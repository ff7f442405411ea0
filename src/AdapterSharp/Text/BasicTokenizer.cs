using System.Buffers;
using System.Text;

namespace AdapterSharp.Text;

/// <summary>
/// BERT's text normalisation and word splitting, as HF tokenizers' <c>BertNormalizer</c> + <c>BertPreTokenizer</c>
/// do them (the backend of transformers' BertTokenizer): drop control characters, map whitespace to a space, put
/// spaces around CJK ideographs, strip accents (NFD, then drop non-spacing marks), lowercase; then split on
/// whitespace and isolate each punctuation character.
/// </summary>
internal sealed class BasicTokenizer(bool lowerCase, bool stripAccents, bool tokenizeChineseChars = true, bool cleanText = true)
{
    public bool LowerCase { get; } = lowerCase;
    public bool StripAccents { get; } = stripAccents;

    public string Normalize(ReadOnlySpan<char> text) => Normalize(text, null);

    /// <summary>
    /// <see cref="Normalize(ReadOnlySpan{char})"/>, and where each UTF-16 unit of the result came from: the range of
    /// <paramref name="text"/> (UTF-16 units) of the character it was made from, as HF tokenizers' alignments say
    /// (a lowercased or accent-stripped character keeps its source's range; a character made two keeps it twice).
    /// </summary>
    public string Normalize(ReadOnlySpan<char> text, List<(int Start, int End)>? alignment)
    {
        var codePoints = new List<int>(text.Length + 8);
        var sources = alignment is null ? null : new List<(int, int)>(text.Length + 8);
        for (int i = 0; i < text.Length;)
        {
            // A lone surrogate cannot occur in Rust or Python text; it is dropped like the other category-C characters.
            var status = Rune.DecodeFromUtf16(text[i..], out var rune, out int consumed);
            var source = (i, i + consumed);
            i += consumed;
            if (status != OperationStatus.Done) continue;
            int c = rune.Value;

            if (cleanText)
            {
                if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
                if (IsWhitespace(c)) c = ' ';
            }
            // Compatibility ideographs are spaced first and still decompose to their unified twins (U+F902 → U+8ECA).
            bool spaced = tokenizeChineseChars && IsChineseChar(c);
            if (spaced) codePoints.Add(' ');
            if (StripAccents) UnicodeNormalization.AppendDecomposed(c, codePoints);
            else codePoints.Add(c);
            if (spaced) codePoints.Add(' ');
            while (sources is not null && sources.Count < codePoints.Count) sources.Add(source);
        }

        var result = new StringBuilder(codePoints.Count);
        for (int k = 0; k < codePoints.Count; k++)
        {
            int c = codePoints[k];
            int before = result.Length;
            // Marks are dropped only after the whole text is in canonical order, as NFD-then-filter does.
            if (StripAccents && c >= 0x300 && InRanges(UnicodeTables.NonSpacingMarks, c)) continue;
            if (!LowerCase || c < 'A' || (c > 'Z' && c < 0xC0)) AppendCodePoint(result, c);
            else if (c <= 'Z') result.Append((char)(c + ('a' - 'A')));
            // Rust's char::to_lowercase uses the full mapping, where only U+0130 differs from the simple one
            // (.NET's invariant casing leaves U+0130 alone altogether).
            else if (c == 0x130) result.Append("i\u0307");
            else AppendCodePoint(result, Rune.ToLowerInvariant(new Rune(c)).Value);
            for (int unit = before; alignment is not null && unit < result.Length; unit++) alignment.Add(sources![k]);
        }
        return result.ToString();
    }

    /// <summary>Splits normalised text into words: whitespace separates and is dropped, punctuation stands alone.</summary>
    public static void SplitWords(string normalized, List<Range> words)
    {
        int start = 0;
        for (int i = 0; i < normalized.Length;)
        {
            Rune.DecodeFromUtf16(normalized.AsSpan(i), out var rune, out int consumed);
            if (Rune.IsWhiteSpace(rune))
            {
                if (i > start) words.Add(start..i);
                start = i + consumed;
            }
            else if (IsPunctuation(rune.Value))
            {
                if (i > start) words.Add(start..i);
                words.Add(i..(i + consumed));
                start = i + consumed;
            }
            i += consumed;
        }
        if (normalized.Length > start) words.Add(start..normalized.Length);
    }

    static void AppendCodePoint(StringBuilder builder, int c)
    {
        if (c < 0x10000)
        {
            builder.Append((char)c);
            return;
        }
        Span<char> pair = stackalloc char[2];
        new Rune(c).EncodeToUtf16(pair);
        builder.Append(pair);
    }

    static bool IsWhitespace(int c) => c is ' ' or '\t' or '\n' or '\r' || Rune.IsWhiteSpace(new Rune(c));

    // Categories come from UnicodeTables (tokenizers' Unicode 8.0 data), not from .NET's newer CharUnicodeInfo.

    // Cc, Cf and Co, as the `unicode_categories` crate's is_other() that tokenizers uses: unassigned code points (Cn)
    // are kept, unlike in transformers' old Python tokenizer. Tab, newline and carriage return count as whitespace.
    static bool IsControl(int c)
    {
        if (c is '\t' or '\n' or '\r') return false;
        if (c < 0x7F) return c < 0x20;
        return InRanges(UnicodeTables.ControlFormatPrivateUse, c);
    }

    // All of ASCII's non-alphanumeric printable characters count, so `$ + < = > ^ ` | ~` split words although
    // Unicode files them under symbols; elsewhere only the P* categories do.
    static bool IsPunctuation(int c)
    {
        if (c < 0x80) return c is (>= 33 and <= 47) or (>= 58 and <= 64) or (>= 91 and <= 96) or (>= 123 and <= 126);
        return InRanges(UnicodeTables.Punctuation, c);
    }

    /// <summary>Whether <paramref name="c"/> lies in one of the ascending (first, last) pairs.</summary>
    static bool InRanges(ReadOnlySpan<int> ranges, int c)
    {
        int lo = 0, hi = ranges.Length / 2 - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (c < ranges[2 * mid]) hi = mid - 1;
            else if (c > ranges[2 * mid + 1]) lo = mid + 1;
            else return true;
        }
        return false;
    }

    // The CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana). The ranges are tokenizers' (Rust), which
    // start extension E at U+2B920 where transformers' old Python tokenizer said U+2B820.
    static bool IsChineseChar(int c) => c is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF)
        or (>= 0x20000 and <= 0x2A6DF) or (>= 0x2A700 and <= 0x2B73F) or (>= 0x2B740 and <= 0x2B81F)
        or (>= 0x2B920 and <= 0x2CEAF) or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);
}
