using AdapterSharp.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// LoRA inside one projection: <c>lora_A</c> (r × in, no bias), <c>lora_B</c> (out × r, no bias), dropout on the input;
/// it adds <c>(α/r) B A dropout(x)</c> to the projection's output, which for query, key and value is its third of the
/// fused product. File keys as PEFT's without its prefix: <c>encoder.layer.0.attention.self.query.lora_A.weight</c>.
/// </summary>
public sealed class LoraLayer : ProjectionAdapter
{
    readonly Linear lora_A;
    readonly Linear lora_B;
    readonly Dropout dropout;
    readonly double scaling;

    public LoraLayer(long input, long output, LoraConfig config) : base(nameof(LoraLayer))
    {
        lora_A = nn.Linear(input, config.Rank, hasBias: false);
        lora_B = nn.Linear(config.Rank, output, hasBias: false);
        dropout = nn.Dropout(config.Dropout);
        scaling = config.Scaling;
        using (no_grad())
        {
            // PEFT's init: kaiming_uniform_(A, a=√5), which is U(−1/√in, 1/√in); B = 0, so the update starts at 0.
            double bound = 1 / Math.Sqrt(input);
            lora_A.weight!.uniform_(-bound, bound);
            lora_B.weight!.zero_();
        }
        RegisterComponents();
    }

    public override Tensor Delta(Tensor input, ForwardPass pass)
    {
        var low = pass.Project(lora_A, dropout.call(input)); // (…, r)
        var update = pass.Project(lora_B, low); // (…, out)
        return scaling == 1.0 ? update : update * scaling;
    }

    public override (Tensor Down, Tensor Up)? LowRank => (lora_A.weight!, lora_B.weight! * scaling);
}
