using AdapterSharp.Training;

namespace AdapterSharp.Tests.Training;

/// <summary>GLUE's metrics against values worked out by hand.</summary>
public class MetricsTests
{
    const double Tolerance = 1e-12;

    /// <summary>Predictions and gold labels with the given confusion counts (1 is positive).</summary>
    static (int[] Predicted, int[] Gold) Confusion(int tp, int tn, int fp, int fn)
    {
        var pairs = Enumerable.Repeat((1, 1), tp)
            .Concat(Enumerable.Repeat((0, 0), tn))
            .Concat(Enumerable.Repeat((1, 0), fp))
            .Concat(Enumerable.Repeat((0, 1), fn))
            .ToArray();
        return (pairs.Select(p => p.Item1).ToArray(), pairs.Select(p => p.Item2).ToArray());
    }

    [Fact]
    public void Accuracy_f1_and_matthews_on_a_known_confusion_matrix()
    {
        var (predicted, gold) = Confusion(tp: 5, tn: 3, fp: 1, fn: 2);

        // (tp + tn) / n = 8 / 11
        Assert.Equal(8.0 / 11, Metrics.Accuracy(predicted, gold), Tolerance);
        // 2tp / (2tp + fp + fn) = 10 / (10 + 1 + 2) = 10 / 13
        Assert.Equal(10.0 / 13, Metrics.F1(predicted, gold), Tolerance);
        // (tp·tn − fp·fn) / √((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (15 − 2) / √(6·7·4·5) = 13 / √840 ≈ 0.448543
        Assert.Equal(13 / Math.Sqrt(840), Metrics.Matthews(predicted, gold), Tolerance);
        Assert.Equal(0.448543, Metrics.Matthews(predicted, gold), 1e-6);
    }

    [Fact]
    public void Positive_index_selects_the_class_f1_is_about()
    {
        var (predicted, gold) = Confusion(tp: 5, tn: 3, fp: 1, fn: 2);

        // With 0 as positive: tp' = tn = 3, fp' = fn = 2, fn' = fp = 1, so F1 = 6 / (6 + 2 + 1) = 2/3.
        Assert.Equal(2.0 / 3, Metrics.F1(predicted, gold, positive: 0), Tolerance);
        // MCC is symmetric in the two classes: swapping them swaps tp↔tn and fp↔fn.
        Assert.Equal(13 / Math.Sqrt(840), Metrics.Matthews(predicted, gold, positive: 0), Tolerance);
    }

    [Fact]
    public void Perfect_and_inverted_predictions()
    {
        int[] gold = [0, 1, 1, 0, 1];
        int[] inverted = [1, 0, 0, 1, 0];

        Assert.Equal(1.0, Metrics.Accuracy(gold, gold));
        Assert.Equal(1.0, Metrics.F1(gold, gold));
        Assert.Equal(1.0, Metrics.Matthews(gold, gold), Tolerance);
        Assert.Equal(0.0, Metrics.Accuracy(inverted, gold));
        Assert.Equal(0.0, Metrics.F1(inverted, gold));
        Assert.Equal(-1.0, Metrics.Matthews(inverted, gold), Tolerance);
    }

    [Fact]
    public void Matthews_is_zero_when_a_marginal_is_empty()
    {
        int[] gold = [0, 1, 1, 0, 1];

        // All predictions positive: tn = fn = 0, so (tn+fp)(tn+fn)… the factor tn + fn is 0.
        Assert.Equal(0.0, Metrics.Matthews([1, 1, 1, 1, 1], gold));
        Assert.Equal(0.0, Metrics.Matthews([0, 0, 0, 0, 0], gold));
        // All gold labels one class, whatever is predicted.
        Assert.Equal(0.0, Metrics.Matthews([0, 1, 0, 1, 1], [1, 1, 1, 1, 1]));
        // F1 of all-negative predictions: tp = 0, so 0 / (0 + 0 + 3) = 0.
        Assert.Equal(0.0, Metrics.F1([0, 0, 0, 0, 0], gold));
        // Nothing positive anywhere: 2tp + fp + fn = 0, reported as 0 (scikit-learn's zero_division default).
        Assert.Equal(0.0, Metrics.F1([0, 0], [0, 0]));
    }

