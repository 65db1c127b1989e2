//! BERT encoders (`BertModel`, as sentence-transformers saves all-MiniLM, BGE and the like;
//! `BertForMaskedLM`, its masked-language head left out; DistilBERT's `DistilBertModel`, read
//! under BERT's names and settings) as llama.cpp's `bert`: an embedding model, which pools its
//! outputs into one vector per input and writes no text. The
//! sentence-transformers pooling (`modules.json`, then the Pooling module's `config.json`)
//! becomes `bert.pooling_type`; without one, mean pooling, as sentence-transformers itself
//! falls back to for a plain BERT checkpoint.

use serde_json::Value as Json;

use crate::decoder::Model;
use crate::gguf::{TensorInfo, TensorType, Value};
use crate::source::Safetensors;
use crate::{missing, output_type, unplaced, wrong_shape, ConvertError, Files, From, Planned};

/// The architectures (`config.json`'s `architectures`) converted as `bert`.
pub const ARCHITECTURES: [&str; 4] = [
    "BertModel",
    "BertForMaskedLM",
    "DistilBertModel",
    "DistilBertForMaskedLM",
];

/// A config.json in BERT's terms: DistilBERT's (`dim`, `n_layers`, `hidden_dim` ...) renamed,
/// with no token-type embedding (`type_vocab_size` 0) and its fixed layer-norm epsilon;
/// BERT's as it is.
pub fn bert_config(config: &Json) -> Json {
    let distil = config["architectures"][0]
        .as_str()
        .is_some_and(|a| a.starts_with("DistilBert"));
    if !distil {
        return config.clone();
    }
    serde_json::json!({
        "hidden_size": config["dim"],
        "num_attention_heads": config["n_heads"],
        "num_hidden_layers": config["n_layers"],
        "intermediate_size": config["hidden_dim"],
        "max_position_embeddings": config["max_position_embeddings"],
        "vocab_size": config["vocab_size"],
        "pad_token_id": config["pad_token_id"],
        "hidden_act": config["activation"],
        "layer_norm_eps": 1e-12,
        "type_vocab_size": 0,
        "position_embedding_type":
            if config["sinusoidal_pos_embds"] == true { "sinusoidal" } else { "absolute" },
    })
}

/// DistilBERT's layer tensors, and BERT's names for them.
const DISTIL_LAYER: [(&str, &str); 8] = [
    ("attention.q_lin", "attention.self.query"),
    ("attention.k_lin", "attention.self.key"),
    ("attention.v_lin", "attention.self.value"),
    ("attention.out_lin", "attention.output.dense"),
    ("sa_layer_norm", "attention.output.LayerNorm"),
    ("ffn.lin1", "intermediate.dense"),
    ("ffn.lin2", "output.dense"),
    ("output_layer_norm", "output.LayerNorm"),
];

/// sentence-transformers' module that pools, as `modules.json` names its type.
pub const POOLING_MODULE: &str = "sentence_transformers.models.Pooling";
/// The model itself, and the L2 normalization every embedding gets anyway.
const TRANSFORMER_MODULE: &str = "sentence_transformers.models.Transformer";
const NORMALIZE_MODULE: &str = "sentence_transformers.models.Normalize";

/// llama.cpp's pooling types.
const MEAN: u32 = 1;
const CLS: u32 = 2;
const LAST: u32 = 3;

fn invalid(why: String) -> ConvertError {
    ConvertError::Invalid {
        file: "config.json".into(),
        why,
    }
}

fn number(config: &Json, key: &str, default: Option<u64>) -> Result<u64, ConvertError> {
    match (&config[key], default) {
        (Json::Null, Some(d)) => Ok(d),
        (v, _) => v
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid(format!("\"{key}\" is missing or not a positive integer"))),
    }
}

/// The sizes `config.json` gives, checked.
pub struct Dims {
    hidden: u64,
    heads: u64,
    layers: u64,
    ff: u64,
    context: u64,
    /// Rows of the token-type embedding (BERT's "sentence A/B"; 0: none, as DistilBERT).
    types: u64,
    eps: f32,
}

