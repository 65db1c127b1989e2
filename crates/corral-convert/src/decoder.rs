//! Decoder-only transformers of the Llama family, as llama.cpp's `llama` (`LlamaForCausalLM`,
//! `MistralForCausalLM`), `qwen2` (`Qwen2ForCausalLM`), `qwen3` (`Qwen3ForCausalLM`) and
//! `gemma3` (`Gemma3ForCausalLM`, and the text model of `Gemma3ForConditionalGeneration`):
//! `config.json` as `<arch>.*` metadata, and the Hugging Face tensor names as GGUF's. For
//! `llama`, Q and K are permuted into the layout llama.cpp's rope rotates, as llama.cpp's own
//! converter does; the others use the NeoX rope, which rotates Hugging Face's layout as it
//! is. `qwen2` needs Q, K and V biases; `qwen3` has norms of Q and K instead; `gemma3` has
//! norms around attention and the feed-forward, and Q and K norms, whose weights are stored
//! as offsets from 1 (Gemma's `x * (1 + w)`) and written as llama.cpp multiplies them
//! (`w + 1`).

use serde_json::Value as Json;

use crate::gguf::{Metadata, TensorInfo, TensorType, Value};
use crate::source::Safetensors;
use crate::{output_type, ConvertError, From, Planned};

/// A `config.json` architecture this module converts, as llama.cpp names it.
#[derive(Debug, Clone, Copy)]
pub struct Arch {
    /// llama.cpp's name: the metadata's prefix.
    pub gguf: &'static str,
    /// Q and K permuted for llama.cpp's normal rope (else NeoX: as they are).
    permute: bool,
    /// Qwen's attention: Q, K and V biases required, none on the output, and Q and the
    /// output as wide as the hidden state (llama.cpp's `qwen2` makes them so). Else biases
    /// are taken when present.
    qkv_bias: bool,
    /// A bias on the attention's output is loaded (llama.cpp's `llama` does; the others
    /// would refuse the file).
    output_bias: bool,
    /// The layer tensors: Hugging Face's name within `model.layers.N.`, GGUF's within `blk.N.`.
    pub layer: &'static [(&'static str, &'static str)],
    /// Gemma: norm weights are offsets from 1, and `config.json` has Gemma's own settings.
    gemma: bool,
    /// A vision-language checkpoint whose text model is converted (its `text_config`, and
    /// its tensors under `language_model`), the vision tower left out.
    pub multimodal: bool,
}