    [Fact]
    public void Pearson_of_linear_and_anti_linear_data()
    {
        double[] x = [1, 2, 3, 4, 5];

        Assert.Equal(1.0, Metrics.Pearson(x, x.Select(v => 2 * v + 1).ToArray()), Tolerance);
        Assert.Equal(-1.0, Metrics.Pearson(x, x.Select(v => 2 - 3 * v).ToArray()), Tolerance);
    }

    [Fact]
    public void Pearson_on_a_known_value()
    {
        // x = [1,2,3], y = [1,3,2]: means 2 and 2; dx = [-1,0,1], dy = [-1,1,0];
        // Σdxdy = 1, Σdx² = 2, Σdy² = 2, so r = 1 / √(2·2) = 0.5.
        Assert.Equal(0.5, Metrics.Pearson([1, 2, 3], [1, 3, 2]), Tolerance);
        // A constant side has no variance: 0 instead of NaN.
        Assert.Equal(0.0, Metrics.Pearson([1, 2, 3], [4, 4, 4]));
    }

    [Fact]
    public void Spearman_gives_ties_their_average_rank()
    {
        // x = [1,2,2,3] → ranks [1, 2.5, 2.5, 4]; y = [1,3,2,4] → ranks [1,3,2,4]; both rank means are 2.5.
        // dx = [-1.5, 0, 0, 1.5], dy = [-1.5, 0.5, -0.5, 1.5]
        // Σdxdy = 2.25 + 0 + 0 + 2.25 = 4.5, Σdx² = 4.5, Σdy² = 2.25 + 0.25 + 0.25 + 2.25 = 5
        // ρ = 4.5 / √(4.5·5) = 4.5 / √22.5 = √0.9 ≈ 0.948683
        Assert.Equal(Math.Sqrt(0.9), Metrics.Spearman([1, 2, 2, 3], [1, 3, 2, 4]), Tolerance);

        // Ties on both sides: x = [1,1,2,2] → [1.5,1.5,3.5,3.5]; y = [1,2,2,3] → [1,2.5,2.5,4].
        // dx = [-1,-1,1,1], dy = [-1.5,0,0,1.5]: Σdxdy = 3, Σdx² = 4, Σdy² = 4.5, ρ = 3 / √18 = 1/√2.
        Assert.Equal(1 / Math.Sqrt(2), Metrics.Spearman([1, 1, 2, 2], [1, 2, 2, 3]), Tolerance);
    }

    [Fact]
    public void Spearman_of_monotone_data_is_one_whatever_the_shape()
    {
        double[] x = [0.5, 3, 1, 2, 4];
        var cubes = x.Select(v => v * v * v).ToArray();

        Assert.Equal(1.0, Metrics.Spearman(x, cubes), Tolerance);
        Assert.Equal(-1.0, Metrics.Spearman(x, cubes.Select(v => -Math.Exp(v)).ToArray()), Tolerance);
        Assert.True(Metrics.Pearson(x, cubes) < 0.99);
    }

    [Fact]
    public void Mismatched_or_empty_inputs_are_errors()
    {
        var error = Assert.Throws<ArgumentException>(() => Metrics.Accuracy([1, 0, 1], [1, 0]));
        Assert.Equal("3 predictions for 2 gold labels", error.Message);
        Assert.Throws<ArgumentException>(() => Metrics.Matthews([1], [1, 0]));
        Assert.Throws<ArgumentException>(() => Metrics.Pearson([1.0, 2.0], [1.0]));
        Assert.Equal("no examples to score", Assert.Throws<ArgumentException>(() => Metrics.F1([], [])).Message);
    }
}
