using AdapterSharp.Adapters;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace AdapterSharp.Model;

// A BERT encoder in HuggingFace's structure and names, read top to bottom:
// embeddings → self-attention → sublayer output → attention → intermediate → sublayer output → layer → encoder → pooler.
// Field names are the state-dict keys (encoder.layer.3.attention.output.LayerNorm.weight), so a HF
// checkpoint loads by name. Decoder parts, KV caches and head pruning are left out on purpose.

public sealed class BertEmbeddings : nn.Module<Tensor, Tensor, Tensor>
{
    readonly Embedding word_embeddings;
    readonly Embedding position_embeddings;
    readonly Embedding token_type_embeddings;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm layer_norm;
    readonly Dropout dropout;
    readonly AdapterSite adapters;

    public BertEmbeddings(BertConfig config, ForwardContext context) : base(nameof(BertEmbeddings))
    {
        word_embeddings = nn.Embedding(config.VocabSize, config.HiddenSize, padding_idx: config.PadTokenId);
        position_embeddings = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize);
        token_type_embeddings = nn.Embedding(config.TypeVocabSize, config.HiddenSize);
        layer_norm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        adapters = new AdapterSite(context);
        RegisterComponents();
    }

    /// <summary>Per-task copies of the embedding LayerNorm (no bottleneck goes here).</summary>
    public AdapterSite Adapters => adapters;
    public LayerNorm LayerNorm => layer_norm;

    /// <param name="inputIds">(B, T) int64.</param>
    /// <param name="tokenTypeIds">(B, T) int64.</param>
    /// <returns>(B, T, H).</returns>
    public override Tensor forward(Tensor inputIds, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope(); // the lookups and partial sums go when this returns (see BertLayer.forward)
        var positions = arange(inputIds.shape[1], dtype: ScalarType.Int64, device: inputIds.device); // (T)
        var embeddings = word_embeddings.call(inputIds)
            + token_type_embeddings.call(tokenTypeIds)
            + position_embeddings.call(positions); // (B, T, H), positions broadcast over B
        return dropout.call(adapters.Normalize(embeddings, layer_norm)).MoveToOuterDisposeScope();
    }
}

public sealed class BertSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
    readonly Linear query;
    readonly Linear key;
    readonly Linear value;
    readonly int heads;
    readonly int headSize;
    readonly double dropoutProb;
    readonly ForwardContext context;

    public BertSelfAttention(BertConfig config, ForwardContext context) : base(nameof(BertSelfAttention))
    {
        this.context = context;
        query = nn.Linear(config.HiddenSize, config.HiddenSize);
        key = nn.Linear(config.HiddenSize, config.HiddenSize);
        value = nn.Linear(config.HiddenSize, config.HiddenSize);
        heads = config.NumAttentionHeads;
        headSize = config.HeadSize;
        dropoutProb = config.AttentionProbsDropoutProb;
        RegisterComponents();
    }

    /// <param name="hidden">(B, T, H).</param>
    /// <param name="mask">(B, 1, 1, T) bool, true where a key may be attended to; null when nothing is padded
    /// (which lets SDPA use its flash kernel).</param>
    /// <returns>(B, T, H) context before the output projection.</returns>
    public override Tensor forward(Tensor hidden, Tensor? mask)
    {
        using var scope = NewDisposeScope(); // see BertLayer.forward
        long batch = hidden.shape[0], time = hidden.shape[1];
        // One (3H × H) product instead of three: the three weights are concatenated on the fly (a small copy
        // next to the product), which keeps HF's separate query/key/value keys and lets them train.
        var weight = cat([query.weight!, key.weight!, value.weight!]);
        var bias = cat([query.bias!, key.bias!, value.bias!]);
        // unbind, not qkv[0], qkv[1], qkv[2]: the backward of three selects writes three zero-filled copies of
        // the whole (B, T, 3H) gradient and sums them; unbind's backward is one stack. Unbinding the (B, T, 3, nh, hs)
        // view on its own axis, not a permuted copy's, makes that stack land directly in the layout the
        // projection's backward reads: one pass over the gradient instead of a stack and a permuting copy.
        var qkv = context.Project(hidden, weight, bias)
            .view(batch, time, 3, heads, headSize)
            .unbind(2); // 3 × (B, T, nh, hs)
        var attended = F.scaled_dot_product_attention(qkv[0].transpose(1, 2), qkv[1].transpose(1, 2), qkv[2].transpose(1, 2),
            attn_mask: mask, p: training ? dropoutProb : 0.0); // (B, nh, T, hs)
        return attended.transpose(1, 2).reshape(batch, time, heads * headSize).MoveToOuterDisposeScope(); // (B, T, H)
    }
}

