//! The vocabulary: a Hugging Face `tokenizer.json` (byte-level BPE; BERT's WordPiece is the
//! `wordpiece` module's), or a SentencePiece `tokenizer.model` (the `sentencepiece` module), and `tokenizer_config.json` as llama.cpp's
//! metadata (`tokenizer.ggml.*`).
//!
//! llama.cpp does not read a tokenizer's pre-tokenizer from the file: it picks one of its own
//! by name (`tokenizer.ggml.pre`). A pre-tokenizer that does not match a name exactly would
//! split text differently from the model's training, so one this module does not recognise
//! is refused, never guessed.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::gguf::{Metadata, Value};
use crate::{ConvertError, Files};

/// llama.cpp's token types.
pub(crate) const NORMAL: i32 = 1;
pub(crate) const CONTROL: i32 = 3;
pub(crate) const USER_DEFINED: i32 = 4;
pub(crate) const UNUSED: i32 = 5;

/// The split pattern of Llama 3's tokenizer (llama.cpp's `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's (`qwen2`): Llama 3's with digits one by one.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's Tekken (`tekken`: Mistral Nemo, Ministral, Mistral Small 3): words split at
/// case changes, digits one by one.
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o's (`gpt-4o`: Phi 4 mini): Tekken's with English contractions and digits in threes.
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The byte-level BPE pre-tokenizers made of a `Split` step and a byte step that llama.cpp
/// knows by name: its name, and the pattern exactly as a model's `tokenizer.json` has it
/// (llama.cpp's sources quote each as the "original regex from tokenizer.json").
pub const SPLIT_PRE_TOKENIZERS: &[(&str, &str)] = &[
    ("llama-bpe", LLAMA3_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("tekken", TEKKEN_SPLIT),
    ("gpt-4o", GPT4O_SPLIT),
];

/// Metadata for the vocabulary, padded with unused tokens to `vocab_size` (the embedding's
/// rows) when the model has more rows than the tokenizer has tokens. A folder with a
/// `tokenizer.model` has a SentencePiece vocabulary, read from that file as llama.cpp's
/// converter reads it (its `tokenizer.json` is then a BPE with byte fallback, built from it);
/// `space_prefix`, when set, overrides its `add_dummy_prefix`.
pub fn metadata(
    files: &Files,
    model_config: &Json,
    vocab_size: usize,
    space_prefix: Option<bool>,
) -> Result<Metadata, ConvertError> {
    if files.has("tokenizer.model") {
        let spm = crate::sentencepiece::metadata(files, model_config, vocab_size, space_prefix);
        if let Some(m) = spm? {
            return Ok(m);
        }
    }
    let tok = tokenizer_json(
        files,
        "BPE",
        "tokenizer.json (or a SentencePiece tokenizer.model)",
        "only byte-level BPE tokenizers can be imported",
    )?;
    let bad = unsupported;
    let model = &tok["model"];
    if model["byte_fallback"].as_bool() == Some(true) {
        return Err(bad(
            "a SentencePiece-style BPE (byte_fallback, as Llama 2's and Mistral 7B's) is read \
             from its tokenizer.model, which this folder lacks"
                .into(),
        ));
    }
    let pre = pre_tokenizer(&tok["pre_tokenizer"]).map_err(bad)?;
    // llama.cpp applies no normalizer; Unicode NFC (Qwen's) changes only unusual text.
    match &tok["normalizer"] {
        Json::Null => {}
        n if n["type"] == "NFC" => {}
        n => {
            return Err(bad(format!(
                "its normalizer ({}) is one llama.cpp does not apply",
                n["type"].as_str().unwrap_or("?")
            )))
        }
    }

    let mut tokens = tokens_by_id(&tok, added_token)?;
    let n = tokens
        .keys()
        .next_back()
        .map_or(0, |last| last + 1)
        .max(vocab_size);
    if n > vocab_size {
        return Err(bad(format!(
            "it has {n} tokens, more than the model's {vocab_size} embedding rows"
        )));
    }
    let mut texts = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for id in 0..n {
        let (text, ty) = tokens
            .remove(&id)
            .unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED));
        texts.push(text);
        types.push(ty);
    }
    let merges = model["merges"]
        .as_array()
        .ok_or_else(|| bad("model.merges is missing".into()))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) => match pair.as_slice() {
                [Json::String(a), Json::String(b)] => Ok(format!("{a} {b}")),
                _ => Err(bad(format!("a merge is not a pair of strings: {m}"))),
            },
            _ => Err(bad(format!("a merge is not a string or a pair: {m}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut out = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::Str("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_string(), Value::Str(pre.into())),
    ];
    out.extend(specials(
        files,
        model_config,
        &texts,
        &tok["post_processor"],
    )?);
    out.push(("tokenizer.ggml.tokens".into(), Value::Strs(texts)));
    out.push(("tokenizer.ggml.token_type".into(), Value::I32s(types)));
    out.push(("tokenizer.ggml.merges".into(), Value::Strs(merges)));
    Ok(out)
}

