//! LoRA adapters as PEFT saves them (`adapter_config.json`, `adapter_model.safetensors`), as
//! `ADAPTER /path/to/folder` gives them: each `lora_A`/`lora_B` pair of a layer's projection
//! becomes llama.cpp's `blk.N.<tensor>.weight.lora_a`/`.lora_b`, for the base model's
//! architecture. B's rows are the projection's outputs, so for Q and K of a `llama` base they
//! are permuted as the base's Q and K rows were.

use serde_json::Value as Json;

use crate::decoder::{text_model_name, Arch, Widths, ARCHITECTURES};
use crate::gguf::{Metadata, TensorInfo, TensorType, Value};
use crate::source::{Dtype, Safetensors};
use crate::{ConvertError, Files, From, Planned};

fn unsupported(why: String) -> ConvertError {
    ConvertError::Unsupported(format!("adapter_config.json: {why}"))
}

/// The rank and llama.cpp's alpha (scale = alpha / rank) of a PEFT `adapter_config.json`, or
/// why it cannot be imported.
pub fn lora_config(config: &Json) -> Result<(u64, f64), ConvertError> {
    if config["peft_type"] != "LORA" {
        return Err(unsupported(format!(
            "peft_type {} is not LORA; only LoRA adapters can be imported",
            config["peft_type"]
        )));
    }
    for (key, what) in [
        ("use_dora", "DoRA"),
        (
            "fan_in_fan_out",
            "fan_in_fan_out (GPT-2's transposed layers)",
        ),
    ] {
        if config[key] == true {
            return Err(unsupported(format!("{what} is not supported")));
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if config[key].as_object().is_some_and(|m| !m.is_empty()) {
            return Err(unsupported(format!(
                "{key} (a rank or alpha per layer) is not supported"
            )));
        }
    }
    let r = config["r"]
        .as_u64()
        .filter(|&r| r > 0)
        .ok_or_else(|| unsupported("\"r\" is missing or not a positive integer".into()))?;
    let mut alpha = config["lora_alpha"].as_f64().unwrap_or(r as f64);
    // llama.cpp scales by alpha / r; rsLoRA by alpha / sqrt(r).
    if config["use_rslora"] == true {
        alpha *= (r as f64).sqrt();
    }
    Ok((r, alpha))
}

/// What PEFT's names put before the base model's own tensor names.
const PREFIX: &str = "base_model.model.";

/// Plan the adapter for the base model whose GGUF metadata is `base`.
pub fn plan(
    files: &Files,
    base: &std::collections::BTreeMap<String, Json>,
    source: &Safetensors,
) -> Result<(Metadata, Vec<Planned>), ConvertError> {
    let (r, alpha) = lora_config(&files.json(crate::ADAPTER_FILES[0])?)?;

    let arch_name = base
        .get("general.architecture")
        .and_then(Json::as_str)
        .unwrap_or("");
    let arch = base_architecture(arch_name)?;
    // The base's sizes: an adapter for another model is refused here, not by llama.cpp at
    // the first request.
    let size = |key: &str| {
        base.get(&format!("{arch_name}.{key}"))
            .and_then(Json::as_u64)
            .ok_or_else(|| ConvertError::Invalid {
                file: "the base model".into(),
                why: format!("its metadata has no single {arch_name}.{key}"),
            })
    };
    let (n_embd, ff, layers) = (
        size("embedding_length")?,
        size("feed_forward_length")?,
        size("block_count")?,
    );
    let heads = size("attention.head_count")?;
    let kv_heads = size("attention.head_count_kv").unwrap_or(heads);
    let head_dim = size("attention.key_length").unwrap_or(n_embd / heads);
    let widths = Widths {
        hidden: n_embd,
        head: head_dim,
        q: heads * head_dim,
        kv: kv_heads * head_dim,
        ff,
    };

    let mut names: Vec<&str> = source.names().collect();
    names.sort();
    let mut tensors = Vec::new();
    let mut placed = std::collections::HashSet::new();
    for &name in names.iter().filter(|n| n.ends_with(".lora_B.weight")) {
        let module = name.strip_prefix(PREFIX).unwrap_or(name);
        let module = module.trim_end_matches(".lora_B.weight");
        let Some((layer, gguf, kind)) = layer_tensor(arch, module) else {
            continue; // named below as having no place
        };
        let a_name = name.replace(".lora_B.weight", ".lora_A.weight");
        let a = source.get(&a_name).ok_or_else(|| missing(&a_name))?;
        let b = source.get(name).expect("listed");
        let (outputs, inputs) = arch.layer_shape(kind, widths);
        let permute = arch.rope_heads(kind, heads, kv_heads);
        if layer >= layers || a.shape != [r, inputs] || b.shape != [outputs, r] {
            return Err(ConvertError::Invalid {
                file: "adapter_model.safetensors".into(),
                why: format!(
                    "{a_name} {:?} and {name} {:?} are not a rank-{r} update of the base \
                     model's {gguf} ({} layers, {outputs} x {inputs}): is it an adapter for \
                     another model?",
                    a.shape, b.shape, layers
                ),
            });
        }
        for (t, src, end, permute) in [
            (a, &a_name, "lora_a", None),
            (b, &name.to_string(), "lora_b", permute),
        ] {
            tensors.push(Planned {
                info: TensorInfo {
                    name: format!("{gguf}.weight.{end}"),
                    dims: t.shape.iter().rev().copied().collect(),
                    ty: as_is(t.dtype),
                },
                from: From::Source {
                    name: src.clone(),
                    permute,
                    plus_one: false,
                },
            });
            placed.insert(src.clone());
        }
    }
    if let Some(name) = names.iter().find(|n| !placed.contains(**n)) {
        return Err(ConvertError::Unsupported(format!(
            "tensor {name} has no place in a LoRA adapter for a {arch_name} model (only the \
             lora_A and lora_B of the layers' projections can be imported)"
        )));
    }
    if tensors.is_empty() {
        return Err(ConvertError::Invalid {
            file: "adapter_model.safetensors".into(),
            why: "it holds no LoRA tensors".into(),
        });
    }
    let metadata = vec![
        (
            "general.architecture".to_string(),
            Value::Str(arch.gguf.into()),
        ),
        ("general.type".into(), Value::Str("adapter".into())),
        ("adapter.type".into(), Value::Str("lora".into())),
        ("adapter.lora.alpha".into(), Value::F32(alpha as f32)),
    ];
    Ok((metadata, tensors))
}

/// The architecture of a base model (GGUF's name) that adapters are converted for.
pub fn base_architecture(name: &str) -> Result<Arch, ConvertError> {
    let known = || ARCHITECTURES.iter().map(|(_, a)| *a);
    known().find(|a| a.gguf == name).ok_or_else(|| {
        let mut names: Vec<&str> = known().map(|a| a.gguf).collect();
        names.dedup();
        ConvertError::Unsupported(format!(
            "adapters for {name:?} models cannot be converted (only for {} models)",
            names.join(", ")
        ))
    })
}

/// A PEFT tensor's name with a vision-language model's text layers under a text model's
/// names (`base_model.model.language_model.model.layers.N...` as
/// `base_model.model.model.layers.N...`); `None` for the vision tower's.
pub fn text_module_name(name: &str) -> Option<String> {
    match name.strip_prefix(PREFIX) {
        Some(inner) => text_model_name(inner).map(|t| format!("{PREFIX}{t}")),
        None => text_model_name(name),
    }
}

/// `model.layers.N.<projection>` as its layer, GGUF's `blk.N.<tensor>` and that tensor's kind.
fn layer_tensor(arch: Arch, module: &str) -> Option<(u64, String, &'static str)> {
    let (n, part) = module.strip_prefix("model.layers.")?.split_once('.')?;
    let n: u64 = n.parse().ok()?;
    let (_, gguf) = arch
        .layers()
        .find(|(hf, gguf)| *hf == part && !gguf.ends_with("norm"))?;
    Some((n, format!("blk.{n}.{gguf}"), gguf))
}

/// LoRA tensors are small: F32 ones stay F32; F16 and BF16 ones are F16, which every backend
/// multiplies (as llama.cpp's converter writes them).
fn as_is(dtype: Dtype) -> TensorType {
    match dtype {
        Dtype::F32 => TensorType::F32,
        Dtype::F16 | Dtype::Bf16 => TensorType::F16,
    }
}

fn missing(name: &str) -> ConvertError {
    ConvertError::Invalid {
        file: "adapter_model.safetensors".into(),
        why: format!("tensor {name} is missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_map_onto_gguf_layer_tensors() {
        let llama = base_architecture("llama").unwrap();
        let t = |m: &str| layer_tensor(llama, m).map(|(l, n, k)| (l, n, k.to_string()));
        assert_eq!(
            t("model.layers.3.self_attn.q_proj"),
            Some((3, "blk.3.attn_q".into(), "attn_q".into()))
        );
        assert_eq!(
            t("model.layers.0.mlp.down_proj"),
            Some((0, "blk.0.ffn_down".into(), "ffn_down".into()))
        );
        assert_eq!(t("model.layers.0.input_layernorm"), None);
        // A vision-language model's, in Transformers 4.50's and 4.52's layouts.
        for (peft, text) in [
            (
                "base_model.model.language_model.model.layers.2.mlp.up_proj.lora_A.weight",
                Some("base_model.model.model.layers.2.mlp.up_proj.lora_A.weight"),
            ),
            (
                "base_model.model.model.language_model.layers.2.mlp.up_proj.lora_B.weight",
                Some("base_model.model.model.layers.2.mlp.up_proj.lora_B.weight"),
            ),
            (
                "base_model.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.lora_A.weight",
                None,
            ),
        ] {
            assert_eq!(text_module_name(peft).as_deref(), text, "{peft}");
        }
        assert_eq!(t("model.embed_tokens"), None);
        assert_eq!(t("lm_head"), None);
    }
}
