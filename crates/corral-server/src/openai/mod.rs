//! OpenAI-compatible `/v1/*`. Each request is mapped onto the native request and handled by
//! the native handler (one inference path), and the native answer is mapped back: NDJSON
//! lines become server-sent `chat.completion.chunk` events ending with `data: [DONE]`, errors
//! become `{"error": {"message", "type", "param", "code"}}`.
//!
//! One file per route family: `chat` (`/v1/chat/completions`), `completions`
//! (`/v1/completions`), `embeddings` (`/v1/embeddings`), `models` (`/v1/models`),
//! `responses` (`/v1/responses`); this one
//! holds what they share (errors, ids, sampling fields, usage, the SSE stream).
//!
//! Field mapping follows Ollama's: `max_tokens`/`max_completion_tokens` -> `num_predict`,
//! `stop` string or list, `seed`, `temperature` and `top_p` (1.0 when absent, OpenAI's
//! defaults), `frequency_penalty`, `presence_penalty`, `response_format` -> `format`,
//! `tools`. Beyond Ollama, an `options` object carries any native option (`num_ctx`, ...).

mod chat;
mod choices;
mod completions;
mod embeddings;
mod models;
mod responses;

pub use chat::chat_completions;
pub use completions::completions;
pub use embeddings::embeddings;
pub use models::{model, models};
pub use responses::responses;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{embed, inference, AppState};

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    crate::error::openai_error(status, message)
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// A 400 found while mapping a request; answered in OpenAI's shape.
#[derive(Debug)]
struct Invalid(String);

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        bad(self.0)
    }
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// Parse a body, answering malformed JSON in OpenAI's shape.
/// A reasoning effort as the native `think`: `none` is off, a level is that level (which the
/// template sees); anything else is refused in Ollama's words.
fn think_from_effort(effort: Option<&str>) -> Result<Option<Value>, Invalid> {
    match effort {
        None => Ok(None),
        Some("none") => Ok(Some(Value::Bool(false))),
        Some(level @ ("low" | "medium" | "high")) => Ok(Some(Value::String(level.into()))),
        Some(other) => Err(invalid(format!(
            "invalid reasoning value: '{other}' (must be \"high\", \"medium\", \"low\", or \"none\")"
        ))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Invalid> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("missing request body"));
    }
    if crate::json::is_array(body) {
        return Err(invalid(crate::json::ARRAY_BODY));
    }
    crate::json::from_body(body).map_err(|e| invalid(format!("invalid request body: {e}")))
}

/// A native error answer (`{"error": "..."}` with its status) in OpenAI's shape.
async fn from_native_error(resp: Response) -> Response {
    let (status, message) = crate::error::native_error(resp).await;
    error(status, message)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", unique_hex())
}

/// A hex string no other call in this process returns (the clock and a counter mixed): the
/// random-looking part of response, message and call ids, which only need to be unique.
pub(crate) fn unique_hex() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let t = chrono::Utc::now().timestamp_micros() as u64;
    format!("{:x}", t.wrapping_mul(31).wrapping_add(n))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Sampling fields shared by chat and completions.
#[derive(Debug, Default, Deserialize)]
struct Sampling {
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    stop: Option<Value>,
    /// Choices per request (Ollama silently answers one): see `choices`.
    n: Option<i64>,
    /// Token biases (Ollama silently drops them): the native `logit_bias` extension.
    logit_bias: Option<Value>,
    /// Native options (a Corral extension): `num_ctx`, `top_k`, ...
    options: Option<BTreeMap<String, Value>>,
}

