using System.Text;

namespace AdapterSharp.Text;

/// <summary>
/// WordPiece: splits one word into the longest vocabulary entries, left to right, continuation pieces carrying a
/// "##" prefix. A word with no complete split, or longer than <see cref="MaxInputCharsPerWord"/> characters,
/// becomes the single unknown token.
/// </summary>
internal sealed class WordPiece
{
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    readonly string _prefix;
    readonly int _unkId;

    public WordPiece(Dictionary<string, int> vocab, int unkId, string continuingSubwordPrefix = "##", int maxInputCharsPerWord = 100)
    {
        _lookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _unkId = unkId;
        _prefix = continuingSubwordPrefix;
        MaxInputCharsPerWord = maxInputCharsPerWord;
    }

    public int MaxInputCharsPerWord { get; }

    public bool TryGetId(ReadOnlySpan<char> token, out int id) => _lookup.TryGetValue(token, out id);

    /// <summary>
    /// Appends the ids of <paramref name="word"/>'s pieces to <paramref name="ids"/>, and, when <paramref name="ends"/> is
    /// given, where each piece ends in the word (UTF-16 units; the unknown token spans the whole word).
    /// </summary>
    public void Tokenize(ReadOnlySpan<char> word, List<int> ids, List<int>? ends = null)
    {
        // The limit counts Unicode scalar values (Rust's chars().count()), not UTF-16 units.
        if (word.Length > MaxInputCharsPerWord && CountCodePoints(word) > MaxInputCharsPerWord)
        {
            ids.Add(_unkId);
            ends?.Add(word.Length);
            return;
        }
        int firstEnd = ends?.Count ?? 0;

        int firstPiece = ids.Count;
        // Continuation candidates are looked up as prefix + rest-of-word, built once per start position.
        Span<char> candidate = word.Length + _prefix.Length <= 256
            ? stackalloc char[word.Length + _prefix.Length]
            : new char[word.Length + _prefix.Length];
        _prefix.CopyTo(candidate);

        for (int start = 0; start < word.Length;)
        {
            scoped ReadOnlySpan<char> rest;
            if (start == 0) rest = word;
            else
            {
                word[start..].CopyTo(candidate[_prefix.Length..]);
                rest = candidate[..(_prefix.Length + word.Length - start)];
            }
            int offset = start == 0 ? 0 : _prefix.Length;

            int end = word.Length;
            int id = -1;
            while (end > start)
            {
                if (_lookup.TryGetValue(rest[..(offset + end - start)], out id)) break;
                id = -1;
                // Shrink by one whole character: never leave half of a surrogate pair.
                end -= end - start >= 2 && char.IsLowSurrogate(word[end - 1]) && char.IsHighSurrogate(word[end - 2]) ? 2 : 1;
            }
            if (id < 0)
            {
                ids.RemoveRange(firstPiece, ids.Count - firstPiece);
                ids.Add(_unkId);
                if (ends is not null)
                {
                    ends.RemoveRange(firstEnd, ends.Count - firstEnd);
                    ends.Add(word.Length);
                }
                return;
            }
            ids.Add(id);
            ends?.Add(end);
            start = end;
        }
    }

    static int CountCodePoints(ReadOnlySpan<char> text)
    {
        int count = 0;
        foreach (var _ in text.EnumerateRunes()) count++;
        return count;
    }
}