const LLAMA: Arch = Arch {
    gguf: "llama",
    permute: true,
    qkv_bias: false,
    output_bias: true,
    layer: LAYER,
    gemma: false,
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
            output_bias: false,
            layer: LAYER,
            gemma: false,
            multimodal: false,
        },
    ),
    (
        "Qwen3ForCausalLM",
        Arch {
            gguf: "qwen3",
            permute: false,
            qkv_bias: false,
            output_bias: false,
            layer: QWEN3_LAYER,
            gemma: false,
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
    output_bias: false,
    layer: GEMMA3_LAYER,
    gemma: true,
    multimodal: false,
};

/// Gemma 3's settings that Transformers' `Gemma3TextConfig` gives when `config.json` leaves
/// them out (as the 4B and larger models' `text_config` does).
const GEMMA3_DEFAULTS: &[(&str, f64)] = &[
    ("vocab_size", 262_208.0),
    ("hidden_size", 2304.0),
    ("intermediate_size", 9216.0),
    ("num_hidden_layers", 26.0),
    ("num_attention_heads", 8.0),
    ("num_key_value_heads", 4.0),
    ("head_dim", 256.0),
    ("max_position_embeddings", 131_072.0),
    ("rms_norm_eps", 1e-6),
    ("rope_theta", 1_000_000.0),
    ("rope_local_base_freq", 10_000.0),
    ("query_pre_attn_scalar", 256.0),
    ("sliding_window", 4096.0),
];

/// The text model's `config.json`: a vision-language checkpoint's `text_config` over its
/// top level, and for Gemma 3 Transformers' defaults where a setting is absent (not where it
/// is null: a null `sliding_window` is none).
pub fn text_config(arch: Arch, config: &Json) -> Json {
    let mut out = config.clone();
    if let (true, Some(text), Some(top)) = (
        arch.multimodal,
        config["text_config"].as_object(),
        out.as_object_mut(),
    ) {
        for (k, v) in text {
            top.insert(k.clone(), v.clone());
        }
    }
    if let (true, Some(top)) = (arch.gemma, out.as_object_mut()) {
        for (k, v) in GEMMA3_DEFAULTS {
            if !top.contains_key(*k) {
                let v = match v.fract() == 0.0 {
                    true => Json::from(*v as u64),
                    false => Json::from(*v),
                };
                top.insert(k.to_string(), v);
            }
        }
    }
    out
}

/// A vision-language checkpoint's tensor under a text model's name: `language_model.model.X`
/// (Transformers 4.50's layout) and `model.language_model.X` (4.52's on) as `model.X`, the
/// language model's head as `lm_head`; `None` for the vision tower and its projector, which
/// are left out. Other names stay (and are refused later as having no place).
pub fn text_model_name(name: &str) -> Option<String> {
    const VISION: [&str; 2] = ["vision_tower.", "multi_modal_projector."];
    let inner = name.strip_prefix("model.").unwrap_or(name);
    if VISION.iter().any(|v| inner.starts_with(v)) {
        return None;
    }
    let renamed = if let Some(rest) = name.strip_prefix("language_model.model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("language_model.") {
        rest.to_string()
    } else {
        name.to_string()
    };
    Some(renamed)
}

pub struct Model {
    pub metadata: Metadata,
    pub tensors: Vec<Planned>,
    /// Rows of the embedding: the tokens the vocabulary must have.
    pub vocab_size: usize,
}

fn invalid(why: String) -> ConvertError {
    ConvertError::Invalid {
        file: "config.json".into(),
        why,
    }
}

fn number(config: &Json, key: &str) -> Result<u64, ConvertError> {
    config[key]
        .as_u64()
        .filter(|&n| n > 0)
        .ok_or_else(|| invalid(format!("\"{key}\" is missing or not a positive integer")))
}

fn float(config: &Json, key: &str, default: f64) -> Result<f32, ConvertError> {
    match &config[key] {
        Json::Null => Ok(default as f32),
        v => v
            .as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| invalid(format!("\"{key}\" is not a number"))),
    }
}

impl Arch {
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
pub fn layer_shape(kind: &str, w: Widths) -> (u64, u64) {
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
        "attn_k" | "attn_v" => (kv, hidden),
        "attn_output" => (hidden, q),
        "ffn_gate" | "ffn_up" => (ff, hidden),
        _ => (hidden, ff),
    }
}

/// The layer tensors of the Llama family: Hugging Face's name within `model.layers.N.`,
/// GGUF's within `blk.N.`.
pub const LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Qwen 3's: Llama's, with norms of Q and K (per head, before the rope).
const QWEN3_LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Gemma 3's: a norm after attention and one after the feed-forward (Gemma's "sandwich"),
/// and norms of Q and K.
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
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
];

/// The sizes `config.json` gives, checked, and the metadata of an architecture's own settings.
pub struct Dims {
    hidden: u64,
    heads: u64,
    kv_heads: u64,
    layers: u64,
    ff: u64,
    head_dim: u64,
    context: u64,
    theta: f32,
    eps: f32,
    rope: Rope,
    extra: Metadata,
}

