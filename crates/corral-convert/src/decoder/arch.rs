//! The architectures the converter knows: llama.cpp's name for each, its layer tensors under
//! both names, and their shapes.

use super::gemma::GEMMA3_DEFAULTS;

/// A `config.json` architecture this module converts, as llama.cpp names it.
#[derive(Debug, Clone, Copy)]
pub struct Arch {
    /// llama.cpp's name: the metadata's prefix.
    pub gguf: &'static str,
    /// Q and K permuted for llama.cpp's normal rope (else NeoX: as they are).
    pub(super) permute: bool,
    /// Qwen's attention: Q, K and V biases required, none on the output, and Q and the
    /// output as wide as the hidden state (llama.cpp's `qwen2` makes them so). Else biases
    /// are taken when present.
    pub(super) qkv_bias: bool,
    /// Q and K together as wide as the hidden state, as llama.cpp's `qwen2` and `phi3` build
    /// their layers.
    pub(super) square_attention: bool,
    /// The feed-forward's gate and up projections are one tensor (`gate_up_proj`), the
    /// gate's rows first, as llama.cpp's `ffn_up` of twice the width.
    pub(super) fused_up: bool,
    /// A bias on the attention's output is loaded (llama.cpp's `llama` does; the others
    /// would refuse the file).
    pub(super) output_bias: bool,
    /// The layer tensors: Hugging Face's name within `model.layers.N.`, GGUF's within `blk.N.`
    /// (see [`Arch::layers`]).
    pub(super) layer: &'static [(&'static str, &'static str)],
    /// The feed-forward's, when the layer table leaves them out (Llama's MLP).
    pub(super) ffn: &'static [(&'static str, &'static str)],
    /// Gemma: norm weights are offsets from 1, and `config.json` has Gemma's own settings.
    pub(super) gemma: bool,
    /// What Transformers' config class gives a setting `config.json` leaves out, where that is
    /// not what the converter assumes (hidden / heads for `head_dim` ...).
    pub(super) defaults: &'static [(&'static str, f64)],
    /// A mixture of experts: where its router and experts are, instead of one feed-forward.
    pub moe: Option<Moe>,
    /// A vision-language checkpoint whose text model is converted (its `text_config`, and
    /// its tensors under `language_model`), the vision tower left out.
    pub multimodal: bool,
}

const LLAMA: Arch = Arch {
    gguf: "llama",
    permute: true,
    qkv_bias: false,
    square_attention: false,
    fused_up: false,
    output_bias: true,
    layer: ATTENTION_LAYER,
    ffn: LLAMA_FFN,
    gemma: false,
    defaults: &[],
    moe: None,
    multimodal: false,
};

/// The architectures of `config.json` that can be converted, as their `architectures` entry.
pub const ARCHITECTURES: &[(&str, Arch)] = &[
    ("LlamaForCausalLM", LLAMA),
    ("MistralForCausalLM", LLAMA),
    (
        "Qwen2ForCausalLM",
        Arch {
            gguf: "qwen2",
            permute: false,
            qkv_bias: true,
            square_attention: true,
            fused_up: false,
            output_bias: false,
            layer: ATTENTION_LAYER,
            ffn: LLAMA_FFN,
            gemma: false,
            defaults: &[],
            moe: None,
            multimodal: false,
        },
    ),
    (
        "Qwen3ForCausalLM",
        Arch {
            gguf: "qwen3",
            permute: false,
            qkv_bias: false,
            square_attention: false,
            fused_up: false,
            output_bias: false,
            layer: QWEN3_ATTENTION_LAYER,
            ffn: LLAMA_FFN,
            gemma: false,
            // Qwen3Config's heads are 128 wide, whatever the hidden size.
            defaults: &[("head_dim", 128.0)],
            moe: None,
            multimodal: false,
        },
    ),
    (
        "Phi3ForCausalLM",
        Arch {
            gguf: "phi3",
            permute: false,
            qkv_bias: false,
            square_attention: true,
            fused_up: true,
            output_bias: false,
            layer: PHI3_LAYER,
            ffn: &[],
            gemma: false,
            defaults: &[],
            moe: None,
            multimodal: false,
        },
    ),
    (
        "MixtralForCausalLM",
        Arch {
            layer: ATTENTION_LAYER,
            ffn: &[],
            moe: Some(Moe {
                router: "block_sparse_moe.gate",
                experts: "block_sparse_moe.experts",
                count: "num_local_experts",
                width: "intermediate_size",
                parts: [
                    ("w1", "ffn_gate_exps"),
                    ("w3", "ffn_up_exps"),
                    ("w2", "ffn_down_exps"),
                ],
            }),
            ..LLAMA
        },
    ),
    (
        "Qwen3MoeForCausalLM",
        Arch {
            gguf: "qwen3moe",
            permute: false,
            qkv_bias: false,
            square_attention: false,
            fused_up: false,
            output_bias: false,
            layer: QWEN3_ATTENTION_LAYER,
            ffn: &[],
            gemma: false,
            defaults: &[("head_dim", 128.0)],
            moe: Some(Moe {
                router: "mlp.gate",
                experts: "mlp.experts",
                count: "num_experts",
                width: "moe_intermediate_size",
                parts: [
                    ("gate_proj", "ffn_gate_exps"),
                    ("up_proj", "ffn_up_exps"),
                    ("down_proj", "ffn_down_exps"),
                ],
            }),
            multimodal: false,
        },
    ),
    ("Gemma3ForCausalLM", GEMMA3),
    (
        "Gemma3ForConditionalGeneration",
        Arch {
            multimodal: true,
            ..GEMMA3
        },
    ),
];