/// <summary>
/// dense → dropout → LayerNorm(h + residual), with the site's adapters (and fusions) before the LayerNorm: HF's
/// <c>BertSelfOutput</c> (after attention, <paramref name="inputSize"/> = hidden) and <c>BertOutput</c> (after the
/// FFN, <paramref name="inputSize"/> = intermediate), the two places Houlsby adapters go. Same keys as HF's.
/// </summary>
public sealed class BertSublayerOutput : nn.Module<Tensor, Tensor, Tensor>
{
    readonly Linear dense;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm layer_norm;
    readonly Dropout dropout;

    readonly AdapterSite adapters;
    readonly NamedModules<AdapterFusion> fusion;
    readonly ForwardContext context;

    public BertSublayerOutput(int inputSize, BertConfig config, ForwardContext context) : base(nameof(BertSublayerOutput))
    {
        this.context = context;
        dense = nn.Linear(inputSize, config.HiddenSize);
        layer_norm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        adapters = new AdapterSite(context);
        fusion = new NamedModules<AdapterFusion>();
        RegisterComponents();
    }

    public AdapterSite Adapters => adapters;
    public NamedModules<AdapterFusion> Fusion => fusion;
    public LayerNorm LayerNorm => layer_norm;

    /// <param name="sublayer">(B, T, inputSize): the attention context or the FFN's intermediate activations.</param>
    /// <param name="residual">(B, T, H): the sublayer's input.</param>
    public override Tensor forward(Tensor sublayer, Tensor residual)
    {
        using var scope = NewDisposeScope(); // see BertLayer.forward
        return adapters.Apply(dropout.call(context.Project(dense, sublayer)), residual, layer_norm, fusion).MoveToOuterDisposeScope();
    }
}

public sealed class BertAttention : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "self")] readonly BertSelfAttention self_attention;
    readonly BertSublayerOutput output;

    public BertAttention(BertConfig config, ForwardContext context) : base(nameof(BertAttention))
    {
        self_attention = new BertSelfAttention(config, context);
        output = new BertSublayerOutput(config.HiddenSize, config, context);
        RegisterComponents();
    }

    public BertSublayerOutput Output => output;

    public override Tensor forward(Tensor hidden, Tensor mask)
    {
        using var attended = self_attention.call(hidden, mask);
        return output.call(attended, hidden);
    }
}

public sealed class BertIntermediate : nn.Module<Tensor, Tensor>
{
    readonly Linear dense;
    readonly string activation;
    readonly ForwardContext context;

    public BertIntermediate(BertConfig config, ForwardContext context) : base(nameof(BertIntermediate))
    {
        this.context = context;
        dense = nn.Linear(config.HiddenSize, config.IntermediateSize);
        activation = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope(); // see BertLayer.forward
        return Activations.Apply(activation, context.Project(dense, hidden)).MoveToOuterDisposeScope();
    }
}

public sealed class BertLayer : nn.Module<Tensor, Tensor, Tensor>
{
    readonly BertAttention attention;
    readonly BertIntermediate intermediate;
    readonly BertSublayerOutput output;

    public BertLayer(BertConfig config, ForwardContext context) : base(nameof(BertLayer))
    {
        attention = new BertAttention(config, context);
        intermediate = new BertIntermediate(config, context);
        output = new BertSublayerOutput(config.IntermediateSize, config, context);
        RegisterComponents();
    }

    public BertAttention Attention => attention;
    public BertSublayerOutput Output => output;

    /// <returns>(B, T, H), in the caller's dispose scope.</returns>
    public override Tensor forward(Tensor hidden, Tensor mask)
    {
        // Activations are freed as soon as the pass is done with them, as eager PyTorch frees them when their last
        // reference goes (what autograd saves for the backward, it keeps by its own reference): each sublayer
        // frees its intermediates when it returns, and what passes between sublayers is disposed here once used.
        // Left to the end of the layer or the pass, they raised a bert-base b256 training step's peak from 9.68 to 11.35 GB.
        using var attended = attention.call(hidden, mask);
        using var inner = intermediate.call(attended);
        return output.call(inner, attended);
    }
}

public sealed class BertEncoder : nn.Module<Tensor, Tensor, Tensor>
{
    readonly ModuleList<BertLayer> layer;

    public BertEncoder(BertConfig config, ForwardContext context) : base(nameof(BertEncoder))
    {
        layer = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new BertLayer(config, context)).ToArray());
        RegisterComponents();
    }

    public IReadOnlyList<BertLayer> Layers => layer.ToList();

    public override Tensor forward(Tensor hidden, Tensor mask) => Run(hidden, mask, ownsInput: false);

    /// <summary>The layers in turn; each hidden state between them is disposed once the next exists (and the
    /// input too where <paramref name="ownsInput"/>).</summary>
    internal Tensor Run(Tensor hidden, Tensor mask, bool ownsInput)
    {
        bool owned = ownsInput;
        foreach (var block in layer)
        {
            var next = block.call(hidden, mask);
            if (owned) hidden.Dispose();
            hidden = next;
            owned = true;
        }
        return hidden;
    }
}

