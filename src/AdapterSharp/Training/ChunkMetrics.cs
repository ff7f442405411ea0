namespace AdapterSharp.Training;

/// <summary>Entity-level (chunk) scores and token accuracy, as conlleval reports them.</summary>
/// <param name="Precision">Correct chunks over predicted chunks (0 when nothing was predicted).</param>
/// <param name="Recall">Correct chunks over gold chunks (0 when there are none).</param>
/// <param name="F1">2PR / (P + R) (0 when both are 0).</param>
/// <param name="Accuracy">Tokens whose whole tag (prefix and type) is right, over all tokens.</param>
public sealed record ChunkScores(double Precision, double Recall, double F1, double Accuracy,
    long CorrectChunks, long PredictedChunks, long GoldChunks, long Tokens);

/// <summary>
/// The CoNLL shared tasks' chunk evaluation, rule for rule as the <c>conlleval</c> Perl script (2004 version) decides
/// where chunks start and end, so IOB1, IOB2 (and IOE, and the script's bracket tags) all score as the script scores
/// them: a tag is <c>PREFIX-TYPE</c> or <c>O</c>; a chunk starts at <c>B</c>, at <c>I</c> after <c>O</c>, or wherever
/// the type changes (so <c>I-X</c> after <c>I-Y</c> starts one); a predicted chunk is correct when it starts and ends
/// where a gold chunk does, with the same type. Sentence breaks end every chunk, as the script's blank lines do.
/// </summary>
public static class ChunkMetrics
{
    /// <summary>Scores sentences of gold and predicted tags (each pair of equal length).</summary>
    public static ChunkScores Evaluate(IEnumerable<(IReadOnlyList<string> Gold, IReadOnlyList<string> Predicted)> sentences)
    {
        var counter = new Counter();
        foreach (var (gold, predicted) in sentences)
        {
            if (gold.Count != predicted.Count)
                throw new ArgumentException($"a sentence has {gold.Count} gold tags but {predicted.Count} predicted ones");
            for (int i = 0; i < gold.Count; i++) counter.Token(gold[i], predicted[i], boundary: false);
            counter.Token("O", "O", boundary: true); // the blank line after each sentence
        }
        return counter.Finish();
    }

    /// <summary>The chunks of one tag sequence as (type, first, last) token indices, by the same rules.</summary>
    public static List<(string Type, int Start, int End)> Chunks(IReadOnlyList<string> tags)
    {
        var chunks = new List<(string, int, int)>();
        string lastTag = "O", lastType = "";
        int start = -1;
        for (int i = 0; i <= tags.Count; i++)
        {
            var (tag, type) = i < tags.Count ? Split(tags[i]) : ("O", "");
            if (start >= 0 && EndOfChunk(lastTag, tag, lastType, type))
            {
                chunks.Add((lastType, start, i - 1));
                start = -1;
            }
            if (i < tags.Count && StartOfChunk(lastTag, tag, lastType, type)) start = i;
            (lastTag, lastType) = (tag, type);
        }
        return chunks;
    }

    sealed class Counter
    {
        long correctChunks, foundGold, foundGuessed, correctTags, tokens;
        bool inCorrect;
        string lastGold = "O", lastGuessed = "O", lastGoldType = "", lastGuessedType = "";

        public void Token(string goldTag, string guessedTag, bool boundary)
        {
            var (gold, goldType) = Split(goldTag);
            var (guessed, guessedType) = Split(guessedTag);
            if (boundary) guessed = "O"; // sentence breaks are always out of chunk

            if (inCorrect)
            {
                bool goldEnds = EndOfChunk(lastGold, gold, lastGoldType, goldType);
                bool guessedEnds = EndOfChunk(lastGuessed, guessed, lastGuessedType, guessedType);
                if (goldEnds && guessedEnds && lastGuessedType == lastGoldType)
                {
                    inCorrect = false;
                    correctChunks++;
                }
                else if (goldEnds != guessedEnds || guessedType != goldType)
                {
                    inCorrect = false;
                }
            }
            bool goldStarts = StartOfChunk(lastGold, gold, lastGoldType, goldType);
            bool guessedStarts = StartOfChunk(lastGuessed, guessed, lastGuessedType, guessedType);
            if (goldStarts && guessedStarts && guessedType == goldType) inCorrect = true;
            if (goldStarts) foundGold++;
            if (guessedStarts) foundGuessed++;
            if (!boundary)
            {
                if (gold == guessed && goldType == guessedType) correctTags++;
                tokens++;
            }
            (lastGold, lastGuessed, lastGoldType, lastGuessedType) = (gold, guessed, goldType, guessedType);
        }

        public ChunkScores Finish()
        {
            if (inCorrect) correctChunks++;
            double precision = foundGuessed > 0 ? (double)correctChunks / foundGuessed : 0;
            double recall = foundGold > 0 ? (double)correctChunks / foundGold : 0;
            double f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;
            double accuracy = tokens > 0 ? (double)correctTags / tokens : 0;
            return new ChunkScores(precision, recall, f1, accuracy, correctChunks, foundGuessed, foundGold, tokens);
        }
    }

    /// <summary>"B-PER" → ("B", "PER"); "O" → ("O", ""); as Perl's split(/-/) keeps the first two parts.</summary>
    static (string Tag, string Type) Split(string tag)
    {
        int dash = tag.IndexOf('-');
        if (dash < 0) return (tag, "");
        int next = tag.IndexOf('-', dash + 1);
        return (tag[..dash], next < 0 ? tag[(dash + 1)..] : tag[(dash + 1)..next]);
    }

    static bool EndOfChunk(string prevTag, string tag, string prevType, string type) =>
        (prevTag, tag) is ("B", "B") or ("B", "O") or ("I", "B") or ("I", "O") or ("E", "E") or ("E", "I") or ("E", "O")
        || (prevTag != "O" && prevTag != "." && prevType != type)
        || prevTag is "]" or "[";

    static bool StartOfChunk(string prevTag, string tag, string prevType, string type) =>
        (prevTag, tag) is ("B", "B") or ("I", "B") or ("O", "B") or ("O", "I") or ("E", "E") or ("E", "I") or ("O", "E")
        || (tag != "O" && tag != "." && prevType != type)
        || tag is "[" or "]";
}
