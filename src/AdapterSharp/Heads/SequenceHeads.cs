using AdapterSharp.Data;
using AdapterSharp.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Heads;

/// <summary>One of named labels per input, from the [CLS] vector: softmax cross-entropy; accuracy, F1, MCC.</summary>
public sealed class ClassificationHead : HeadKind
{
    public override string Name => "classification";
    public override HeadInput Reads => HeadInput.Cls;
    public override TargetLayout Targets => TargetLayout.RowLabel;
    public override string[] DefaultMetrics => ["accuracy"];
    public override int Outputs(HeadConfig config) => config.Labels.Length;

    public override void Validate(HeadConfig config)
    {
        if (config.Labels.Length < 2) throw new ArgumentException($"head: classification needs at least 2 labels, got {config.Labels.Length}");
    }

    public override Tensor Loss(HeadConfig config, Tensor outputs, Tensor labels, Tensor scores, Tensor? mask) => F.cross_entropy(outputs, labels);

    public override Dictionary<string, double> Score(HeadConfig config, EncodedDataset data, float[][] outputs, IReadOnlyList<string> metrics)
    {
        var predicted = outputs.Select(ArgMax).ToList();
        var gold = data.Labels.Select(l => (int)l).ToList();
        int positive = Array.IndexOf(config.Labels, "1") is var p and >= 0 ? p : 1;
        return metrics.ToDictionary(m => m, m => m switch
        {
            "accuracy" => Metrics.Accuracy(predicted, gold),
            "f1" => Metrics.F1(predicted, gold, positive),
            "mcc" => Metrics.Matthews(predicted, gold, positive),
            _ => throw new ArgumentException($"metric '{m}' does not apply to classification"),
        });
    }

    public override Prediction Decode(HeadConfig config, float[] outputs, DecodeInput? input)
    {
        Prediction.RequireFinite(outputs);
        var probabilities = Softmax(outputs);
        int best = ArgMax(outputs);
        return new Prediction
        {
            Label = config.Labels[best],
            Probabilities = config.Labels.Select((label, k) => (label, k)).ToDictionary(p => p.label, p => Math.Round(probabilities[p.k], 6)),
        };
    }

    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    internal static int ArgMax(float[] values) => ArgMax(values.AsSpan());

    /// <summary>Softmax, shifted by the largest value for range.</summary>
    internal static double[] Softmax(ReadOnlySpan<float> values)
    {
        float top = values[ArgMax(values)];
        var exp = new double[values.Length];
        double sum = 0;
        for (int i = 0; i < values.Length; i++) sum += exp[i] = Math.Exp(values[i] - top);
        for (int i = 0; i < exp.Length; i++) exp[i] /= sum;
        return exp;
    }
}

/// <summary>One score per input, from the [CLS] vector: mean squared error; Pearson and Spearman correlation.</summary>
public sealed class RegressionHead : HeadKind
{
    public override string Name => "regression";
    public override HeadInput Reads => HeadInput.Cls;
    public override TargetLayout Targets => TargetLayout.RowScore;
    public override string[] DefaultMetrics => ["pearson", "spearman"];
    public override int Outputs(HeadConfig config) => 1;

    public override void Validate(HeadConfig config)
    {
    }

    public override Tensor Loss(HeadConfig config, Tensor outputs, Tensor labels, Tensor scores, Tensor? mask) => F.mse_loss(outputs[.., 0], scores);

    public override Dictionary<string, double> Score(HeadConfig config, EncodedDataset data, float[][] outputs, IReadOnlyList<string> metrics)
    {
        var predicted = outputs.Select(o => (double)o[0]).ToList();
        var gold = data.Scores.Select(s => (double)s).ToList();
        return metrics.ToDictionary(m => m, m => m switch
        {
            "pearson" => Metrics.Pearson(predicted, gold),
            "spearman" => Metrics.Spearman(predicted, gold),
            _ => throw new ArgumentException($"metric '{m}' does not apply to regression"),
        });
    }

    public override Prediction Decode(HeadConfig config, float[] outputs, DecodeInput? input)
    {
        Prediction.RequireFinite(outputs);
        return new Prediction { Score = outputs[0] };
    }
}
