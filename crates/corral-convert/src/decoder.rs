//! Decoder-only transformers of the Llama family, as llama.cpp's `llama` (`LlamaForCausalLM`,
//! `MistralForCausalLM`) and `qwen2` (`Qwen2ForCausalLM`): `config.json` as `<arch>.*`
//! metadata, and the Hugging Face tensor names as GGUF's. For `llama`, Q and K are permuted
//! into the layout llama.cpp's rope rotates, as llama.cpp's own converter does; `qwen2` uses
//! the NeoX rope, which rotates Hugging Face's layout as it is, and needs Q, K and V biases.

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
}

const LLAMA: Arch = Arch {
    gguf: "llama",
    permute: true,
    qkv_bias: false,
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
        },
    ),
];

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

/// A layer tensor's rows (its outputs) and columns (its inputs; 0 for a vector), for a model
/// of these widths: hidden state, all query heads, all key-value heads, feed-forward.
pub fn layer_shape(kind: &str, hidden: u64, q: u64, kv: u64, ff: u64) -> (u64, u64) {
    match kind {
        "attn_norm" | "ffn_norm" => (hidden, 0),
        "attn_q" => (q, hidden),
        "attn_k" | "attn_v" => (kv, hidden),
        "attn_output" => (hidden, q),
        "ffn_gate" | "ffn_up" => (ff, hidden),
        _ => (hidden, ff),
    }
}

/// The layer tensors: Hugging Face's name within `model.layers.N.`, GGUF's within `blk.N.`.
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

/// The sizes `config.json` gives, checked.
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
        Ok(Dims {
            hidden,
            heads,
            kv_heads,
            layers: number(config, "num_hidden_layers")?,
            ff: number(config, "intermediate_size")?,
            head_dim,
            context: number(config, "max_position_embeddings")?,
            theta: float(config, "rope_theta", 10000.0)?,
            eps: float(config, "rms_norm_eps", 1e-6)?,
            rope,
        })
    }
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
    let (q, kv) = (heads * head_dim, kv_heads * head_dim);
    for n in 0..layers {
        for (hf, gguf) in LAYER {
            let (rows, cols) = layer_shape(gguf, hidden, q, kv, ff);
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
                // Qwen's output has none: one there is left over, and refused below.
                if !(arch.qkv_bias && output) {
                    add(&hf, &gguf, &[rows], permute, arch.qkv_bias)?;
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
    let s = &config["rope_scaling"];
    if s.is_null() {
        return Ok(Rope::None);
    }
    let kind = s["rope_type"].as_str().or(s["type"].as_str()).unwrap_or("");
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
    fn unknown_rope_scaling_is_refused() {
        let c = serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
        let e = rope_scaling(&c).err().unwrap().to_string();
        assert!(e.contains("\"yarn\" is not supported"), "{e}");
    }
}
