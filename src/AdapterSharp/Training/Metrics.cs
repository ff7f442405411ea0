namespace AdapterSharp.Training;

/// <summary>GLUE's metrics. Classification metrics take label indices; F1 and MCC treat index 1 as positive.</summary>
public static class Metrics
{
    public static double Accuracy(IReadOnlyList<int> predicted, IReadOnlyList<int> gold)
    {
        Check(predicted.Count, gold.Count);
        int correct = 0;
        for (int i = 0; i < gold.Count; i++) if (predicted[i] == gold[i]) correct++;
        return (double)correct / gold.Count;
    }

    public static double F1(IReadOnlyList<int> predicted, IReadOnlyList<int> gold, int positive = 1)
    {
        var (tp, _, fp, fn) = Confusion(predicted, gold, positive);
        return 2.0 * tp / Math.Max(1, 2 * tp + fp + fn);
    }

    /// <summary>Matthews correlation; 0 when any marginal is empty (as scikit-learn does).</summary>
    public static double Matthews(IReadOnlyList<int> predicted, IReadOnlyList<int> gold, int positive = 1)
    {
        var (tp, tn, fp, fn) = Confusion(predicted, gold, positive);
        double denominator = Math.Sqrt((double)(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn));
        return denominator == 0 ? 0 : ((double)tp * tn - (double)fp * fn) / denominator;
    }

    public static double Pearson(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        Check(x.Count, y.Count);
        double mx = x.Average(), my = y.Average(), sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < x.Count; i++)
        {
            sxy += (x[i] - mx) * (y[i] - my);
            sxx += (x[i] - mx) * (x[i] - mx);
            syy += (y[i] - my) * (y[i] - my);
        }
        return sxx == 0 || syy == 0 ? 0 : sxy / Math.Sqrt(sxx * syy);
    }

    /// <summary>Spearman's rank correlation: Pearson on ranks, ties given their average rank.</summary>
    public static double Spearman(IReadOnlyList<double> x, IReadOnlyList<double> y) => Pearson(Ranks(x), Ranks(y));

    static double[] Ranks(IReadOnlyList<double> values)
    {
        var order = Enumerable.Range(0, values.Count).OrderBy(i => values[i]).ToArray();
        var ranks = new double[values.Count];
        for (int start = 0; start < order.Length;)
        {
            int end = start;
            while (end + 1 < order.Length && values[order[end + 1]] == values[order[start]]) end++;
            double rank = (start + end) / 2.0 + 1;
            for (int k = start; k <= end; k++) ranks[order[k]] = rank;
            start = end + 1;
        }
        return ranks;
    }

    static (long Tp, long Tn, long Fp, long Fn) Confusion(IReadOnlyList<int> predicted, IReadOnlyList<int> gold, int positive)
    {
        Check(predicted.Count, gold.Count);
        long tp = 0, tn = 0, fp = 0, fn = 0;
        for (int i = 0; i < gold.Count; i++)
        {
            bool p = predicted[i] == positive, g = gold[i] == positive;
            if (p && g) tp++;
            else if (!p && !g) tn++;
            else if (p) fp++;
            else fn++;
        }
        return (tp, tn, fp, fn);
    }

    static void Check(int a, int b)
    {
        if (a != b) throw new ArgumentException($"{a} predictions for {b} gold labels");
        if (a == 0) throw new ArgumentException("no examples to score");
    }
}
