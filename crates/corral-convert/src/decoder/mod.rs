//! Decoder-only transformers of the Llama family, as llama.cpp's `llama` (`LlamaForCausalLM`,
//! `MistralForCausalLM`, and `MixtralForCausalLM` with its experts stacked), `qwen2`
//! (`Qwen2ForCausalLM`), `qwen3` (`Qwen3ForCausalLM`), `qwen3moe` (`Qwen3MoeForCausalLM`), `phi3`
//! (`Phi3ForCausalLM`, its fused projections kept fused) and `gemma3` (`Gemma3ForCausalLM`,
//! and the text model of `Gemma3ForConditionalGeneration`):
//! `config.json` as `<arch>.*` metadata, and the Hugging Face tensor names as GGUF's. For
//! `llama`, Q and K are permuted into the layout llama.cpp's rope rotates, as llama.cpp's own
//! converter does; the others use the NeoX rope, which rotates Hugging Face's layout as it
//! is. `qwen2` needs Q, K and V biases; `qwen3` has norms of Q and K instead; `gemma3` has
//! norms around attention and the feed-forward, and Q and K norms, whose weights are stored
//! as offsets from 1 (Gemma's `x * (1 + w)`) and written as llama.cpp multiplies them
//! (`w + 1`).

mod arch;
mod gemma;
mod rope;

pub use arch::{Arch, Widths, ARCHITECTURES};

use serde_json::Value as Json;

use gemma::gemma3;
pub use gemma::text_model_name;
use rope::{llama3_rope_factors, rope_parameters, rope_scaling, Rope};

use crate::gguf::{Metadata, TensorInfo, TensorType, Value};
use crate::source::Safetensors;
use crate::{missing, output_type, unplaced, wrong_shape, ConvertError, From, Planned};

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

/// The sizes `config.json` gives, checked, and the metadata of an architecture's own settings.
pub struct Dims {
    hidden: u64,
    heads: u64,
    kv_heads: u64,
    layers: u64,
    ff: u64,
    head_dim: u64,
    /// Dimensions of each head the rope rotates.
    rotated: u64,
    context: u64,
    theta: f32,
    eps: f32,
    rope: Rope,
    /// Experts, how many each token uses, and an expert's feed-forward width (0, 0, 0
    /// without a mixture of experts).
    experts: (u64, u64, u64),
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
        if arch.square_attention && heads * head_dim != hidden {
            return Err(invalid(format!(
                "a head size of {head_dim} times {heads} heads is not the hidden size {hidden}, \
                 which llama.cpp's {} needs",
                arch.gguf
            )));
        }
        let rope = rope_scaling(config)?;
        let only_for = match rope {
            Rope::Llama3(_) => Some(("llama3", "llama")),
            Rope::LongRope(_) => Some(("longrope", "phi3")),
            _ => None,
        };
        if let Some((kind, only)) = only_for.filter(|(_, only)| *only != arch.gguf) {
            return Err(ConvertError::Unsupported(format!(
                "config.json: rope_scaling {kind:?} is for {only} models, not {}",
                arch.gguf
            )));
        }
        // Phi 3.5 and 4 rotate only part of each head.
        let rotated = match config["partial_rotary_factor"].as_f64() {
            None | Some(1.0) => head_dim,
            Some(f) if arch.gguf == "phi3" && f > 0.0 && f < 1.0 => {
                (head_dim as f64 * f).round() as u64
            }
            Some(f) => {
                return Err(ConvertError::Unsupported(format!(
                    "config.json: partial_rotary_factor {f} is not supported for {}",
                    arch.gguf
                )))
            }
        };
        if !arch.gemma && config["use_sliding_window"] == true {
            return Err(ConvertError::Unsupported(format!(
                "config.json: use_sliding_window is set, and llama.cpp's {} has no sliding \
                 window",
                arch.gguf
            )));
        }
        let layers = number(config, "num_hidden_layers")?;
        let experts = match arch.moe {
            None => (0, 0, 0),
            Some(moe) => {
                let (n, used) = (
                    number(config, moe.count)?,
                    number(config, "num_experts_per_tok")?,
                );
                if used > n {
                    return Err(invalid(format!(
                        "num_experts_per_tok {used} is more than {} {n}",
                        moe.count
                    )));
                }
                // llama.cpp's qwen3moe makes every layer sparse and renormalizes the chosen
                // experts' weights.
                let dense = config["mlp_only_layers"]
                    .as_array()
                    .is_some_and(|l| !l.is_empty());
                let step = config["decoder_sparse_step"].as_u64().unwrap_or(1);
                if dense || step != 1 || config["norm_topk_prob"] == false {
                    return Err(ConvertError::Unsupported(
                        "config.json: dense layers among the experts' (mlp_only_layers, \
                         decoder_sparse_step) or unnormalized expert weights (norm_topk_prob \
                         false) are not what llama.cpp's qwen3moe runs"
                            .into(),
                    ));
                }
                (n, used, number(config, moe.width)?)
            }
        };
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
            rotated,
            context: number(config, "max_position_embeddings")?,
            theta: float(
                rope_parameters(config, "full_attention"),
                "rope_theta",
                default_theta,
            )?,
            eps: float(config, "rms_norm_eps", 1e-6)?,
            rope,
            experts,
            extra,
        })
    }
}

