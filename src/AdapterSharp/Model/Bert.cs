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

public sealed class BertEmbeddings : nn.Module<Tensor, Tensor, ForwardPass, Tensor>
{
    readonly Embedding word_embeddings;
    readonly Embedding position_embeddings;
    readonly Embedding token_type_embeddings;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm layer_norm;
    readonly Dropout dropout;
    readonly AdapterSite adapters;

    public BertEmbeddings(BertConfig config) : base(nameof(BertEmbeddings))
    {
        word_embeddings = nn.Embedding(config.VocabSize, config.HiddenSize, padding_idx: config.PadTokenId);
        position_embeddings = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize);
        token_type_embeddings = nn.Embedding(config.TypeVocabSize, config.HiddenSize);
        layer_norm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        adapters = new AdapterSite();
        RegisterComponents();
    }

    /// <summary>Per-task copies of the embedding LayerNorm (no bottleneck goes here).</summary>
    public AdapterSite Adapters => adapters;
    public LayerNorm LayerNorm => layer_norm;

    /// <param name="inputIds">(B, T) int64.</param>
    /// <param name="tokenTypeIds">(B, T) int64.</param>
    /// <returns>(B, T, H).</returns>
    public override Tensor forward(Tensor inputIds, Tensor tokenTypeIds, ForwardPass pass)
    {
        using var scope = NewDisposeScope(); // the lookups and partial sums go when this returns (see BertLayer.forward)
        var positions = arange(inputIds.shape[1], dtype: ScalarType.Int64, device: inputIds.device); // (T)
        var embeddings = word_embeddings.call(inputIds)
            + token_type_embeddings.call(tokenTypeIds)
            + position_embeddings.call(positions); // (B, T, H), positions broadcast over B
        return dropout.call(adapters.Normalize(embeddings, layer_norm, pass)).MoveToOuterDisposeScope();
    }
}

public sealed class BertSelfAttention : nn.Module<Tensor, Tensor?, ForwardPass, Tensor>
{
    readonly Linear query;
    readonly Linear key;
    readonly Linear value;
    // Adapters inside the three projections (LoRA, say): what they add joins the fused product's output.
    readonly ProjectionSite query_adapters;
    readonly ProjectionSite key_adapters;
    readonly ProjectionSite value_adapters;
    readonly int heads;
    readonly int headSize;
    readonly double dropoutProb;

    public BertSelfAttention(BertConfig config) : base(nameof(BertSelfAttention))
    {
        query = nn.Linear(config.HiddenSize, config.HiddenSize);
        key = nn.Linear(config.HiddenSize, config.HiddenSize);
        value = nn.Linear(config.HiddenSize, config.HiddenSize);
        query_adapters = new ProjectionSite();
        key_adapters = new ProjectionSite();
        value_adapters = new ProjectionSite();
        heads = config.NumAttentionHeads;
        headSize = config.HeadSize;
        dropoutProb = config.AttentionProbsDropoutProb;
        RegisterComponents();
    }

    public Linear Query => query;
    public Linear Key => key;
    public Linear Value => value;
    public ProjectionSite QueryAdapters => query_adapters;
    public ProjectionSite KeyAdapters => key_adapters;
    public ProjectionSite ValueAdapters => value_adapters;