impl Dims {
    pub fn read(arch: Arch, config: &Json) -> Result<Dims, ConvertError> {
        let hidden = number(config, "hidden_size")?;
        let heads = number(config, "num_attention_heads")?;
        let kv_heads = match config["num_key_value_heads"] {
            Json::Null => heads,
            _ => number(config, "num_key_value_heads")?,
        };
        let head_dim = match config["head_dim"] {
            Json::Null => hidden / heads,
            _ => number(config, "head_dim")?,
        };
        if heads % kv_heads != 0 || head_dim % 2 != 0 || head_dim == 0 {
            return Err(invalid(format!(
                "{heads} attention heads, {kv_heads} key-value heads and a head size of \
                 {head_dim} do not make a valid attention"
            )));
        }
        if arch.qkv_bias && heads * head_dim != hidden {
            return Err(invalid(format!(
                "a head size of {head_dim} times {heads} heads is not the hidden size {hidden}, \
                 which llama.cpp's {} needs",
                arch.gguf
            )));
        }
        let rope = rope_scaling(config)?;
        if matches!(rope, Rope::Llama3(_)) && arch.gguf != "llama" {
            return Err(ConvertError::Unsupported(format!(
                "config.json: rope_scaling \"llama3\" is for llama models, not {}",
                arch.gguf
            )));
        }
        if !arch.gemma && config["use_sliding_window"] == true {
            return Err(ConvertError::Unsupported(format!(
                "config.json: use_sliding_window is set, and llama.cpp's {} has no sliding \
                 window",
                arch.gguf
            )));
        }
        let layers = number(config, "num_hidden_layers")?;
        let extra = match arch.gemma {
            true => gemma3(config, layers, hidden / heads, head_dim)?,
            false => Vec::new(),
        };
        let default_theta = if arch.gemma { 1_000_000.0 } else { 10000.0 };
        Ok(Dims {
            hidden,
            heads,
            kv_heads,
            layers,
            ff: number(config, "intermediate_size")?,
            head_dim,
            context: number(config, "max_position_embeddings")?,
            theta: float(
                rope_parameters(config, "full_attention"),
                "rope_theta",
                default_theta,
            )?,
            eps: float(config, "rms_norm_eps", 1e-6)?,
            rope,
            extra,
        })
    }
}

/// The rope settings of `config.json` for a kind of layer: Transformers 5 writes them in
/// `rope_parameters` (for Gemma 3 one object per kind of layer), older versions at the top
/// level (`rope_theta`, `rope_scaling`, `rope_local_base_freq`).
fn rope_parameters<'a>(config: &'a Json, layer_type: &str) -> &'a Json {
    let p = &config["rope_parameters"];
    match &p[layer_type] {
        Json::Object(_) => &p[layer_type],
        _ if p["rope_theta"].is_number() => p,
        _ => config,
    }
}

