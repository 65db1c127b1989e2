//! SentencePiece vocabularies: `tokenizer.model`, the protocol-buffer file of Llama 2, Mistral
//! 7B, TinyLlama and Gemma, as llama.cpp's `llama` tokenizer (`tokenizer.ggml.model = llama`):
//! each piece with its score and type, as llama.cpp's converter reads them with the
//! `sentencepiece` library, then the added tokens of `added_tokens.json` and
//! `tokenizer_config.json` over them.
//!
//! llama.cpp's tokenizer merges pieces by score, as SentencePiece's BPE model does, and
//! applies no normalization but replacing spaces by `▁` and, when the model says so, adding
//! one space in front. A model of another kind (Unigram, as T5's) or with another
//! normalization (NFKC, collapsed spaces) would be split differently from its training, so it
//! is refused.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::Value as Json;

use crate::gguf::{Metadata, Value};
use crate::tokenizer::{added_token, specials, UNUSED, USER_DEFINED};
use crate::{ConvertError, Files};

/// The parts of SentencePiece's `ModelProto` (sentencepiece_model.proto) that llama.cpp
/// uses; prost skips the rest. Declared here rather than generated: four messages, and no
/// protoc at build time.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<Piece>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct Piece {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    /// NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6: llama.cpp's token
    /// types have the same numbers.
    #[prost(int32, optional, tag = "3")]
    r#type: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct TrainerSpec {
    /// UNIGRAM 1 (the default), BPE 2, WORD 3, CHAR 4.
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    escape_whitespaces: Option<bool>,
}

const BPE: i32 = 2;
const NOT_SENTENCEPIECE: &str =
    "not a SentencePiece model, and there is no tokenizer.json to read instead";
const NORMAL: i32 = 1;

/// Metadata for the vocabulary of `tokenizer.model`, padded with unused tokens to
/// `vocab_size` (the embedding's rows); `None` when the file is not a SentencePiece model
/// but the folder has a `tokenizer.json` to read instead (as Llama 3's tiktoken file
/// beside it would be), as llama.cpp's converter falls back to it. `space_prefix`, when the
/// architecture sets it, stands instead of the model's `add_dummy_prefix`.
pub fn metadata(
    files: &Files,
    model_config: &Json,
    vocab_size: usize,
    space_prefix: Option<bool>,
) -> Result<Option<Metadata>, ConvertError> {
    let file = "tokenizer.model";
    let invalid = |why: String| ConvertError::Invalid {
        file: file.into(),
        why,
    };
    let bytes = files
        .read(file)?
        .ok_or_else(|| ConvertError::Missing(file.into()))?;
    let model = match ModelProto::decode(bytes.as_slice()) {
        Ok(m) if !m.pieces.is_empty() => m,
        _ if files.has("tokenizer.json") => return Ok(None),
        Ok(_) => return Err(invalid(NOT_SENTENCEPIECE.into())),
        Err(e) => return Err(invalid(format!("{NOT_SENTENCEPIECE} ({e})"))),
    };
    let unsupported = |why: String| ConvertError::Unsupported(format!("{file}: {why}"));
    let kind = model
        .trainer_spec
        .as_ref()
        .and_then(|t| t.model_type)
        .unwrap_or(1);
    if kind != BPE {
        let name = match kind {
            1 => "Unigram".to_string(),
            3 => "word".into(),
            4 => "character".into(),
            n => format!("type {n}"),
        };
        return Err(unsupported(format!(
            "a {name} SentencePiece model; only BPE ones (Llama's, Mistral's, Gemma's) can be \
             imported"
        )));
    }
    let norm = model.normalizer_spec.unwrap_or_default();
    let name = norm.name.as_deref().unwrap_or("identity");
    if !matches!(name, "identity" | "")
        || norm
            .precompiled_charsmap
            .as_ref()
            .is_some_and(|m| !m.is_empty())
    {
        return Err(unsupported(format!(
            "its normalization ({name}) is one llama.cpp does not apply"
        )));
    }
    // SentencePiece's defaults: collapse runs of spaces, and escape spaces as `▁`.
    if norm.remove_extra_whitespaces.unwrap_or(true) {
        return Err(unsupported(
            "it removes extra whitespace, which llama.cpp does not".into(),
        ));
    }
    if !norm.escape_whitespaces.unwrap_or(true) {
        return Err(unsupported(
            "it does not escape whitespace as ▁, as llama.cpp does".into(),
        ));
    }

    let n = model.pieces.len();
    if n > vocab_size {
        return Err(invalid(format!(
            "it has {n} pieces, more than the model's {vocab_size} embedding rows"
        )));
    }
    let mut texts = Vec::with_capacity(vocab_size);
    let mut scores = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (id, p) in model.pieces.into_iter().enumerate() {
        let ty = match p.r#type.unwrap_or(NORMAL) {
            // User-defined pieces are normal ones to llama.cpp's converter; those the added
            // tokens name again become user-defined below.
            USER_DEFINED => NORMAL,
            ty @ 1..=6 => ty,
            ty => return Err(invalid(format!("piece {id} has the unknown type {ty}"))),
        };
        texts.push(p.piece.unwrap_or_default());
        scores.push(p.score.unwrap_or(0.0));
        types.push(ty);
    }
    for id in n..vocab_size {
        texts.push(format!("[PAD{id}]"));
        scores.push(-10000.0);
        types.push(UNUSED);
    }
    added_tokens(files, &mut texts, &mut scores, &mut types)?;

    let mut out = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::Str("llama".into()),
        ),
        ("tokenizer.ggml.pre".into(), Value::Str("default".into())),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(space_prefix.unwrap_or(norm.add_dummy_prefix.unwrap_or(true))),
        ),
    ];
    let post: Json = match files.has("tokenizer.json") {
        true => files.json("tokenizer.json")?["post_processor"].take(),
        false => Json::Null,
    };
    out.extend(specials(files, model_config, &texts, &post)?);
    out.push(("tokenizer.ggml.tokens".into(), Value::Strs(texts)));
    out.push(("tokenizer.ggml.scores".into(), Value::F32s(scores)));
    out.push(("tokenizer.ggml.token_type".into(), Value::I32s(types)));
    Ok(Some(out))
}