/// The text model's `config.json`: a vision-language checkpoint's `text_config` over its
/// top level, and the architecture's Transformers defaults where a setting is absent (not
/// where it is null: Gemma's null `sliding_window` is none).
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
    if let Some(top) = out.as_object_mut() {
        for (k, v) in arch.defaults {
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
        rotated,
        context,
        theta,
        eps,
        rope,
        experts,
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
        (key("rope.dimension_count"), Value::U32(rotated as u32)),
        (key("rope.freq_base"), Value::F32(theta)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(eps)),
    ];
    if head_dim != hidden / heads {
        metadata.push((key("attention.key_length"), Value::U32(head_dim as u32)));
        metadata.push((key("attention.value_length"), Value::U32(head_dim as u32)));
    }
    metadata.extend(extra);
    if experts.0 > 0 {
        metadata.push((key("expert_count"), Value::U32(experts.0 as u32)));
        metadata.push((key("expert_used_count"), Value::U32(experts.1 as u32)));
        let width = Value::U32(experts.2 as u32);
        metadata.push((key("expert_feed_forward_length"), width));
    }
    let mut tensors = Vec::new();
    match rope {
        Rope::None => {}
        Rope::Linear(factor) => {
            metadata.push((key("rope.scaling.type"), Value::Str("linear".into())));
            metadata.push((key("rope.scaling.factor"), Value::F32(factor)));
        }
        Rope::LongRope(s) => {
            let (long, short, attn_factor) = s.checked(rotated, context)?;
            metadata.push((key("rope.scaling.attn_factor"), Value::F32(attn_factor)));
            let original = Value::U32(s.original as u32);
            metadata.push((key("rope.scaling.original_context_length"), original));
            for (name, values) in [
                ("rope_factors_long.weight", long),
                ("rope_factors_short.weight", short),
            ] {
                tensors.push(Planned {
                    info: TensorInfo {
                        name: name.into(),
                        dims: vec![values.len() as u64],
                        ty: TensorType::F32,
                    },
                    from: From::Computed(values),
                });
            }
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
            return Err(wrong_shape(hf, &t.shape, shape));
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
        // A mixture of experts has no other feed-forward.
        ff: if experts.0 > 0 { experts.2 } else { ff },
    };
    // A mixture of experts' stacks: each expert's projection, checked, one after another.
    let mut stacks = Vec::new();
    let mut stacked = Vec::new();
    if let Some(moe) = arch.moe {
        for n in 0..layers {
            for (part, kind) in moe.parts {
                let (rows, cols) = arch.layer_shape(kind, widths);
                let mut names = Vec::new();
                let mut dtype = None;
                for e in 0..experts.0 {
                    let name = format!("model.layers.{n}.{}.{e}.{part}.weight", moe.experts);
                    let t = source.get(&name).ok_or_else(|| missing(&name))?;
                    if t.shape != [rows, cols] {
                        return Err(wrong_shape(&name, &t.shape, &[rows, cols]));
                    }
                    if dtype.is_some_and(|d| d != t.dtype) {
                        return Err(ConvertError::Unsupported(format!(
                            "{name} is {:?}, unlike the other experts' {}",
                            t.dtype, part
                        )));
                    }
                    dtype = Some(t.dtype);
                    names.push(name);
                }
                let dtype = dtype.expect("at least one expert");
                stacks.push(Planned {
                    info: TensorInfo {
                        name: format!("blk.{n}.{kind}.weight"),
                        dims: vec![cols, rows, experts.0],
                        ty: output_type(dtype, 3),
                    },
                    from: From::Stack(names.clone()),
                });
                stacked.extend(names);
            }
        }
    }
    for n in 0..layers {
        if let Some(moe) = arch.moe {
            add(
                &format!("model.layers.{n}.{}.weight", moe.router),
                &format!("blk.{n}.ffn_gate_inp.weight"),
                &[experts.0, hidden],
                None,
                true,
            )?;
        }
        for (hf, gguf) in arch.layers() {
            let (rows, cols) = arch.layer_shape(gguf, widths);
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
    tensors.extend(stacks);
    used.extend(stacked);
    unplaced(
        source
            .names()
            .filter(|n| !used.contains(*n) && !n.ends_with("rotary_emb.inv_freq")),
        arch.gguf,
    )?;
    Ok(Model {
        metadata,
        tensors,
        vocab_size: vocab as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn arch_named(name: &str) -> Arch {
        ARCHITECTURES.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn phi4_mini_rotates_part_of_each_head_with_longrope() {
        let arch = arch_named("Phi3ForCausalLM");
        let config = serde_json::json!({"hidden_size": 3072, "num_attention_heads": 24,
            "num_key_value_heads": 8, "num_hidden_layers": 32, "intermediate_size": 8192,
            "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
            "partial_rotary_factor": 0.75,
            "rope_scaling": {"type": "longrope", "long_factor": vec![2.0; 48],
                             "short_factor": vec![1.0; 48]}});
        let d = Dims::read(arch, &config).unwrap();
        assert_eq!((d.head_dim, d.rotated), (128, 96));
        let Rope::LongRope(s) = &d.rope else { panic!() };
        assert!(s.checked(d.rotated, d.context).is_ok());
        // Fused projections: Q, K and V in one, gate and up in one.
        let w = Widths {
            hidden: 3072,
            head: 128,
            q: 3072,
            kv: 1024,
            ff: 8192,
        };
        assert_eq!(arch.layer_shape("attn_qkv", w), (5120, 3072));
        assert_eq!(arch.layer_shape("ffn_up", w), (16384, 3072));
        assert_eq!(arch.layer_shape("ffn_down", w), (3072, 8192));
        // LongRoPE elsewhere, and a partial rotation elsewhere, are refused.
        let llama = arch_named("LlamaForCausalLM");
        let e = Dims::read(llama, &config).err().unwrap().to_string();
        assert!(
            e.contains("\"longrope\" is for phi3 models, not llama"),
            "{e}"
        );
        let mut partial = config.clone();
        partial["rope_scaling"] = Json::Null;
        let e = Dims::read(llama, &partial).err().unwrap().to_string();
        assert!(
            e.contains("partial_rotary_factor 0.75 is not supported for llama"),
            "{e}"
        );
    }

    #[test]
    fn a_mixture_llama_cpp_would_run_otherwise_is_refused() {
        let arch = arch_named("Qwen3MoeForCausalLM");
        // Qwen 3 30B-A3B's sizes.
        let config = serde_json::json!({"hidden_size": 2048, "num_attention_heads": 32,
            "num_key_value_heads": 4, "num_hidden_layers": 48, "intermediate_size": 6144,
            "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
            "max_position_embeddings": 40960, "norm_topk_prob": true,
            "decoder_sparse_step": 1, "mlp_only_layers": []});
        let d = Dims::read(arch, &text_config(arch, &config)).unwrap();
        assert_eq!((d.head_dim, d.experts), (128, (128, 8, 768)));
        for (key, value) in [
            ("norm_topk_prob", serde_json::json!(false)),
            ("mlp_only_layers", serde_json::json!([0, 47])),
            ("decoder_sparse_step", serde_json::json!(2)),
        ] {
            let mut c = config.clone();
            c[key] = value;
            let e = Dims::read(arch, &c).err().unwrap().to_string();
            assert!(
                e.contains("not what llama.cpp's qwen3moe runs"),
                "{key}: {e}"
            );
        }
        let mut c = config.clone();
        c["num_experts_per_tok"] = 200.into();
        let e = Dims::read(arch, &c).err().unwrap().to_string();
        assert!(
            e.contains("num_experts_per_tok 200 is more than num_experts 128"),
            "{e}"
        );
    }

    #[test]
    fn a_qwen_sliding_window_is_refused() {
        let arch = arch_named("Qwen3ForCausalLM");
        // Qwen 3 0.6B's sizes: heads of 128, wider than the hidden state together.
        let config = serde_json::json!({"hidden_size": 1024, "num_attention_heads": 16,
            "num_key_value_heads": 8, "num_hidden_layers": 28,
            "intermediate_size": 3072, "max_position_embeddings": 40960,
            "use_sliding_window": true, "sliding_window": 4096});
        let e = Dims::read(arch, &config).err().unwrap().to_string();
        assert!(e.contains("llama.cpp's qwen3 has no sliding window"), "{e}");
        let mut off = config.clone();
        off["use_sliding_window"] = false.into();
        // No head_dim: Qwen3Config's 128, not hidden / heads.
        let d = Dims::read(arch, &text_config(arch, &off)).unwrap();
        assert_eq!((d.head_dim, d.heads * d.head_dim), (128, 2048));
    }
}