/// A refusal of the folder's `tokenizer.json`, saying why.
pub(crate) fn unsupported(why: String) -> ConvertError {
    ConvertError::Unsupported(format!("tokenizer.json: {why}"))
}

/// The folder's `tokenizer.json` (`missing` names what is needed when it is absent), whose
/// model must be of type `kind` (else refused: `only`).
pub(crate) fn tokenizer_json(
    files: &Files,
    kind: &str,
    missing: &str,
    only: &str,
) -> Result<Json, ConvertError> {
    if !files.has("tokenizer.json") {
        return Err(ConvertError::Missing(missing.into()));
    }
    let tok: Json = files.json("tokenizer.json")?;
    match tok["model"]["type"].as_str() {
        Some(t) if t == kind => Ok(tok),
        Some(other) => Err(unsupported(format!("its model is {other}; {only}"))),
        None => Err(unsupported("it has no model.type".into())),
    }
}

/// The tokens of `tokenizer.json` by id: its model's vocabulary as normal tokens, then each
/// added token as `added` (its text, whether it is special) makes it.
pub(crate) fn tokens_by_id(
    tok: &Json,
    added: impl Fn(&str, bool) -> (String, i32),
) -> Result<BTreeMap<usize, (String, i32)>, ConvertError> {
    let mut tokens = BTreeMap::new();
    let vocab = tok["model"]["vocab"]
        .as_object()
        .ok_or_else(|| unsupported("model.vocab is not an object".into()))?;
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| unsupported(format!("token {text:?} has no integer id")))?;
        tokens.insert(id as usize, (text.clone(), NORMAL));
    }
    for t in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(unsupported("an added token has no id or content".into()));
        };
        tokens.insert(id as usize, added(text, t["special"] == true));
    }
    Ok(tokens)
}