/// Gemma 3's own settings, checked against what llama.cpp's `gemma3` does, as metadata: the
/// sliding window and which layers use it, the local layers' rope base, the final logits'
/// soft cap. `head_size` is hidden / heads; `head_dim` the configured head size.
fn gemma3(
    config: &Json,
    layers: u64,
    head_size: u64,
    head_dim: u64,
) -> Result<Metadata, ConvertError> {
    let refuse = |why: String| Err(ConvertError::Unsupported(format!("config.json: {why}")));
    let key = |k: &str| format!("gemma3.{k}");
    let mut out = Vec::new();
    match config["hidden_activation"].as_str() {
        None | Some("gelu_pytorch_tanh") => {}
        Some(other) => {
            return refuse(format!(
                "hidden_activation {other:?} is not gelu_pytorch_tanh, which llama.cpp's \
                 gemma3 uses"
            ))
        }
    }
    if !config["attn_logit_softcapping"].is_null() {
        return refuse("attn_logit_softcapping is set; Gemma 3 has none".into());
    }
    if config["use_bidirectional_attention"] == true {
        return refuse(
            "use_bidirectional_attention is set (an embedding model such as EmbeddingGemma), \
             and Corral imports Gemma 3's generating models"
                .into(),
        );
    }
    if !config["final_logit_softcapping"].is_null() {
        let cap = float(config, "final_logit_softcapping", 0.0)?;
        out.push((key("final_logit_softcapping"), Value::F32(cap)));
    }
    // llama.cpp scales queries by 1/sqrt(head size), but for the 27B model (62 layers) by
    // 1/sqrt(hidden / heads): other scales would be computed wrongly.
    let scale = if layers == 62 { head_size } else { head_dim };
    if let Some(s) = config["query_pre_attn_scalar"].as_f64() {
        if s != scale as f64 {
            return refuse(format!(
                "query_pre_attn_scalar {s} is not {scale}, the scale llama.cpp's gemma3 uses \
                 for a model of {layers} layers"
            ));
        }
    }
    // The sliding window: on every layer but each `pattern`-th, as llama.cpp lays it out.
    // A null window is none (Transformers' default, 4096, is in `text_config`).
    let window = config["sliding_window"].as_u64().unwrap_or(0);
    let pattern = ["sliding_window_pattern", "_sliding_window_pattern"]
        .iter()
        .find_map(|k| config[k].as_u64())
        .unwrap_or(6);
    let sliding = |il: u64| window > 0 && (pattern == 0 || il % pattern < pattern - 1);
    if let Some(types) = config["layer_types"].as_array() {
        let expected: Vec<&str> = (0..layers)
            .map(|il| match sliding(il) {
                true => "sliding_attention",
                false => "full_attention",
            })
            .collect();
        if types
            .iter()
            .map(Json::as_str)
            .ne(expected.iter().map(|t| Some(*t)))
        {
            return refuse(format!(
                "layer_types is not a sliding window on all but every {pattern}th of its \
                 {layers} layers, the layout llama.cpp's gemma3 gives a window of {window}"
            ));
        }
    }
    if window > 0 {
        out.push((key("attention.sliding_window"), Value::U32(window as u32)));
        if pattern != 6 {
            let k = key("attention.sliding_window_pattern");
            out.push((k, Value::U32(pattern as u32)));
        }
        // llama.cpp's default for the local layers' rope base is Gemma 3's 10000.
        let local = match &config["rope_parameters"]["sliding_attention"] {
            Json::Object(_) => float(
                &config["rope_parameters"]["sliding_attention"],
                "rope_theta",
                1e4,
            )?,
            _ => float(config, "rope_local_base_freq", 1e4)?,
        };
        if local != 10000.0 {
            out.push((key("rope.freq_base_swa"), Value::F32(local)));
        }
    }
    Ok(out)
}