/// Tokens added beside the SentencePiece model, as llama.cpp's converter takes them:
/// `added_tokens.json` (text to id, user-defined), then `tokenizer_config.json`'s
/// `added_tokens_decoder` ([`added_token`]: control tokens, or user-defined ones with their
/// `▁` read as spaces). Ids beyond the vocabulary are left out, as there.
fn added_tokens(
    files: &Files,
    texts: &mut [String],
    scores: &mut [f32],
    types: &mut [i32],
) -> Result<(), ConvertError> {
    let n = texts.len();
    let mut set = |id: usize, text: String, ty: i32| {
        if id < n {
            texts[id] = text;
            scores[id] = -1000.0;
            types[id] = ty;
        }
    };
    let added: BTreeMap<String, Json> = match files.json_or_null("added_tokens.json")? {
        Json::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    for (text, id) in added {
        if let Some(id) = id.as_u64() {
            set(id as usize, text, USER_DEFINED);
        }
    }
    let config = files.json_or_null("tokenizer_config.json")?;
    for (id, token) in config["added_tokens_decoder"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let (Ok(id), Some(text)) = (id.parse::<usize>(), token["content"].as_str()) else {
            return Err(ConvertError::Invalid {
                file: "tokenizer_config.json".into(),
                why: format!("added token {id:?} has no integer id or no content"),
            });
        };
        let (text, ty) = added_token(text, token["special"] == true);
        set(id, text, ty);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(kind: i32, norm: NormalizerSpec) -> Vec<u8> {
        let piece = |p: &str, score: f32, ty: i32| Piece {
            piece: Some(p.into()),
            score: Some(score),
            r#type: Some(ty),
        };
        ModelProto {
            pieces: vec![
                piece("<unk>", 0.0, 2),
                piece("<s>", 0.0, 3),
                piece("</s>", 0.0, 3),
                piece("<0x0A>", 0.0, 6),
                piece("\u{2581}t", -1.0, 1),
                piece("he", -2.0, 1),
                piece("\u{2581}\u{2581}", 0.0, 4),
                piece("<unused0>", 0.0, 4),
            ],
            trainer_spec: Some(TrainerSpec {
                model_type: Some(kind),
            }),
            normalizer_spec: Some(norm),
        }
        .encode_to_vec()
    }

    fn identity() -> NormalizerSpec {
        NormalizerSpec {
            name: Some("identity".into()),
            add_dummy_prefix: Some(true),
            remove_extra_whitespaces: Some(false),
            ..Default::default()
        }
    }

    fn convert(dir: &std::path::Path, bytes: &[u8], vocab: usize) -> Result<Metadata, String> {
        std::fs::write(dir.join("tokenizer.model"), bytes).unwrap();
        let files = Files::open(dir).unwrap();
        match metadata(&files, &Json::Null, vocab, None) {
            Ok(m) => Ok(m.expect("no tokenizer.json")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn get<'a>(m: &'a Metadata, key: &str) -> &'a Value {
        &m.iter().find(|(k, _)| k == key).unwrap().1
    }

    #[test]
    fn pieces_keep_their_scores_and_types_and_are_padded_to_the_embedding() {
        let dir = tempfile::tempdir().unwrap();
        let m = convert(dir.path(), &model(BPE, identity()), 10).unwrap();
        let Value::Strs(texts) = get(&m, "tokenizer.ggml.tokens") else {
            panic!()
        };
        assert_eq!(texts[4], "\u{2581}t");
        assert_eq!(texts[9], "[PAD9]");
        // User-defined pieces are normal ones, as llama.cpp's converter reads them.
        assert_eq!(
            get(&m, "tokenizer.ggml.token_type"),
            &Value::I32s(vec![2, 3, 3, 6, 1, 1, 1, 1, UNUSED, UNUSED])
        );
        let Value::F32s(scores) = get(&m, "tokenizer.ggml.scores") else {
            panic!()
        };
        assert_eq!(&scores[3..9], &[0.0, -1.0, -2.0, 0.0, 0.0, -10000.0]);
        assert_eq!(get(&m, "tokenizer.ggml.model"), &Value::Str("llama".into()));
        assert_eq!(
            get(&m, "tokenizer.ggml.add_space_prefix"),
            &Value::Bool(true)
        );
    }

    #[test]
    fn added_tokens_are_laid_over_the_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let decoder = serde_json::json!({"added_tokens_decoder": {
            "6": {"content": "\u{2581}\u{2581}", "special": false},
            "7": {"content": "<unused0>", "special": false},
        }});
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            decoder.to_string(),
        )
        .unwrap();
        // One beyond the embedding's rows, left out (as Gemma 3's <image_soft_token>).
        let added = r#"{"<extra>": 9, "<image_soft_token>": 10}"#;
        std::fs::write(dir.path().join("added_tokens.json"), added).unwrap();
        let m = convert(dir.path(), &model(BPE, identity()), 10).unwrap();
        let Value::Strs(texts) = get(&m, "tokenizer.ggml.tokens") else {
            panic!()
        };
        assert_eq!(&texts[6..], &["  ", "<unused0>", "[PAD8]", "<extra>"]);
        assert_eq!(
            get(&m, "tokenizer.ggml.token_type"),
            &Value::I32s(vec![
                2,
                3,
                3,
                6,
                1,
                1,
                USER_DEFINED,
                3,
                UNUSED,
                USER_DEFINED
            ])
        );
        let Value::F32s(scores) = get(&m, "tokenizer.ggml.scores") else {
            panic!()
        };
        assert_eq!(&scores[6..], &[-1000.0, -1000.0, -10000.0, -1000.0]);
    }

    #[test]
    fn what_llama_cpp_would_split_differently_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = convert(dir.path(), &model(1, identity()), 8).unwrap_err();
        assert!(e.contains("a Unigram SentencePiece model"), "{e}");
        let nfkc = NormalizerSpec {
            name: Some("nmt_nfkc".into()),
            ..identity()
        };
        let e = convert(dir.path(), &model(BPE, nfkc), 8).unwrap_err();
        assert!(e.contains("normalization (nmt_nfkc)"), "{e}");
        let collapse = NormalizerSpec {
            remove_extra_whitespaces: None,
            ..identity()
        };
        let e = convert(dir.path(), &model(BPE, collapse), 8).unwrap_err();
        assert!(e.contains("removes extra whitespace"), "{e}");
        let e = convert(dir.path(), &model(BPE, identity()), 4).unwrap_err();
        assert!(e.contains("8 pieces, more than the model's 4"), "{e}");
        let e = convert(dir.path(), b"{\"not\": \"protobuf\"}", 8).unwrap_err();
        assert!(
            e.contains("tokenizer.model: not a SentencePiece model"),
            "{e}"
        );
    }
}