    /// <param name="hidden">(B, T, H).</param>
    /// <param name="mask">(B, 1, 1, T) bool, true where a key may be attended to; null when nothing is padded
    /// (which lets SDPA use its flash kernel).</param>
    /// <returns>(B, T, H) context before the output projection.</returns>
    public override Tensor forward(Tensor hidden, Tensor? mask, ForwardPass pass)
    {
        using var scope = NewDisposeScope(); // see BertLayer.forward
        long batch = hidden.shape[0], time = hidden.shape[1], width = heads * headSize;
        // One (3H × H) product instead of three: the three weights are concatenated on the fly (a small copy
        // next to the product), which keeps HF's separate query/key/value keys and lets them train.
        var weight = cat([query.weight!, key.weight!, value.weight!]);
        var bias = cat([query.bias!, key.bias!, value.bias!]);
        // unbind, not qkv[0], qkv[1], qkv[2]: the backward of three selects writes three zero-filled copies of
        // the whole (B, T, 3H) gradient and sums them; unbind's backward is one stack. Unbinding the (B, T, 3, nh, hs)
        // view on its own axis, not a permuted copy's, makes that stack land directly in the layout the
        // projection's backward reads: one pass over the gradient instead of a stack and a permuting copy.
        var projected = pass.Project(hidden, weight, bias); // (B, T, 3H)
        // Projection adapters add into their third of the product's output, in place: the product stays fused.
        query_adapters.AddTo(projected.narrow(-1, 0, width), hidden, pass);
        key_adapters.AddTo(projected.narrow(-1, width, width), hidden, pass);
        value_adapters.AddTo(projected.narrow(-1, 2 * width, width), hidden, pass);
        var qkv = projected
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
public sealed class BertSublayerOutput : nn.Module<Tensor, Tensor, ForwardPass, Tensor>
{
    readonly Linear dense;
    [ComponentName(Name = "LayerNorm")] readonly LayerNorm layer_norm;
    readonly Dropout dropout;

    readonly ProjectionSite dense_adapters;
    readonly AdapterSite adapters;
    readonly NamedModules<AdapterFusion> fusion;

    public BertSublayerOutput(int inputSize, BertConfig config) : base(nameof(BertSublayerOutput))
    {
        dense = nn.Linear(inputSize, config.HiddenSize);
        layer_norm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        dense_adapters = new ProjectionSite();
        adapters = new AdapterSite();
        fusion = new NamedModules<AdapterFusion>();
        RegisterComponents();
    }

    public Linear Dense => dense;

    /// <summary>Adapters inside the dense projection (LoRA, say).</summary>
    public ProjectionSite DenseAdapters => dense_adapters;

    /// <summary>Adapters at the sublayer's end, before its residual and LayerNorm (bottlenecks, LayerNorm copies).</summary>
    public AdapterSite Adapters => adapters;
    public NamedModules<AdapterFusion> Fusion => fusion;
    public LayerNorm LayerNorm => layer_norm;

    /// <param name="sublayer">(B, T, inputSize): the attention context or the FFN's intermediate activations.</param>
    /// <param name="residual">(B, T, H): the sublayer's input.</param>
    public override Tensor forward(Tensor sublayer, Tensor residual, ForwardPass pass)
    {
        using var scope = NewDisposeScope(); // see BertLayer.forward
        var projected = pass.Project(dense, sublayer);
        dense_adapters.AddTo(projected, sublayer, pass);
        return adapters.Apply(dropout.call(projected), residual, layer_norm, fusion, pass).MoveToOuterDisposeScope();
    }
}

public sealed class BertAttention : nn.Module<Tensor, Tensor?, ForwardPass, Tensor>
{
    [ComponentName(Name = "self")] readonly BertSelfAttention self_attention;
    readonly BertSublayerOutput output;

    public BertAttention(BertConfig config) : base(nameof(BertAttention))
    {
        self_attention = new BertSelfAttention(config);
        output = new BertSublayerOutput(config.HiddenSize, config);
        RegisterComponents();
    }

    public BertSelfAttention Self => self_attention;
    public BertSublayerOutput Output => output;

    public override Tensor forward(Tensor hidden, Tensor? mask, ForwardPass pass)
    {
        using var attended = self_attention.call(hidden, mask, pass);
        return output.call(attended, hidden, pass);
    }
}

public sealed class BertIntermediate : nn.Module<Tensor, ForwardPass, Tensor>
{
    readonly Linear dense;
    readonly ProjectionSite dense_adapters;
    readonly string activation;

    public BertIntermediate(BertConfig config) : base(nameof(BertIntermediate))
    {
        dense = nn.Linear(config.HiddenSize, config.IntermediateSize);
        dense_adapters = new ProjectionSite();
        activation = config.HiddenAct;
        RegisterComponents();
    }

    public Linear Dense => dense;

    /// <summary>Adapters inside the dense projection (LoRA, say).</summary>
    public ProjectionSite DenseAdapters => dense_adapters;

    public override Tensor forward(Tensor hidden, ForwardPass pass)
    {
        using var scope = NewDisposeScope(); // see BertLayer.forward
        var projected = pass.Project(dense, hidden);
        dense_adapters.AddTo(projected, hidden, pass);
        return Activations.Apply(activation, projected).MoveToOuterDisposeScope();
    }
}

public sealed class BertLayer : nn.Module<Tensor, Tensor?, ForwardPass, Tensor>
{
    readonly BertAttention attention;
    readonly BertIntermediate intermediate;
    readonly BertSublayerOutput output;

    public BertLayer(BertConfig config) : base(nameof(BertLayer))
    {
        attention = new BertAttention(config);
        intermediate = new BertIntermediate(config);
        output = new BertSublayerOutput(config.IntermediateSize, config);
        RegisterComponents();
    }

    public BertAttention Attention => attention;
    public BertIntermediate Intermediate => intermediate;
    public BertSublayerOutput Output => output;

    /// <returns>(B, T, H), in the caller's dispose scope.</returns>
    public override Tensor forward(Tensor hidden, Tensor? mask, ForwardPass pass)
    {
        // Activations are freed as soon as the pass is done with them, as eager PyTorch frees them when their last
        // reference goes (what autograd saves for the backward, it keeps by its own reference): each sublayer
        // frees its intermediates when it returns, and what passes between sublayers is disposed here once used.
        // Left to the end of the layer or the pass, they raised a bert-base b256 training step's peak from 9.68 to 11.35 GB.
        using var attended = attention.call(hidden, mask, pass);
        using var inner = intermediate.call(attended, pass);
        return output.call(inner, attended, pass);
    }
}

public sealed class BertEncoder : nn.Module<Tensor, Tensor?, ForwardPass, Tensor>
{
    readonly ModuleList<BertLayer> layer;

    public BertEncoder(BertConfig config) : base(nameof(BertEncoder))
    {
        layer = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new BertLayer(config)).ToArray());
        RegisterComponents();
    }