/// Plan the conversion: metadata, and every output tensor with its source and checked shape.
pub fn plan(arch: Arch, config: &Json, source: &Safetensors) -> Result<Model, ConvertError> {
    let key = |k: &str| format!("{}.{k}", arch.gguf);
    let Dims {
        hidden,
        heads,
        kv_heads,
        layers,
        ff,
        head_dim,
        context,
        theta,
        eps,
        rope,
        extra,
    } = Dims::read(arch, config)?;
    let embed = source
        .get("model.embed_tokens.weight")
        .ok_or_else(|| missing("model.embed_tokens.weight"))?;
    let vocab = match config["vocab_size"] {
        Json::Null => embed.shape.first().copied().unwrap_or(0),
        _ => number(config, "vocab_size")?,
    };

    let mut metadata = vec![
        ("general.architecture".into(), Value::Str(arch.gguf.into())),
        (key("vocab_size"), Value::U32(vocab as u32)),
        (key("block_count"), Value::U32(layers as u32)),
        (key("context_length"), Value::U32(context as u32)),
        (key("embedding_length"), Value::U32(hidden as u32)),
        (key("feed_forward_length"), Value::U32(ff as u32)),
        (key("attention.head_count"), Value::U32(heads as u32)),
        (key("attention.head_count_kv"), Value::U32(kv_heads as u32)),
        (key("rope.dimension_count"), Value::U32(head_dim as u32)),
        (key("rope.freq_base"), Value::F32(theta)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(eps)),
    ];
    if head_dim != hidden / heads {
        metadata.push((key("attention.key_length"), Value::U32(head_dim as u32)));
        metadata.push((key("attention.value_length"), Value::U32(head_dim as u32)));
    }
    metadata.extend(extra);
    let mut tensors = Vec::new();
    match rope {
        Rope::None => {}
        Rope::Linear(factor) => {
            metadata.push((key("rope.scaling.type"), Value::Str("linear".into())));
            metadata.push((key("rope.scaling.factor"), Value::F32(factor)));
        }
        Rope::Llama3(s) => {
            let values = llama3_rope_factors(theta, head_dim, &s);
            tensors.push(Planned {
                info: TensorInfo {
                    name: "rope_freqs.weight".into(),
                    dims: vec![values.len() as u64],
                    ty: TensorType::F32,
                },
                from: From::Computed(values),
            });
        }
    }

    // Every source tensor must be placed, and every tensor llama.cpp needs must be there.
    let mut used = std::collections::HashSet::new();
    let mut add = |hf: &str, gguf: &str, shape: &[u64], permute: Option<u64>, required: bool| {
        // Gemma stores norm weights as offsets from 1.
        let plus_one = arch.gemma && gguf.ends_with("norm.weight");
        let Some(t) = source.get(hf) else {
            return match required {
                true => Err(missing(hf)),
                false => Ok(()),
            };
        };
        if t.shape != shape {
            return Err(ConvertError::Invalid {
                file: "model weights".into(),
                why: format!(
                    "tensor {hf} has shape {:?}; config.json makes it {shape:?}",
                    t.shape
                ),
            });
        }
        used.insert(hf.to_string());
        tensors.push(Planned {
            info: TensorInfo {
                name: gguf.to_string(),
                dims: shape.iter().rev().copied().collect(),
                ty: output_type(t.dtype, shape.len()),
            },
            from: From::Source {
                name: hf.to_string(),
                permute,
                plus_one,
            },
        });
        Ok(())
    };
    add(
        "model.embed_tokens.weight",
        "token_embd.weight",
        &[vocab, hidden],
        None,
        true,
    )?;
    let widths = Widths {
        hidden,
        head: head_dim,
        q: heads * head_dim,
        kv: kv_heads * head_dim,
        ff,
    };
    for n in 0..layers {
        for (hf, gguf) in arch.layer {
            let (rows, cols) = layer_shape(gguf, widths);
            let permute = arch.rope_heads(gguf, heads, kv_heads);
            let shape: &[u64] = if cols == 0 { &[rows] } else { &[rows, cols] };
            let (hf, gguf) = (format!("model.layers.{n}.{hf}"), format!("blk.{n}.{gguf}"));
            add(
                &format!("{hf}.weight"),
                &format!("{gguf}.weight"),
                shape,
                permute,
                true,
            )?;
            // Biases: Qwen 2 has them on Q, K and V; some Llama checkpoints on all four
            // projections (`attention_bias: true`).
            if gguf.contains("attn_") && !gguf.ends_with("norm") {
                let output = gguf.ends_with("output");
                let (hf, gguf) = (format!("{hf}.bias"), format!("{gguf}.bias"));
                // An output bias where llama.cpp loads none is left over, and refused below.
                if !output || arch.output_bias {
                    add(&hf, &gguf, &[rows], permute, arch.qkv_bias && !output)?;
                }
            }
        }
    }
    add(
        "model.norm.weight",
        "output_norm.weight",
        &[hidden],
        None,
        true,
    )?;
    // Without lm_head (tied embeddings) llama.cpp uses token_embd as the output; a model that
    // says it has its own must have it.
    if config["tie_word_embeddings"] == false && source.get("lm_head.weight").is_none() {
        return Err(missing("lm_head.weight (tie_word_embeddings is false)"));
    }
    add(
        "lm_head.weight",
        "output.weight",
        &[vocab, hidden],
        None,
        false,
    )?;
    let mut extra: Vec<&str> = source
        .names()
        .filter(|n| !used.contains(*n) && !n.ends_with("rotary_emb.inv_freq"))
        .collect();
    extra.sort();
    if let Some(first) = extra.first() {
        let more = match extra.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Err(ConvertError::Unsupported(format!(
            "tensor {first}{more} has no place in a {} model: the weights do not match \
             config.json's architecture",
            arch.gguf
        )));
    }
    Ok(Model {
        metadata,
        tensors,
        vocab_size: vocab as usize,
    })
}