/// An added token as llama.cpp's converter writes it: a control token when it is marked
/// special or looks special (models mark some control tokens, Gemma's `<unused0>` ..., as not
/// special), else a user-defined token with its `▁` read as spaces (llama.cpp matches
/// user-defined tokens in the raw text, before spaces become `▁`).
pub(crate) fn added_token(text: &str, special: bool) -> (String, i32) {
    let between = |open: &str, close: &str| text.starts_with(open) && text.ends_with(close);
    let looks_special = matches!(text, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || between("<|", "|>")
        || between("<\u{ff5c}", "\u{ff5c}>")
        || between("<unused", ">");
    match special || looks_special {
        true => (text.to_string(), CONTROL),
        false => (text.replace('\u{2581}', " "), USER_DEFINED),
    }
}

/// The special tokens' ids (`tokenizer_config.json`'s texts, else `config.json`'s ids),
/// whether BOS and EOS are added, and the chat template, for the vocabulary `texts` and the
/// `tokenizer.json` post-processor (`null` when there is none).
pub(crate) fn specials(
    files: &Files,
    model_config: &Json,
    texts: &[String],
    post_processor: &Json,
) -> Result<Metadata, ConvertError> {
    let config: Json = files.json_or_null("tokenizer_config.json")?;
    let bad = |file: &str, why: String| ConvertError::Invalid {
        file: file.into(),
        why,
    };
    let n = texts.len();
    let mut out = Vec::new();
    let id_of = |text: &str| texts.iter().position(|t| t == text).map(|i| i as u32);
    let mut special_ids = BTreeMap::new();
    for (name, key) in [
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("unk", "unknown_token_id"),
        ("pad", "padding_token_id"),
    ] {
        // The token's text in tokenizer_config.json (a string, or {"content": ...}), else
        // the id in config.json, as llama.cpp's converter looks them up.
        let field = &config[format!("{name}_token")];
        let text = field.as_str().or_else(|| field["content"].as_str());
        let id = match text {
            Some(t) => Some(id_of(t).ok_or_else(|| {
                bad(
                    "tokenizer_config.json",
                    format!("its {name}_token {t:?} is not in the vocabulary"),
                )
            })?),
            None => match &model_config[format!("{name}_token_id")] {
                Json::Number(x) => x.as_u64().map(|x| x as u32),
                Json::Array(ids) => ids.first().and_then(Json::as_u64).map(|x| x as u32),
                _ => None,
            },
        };
        if let Some(id) = id {
            if id as usize >= n {
                return Err(bad(
                    "config.json",
                    format!("the {name} token id {id} is outside the vocabulary of {n}"),
                ));
            }
            out.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
            special_ids.insert(name, id);
        }
    }
    // Whether BOS and EOS are added: tokenizer_config.json says, else the post-processor's
    // template for one text does (Llama 3's puts <|begin_of_text|> first), else llama.cpp's
    // default for the pre-tokenizer stands.
    let ends = template_ends(post_processor);
    for (key, end, special) in [
        ("add_bos_token", ends.map(|e| e.0), "bos"),
        ("add_eos_token", ends.map(|e| e.1), "eos"),
    ] {
        // A template says yes (its end is that token) or no (its end is the text).
        let special_id = special_ids.get(special).copied();
        let from_template =
            end.map(|end| special_id.is_some() && end.and_then(id_of) == special_id);
        if let Some(b) = config[key].as_bool().or(from_template) {
            out.push((format!("tokenizer.ggml.{key}"), Value::Bool(b)));
        }
    }
    if let Some(t) = chat_template(files, &config)? {
        out.push(("tokenizer.chat_template".into(), Value::Str(t)));
    }
    Ok(out)
}

/// The name llama.cpp knows the pre-tokenizer by.
fn pre_tokenizer(pre: &Json) -> Result<&'static str, String> {
    let steps: Vec<&Json> = match pre["type"].as_str() {
        Some("Sequence") => pre["pretokenizers"]
            .as_array()
            .into_iter()
            .flatten()
            .collect(),
        Some(_) => vec![pre],
        None => return Err("it has no pre_tokenizer; a byte-level BPE needs one".into()),
    };
    let byte_level = |s: &Json, regex: bool| {
        s["type"] == "ByteLevel"
            && s["use_regex"].as_bool().unwrap_or(true) == regex
            && s["add_prefix_space"].as_bool() != Some(true)
    };
    let split = |s: &Json, pattern: &str| {
        s["type"] == "Split"
            && s["pattern"]["Regex"] == pattern
            && s["behavior"] == "Isolated"
            && s["invert"] != true
    };
    let digits = |s: &Json| s["type"] == "Digits" && s["individual_digits"] == true;
    match steps.as_slice() {
        // GPT-2's own: the byte-level step splits with GPT-2's pattern.
        [b] if byte_level(b, true) => Ok("gpt-2"),
        // Digits one by one, then GPT-2's pattern (SmolLM, StarCoder).
        [d, b] if digits(d) && byte_level(b, true) => Ok("smollm"),
        // A pattern llama.cpp knows (Llama 3's, Qwen 2's ...), then bytes.
        [s, b] if byte_level(b, false) => SPLIT_PRE_TOKENIZERS
            .iter()
            .find(|(_, pattern)| split(s, pattern))
            .map(|(name, _)| *name)
            .ok_or_else(|| unknown(&steps)),
        _ => Err(unknown(&steps)),
    }
}

fn unknown(steps: &[&Json]) -> String {
    format!(
        "its pre-tokenizer ({}) is not one Corral can map onto llama.cpp's (GPT-2's, \
         SmolLM's, Llama 3's, Qwen 2's, Tekken's or GPT-4o's)",
        summary(steps)
    )
}