    public IReadOnlyList<BertLayer> Layers => layer.ToList();

    public override Tensor forward(Tensor hidden, Tensor? mask, ForwardPass pass) => Run(hidden, mask, pass, ownsInput: false);

    /// <summary>The layers in turn; each hidden state between them is disposed once the next exists (and the
    /// input too where <paramref name="ownsInput"/>).</summary>
    internal Tensor Run(Tensor hidden, Tensor? mask, ForwardPass pass, bool ownsInput)
    {
        bool owned = ownsInput;
        foreach (var block in layer)
        {
            var next = block.call(hidden, mask, pass);
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
        embeddings = new BertEmbeddings(config);
        encoder = new BertEncoder(config);
        pooler = addPooler ? new BertPooler(config) : null;
        RegisterComponents();
    }

    public BertConfig Config { get; }
    public BertEmbeddings Embeddings => embeddings;
    public BertEncoder Encoder => encoder;
    public bool HasPooler => pooler is not null;

    /// <summary>
    /// Element type of the matrix products (see <see cref="UseMatmulType"/>): float32, or bfloat16 on GPUs. The
    /// residual stream, LayerNorms, softmax statistics and losses stay float32 either way.
    /// </summary>
    public ScalarType MatmulType { get; private set; } = ScalarType.Float32;

    /// <summary>Whether sublayer ends may run as the fused CUDA kernels (<c>--fused-kernels</c>).</summary>
    public FusedKernels Kernels { get; set; } = FusedKernels.Auto;

    /// <summary>A pass of this encoder without adapters, in its precision.</summary>
    public ForwardPass BarePass() => new(MatmulType, Kernels);

    /// <param name="inputIds">(B, T) int64 token ids.</param>
    /// <param name="attentionMask">(B, T), non-zero for real tokens and zero for padding.</param>
    /// <param name="tokenTypeIds">(B, T) int64 segment ids.</param>
    /// <returns>(B, T, H) last hidden state, without adapters.</returns>
    public override Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds)
    {
        using var pass = BarePass();
        return Encode(inputIds, attentionMask, tokenTypeIds, pass);
    }

    /// <summary>The last hidden state (B, T, H) as <paramref name="pass"/> says; a null mask means "no padding in this batch".</summary>
    public Tensor Encode(Tensor inputIds, Tensor? attentionMask, Tensor tokenTypeIds, ForwardPass pass)
    {
        using var scope = NewDisposeScope();
        var mask = attentionMask?.to_type(ScalarType.Bool).view(attentionMask.shape[0], 1, 1, attentionMask.shape[1]); // (B, 1, 1, T)
        pass.TokenMask = attentionMask?.to_type(ScalarType.Bool);
        try
        {
            var hidden = encoder.Run(embeddings.call(inputIds, tokenTypeIds, pass), mask, pass, ownsInput: true);
            return hidden.MoveToOuterDisposeScope();
        }
        finally
        {
            pass.TokenMask = null;
            pass.ReleaseLowCopy();
        }
    }