fn missing(name: &str) -> ConvertError {
    ConvertError::Invalid {
        file: "model weights".into(),
        why: format!("tensor {name} is missing"),
    }
}

enum Rope {
    None,
    Linear(f32),
    Llama3(Llama3Scaling),
}

/// Llama 3.1's rope scaling, as `config.json` gives it.
struct Llama3Scaling {
    factor: f32,
    low: f32,
    high: f32,
    original: f32,
}

fn rope_scaling(config: &Json) -> Result<Rope, ConvertError> {
    let (s, default) = match &config["rope_scaling"] {
        Json::Null => (rope_parameters(config, "full_attention"), "default"),
        s => (s, ""),
    };
    if s.is_null() || std::ptr::eq(s, config) {
        return Ok(Rope::None);
    }
    let kind = s["rope_type"]
        .as_str()
        .or(s["type"].as_str())
        .unwrap_or(default);
    let get = |k: &str, d: f64| float(s, k, d);
    match kind {
        "default" => Ok(Rope::None),
        "linear" => Ok(Rope::Linear(get("factor", 1.0)?)),
        "llama3" => Ok(Rope::Llama3(Llama3Scaling {
            factor: get("factor", 8.0)?,
            low: get("low_freq_factor", 1.0)?,
            high: get("high_freq_factor", 4.0)?,
            original: get("original_max_position_embeddings", 8192.0)?,
        })),
        other => Err(ConvertError::Unsupported(format!(
            "config.json: rope_scaling {other:?} is not supported (only linear and llama3)"
        ))),
    }
}

