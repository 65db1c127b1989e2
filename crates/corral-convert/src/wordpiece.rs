//! A WordPiece vocabulary (BERT's `tokenizer.json`) as llama.cpp's `bert` tokenizer, the way
//! llama.cpp's converter writes it: each piece that continues a word (`##ing`) as its bare
//! text, each piece that starts one with a phantom space before it (`▁play`), special tokens
//! as they are. llama.cpp splits text as BERT's pre-tokenizer does (whitespace, punctuation,
//! CJK characters) and normalizes it as `tokenizer.ggml.normalizer.*` says, so the
//! `BertNormalizer`'s lowercasing and accent stripping are carried over; settings llama.cpp
//! would not reproduce are refused.

use serde_json::Value as Json;

use crate::gguf::{Metadata, Value};
use crate::tokenizer::{tokenizer_json, tokens_by_id, unsupported, CONTROL, NORMAL, UNUSED};
use crate::{ConvertError, Files};

/// Metadata for the vocabulary of `tokenizer.json`, padded with unused tokens to
/// `vocab_size` (the embedding's rows).
pub fn metadata(
    files: &Files,
    model_config: &Json,
    vocab_size: usize,
) -> Result<Metadata, ConvertError> {
    let tok = tokenizer_json(
        files,
        "WordPiece",
        "tokenizer.json (a BERT model's WordPiece vocabulary)",
        "a BERT model is imported with its WordPiece vocabulary",
    )?;
    let bad = unsupported;
    let model = &tok["model"];
    match model["continuing_subword_prefix"].as_str() {
        None | Some("##") => {}
        Some(other) => {
            return Err(bad(format!(
                "its pieces continue words with {other:?}; llama.cpp's WordPiece reads \"##\""
            )))
        }
    }
    match tok["pre_tokenizer"]["type"].as_str() {
        Some("BertPreTokenizer") => {}
        other => {
            return Err(bad(format!(
                "its pre-tokenizer is {}; llama.cpp splits WordPiece text as BertPreTokenizer",
                other.unwrap_or("missing")
            )))
        }
    }
    let norm = &tok["normalizer"];
    if norm["type"] != "BertNormalizer" {
        return Err(bad(format!(
            "its normalizer is {}; llama.cpp normalizes WordPiece text as BertNormalizer",
            norm["type"].as_str().unwrap_or("missing")
        )));
    }
    // llama.cpp always drops control characters and splits CJK characters apart.
    for setting in ["clean_text", "handle_chinese_chars"] {
        if norm[setting] == false {
            return Err(bad(format!(
                "its normalizer turns off {setting}, which llama.cpp always does"
            )));
        }
    }
    let lowercase = norm["lowercase"].as_bool().unwrap_or(true);
    // Hugging Face's default: accents are stripped when text is lowercased.
    let strip_accents = norm["strip_accents"].as_bool().unwrap_or(lowercase);

    let mut tokens = tokens_by_id(&tok, |text, special| {
        (text.to_string(), if special { CONTROL } else { NORMAL })
    })?;
    let n = tokens.keys().next_back().map_or(0, |last| last + 1);
    if n > vocab_size {
        return Err(bad(format!(
            "it has {n} tokens, more than the model's {vocab_size} embedding rows"
        )));
    }
    let mut plain = Vec::with_capacity(vocab_size);
    let mut texts = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for id in 0..vocab_size {
        let (text, ty) = tokens
            .remove(&id)
            .unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED));
        texts.push(match (ty, text.strip_prefix("##")) {
            (NORMAL, Some(rest)) => rest.to_string(),
            (NORMAL, None) => format!("\u{2581}{text}"),
            _ => text.clone(),
        });
        plain.push(text);
        types.push(ty);
    }

    let mut out = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::Str("bert".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Value::Str("default".into()),
        ),
        (
            "tokenizer.ggml.normalizer.lowercase".to_string(),
            Value::Bool(lowercase),
        ),
        (
            "tokenizer.ggml.normalizer.strip_accents".to_string(),
            Value::Bool(strip_accents),
        ),
    ];
    out.extend(specials(files, model_config, &plain)?);
    out.push(("tokenizer.ggml.tokens".into(), Value::Strs(texts)));
    out.push(("tokenizer.ggml.token_type".into(), Value::I32s(types)));
    Ok(out)
}

/// BERT's special tokens: their texts in `tokenizer_config.json`, else their ids in
/// `config.json`. The classifier token is also written as BOS, which llama.cpp's WordPiece
/// puts first (its default, 101, is `[CLS]` only in the English BERT vocabularies); the
/// separator ends each input.
fn specials(
    files: &Files,
    model_config: &Json,
    texts: &[String],
) -> Result<Metadata, ConvertError> {
    let config: Json = files.json_or_null("tokenizer_config.json")?;
    let mut out = Vec::new();
    for (name, keys) in [
        ("cls", &["cls_token_id", "bos_token_id"][..]),
        ("sep", &["seperator_token_id"][..]),
        ("unk", &["unknown_token_id"][..]),
        ("pad", &["padding_token_id"][..]),
        ("mask", &["mask_token_id"][..]),
    ] {
        let field = &config[format!("{name}_token")];
        let id =
            match field.as_str().or_else(|| field["content"].as_str()) {
                Some(t) => Some(texts.iter().position(|x| x == t).ok_or_else(|| {
                    ConvertError::Invalid {
                        file: "tokenizer_config.json".into(),
                        why: format!("its {name}_token {t:?} is not in the vocabulary"),
                    }
                })?),
                None => model_config[format!("{name}_token_id")]
                    .as_u64()
                    .map(|x| x as usize)
                    .filter(|&x| x < texts.len()),
            };
        if let Some(id) = id {
            for key in keys {
                out.push((format!("tokenizer.ggml.{key}"), Value::U32(id as u32)));
            }
        }
    }
    Ok(out)
}