    /// <summary>
    /// Every place an adapter can go at a sublayer's end, in model order: the embeddings' LayerNorm, then each
    /// layer's attention output and FFN output, with the base LayerNorm there and the file names of what an adapter
    /// puts there (<c>encoder.layer.3.output.adapter</c>).
    /// </summary>
    public IEnumerable<SublayerSlot> SublayerSlots()
    {
        yield return new SublayerSlot(SlotKind.Embeddings, -1, embeddings.Adapters, embeddings.LayerNorm, null, "embeddings.adapter");
        var layers = encoder.Layers;
        for (int i = 0; i < layers.Count; i++)
        {
            var attention = layers[i].Attention.Output;
            var output = layers[i].Output;
            yield return new SublayerSlot(SlotKind.AttentionOutput, i, attention.Adapters, attention.LayerNorm, attention.Fusion,
                $"encoder.layer.{i}.attention.output.adapter", $"encoder.layer.{i}.attention.output.fusion");
            yield return new SublayerSlot(SlotKind.FfnOutput, i, output.Adapters, output.LayerNorm, output.Fusion,
                $"encoder.layer.{i}.output.adapter", $"encoder.layer.{i}.output.fusion");
        }
    }

    /// <summary>
    /// Every projection an adapter can go inside, in model order, each with its base linear map and the file name
    /// of the projection (<c>encoder.layer.3.attention.self.query</c>).
    /// </summary>
    public IEnumerable<ProjectionSlot> ProjectionSlots()
    {
        var layers = encoder.Layers;
        for (int i = 0; i < layers.Count; i++)
        {
            var self = layers[i].Attention.Self;
            string prefix = $"encoder.layer.{i}";
            var attentionOutput = layers[i].Attention.Output;
            var intermediate = layers[i].Intermediate;
            var output = layers[i].Output;
            yield return new ProjectionSlot(ProjectionTarget.Query, i, self.QueryAdapters, self.Query, $"{prefix}.attention.self.query");
            yield return new ProjectionSlot(ProjectionTarget.Key, i, self.KeyAdapters, self.Key, $"{prefix}.attention.self.key");
            yield return new ProjectionSlot(ProjectionTarget.Value, i, self.ValueAdapters, self.Value, $"{prefix}.attention.self.value");
            yield return new ProjectionSlot(ProjectionTarget.AttentionOutput, i, attentionOutput.DenseAdapters, attentionOutput.Dense, $"{prefix}.attention.output.dense");
            yield return new ProjectionSlot(ProjectionTarget.Intermediate, i, intermediate.DenseAdapters, intermediate.Dense, $"{prefix}.intermediate.dense");
            yield return new ProjectionSlot(ProjectionTarget.Output, i, output.DenseAdapters, output.Dense, $"{prefix}.output.dense");
        }
    }

    /// <summary>
    /// The encoder's own modules with their paths (<c>encoder.layer.3.attention.self.query</c>), without anything
    /// adapters added: the walk does not enter adapter containers (<see cref="IAdapterContainer"/>). The pooler is left
    /// out: the task heads do not use it.
    /// </summary>
    public IEnumerable<(string Path, nn.Module Module)> BaseModules() =>
        BaseModules("embeddings", embeddings).Concat(BaseModules("encoder", encoder));

    /// <summary><paramref name="root"/> (at <paramref name="path"/>) and the modules under it, without adapter containers.</summary>
    public static IEnumerable<(string Path, nn.Module Module)> BaseModules(string path, nn.Module root)
    {
        yield return (path, root);
        foreach (var (name, child) in root.named_children())
            if (child is not IAdapterContainer)
                foreach (var inner in BaseModules($"{path}.{name}", child))
                    yield return inner;
    }

    /// <summary>
    /// Stores the encoder's frozen projection weights in <paramref name="type"/> (once, not every step as autocast
    /// does) and runs matrix products in it. Only the base's own linear maps (<see cref="BaseModules"/>: nothing in an
    /// adapter container) whose parameters are all frozen are cast; trainable ones keep float32 masters, cast inside
    /// their products. Embedding tables (lookups, not products: autocast leaves them alone too), LayerNorms, adapters
    /// and the pooler stay float32.
    /// </summary>
    public void UseMatmulType(ScalarType type)
    {
        MatmulType = type;
        if (type == ScalarType.Float32) return;
        foreach (var (_, module) in BaseModules())
            if (module is Linear && module.parameters().All(p => !p.requires_grad))
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