/// The per-frequency factors of Llama 3.1's rope scaling (`rope_freqs.weight`), as llama.cpp's
/// converter computes them: high frequencies kept, low ones divided by `factor`, a smooth
/// blend between.
fn llama3_rope_factors(theta: f32, head_dim: u64, s: &Llama3Scaling) -> Vec<f32> {
    let low_wavelen = s.original / s.low;
    let high_wavelen = s.original / s.high;
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / theta.powf(i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                s.factor
            } else {
                let smooth = (s.original / wavelen - s.low) / (s.high - s.low);
                1.0 / ((1.0 - smooth) / s.factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch_named(name: &str) -> Arch {
        ARCHITECTURES.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn llama3_rope_factors_keep_high_frequencies_and_scale_low_ones() {
        // Llama 3.1 8B: theta 500000, head size 128, factor 8, 1, 4, 8192.
        let s = Llama3Scaling {
            factor: 8.0,
            low: 1.0,
            high: 4.0,
            original: 8192.0,
        };
        let f = llama3_rope_factors(500000.0, 128, &s);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
        assert!(
            f.iter().any(|&x| x > 1.0 && x < 8.0),
            "a blend between: {f:?}"
        );
    }

    #[test]
    fn gemma3_settings_come_from_either_config_layout() {
        let arch = arch_named("Gemma3ForCausalLM");
        let base = serde_json::json!({"hidden_size": 640, "num_attention_heads": 4,
            "num_hidden_layers": 18, "intermediate_size": 2048,
            "max_position_embeddings": 32768, "sliding_window": 512});
        // Transformers 4: rope_theta at the top; the local layers' base is 10000 unless
        // rope_local_base_freq says otherwise (not the global one).
        let mut v4 = base.clone();
        v4["rope_theta"] = 1e6.into();
        let d = Dims::read(arch, &text_config(arch, &v4)).unwrap();
        assert_eq!((d.theta, d.head_dim, d.kv_heads), (1e6, 256, 4));
        let window = (
            "gemma3.attention.sliding_window".to_string(),
            Value::U32(512),
        );
        assert_eq!(d.extra, vec![window.clone()]);
        // Transformers 5: rope_parameters per kind of layer.
        let mut v5 = base.clone();
        v5["rope_parameters"] = serde_json::json!({
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0}});
        let d = Dims::read(arch, &text_config(arch, &v5)).unwrap();
        assert_eq!(d.theta, 1e6);
        assert!(matches!(d.rope, Rope::Linear(f) if f == 8.0));
        let swa = ("gemma3.rope.freq_base_swa".to_string(), Value::F32(20000.0));
        assert_eq!(d.extra, vec![window, swa]);
    }

    #[test]
    fn a_vision_language_checkpoint_keeps_its_text_model() {
        for (name, text) in [
            (
                "language_model.model.layers.0.mlp.up_proj.weight",
                Some("model.layers.0.mlp.up_proj.weight"),
            ),
            (
                "model.language_model.embed_tokens.weight",
                Some("model.embed_tokens.weight"),
            ),
            ("language_model.lm_head.weight", Some("lm_head.weight")),
            ("lm_head.weight", Some("lm_head.weight")),
            ("vision_tower.vision_model.post_layernorm.weight", None),
            ("model.multi_modal_projector.mm_soft_emb_norm.weight", None),
        ] {
            assert_eq!(text_model_name(name).as_deref(), text, "{name}");
        }
        // Gemma 3 4B's config: text_config over the top level, Transformers' defaults for
        // what it leaves out (8 heads, 4 key-value heads of 256, theta 1e6).
        let arch = arch_named("Gemma3ForConditionalGeneration");
        let config = serde_json::json!({"architectures": ["Gemma3ForConditionalGeneration"],
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                "sliding_window": 1024},
            "vision_config": {"hidden_size": 1152}});
        let d = Dims::read(arch, &text_config(arch, &config)).unwrap();
        assert_eq!(
            (d.hidden, d.heads, d.kv_heads, d.head_dim),
            (2560, 8, 4, 256)
        );
        assert_eq!((d.layers, d.context, d.theta), (34, 131072, 1e6));
        assert!(matches!(d.rope, Rope::Linear(f) if f == 8.0));
    }

    #[test]
    fn a_qwen_sliding_window_is_refused() {
        let arch = arch_named("Qwen3ForCausalLM");
        // Qwen 3 0.6B's sizes: heads of 128, wider than the hidden state together.
        let config = serde_json::json!({"hidden_size": 1024, "num_attention_heads": 16,
            "num_key_value_heads": 8, "head_dim": 128, "num_hidden_layers": 28,
            "intermediate_size": 3072, "max_position_embeddings": 40960,
            "use_sliding_window": true, "sliding_window": 4096});
        let e = Dims::read(arch, &config).err().unwrap().to_string();
        assert!(e.contains("llama.cpp's qwen3 has no sliding window"), "{e}");
        let mut off = config.clone();
        off["use_sliding_window"] = false.into();
        let d = Dims::read(arch, &off).unwrap();
        assert_eq!((d.head_dim, d.heads * d.head_dim), (128, 2048));
    }

    #[test]
    fn unknown_rope_scaling_is_refused() {
        let c = serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
        let e = rope_scaling(&c).err().unwrap().to_string();
        assert!(e.contains("\"yarn\" is not supported"), "{e}");
    }
}
