//! Gemma 3's own settings: Transformers' defaults for what a config leaves out, the text
//! model of a vision-language checkpoint, and the settings llama.cpp's `gemma3` computes,
//! checked and written as metadata.

use serde_json::Value as Json;

use super::float;
use crate::gguf::{Metadata, Value};
use crate::ConvertError;

/// Gemma 3's settings that Transformers' `Gemma3TextConfig` gives when `config.json` leaves
/// them out (as the 4B and larger models' `text_config` does).
pub(super) const GEMMA3_DEFAULTS: &[(&str, f64)] = &[
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

/// Gemma 3's own settings, checked against what llama.cpp's `gemma3` does, as metadata: the
/// sliding window and which layers use it, the local layers' rope base, the final logits'
/// soft cap. `head_size` is hidden / heads; `head_dim` the configured head size.
pub(super) fn gemma3(
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

#[cfg(test)]
mod tests {
    use super::super::tests::arch_named;
    use super::super::{text_config, Dims};
    use super::*;
    use crate::decoder::rope::Rope;

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
}
