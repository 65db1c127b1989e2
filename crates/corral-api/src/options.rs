//! Typed request options (Ollama's `options` object and Modelfile `PARAMETER`s).
//!
//! Every field is optional so that layers can be merged: built-in defaults, then the model's
//! parameters, then the request's options. Type errors are reported as Ollama reports them
//! (`option "temperature" must be of type float`); unknown names are returned to the caller so
//! it can warn about them, as Ollama does, instead of failing the request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A problem with one option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionError {
    #[error("option \"{name}\" must be of type {expected}")]
    WrongType {
        name: String,
        expected: &'static str,
    },
    #[error("option \"{name}\" {limit}, got {value}")]
    OutOfRange {
        name: String,
        limit: &'static str,
        value: String,
    },
}

/// The type an option's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Bool,
    String,
    StringList,
}

/// Every option Corral knows, with its type.
pub const KNOWN: &[(&str, Kind)] = &[
    ("num_keep", Kind::Int),
    ("seed", Kind::Int),
    ("num_predict", Kind::Int),
    ("top_k", Kind::Int),
    ("top_p", Kind::Float),
    ("min_p", Kind::Float),
    ("typical_p", Kind::Float),
    ("repeat_last_n", Kind::Int),
    ("temperature", Kind::Float),
    ("repeat_penalty", Kind::Float),
    ("presence_penalty", Kind::Float),
    ("frequency_penalty", Kind::Float),
    ("stop", Kind::StringList),
    ("num_ctx", Kind::Int),
    ("num_batch", Kind::Int),
    ("num_gpu", Kind::Int),
    ("main_gpu", Kind::Int),
    ("use_mmap", Kind::Bool),
    ("num_thread", Kind::Int),
    // Beyond Ollama: a model's own number of slots (requests decoded together).
    ("num_parallel", Kind::Int),
    // Beyond Ollama: a model's own KV cache type (`f16`, `q8_0`, `q4_0`).
    ("kv_cache_type", Kind::String),
    // Beyond anything the others have: a model's own RPC workers (`host:port,...`), in
    // place of the server's CORRAL_RPC_SERVERS. A Modelfile's only: see `REQUEST_REFUSED`.
    ("rpc_servers", Kind::String),
    // Speculative decoding: tokens a DRAFT model proposes per step (Ollama's name), and
    // beyond Ollama, tokens proposed by looking the last n-gram up in the prompt and answer
    // (Hugging Face transformers' name; 0 = off).
    ("draft_num_predict", Kind::Int),
    ("prompt_lookup_num_tokens", Kind::Int),
];

/// Options a model's Modelfile may set but a request may not: `rpc_servers` would let any
/// client that reaches the API send the model's weights and its prompts' activations to a
/// machine of its choosing.
pub const REQUEST_REFUSED: &[&str] = &["rpc_servers"];

/// Split a list of RPC workers (`CORRAL_RPC_SERVERS`, `PARAMETER rpc_servers`):
/// comma-separated `host:port`, blanks skipped, repeats dropped. The error names the entry
/// that is not an address.
pub fn parse_rpc_servers(list: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ok = part
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!("{part:?} is not host:port (port 1-65535)"));
        }
        if !out.iter().any(|e| e == part) {
            out.push(part.to_string());
        }
    }
    Ok(out)
}

/// Look up an option's type by its exact (case-sensitive) name.
pub fn kind_of(name: &str) -> Option<Kind> {
    KNOWN.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// Request options; `None` means "not set at this layer".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_keep: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typical_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_last_n: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_batch: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_gpu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_gpu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_mmap: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_thread: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_parallel: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_servers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft_num_predict: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_lookup_num_tokens: Option<i64>,
}

/// Defaults, as Ollama's `DefaultOptions` (context 4096, as current Ollama).
/// Parameters Ollama has dropped: Modelfiles and `/api/create` that name them get a warning and
/// the parameter is ignored, as Ollama does, instead of an error.
pub const DEPRECATED: &[&str] = &[
    "penalize_newline",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "tfs_z",
];