impl Dims {
    pub fn read(config: &Json) -> Result<Dims, ConvertError> {
        let d = Dims {
            hidden: number(config, "hidden_size", None)?,
            heads: number(config, "num_attention_heads", None)?,
            layers: number(config, "num_hidden_layers", None)?,
            ff: number(config, "intermediate_size", None)?,
            context: number(config, "max_position_embeddings", None)?,
            types: match &config["type_vocab_size"] {
                Json::Number(n) if n.as_u64() == Some(0) => 0,
                _ => number(config, "type_vocab_size", Some(2))?,
            },
            eps: match &config["layer_norm_eps"] {
                Json::Null => 1e-12,
                v => v
                    .as_f64()
                    .ok_or_else(|| invalid("\"layer_norm_eps\" is not a number".into()))?
                    as f32,
            },
        };
        if !d.hidden.is_multiple_of(d.heads) {
            return Err(invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                d.hidden, d.heads
            )));
        }
        // What llama.cpp's `bert` computes: GELU, learned absolute positions.
        match config["hidden_act"].as_str() {
            None | Some("gelu") => {}
            Some(other) => {
                return Err(ConvertError::Unsupported(format!(
                    "hidden_act \"{other}\" is not what llama.cpp's bert runs (gelu)"
                )))
            }
        }
        match config["position_embedding_type"].as_str() {
            None | Some("absolute") => {}
            Some(other) => {
                return Err(ConvertError::Unsupported(format!(
                    "position_embedding_type \"{other}\" is not what llama.cpp's bert runs \
                     (absolute)"
                )))
            }
        }
        Ok(d)
    }
}

/// A source tensor's name as the table below has it: without the `bert.` of a
/// `BertForMaskedLM` (or `distilbert.`), DistilBERT's layers under BERT's names, with old
/// checkpoints' `gamma`/`beta` as `weight`/`bias`; the pooler, the masked-language heads and
/// the position ids are left out (an embedding needs none).
pub fn source_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("bert.").unwrap_or(name);
    let name = name.strip_prefix("distilbert.").unwrap_or(name);
    let head = [
        "pooler.",
        "cls.",
        "vocab_transform.",
        "vocab_layer_norm.",
        "vocab_projector.",
    ];
    if head.iter().any(|h| name.starts_with(h)) || name == "embeddings.position_ids" {
        return None;
    }
    let distil = name.strip_prefix("transformer.layer.").and_then(|rest| {
        let (n, part) = rest.split_once('.')?;
        let (from, to) = DISTIL_LAYER.iter().find(|(f, _)| part.starts_with(f))?;
        Some(format!("encoder.layer.{n}.{to}{}", &part[from.len()..]))
    });
    let name = distil.as_deref().unwrap_or(name);
    let name = match name.rsplit_once('.') {
        Some((stem, "gamma")) => format!("{stem}.weight"),
        Some((stem, "beta")) => format!("{stem}.bias"),
        _ => name.to_string(),
    };
    Some(name)
}

