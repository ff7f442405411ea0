using System.Text.Json.Serialization;
using AdapterSharp.Model;

namespace AdapterSharp.Adapters.Methods;

/// <summary>
/// LoRA (Hu et al. 2021): each targeted projection W gets a trainable low-rank update, <c>W x + (α/r) B A dropout(x)</c>,
/// A (r × in) from PEFT's init (uniform ±1/√in), B (out × r) zero, so training starts at the base model. LayerNorms
/// stay frozen unless <see cref="MethodConfig.TrainLayerNorms"/>, as PEFT has it.
/// </summary>
public sealed record LoraConfig : MethodConfig
{
    [JsonPropertyName("r")] public int Rank { get; init; } = 8;
    [JsonPropertyName("lora_alpha")] public double Alpha { get; init; } = 8;
    [JsonPropertyName("lora_dropout")] public double Dropout { get; init; }

    /// <summary>Which projections: query, key, value, attention-output, intermediate, output.</summary>
    [JsonPropertyName("target_modules")] public string[] TargetModules { get; init; } = ["query", "value"];

    [JsonIgnore] public double Scaling => Alpha / Rank;

    /// <summary>A linear change of the targeted weights: <c>W + (α/r) B A</c> folds into them.</summary>
    [JsonIgnore] public override bool Mergeable => !ModifiesBase;

    /// <summary>A method the first format did not know.</summary>
    [JsonIgnore] public override int FormatVersion => 2;

    public override void Validate(BertConfig model)
    {
        base.Validate(model);
        Require(Rank >= 1, $"r must be at least 1, got {Rank}");
        Require(Rank <= model.HiddenSize, $"r {Rank} is more than the model's hidden size {model.HiddenSize}: not a low rank");
        Require(Alpha is > 0 and < 1e6, $"lora_alpha must be positive, got {Alpha}");
        Require(Dropout is >= 0 and < 1, $"lora_dropout must be in [0, 1), got {Dropout}");
        Require(TargetModules is { Length: > 0 }, "target_modules is empty");
        foreach (var target in TargetModules)
            Require(ProjectionTargets.TryParse(target, out _), $"target_modules: '{target}' is not one of {string.Join(", ", ProjectionTargets.Names)}");
        Require(TargetModules.Distinct().Count() == TargetModules.Length, "target_modules names a projection twice");
    }

    public static readonly LoraConfig Default = new() { Method = "lora" };
}

/// <summary>Places a <see cref="LoraLayer"/> inside each targeted projection of the config's layers.</summary>
public sealed class LoraMethod : AdapterMethod<LoraConfig>
{
    public override IReadOnlyList<MethodConfig> Presets { get; } = [LoraConfig.Default];

    protected override void Inject(LoraConfig config, AdapterInjection injection)
    {
        var targets = config.TargetModules.Select(t => ProjectionTargets.TryParse(t, out var target) ? target : throw new ArgumentException(t)).ToHashSet();
        foreach (var slot in injection.ProjectionSlots)
            if (targets.Contains(slot.Target) && config.AppliesToLayer(slot.Layer))
            {
                var (output, input) = (slot.Linear.weight!.shape[0], slot.Linear.weight.shape[1]);
                injection.Place(slot, new LoraLayer(input, output, config));
            }
        injection.AddLayerNormCopies(config);
    }
}