pub const DEFAULT_NUM_CTX: i64 = 4096;
/// Most slots one model may have (each holds a context of its own in memory).
pub const MAX_NUM_PARALLEL: i64 = 64;
pub const DEFAULT_NUM_BATCH: i64 = 512;
/// Most tokens speculation may propose in one step (each costs a place in the batch).
pub const MAX_SPECULATED: i64 = 32;
/// Tokens a DRAFT model proposes per step when `draft_num_predict` is not set.
pub const DEFAULT_DRAFT_NUM_PREDICT: i64 = 4;
pub const DEFAULT_NUM_KEEP: i64 = 4;
pub const DEFAULT_TEMPERATURE: f64 = 0.8;
pub const DEFAULT_TOP_K: i64 = 40;
pub const DEFAULT_TOP_P: f64 = 0.9;
pub const DEFAULT_REPEAT_LAST_N: i64 = 64;
pub const DEFAULT_REPEAT_PENALTY: f64 = 1.1;

impl Options {
    /// Parse a JSON options map. Returns the options and the names that were not recognised.
    pub fn from_map(map: &BTreeMap<String, Value>) -> Result<(Self, Vec<String>), OptionError> {
        let mut opts = Options::default();
        let mut unknown = Vec::new();
        for (name, value) in map {
            if value.is_null() {
                continue;
            }
            if !opts.set(name, value)? {
                unknown.push(name.clone());
            }
        }
        opts.validate()?;
        Ok((opts, unknown))
    }