/// The pooling that sentence-transformers applies, as llama.cpp's pooling type: from the
/// Pooling module `modules.json` names, else mean pooling.
pub fn pooling(files: &Files) -> Result<u32, ConvertError> {
    let modules = files.json_or_null("modules.json")?;
    // A module llama.cpp does not run (a Dense projection after the pooling, as LaBSE's)
    // would leave the vectors wrong without a word: refused by name.
    for m in modules.as_array().into_iter().flatten() {
        let kind = m["type"].as_str().unwrap_or("?");
        if ![TRANSFORMER_MODULE, POOLING_MODULE, NORMALIZE_MODULE].contains(&kind) {
            return Err(ConvertError::Unsupported(format!(
                "modules.json: module {kind} ({}) is not one llama.cpp runs; the vectors \
                 would come out without it",
                m["path"].as_str().unwrap_or("?")
            )));
        }
    }
    let Some(path) = pooling_path(&modules) else {
        return Ok(MEAN);
    };
    let file = format!("{path}/config.json");
    let config = files.json(&file)?;
    let on = |mode: &str| config[format!("pooling_mode_{mode}")] == true;
    let bad = |why: String| ConvertError::Unsupported(format!("{file}: {why}"));
    let modes: Vec<&str> = [
        "cls_token",
        "mean_tokens",
        "max_tokens",
        "mean_sqrt_len_tokens",
        "weightedmean_tokens",
        "lasttoken",
    ]
    .into_iter()
    .filter(|m| on(m))
    .collect();
    match modes.as_slice() {
        ["mean_tokens"] => Ok(MEAN),
        ["cls_token"] => Ok(CLS),
        ["lasttoken"] => Ok(LAST),
        [] => Err(bad("it turns on no pooling mode".into())),
        [one] => Err(bad(format!(
            "pooling_mode_{one} is not a pooling llama.cpp does (mean, cls or last token)"
        ))),
        many => Err(bad(format!(
            "it pools several ways at once ({}); llama.cpp pools one way",
            many.join(", ")
        ))),
    }
}

/// The folder of the Pooling module in `modules.json` (a list of `{"type", "path"}`), when it
/// names one as a plain folder name.
pub fn pooling_path(modules: &Json) -> Option<&str> {
    modules
        .as_array()?
        .iter()
        .find(|m| m["type"] == POOLING_MODULE)?["path"]
        .as_str()
        .filter(|p| !p.is_empty() && *p != "." && *p != ".." && !p.contains(['/', '\\']))
}