fn summary(steps: &[&Json]) -> String {
    steps
        .iter()
        .map(|s| match s["pattern"]["Regex"].as_str() {
            Some(p) => format!("{} {p:?}", s["type"].as_str().unwrap_or("?")),
            None => s["type"].as_str().unwrap_or("?").to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ends of a `TemplateProcessing` post-processor's template for one text: the special
/// token it puts first and last (`None` for an end that is the text itself); `None` for no
/// such post-processor.
type Ends<'a> = (Option<&'a str>, Option<&'a str>);

fn template_ends(post: &Json) -> Option<Ends<'_>> {
    let template = match post["type"].as_str()? {
        "TemplateProcessing" => post,
        "Sequence" => post["processors"]
            .as_array()?
            .iter()
            .find(|p| p["type"] == "TemplateProcessing")?,
        _ => return None,
    };
    let single = template["single"].as_array()?;
    fn special(item: Option<&Json>) -> Option<&str> {
        item.and_then(|i| i["SpecialToken"]["id"].as_str())
    }
    Some((special(single.first()), special(single.last())))
}

/// The chat template: `chat_template` in tokenizer_config.json (a string, or a list of named
/// templates, of which the `default` one), else the newer `chat_template.jinja` file.
fn chat_template(files: &Files, config: &Json) -> Result<Option<String>, ConvertError> {
    match &config["chat_template"] {
        Json::String(t) => return Ok(Some(t.clone())),
        Json::Array(list) => {
            let named = |n: &str| list.iter().find(|t| t["name"] == n);
            if let Some(t) = named("default").or(list.first()) {
                return Ok(t["template"].as_str().map(str::to_string));
            }
        }
        _ => {}
    }
    files.text("chat_template.jinja")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizers_map_onto_llama_cpp_names() {
        let bl = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": regex});
        assert_eq!(pre_tokenizer(&bl(true)), Ok("gpt-2"));
        let smol = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, bl(true)]});
        assert_eq!(pre_tokenizer(&smol), Ok("smollm"));
        let llama3 = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            bl(false)]});
        assert_eq!(pre_tokenizer(&llama3), Ok("llama-bpe"));
        let qwen = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
            bl(false)]});
        assert_eq!(pre_tokenizer(&qwen), Ok("qwen2"));
        for (name, pattern) in SPLIT_PRE_TOKENIZERS {
            let seq = json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
                bl(false)]});
            assert_eq!(pre_tokenizer(&seq), Ok(*name));
        }
        // Another pattern (digits in threes but no final `\s+`): refused, the pattern named.
        let other = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT.trim_end_matches(r"|\s+")},
             "behavior": "Isolated", "invert": false},
            bl(false)]});
        let err = pre_tokenizer(&other).unwrap_err();
        assert!(err.contains(r#"Split "(?i:'s"#), "{err}");
        assert!(pre_tokenizer(&json!({"type": "Metaspace"})).is_err());
        assert!(pre_tokenizer(&Json::Null)
            .unwrap_err()
            .contains("no pre_tokenizer"));
    }

    #[test]
    fn added_tokens_are_control_tokens_when_special_or_looking_special() {
        assert_eq!(added_token("<tool>", true), ("<tool>".into(), CONTROL));
        for text in [
            "<unused7>",
            "<|im_start|>",
            "<mask>",
            "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
        ] {
            assert_eq!(added_token(text, false), (text.into(), CONTROL), "{text}");
        }
        // Gemma's runs of spaces, stored with SentencePiece's `▁`.
        let spaces = "\u{2581}\u{2581}";
        assert_eq!(added_token(spaces, false), ("  ".into(), USER_DEFINED));
        assert_eq!(added_token("\n\n", false), ("\n\n".into(), USER_DEFINED));
    }

    #[test]
    fn a_post_processor_template_says_whether_bos_and_eos_are_added() {
        // Llama 3's: BOS, then the text.
        let llama3 = json!({"type": "Sequence", "processors": [
            {"type": "ByteLevel"},
            {"type": "TemplateProcessing", "single": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}]}]});
        assert_eq!(
            template_ends(&llama3),
            Some((Some("<|begin_of_text|>"), None))
        );
        let both = json!({"type": "TemplateProcessing", "single": [
            {"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "</s>"}}]});
        assert_eq!(template_ends(&both), Some((Some("<s>"), Some("</s>"))));
        // A template that adds nothing says no BOS (not llama.cpp's default for the type).
        let none = json!({"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A"}}]});
        assert_eq!(template_ends(&none), Some((None, None)));
        assert_eq!(template_ends(&json!({"type": "ByteLevel"})), None);
        assert_eq!(template_ends(&Json::Null), None);
    }
}