/// <summary>tanh(dense(h[:, 0])): the [CLS] vector as BERT's pre-training shaped it.</summary>
public sealed class BertPooler : nn.Module<Tensor, Tensor>
{
    readonly Linear dense;

    public BertPooler(BertConfig config) : base(nameof(BertPooler))
    {
        dense = nn.Linear(config.HiddenSize, config.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden) => tanh(dense.call(hidden[.., 0])); // (B, H)
}

/// <summary>
/// The encoder: <c>forward(inputIds, attentionMask, tokenTypeIds)</c> → last hidden state (B, T, H).
/// State-dict keys equal HuggingFace <c>BertModel</c>'s.
/// </summary>
public sealed class BertModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    readonly BertEmbeddings embeddings;
    readonly BertEncoder encoder;
    readonly BertPooler? pooler;

    public BertModel(BertConfig config, bool addPooler = true) : base(nameof(BertModel))
    {
        config.Validate();
        Config = config;
        embeddings = new BertEmbeddings(config, Context);
        encoder = new BertEncoder(config, Context);
        pooler = addPooler ? new BertPooler(config) : null;
        RegisterComponents();
    }

    public BertConfig Config { get; }
    public BertEmbeddings Embeddings => embeddings;
    public BertEncoder Encoder => encoder;

    /// <summary>Which adapter the forward pass uses; shared by every adapter site of this model.</summary>
    public ForwardContext Context { get; } = new();
    public bool HasPooler => pooler is not null;

    /// <param name="inputIds">(B, T) int64 token ids.</param>
    /// <param name="attentionMask">(B, T), non-zero for real tokens and zero for padding.</param>
    /// <param name="tokenTypeIds">(B, T) int64 segment ids.</param>
    /// <returns>(B, T, H) last hidden state.</returns>
    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) =>
        Encode(inputIds, attentionMask, tokenTypeIds);

    /// <summary><see cref="forward"/>, with a null mask meaning "no padding in this batch".</summary>
    public Tensor Encode(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var mask = attentionMask?.to_type(ScalarType.Bool).view(attentionMask.shape[0], 1, 1, attentionMask.shape[1]); // (B, 1, 1, T)
        try
        {
            var hidden = encoder.Run(embeddings.call(inputIds, tokenTypeIds), mask!, ownsInput: true);
            return hidden.MoveToOuterDisposeScope();
        }
        finally
        {
            ForwardContext.ReleaseLowCopy();
        }
    }

    /// <summary>
    /// Stores the frozen projection weights of the encoder in <paramref name="type"/> (once, not every step as
    /// autocast does) and runs matrix products in it. Embedding tables (lookups, not products: autocast leaves
    /// them alone too), LayerNorms, trainable parameters and the pooler stay float32.
    /// </summary>
    public void UseMatmulType(ScalarType type)
    {
        Context.MatmulType = type;
        if (type == ScalarType.Float32) return;
        // Base projections only: adapters and fusions keep float32 masters (they are cast inside their products), so they can
        // still be trained after serving.
        foreach (var (path, module) in encoder.named_modules())
            if (module is Linear && !path.Contains("adapters", StringComparison.Ordinal) && !path.Contains("fusion", StringComparison.Ordinal)
                && module.parameters().All(p => !p.requires_grad))
                module.to(type);
        // The float32 weights' blocks would stay in the CUDA allocator's cache, in sizes activations seldom fit.
        if (encoder.parameters().Any(p => p.device.type == DeviceType.CUDA)) AdapterSharp.Native.CudaAllocator.EmptyCache();
    }

    /// <summary>The pooled [CLS] vector (B, H) from a last hidden state.</summary>
    public Tensor Pool(Tensor lastHidden) =>
        pooler?.call(lastHidden) ?? throw new InvalidOperationException("this model was built without a pooler");
}

static class Activations
{
    public static Tensor Apply(string name, Tensor x) => name switch
    {
        "gelu" => F.gelu(x), // exact, erf-based, as BERT was trained
        "gelu_new" or "gelu_pytorch_tanh" => F.gelu(x, GELU.Approximate.tanh),
        "relu" => F.relu(x),
        "silu" or "swish" => F.silu(x),
        "tanh" => tanh(x),
        "identity" or "linear" => x,
        _ => throw new ArgumentException($"unknown activation '{name}'", nameof(name)),
    };
}