/// The GGUF metadata and tensors for a BERT folder's `config.json` and weights (renamed by
/// [`source_name`]), pooling as `pooling` says.
pub fn plan(config: &Json, source: &Safetensors, pooling: u32) -> Result<Model, ConvertError> {
    let Dims {
        hidden,
        heads,
        layers,
        ff,
        context,
        types,
        eps,
    } = Dims::read(config)?;
    let embed = source
        .get("embeddings.word_embeddings.weight")
        .ok_or_else(|| missing("embeddings.word_embeddings.weight"))?;
    let vocab = match config["vocab_size"] {
        Json::Null => embed.shape.first().copied().unwrap_or(0),
        _ => number(config, "vocab_size", None)?,
    };
    let key = |k: &str| format!("bert.{k}");
    let metadata = vec![
        ("general.architecture".into(), Value::Str("bert".into())),
        (key("block_count"), Value::U32(layers as u32)),
        (key("context_length"), Value::U32(context as u32)),
        (key("embedding_length"), Value::U32(hidden as u32)),
        (key("feed_forward_length"), Value::U32(ff as u32)),
        (key("attention.head_count"), Value::U32(heads as u32)),
        (key("attention.layer_norm_epsilon"), Value::F32(eps)),
        (key("attention.causal"), Value::Bool(false)),
        (key("pooling_type"), Value::U32(pooling)),
        // llama.cpp's converter writes 1 for a model without token types.
        (
            "tokenizer.ggml.token_type_count".into(),
            Value::U32(types.max(1) as u32),
        ),
    ];

    let mut tensors = Vec::new();
    let mut add = |hf: &str, gguf: &str, shape: &[u64]| -> Result<(), ConvertError> {
        // llama.cpp adds a row of the token-type embedding to the F32 hidden state as it is
        // stored, which its CPU backend does only for F32; its converter keeps the position
        // embedding in F32 as well.
        let f32 = gguf.starts_with("token_types") || gguf.starts_with("position_embd");
        let t = source.get(hf).ok_or_else(|| missing(hf))?;
        if t.shape != shape {
            return Err(wrong_shape(hf, &t.shape, shape));
        }
        tensors.push(Planned {
            info: TensorInfo {
                name: gguf.to_string(),
                dims: shape.iter().rev().copied().collect(),
                ty: match f32 {
                    true => TensorType::F32,
                    false => output_type(t.dtype, shape.len()),
                },
            },
            from: From::Source {
                name: hf.to_string(),
                permute: None,
                plus_one: false,
            },
        });
        Ok(())
    };
    // A layer norm or a linear map: its weight, then its bias.
    let mut pair = |hf: &str, gguf: &str, shape: &[u64]| -> Result<(), ConvertError> {
        add(&format!("{hf}.weight"), &format!("{gguf}.weight"), shape)?;
        add(&format!("{hf}.bias"), &format!("{gguf}.bias"), &shape[..1])
    };
    let e = "embeddings";
    pair(&format!("{e}.LayerNorm"), "token_embd_norm", &[hidden])?;
    for n in 0..layers {
        let (hf, gguf) = (format!("encoder.layer.{n}"), format!("blk.{n}"));
        for (part, name) in [("query", "attn_q"), ("key", "attn_k"), ("value", "attn_v")] {
            let from = format!("{hf}.attention.self.{part}");
            pair(&from, &format!("{gguf}.{name}"), &[hidden, hidden])?;
        }
        for (from, to, shape) in [
            ("attention.output.dense", "attn_output", [hidden, hidden]),
            ("intermediate.dense", "ffn_up", [ff, hidden]),
            ("output.dense", "ffn_down", [hidden, ff]),
        ] {
            pair(&format!("{hf}.{from}"), &format!("{gguf}.{to}"), &shape)?;
        }
        for (from, to) in [
            ("attention.output.LayerNorm", "attn_output_norm"),
            ("output.LayerNorm", "layer_output_norm"),
        ] {
            pair(&format!("{hf}.{from}"), &format!("{gguf}.{to}"), &[hidden])?;
        }
    }
    for (from, to, rows) in [
        ("word_embeddings", "token_embd", vocab),
        ("position_embeddings", "position_embd", context),
        ("token_type_embeddings", "token_types", types),
    ]
    .into_iter()
    .filter(|(_, _, rows)| *rows > 0)
    {
        add(
            &format!("{e}.{from}.weight"),
            &format!("{to}.weight"),
            &[rows, hidden],
        )?;
    }
    let placed: std::collections::HashSet<&str> = tensors
        .iter()
        .filter_map(|t| match &t.from {
            From::Source { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    unplaced(source.names().filter(|n| !placed.contains(n)), "bert")?;
    Ok(Model {
        metadata,
        tensors,
        vocab_size: vocab as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_masked_lm_and_old_checkpoints_are_read_as_the_models() {
        assert_eq!(
            source_name("bert.encoder.layer.0.output.LayerNorm.gamma").as_deref(),
            Some("encoder.layer.0.output.LayerNorm.weight")
        );
        assert_eq!(
            source_name("embeddings.LayerNorm.beta").as_deref(),
            Some("embeddings.LayerNorm.bias")
        );
        assert_eq!(
            source_name("distilbert.transformer.layer.5.attention.q_lin.bias").as_deref(),
            Some("encoder.layer.5.attention.self.query.bias")
        );
        assert_eq!(
            source_name("transformer.layer.0.sa_layer_norm.weight").as_deref(),
            Some("encoder.layer.0.attention.output.LayerNorm.weight")
        );
        for gone in [
            "pooler.dense.weight",
            "bert.pooler.dense.bias",
            "cls.predictions.bias",
            "embeddings.position_ids",
            "vocab_projector.bias",
        ] {
            assert_eq!(source_name(gone), None, "{gone}");
        }
    }

    #[test]
    fn the_pooling_module_is_found_and_other_settings_refused() {
        let modules = serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING_MODULE},
        ]);
        assert_eq!(pooling_path(&modules), Some("1_Pooling"));
        let sneaky = serde_json::json!([{"path": "../x", "type": POOLING_MODULE}]);
        assert_eq!(pooling_path(&sneaky), None);
        let config = serde_json::json!({"hidden_size": 384, "num_attention_heads": 12,
            "num_hidden_layers": 6, "intermediate_size": 1536, "max_position_embeddings": 512,
            "hidden_act": "relu"});
        let e = Dims::read(&config).err().unwrap().to_string();
        assert!(e.contains("hidden_act \"relu\""), "{e}");
    }
}