impl Sampling {
    /// The native options map: the `options` extension, then the OpenAI fields over it.
    fn options(&self) -> Result<BTreeMap<String, Value>, Invalid> {
        let mut o = self.options.clone().unwrap_or_default();
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                o.insert(k.to_string(), v);
            }
        };
        set(
            "num_predict",
            self.max_completion_tokens
                .or(self.max_tokens)
                .map(Value::from),
        );
        set("seed", self.seed.map(Value::from));
        set("frequency_penalty", self.frequency_penalty.map(Value::from));
        set("presence_penalty", self.presence_penalty.map(Value::from));
        set("temperature", self.temperature.map(Value::from));
        set("top_p", self.top_p.map(Value::from));
        match &self.stop {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                o.insert("stop".into(), json!([s]));
            }
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                o.insert("stop".into(), Value::Array(a.clone()));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "invalid stop: {other}; expected a string or a list of strings"
                )))
            }
        }
        // OpenAI's defaults, where neither field nor option says otherwise.
        o.entry("temperature".into()).or_insert(json!(1.0));
        o.entry("top_p".into()).or_insert(json!(1.0));
        Ok(o)
    }
}

fn finish_reason(done_reason: Option<&str>, tool_calls: bool) -> &'static str {
    match done_reason {
        _ if tool_calls => "tool_calls",
        Some("length") => "length",
        _ => "stop",
    }
}

/// OpenAI's usage: the whole prompt, with the part reused from the cache named apart.
fn usage(v: &Value) -> Value {
    let cached = v["prompt_cached_count"].as_u64().unwrap_or(0);
    let p = v["prompt_eval_count"].as_u64().unwrap_or(0);
    let c = v["eval_count"].as_u64().unwrap_or(0);
    json!({
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// The stream chunk carrying `choice`, followed after the last choice's end by the usage
/// chunk (no choices) when `stream_options.include_usage` asked for it (`tally`).
fn with_usage(
    base: impl Fn(Value) -> Value,
    choice: Value,
    v: &Value,
    tally: Option<&mut choices::Tally>,
) -> Vec<Value> {
    let mut out = vec![base(json!([choice]))];
    if let Some(u) = tally.and_then(|t| t.add(v)) {
        let mut chunk = base(json!([]));
        chunk["usage"] = u;
        out.push(chunk);
    }
    out
}

/// A native `"stream": false` answer as JSON.
async fn whole_answer(resp: Response) -> Value {
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or_default()
}

/// Native answer objects as OpenAI's SSE events (`chunk` makes each object's), an error line
/// as an error event, ending with `[DONE]`.
fn sse_from(
    native: Body,
    mut chunk: impl FnMut(&Value) -> Vec<Value> + Send + 'static,
) -> Response {
    crate::sse::from_ndjson(native, move |v| {
        let Some(v) = v else {
            return vec![Event::default().data("[DONE]")];
        };
        let events = match v.get("error").and_then(Value::as_str) {
            Some(e) => vec![
                json!({"error": {"message": e, "type": "api_error", "param": null, "code": null}}),
            ],
            None => chunk(v),
        };
        events
            .into_iter()
            .map(|e| Event::default().data(e.to_string()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_fields_map_to_native_options() {
        let s: Sampling = serde_json::from_value(json!({
            "max_tokens": 5, "seed": 7, "stop": "END", "frequency_penalty": 0.5,
            "options": {"num_ctx": 2048, "temperature": 0.2}
        }))
        .unwrap();
        let o = s.options().unwrap();
        assert_eq!(o["num_predict"], 5);
        assert_eq!(o["seed"], 7);
        assert_eq!(o["stop"], json!(["END"]));
        assert_eq!(o["frequency_penalty"], 0.5);
        assert_eq!(o["num_ctx"], 2048);
        assert_eq!(o["temperature"], 0.2, "an option given natively stays");
        assert_eq!(o["top_p"], 1.0, "OpenAI's default");
        let s: Sampling = serde_json::from_value(json!({"max_tokens": 5, "max_completion_tokens": 9, "temperature": 0, "stop": ["a", "b"]})).unwrap();
        let o = s.options().unwrap();
        assert_eq!(
            (
                o["num_predict"].clone(),
                o["temperature"].clone(),
                o["stop"].clone()
            ),
            (json!(9), json!(0.0), json!(["a", "b"]))
        );
        let s: Sampling = serde_json::from_value(json!({"stop": 5})).unwrap();
        assert!(s.options().is_err());
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("stop"), false), "stop");
        assert_eq!(finish_reason(Some("length"), false), "length");
        assert_eq!(finish_reason(Some("stop"), true), "tool_calls");
    }
}