    /// Set one option from JSON. Returns `Ok(false)` for a name Corral does not know.
    pub fn set(&mut self, name: &str, value: &Value) -> Result<bool, OptionError> {
        let Some(kind) = kind_of(name) else {
            return Ok(false);
        };
        let wrong = |expected| OptionError::WrongType {
            name: name.to_string(),
            expected,
        };
        match kind {
            Kind::Int => {
                // JSON has one number type: accept 2.0 for an integer, as Ollama does.
                let v = match value {
                    Value::Number(n) => n
                        .as_i64()
                        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                        .ok_or_else(|| wrong("integer"))?,
                    _ => return Err(wrong("integer")),
                };
                let slot = match name {
                    "num_keep" => &mut self.num_keep,
                    "seed" => &mut self.seed,
                    "num_predict" => &mut self.num_predict,
                    "top_k" => &mut self.top_k,
                    "repeat_last_n" => &mut self.repeat_last_n,
                    "num_ctx" => &mut self.num_ctx,
                    "num_batch" => &mut self.num_batch,
                    "num_gpu" => &mut self.num_gpu,
                    "main_gpu" => &mut self.main_gpu,
                    "num_thread" => &mut self.num_thread,
                    "num_parallel" => &mut self.num_parallel,
                    "draft_num_predict" => &mut self.draft_num_predict,
                    "prompt_lookup_num_tokens" => &mut self.prompt_lookup_num_tokens,
                    _ => unreachable!("KNOWN lists {name} as an integer"),
                };
                *slot = Some(v);
            }
            Kind::Float => {
                let v = value.as_f64().ok_or_else(|| wrong("float"))?;
                let slot = match name {
                    "top_p" => &mut self.top_p,
                    "min_p" => &mut self.min_p,
                    "typical_p" => &mut self.typical_p,
                    "temperature" => &mut self.temperature,
                    "repeat_penalty" => &mut self.repeat_penalty,
                    "presence_penalty" => &mut self.presence_penalty,
                    "frequency_penalty" => &mut self.frequency_penalty,
                    _ => unreachable!("KNOWN lists {name} as a float"),
                };
                *slot = Some(v);
            }
            Kind::Bool => {
                let v = value.as_bool().ok_or_else(|| wrong("boolean"))?;
                self.use_mmap = Some(v);
            }
            Kind::String => {
                let v = Some(value.as_str().ok_or_else(|| wrong("string"))?.to_string());
                match name {
                    "kv_cache_type" => self.kv_cache_type = v,
                    "rpc_servers" => self.rpc_servers = v,
                    _ => unreachable!("KNOWN lists {name} as a string"),
                }
            }
            Kind::StringList => {
                // A single string is accepted for `stop` as a one-element list.
                let list = match value {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| wrong("array of strings"))?,
                    _ => return Err(wrong("array of strings")),
                };
                self.stop = Some(list);
            }
        }
        Ok(true)
    }

    /// Check every set value against its limits.
    pub fn validate(&self) -> Result<(), OptionError> {
        // A huge value is written as Rust's Debug writes it, `1e308`, not as its 309 digits.
        fn check<T: PartialOrd + ToString + std::fmt::Debug + Copy>(
            name: &str,
            v: Option<T>,
            ok: impl Fn(T) -> bool,
            limit: &'static str,
        ) -> Result<(), OptionError> {
            match v {
                Some(x) if !ok(x) => Err(OptionError::OutOfRange {
                    name: name.to_string(),
                    limit,
                    value: Some(x.to_string())
                        .filter(|v| v.len() <= 24)
                        .unwrap_or_else(|| format!("{x:?}")),
                }),
                _ => Ok(()),
            }
        }
        check(
            "temperature",
            self.temperature,
            |t| (0.0..=100.0).contains(&t),
            "must be >= 0 and <= 100",
        )?;
        check(
            "top_p",
            self.top_p,
            |p| p > 0.0 && p <= 1.0,
            "must be > 0.0 and <= 1.0",
        )?;
        check(
            "min_p",
            self.min_p,
            |p| (0.0..=1.0).contains(&p),
            "must be >= 0.0 and <= 1.0",
        )?;
        check(
            "typical_p",
            self.typical_p,
            |p| p > 0.0 && p <= 1.0,
            "must be > 0.0 and <= 1.0",
        )?;
        check("top_k", self.top_k, |k| k >= 0, "must be >= 0")?;
        check(
            "num_ctx",
            self.num_ctx,
            |n| (1..=1 << 20).contains(&n),
            "must be >= 1 and <= 1048576",
        )?;
        check(
            "num_batch",
            self.num_batch,
            |n| (1..=1 << 16).contains(&n),
            "must be >= 1 and <= 65536",
        )?;
        check(
            "num_predict",
            self.num_predict,
            |n| n >= -2,
            "must be >= -2",
        )?;
        check("num_keep", self.num_keep, |n| n >= -1, "must be >= -1")?;
        check(
            "repeat_last_n",
            self.repeat_last_n,
            |n| n >= -1,
            "must be >= -1",
        )?;
        check(
            "repeat_penalty",
            self.repeat_penalty,
            |p| p >= 0.0,
            "must be >= 0",
        )?;
        check(
            "num_thread",
            self.num_thread,
            |n| (0..=1024).contains(&n),
            "must be >= 0 and <= 1024",
        )?;
        check("num_gpu", self.num_gpu, |n| n >= -1, "must be >= -1")?;
        check("main_gpu", self.main_gpu, |n| n >= 0, "must be >= 0")?;
        check(
            "num_parallel",
            self.num_parallel,
            |n| (1..=MAX_NUM_PARALLEL).contains(&n),
            "must be >= 1 and <= 64",
        )?;
        for (name, v) in [
            ("draft_num_predict", self.draft_num_predict),
            ("prompt_lookup_num_tokens", self.prompt_lookup_num_tokens),
        ] {
            check(
                name,
                v,
                |n| (0..=MAX_SPECULATED).contains(&n),
                "must be >= 0 and <= 32",
            )?;
        }
        if let Some(list) = &self.rpc_servers {
            if let Err(e) = parse_rpc_servers(list) {
                return Err(OptionError::OutOfRange {
                    name: "rpc_servers".into(),
                    limit: "must be host:port entries separated by commas",
                    value: format!("\"{list}\" ({e})"),
                });
            }
        }
        if let Some(t) = &self.kv_cache_type {
            if t.parse::<crate::cache::KvCacheType>().is_err() {
                return Err(OptionError::OutOfRange {
                    name: "kv_cache_type".into(),
                    limit: "must be one of \"f16\", \"q8_0\" or \"q4_0\"",
                    value: format!("\"{t}\""),
                });
            }
        }
        Ok(())
    }

    /// Values from `over` replace ours where `over` sets them.
    pub fn merged(&self, over: &Options) -> Options {
        macro_rules! pick {
            ($($f:ident),*) => { Options { $($f: over.$f.clone().or_else(|| self.$f.clone())),* } };
        }
        pick!(
            num_keep,
            seed,
            num_predict,
            top_k,
            top_p,
            min_p,
            typical_p,
            repeat_last_n,
            temperature,
            repeat_penalty,
            presence_penalty,
            frequency_penalty,
            stop,
            num_ctx,
            num_batch,
            num_gpu,
            main_gpu,
            use_mmap,
            num_thread,
            num_parallel,
            kv_cache_type,
            rpc_servers,
            draft_num_predict,
            prompt_lookup_num_tokens
        )
    }

    /// The set options as a JSON map (what a Modelfile's params layer stores).
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    /// The effective context length.
    pub fn num_ctx_or_default(&self) -> i64 {
        self.num_ctx.unwrap_or(DEFAULT_NUM_CTX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rpc_servers_are_checked_and_deduplicated() {
        assert_eq!(
            parse_rpc_servers(" 10.0.0.2:50052, host-b:1 ,,10.0.0.2:50052").unwrap(),
            vec!["10.0.0.2:50052".to_string(), "host-b:1".to_string()]
        );
        assert_eq!(parse_rpc_servers("").unwrap(), Vec::<String>::new());
        for bad in ["10.0.0.2", ":50052", "h:0", "h:70000", "h:port"] {
            let e = parse_rpc_servers(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let e = Options::from_map(&[("rpc_servers".to_string(), json!("h:1,h"))].into())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rpc_servers") && e.contains("\"h\" is not host:port"),
            "{e}"
        );
    }

    fn parse(v: Value) -> Result<(Options, Vec<String>), OptionError> {
        let map: BTreeMap<String, Value> = serde_json::from_value(v).unwrap();
        Options::from_map(&map)
    }

    #[test]
    fn types_are_checked_by_name() {
        let cases = [
            (
                json!({"temperature": "hot"}),
                "option \"temperature\" must be of type float",
            ),
            (
                json!({"num_ctx": 1.5}),
                "option \"num_ctx\" must be of type integer",
            ),
            (
                json!({"use_mmap": 1}),
                "option \"use_mmap\" must be of type boolean",
            ),
            (
                json!({"stop": [1]}),
                "option \"stop\" must be of type array of strings",
            ),
            (
                json!({"top_p": 0.0}),
                "option \"top_p\" must be > 0.0 and <= 1.0, got 0",
            ),
            (
                json!({"num_ctx": 0}),
                "option \"num_ctx\" must be >= 1 and <= 1048576, got 0",
            ),
            (
                json!({"num_parallel": 0}),
                "option \"num_parallel\" must be >= 1 and <= 64, got 0",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input.clone()).unwrap_err().to_string(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn values_parse_and_unknown_names_are_reported() {
        let (o, unknown) =
            parse(json!({"temperature": 0, "num_ctx": 2048.0, "stop": "x", "Temperature": 1}))
                .unwrap();
        assert_eq!(o.temperature, Some(0.0));
        assert_eq!(o.num_ctx, Some(2048));
        assert_eq!(o.stop, Some(vec!["x".to_string()]));
        assert_eq!(unknown, vec!["Temperature".to_string()]);
    }

    #[test]
    fn merge_prefers_the_upper_layer() {
        let base = Options {
            temperature: Some(0.5),
            num_ctx: Some(100),
            ..Default::default()
        };
        let over = Options {
            temperature: Some(0.1),
            ..Default::default()
        };
        let m = base.merged(&over);
        assert_eq!((m.temperature, m.num_ctx), (Some(0.1), Some(100)));
    }
}
