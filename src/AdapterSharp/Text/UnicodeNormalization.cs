namespace AdapterSharp.Text;

/// <summary>
/// Canonical decomposition (NFD) over code points, from the tables in UnicodeTables.g.cs. BERT's accent stripping
/// needs it, and string.Normalize cannot be used: in invariant-globalization mode it returns non-ASCII text unchanged.
/// </summary>
internal static class UnicodeNormalization
{
    // Hangul syllables decompose arithmetically (Unicode §3.12) into 2 or 3 conjoining jamo.
    const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    /// <summary>Appends the full canonical decomposition of <paramref name="codePoint"/> to <paramref name="output"/>,
    /// keeping the buffer in canonical order (combining marks sorted by class within each run).</summary>
    public static void AppendDecomposed(int codePoint, List<int> output)
    {
        if (codePoint < 0xC0)
        {
            output.Add(codePoint);
            return;
        }
        int s = codePoint - SBase;
        if (s is >= 0 and < SCount)
        {
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
            return;
        }
        int index = UnicodeTables.DecomposableCodePoints.BinarySearch(codePoint);
        if (index < 0)
        {
            AppendOrdered(codePoint, output);
            return;
        }
        var parts = UnicodeTables.DecompositionData[UnicodeTables.DecompositionStart[index]..UnicodeTables.DecompositionStart[index + 1]];
        foreach (int part in parts) AppendOrdered(part, output);
    }

    /// <summary>Canonical combining class (0 for starters and for anything not in the table).</summary>
    public static int CombiningClass(int codePoint)
    {
        if (codePoint < 0x300) return 0;
        var ranges = UnicodeTables.CombiningClassRanges;
        int lo = 0, hi = ranges.Length / 3 - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (codePoint < ranges[3 * mid]) hi = mid - 1;
            else if (codePoint > ranges[3 * mid + 1]) lo = mid + 1;
            else return ranges[3 * mid + 2];
        }
        return 0;
    }

    // Insertion step of the canonical ordering algorithm: a mark moves back past marks of a higher class, never past a
    // starter (class 0). Equal classes keep their order, so the sort is stable.
    static void AppendOrdered(int codePoint, List<int> output)
    {
        int ccc = CombiningClass(codePoint);
        int i = output.Count;
        if (ccc != 0)
        {
            while (i > 0)
            {
                int previous = CombiningClass(output[i - 1]);
                if (previous == 0 || previous <= ccc) break;
                i--;
            }
        }
        output.Insert(i, codePoint);
    }
}