const GEMMA3: Arch = Arch {
    gguf: "gemma3",
    permute: false,
    qkv_bias: false,
    square_attention: false,
    fused_up: false,
    output_bias: false,
    layer: GEMMA3_LAYER,
    ffn: LLAMA_FFN,
    gemma: true,
    defaults: GEMMA3_DEFAULTS,
    moe: None,
    multimodal: false,
};

impl Arch {
    /// Whether text gets a space in front, when the architecture decides it rather than the
    /// SentencePiece model's `add_dummy_prefix`: never for Gemma 3, as llama.cpp's converter
    /// writes it.
    pub fn space_prefix(self) -> Option<bool> {
        self.gemma.then_some(false)
    }

    /// Every tensor of a layer besides a mixture's experts: Hugging Face's name within
    /// `model.layers.N.`, GGUF's within `blk.N.`.
    pub fn layers(self) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
        self.layer.iter().chain(self.ffn)
    }

    /// The heads whose rows llama.cpp's rope permutation reorders in a layer tensor of this
    /// kind (Q and K, for an architecture that permutes).
    pub fn rope_heads(self, kind: &str, heads: u64, kv_heads: u64) -> Option<u64> {
        match kind {
            "attn_q" => Some(heads),
            "attn_k" => Some(kv_heads),
            _ => None,
        }
        .filter(|_| self.permute)
    }

    /// A layer tensor's rows (its outputs) and columns (its inputs; 0 for a vector) in this
    /// architecture.
    pub fn layer_shape(self, kind: &str, w: Widths) -> (u64, u64) {
        match (kind, self.fused_up) {
            ("ffn_up", true) => (2 * w.ff, w.hidden),
            _ => layer_shape(kind, w),
        }
    }
}

/// The widths of a model's layers: hidden state, one head, all query heads, all key-value
/// heads, feed-forward.
#[derive(Debug, Clone, Copy)]
pub struct Widths {
    pub hidden: u64,
    pub head: u64,
    pub q: u64,
    pub kv: u64,
    pub ff: u64,
}

/// A layer tensor's rows (its outputs) and columns (its inputs; 0 for a vector).
fn layer_shape(kind: &str, w: Widths) -> (u64, u64) {
    let Widths {
        hidden,
        head,
        q,
        kv,
        ff,
    } = w;
    match kind {
        "attn_q_norm" | "attn_k_norm" => (head, 0),
        "attn_norm" | "ffn_norm" | "post_attention_norm" | "post_ffw_norm" => (hidden, 0),
        "attn_q" => (q, hidden),
        "attn_qkv" => (q + 2 * kv, hidden),
        "attn_k" | "attn_v" => (kv, hidden),
        "attn_output" => (hidden, q),
        "ffn_gate" | "ffn_up" | "ffn_gate_exps" | "ffn_up_exps" => (ff, hidden),
        _ => (hidden, ff),
    }
}

/// Llama's feed-forward (an MLP): Hugging Face's names within `model.layers.N.`, GGUF's
/// within `blk.N.`.
const LLAMA_FFN: &[(&str, &str)] = &[
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// A mixture of experts' feed-forward, as Hugging Face names it within `model.layers.N.`:
/// the router (llama.cpp's `ffn_gate_inp`), and each expert's projections under
/// `<experts>.E.`, stacked into llama.cpp's `ffn_*_exps` (one 3-D tensor per projection).
#[derive(Debug, Clone, Copy)]
pub struct Moe {
    pub(super) router: &'static str,
    pub(super) experts: &'static str,
    /// `config.json`'s keys for the number of experts and an expert's feed-forward width.
    pub(super) count: &'static str,
    pub(super) width: &'static str,
    /// Each projection's name within an expert, and its stack's GGUF kind.
    pub(super) parts: [(&'static str, &'static str); 3],
}

/// Llama's attention and its norms (the feed-forward is `LLAMA_FFN` or a mixture's).
const ATTENTION_LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
];

/// Qwen 3's: Llama's, with norms of Q and K (per head, before the rope).
const QWEN3_ATTENTION_LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_attention_layernorm", "ffn_norm"),
];

/// Phi 3's: Q, K and V one tensor (`qkv_proj`, as llama.cpp's `attn_qkv`), and the gate and
/// up projections one (`gate_up_proj`, as `ffn_up`).
const PHI3_LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.qkv_proj", "attn_qkv"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Gemma 3's: a norm after attention and one after the feed-forward (Gemma's "sandwich"),
/// and norms of Q and K (the feed-forward is `LLAMA_FFN`).
const GEMMA3_LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_attention_layernorm", "post_attention_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
];
