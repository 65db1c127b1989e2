//! OpenAI-compatible `/v1/*`. Each request is mapped onto the native request and handled by
//! the native handler (one inference path), and the native answer is mapped back: NDJSON
//! lines become server-sent `chat.completion.chunk` events ending with `data: [DONE]`, errors
//! become `{"error": {"message", "type", "param", "code"}}`.
//!
//! Field mapping follows Ollama's: `max_tokens`/`max_completion_tokens` -> `num_predict`,
//! `stop` string or list, `seed`, `temperature` and `top_p` (1.0 when absent, OpenAI's
//! defaults), `frequency_penalty`, `presence_penalty`, `response_format` -> `format`,
//! `tools`. Beyond Ollama, an `options` object carries any native option (`num_ctx`, ...).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;

use crate::json::JsonBody;
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
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Invalid> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("invalid request body: {e}")))
}

/// A native error answer (`{"error": "..."}` with its status) in OpenAI's shape.
async fn from_native_error(resp: Response) -> Response {
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    error(status, message)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn new_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let t = chrono::Utc::now().timestamp_micros() as u64;
    format!("{prefix}-{:x}", t.wrapping_mul(31).wrapping_add(n))
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
    let p = v["prompt_eval_count"].as_u64().unwrap_or(0) + cached;
    let c = v["eval_count"].as_u64().unwrap_or(0);
    json!({
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// The stream chunk carrying `choice`, followed after the last one by the usage chunk (no
/// choices) when `stream_options.include_usage` asked for it.
fn with_usage(
    base: impl Fn(Value) -> Value,
    choice: Value,
    v: &Value,
    include_usage: bool,
) -> Vec<Value> {
    let mut out = vec![base(json!([choice]))];
    if include_usage && v["done"].as_bool().unwrap_or(false) {
        let mut u = base(json!([]));
        u["usage"] = usage(v);
        out.push(u);
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

/// Turn native answer objects into SSE events on a channel, ending with `[DONE]`. Each event
/// waits for room in the channel (a slow client slows the answer; nothing is dropped); if the
/// client goes away, the native body is dropped, which cancels the request in the runner.
fn sse_from(
    native: Body,
    mut chunk: impl FnMut(&Value) -> Vec<Value> + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let mut stream = native.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(Ok(bytes)) = stream.next().await {
            buf.extend_from_slice(&bytes);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let events = match v.get("error").and_then(Value::as_str) {
                    Some(e) => vec![
                        json!({"error": {"message": e, "type": "api_error", "param": null, "code": null}}),
                    ],
                    None => chunk(&v),
                };
                for e in events {
                    if tx
                        .send(Ok(Event::default().data(e.to_string())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(rx)).into_response()
}

// ---------------------------------------------------------------------------------------
// /v1/chat/completions

#[derive(Debug, Deserialize)]
struct ChatCompletionRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<OaMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
    /// `low`/`medium`/`high` turn thinking on, `none` off.
    #[serde(default)]
    reasoning_effort: Option<String>,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Debug, Deserialize)]
struct OaMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Message content: a string, or a list of parts of which only text is supported.
fn content_text(c: &Option<Value>) -> Result<String, Invalid> {
    match c {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match p["type"].as_str() {
                    Some("text") => out.push_str(p["text"].as_str().unwrap_or_default()),
                    Some(other) => {
                        return Err(invalid(format!(
                            "content part type '{other}' is not supported"
                        )))
                    }
                    None => return Err(invalid("invalid content part: no type")),
                }
            }
            Ok(out)
        }
        Some(other) => Err(invalid(format!("invalid message content: {other}"))),
    }
}

/// `response_format` as a native `format`.
fn format_from(rf: &Option<Value>) -> Result<Option<Value>, Invalid> {
    let Some(rf) = rf.as_ref().filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match rf["type"].as_str() {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!("json"))),
        Some("json_schema") => match rf["json_schema"].get("schema") {
            Some(s @ Value::Object(_)) => Ok(Some(s.clone())),
            _ => Err(invalid(
                "response_format json_schema needs a json_schema.schema object",
            )),
        },
        _ => Err(invalid(format!("invalid response_format: {rf}"))),
    }
}

/// OpenAI messages as native ones: content parts joined, tool calls with parsed arguments,
/// tool results named after the call they answer.
fn native_messages(msgs: &[OaMessage]) -> Result<Vec<corral_api::Message>, Invalid> {
    let mut out = Vec::new();
    let mut call_names: BTreeMap<String, String> = BTreeMap::new();
    for m in msgs {
        let mut n = corral_api::Message::new(m.role.clone(), content_text(&m.content)?);
        if let Some(calls) = &m.tool_calls {
            let mut native = Vec::new();
            for c in calls {
                let name = c["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let args = match &c["function"]["arguments"] {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    other => other.clone(),
                };
                if let Some(id) = c["id"].as_str() {
                    call_names.insert(id.to_string(), name.clone());
                }
                native.push(json!({"id": c["id"], "function": {"name": name, "arguments": args}}));
            }
            n.tool_calls = Some(native);
        }
        if m.role == "tool" {
            n.tool_call_id = m.tool_call_id.clone();
            n.tool_name = m.name.clone().or_else(|| {
                m.tool_call_id
                    .as_ref()
                    .and_then(|id| call_names.get(id).cloned())
            });
        }
        out.push(n);
    }
    Ok(out)
}

/// Native tool calls (`{"function": {"name", "arguments": {...}}}`) in OpenAI's shape.
fn openai_tool_calls(calls: &Value, with_index: bool) -> Vec<Value> {
    calls
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let mut v = json!({
                "id": c.get("id").and_then(Value::as_str).map_or_else(|| new_id("call"), str::to_string),
                "type": "function",
                "function": {
                    "name": c["function"]["name"],
                    "arguments": c["function"]["arguments"].to_string(),
                },
            });
            if with_index {
                v["index"] = json!(i);
            }
            v
        })
        .collect()
}

pub async fn chat_completions(State(st): State<AppState>, body: Bytes) -> Response {
    let req: ChatCompletionRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.messages.is_empty() {
        return bad("messages is required");
    }
    let build = || -> Result<corral_api::ChatRequest, Invalid> {
        Ok(corral_api::ChatRequest {
            model: req.model.clone(),
            messages: native_messages(&req.messages)?,
            stream: Some(req.stream),
            format: format_from(&req.response_format)?,
            options: Some(req.sampling.options()?),
            keep_alive: req.keep_alive.clone(),
            tools: req.tools.clone(),
            tool_choice: req.tool_choice.clone(),
            think: req
                .reasoning_effort
                .as_deref()
                .map(|e| Value::Bool(e != "none")),
        })
    };
    let native = match build() {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let resp = inference::chat(State(st), JsonBody(native)).await;
    if !resp.status().is_success() {
        return from_native_error(resp).await;
    }
    let id = new_id("chatcmpl");
    let created = now();
    if !req.stream {
        let v = whole_answer(resp).await;
        let calls = openai_tool_calls(&v["message"]["tool_calls"], false);
        let mut message = json!({"role": "assistant", "content": v["message"]["content"]});
        if let Some(t) = v["message"]["thinking"].as_str() {
            message["reasoning"] = json!(t);
        }
        if !calls.is_empty() {
            message["tool_calls"] = json!(calls);
        }
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": v["model"],
            "system_fingerprint": "fp_corral",
            "choices": [{
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(v["done_reason"].as_str(), !calls.is_empty()),
            }],
            "usage": usage(&v),
        }))
        .into_response();
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let mut saw_calls = false;
    sse_from(resp.into_body(), move |v| {
        let base = |choices: Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": v["model"], "system_fingerprint": "fp_corral", "choices": choices,
            })
        };
        let mut delta = json!({"role": "assistant", "content": v["message"]["content"]});
        if let Some(t) = v["message"]["thinking"].as_str() {
            delta["reasoning"] = json!(t);
        }
        let calls = openai_tool_calls(&v["message"]["tool_calls"], true);
        if !calls.is_empty() {
            saw_calls = true;
            delta["tool_calls"] = json!(calls);
        }
        let done = v["done"].as_bool().unwrap_or(false);
        let finish = done.then(|| finish_reason(v["done_reason"].as_str(), saw_calls));
        with_usage(
            base,
            json!({"index": 0, "delta": delta, "finish_reason": finish}),
            v,
            include_usage,
        )
    })
}

// ---------------------------------------------------------------------------------------
// /v1/completions

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt: Value,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(flatten)]
    sampling: Sampling,
}

pub async fn completions(State(st): State<AppState>, body: Bytes) -> Response {
    let req: CompletionRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let prompt = match &req.prompt {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Value::Array(_) => {
            return bad("prompt must be a single string: batches of prompts are not supported")
        }
        Value::Null => return bad("prompt is required"),
        other => return bad(format!("invalid prompt: {other}")),
    };
    let options = match req.sampling.options() {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let native = corral_api::GenerateRequest {
        model: req.model.clone(),
        prompt,
        suffix: req.suffix.clone(),
        stream: Some(req.stream),
        options: Some(options),
        keep_alive: req.keep_alive.clone(),
        ..Default::default()
    };
    let resp = inference::generate(State(st), JsonBody(native)).await;
    if !resp.status().is_success() {
        return from_native_error(resp).await;
    }
    let id = new_id("cmpl");
    let created = now();
    if !req.stream {
        let v = whole_answer(resp).await;
        return Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": v["model"],
            "system_fingerprint": "fp_corral",
            "choices": [{"text": v["response"], "index": 0, "logprobs": null,
                         "finish_reason": finish_reason(v["done_reason"].as_str(), false)}],
            "usage": usage(&v),
        }))
        .into_response();
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    sse_from(resp.into_body(), move |v| {
        let base = |choices: Value| {
            json!({"id": id, "object": "text_completion", "created": created, "model": v["model"],
                   "system_fingerprint": "fp_corral", "choices": choices})
        };
        let done = v["done"].as_bool().unwrap_or(false);
        let finish = done.then(|| finish_reason(v["done_reason"].as_str(), false));
        with_usage(
            base,
            json!({"text": v["response"], "index": 0, "logprobs": null, "finish_reason": finish}),
            v,
            include_usage,
        )
    })
}

// ---------------------------------------------------------------------------------------
// /v1/embeddings

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    options: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

/// A vector as OpenAI's base64 encoding: little-endian f32 bytes.
fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn embeddings(State(st): State<AppState>, body: Bytes) -> Response {
    let req: EmbeddingRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad(format!(
                "invalid encoding_format '{other}': expected \"float\" or \"base64\""
            ))
        }
    };
    if req.dimensions == Some(0) {
        return bad("dimensions must be greater than 0");
    }
    let inputs = match &req.input {
        Value::Array(a) if a.iter().any(|i| !i.is_string()) => {
            return bad(
                "input must be a string or a list of strings: token arrays are not supported",
            )
        }
        Value::Null => return bad("input is required"),
        v => match embed::inputs(v) {
            Ok(i) => i,
            Err(e) => return bad(e.message),
        },
    };
    if inputs.is_empty() {
        return bad("input is required");
    }
    let result = embed::embed_raw(
        &st,
        &req.model,
        inputs,
        true,
        req.options.as_ref(),
        req.keep_alive.as_ref(),
    )
    .await;
    let (model, vectors, count, _) = match result {
        Ok(r) => r,
        Err(e) => return error(e.status, e.message),
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let v = embed::normalize(v, req.dimensions);
            let embedding = if base64 {
                json!(base64_f32(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// /v1/models

fn model_object(e: &corral_store::ModelEntry) -> Value {
    json!({"id": e.name.display_short(), "object": "model", "created": e.modified.timestamp(),
           "owned_by": e.name.namespace})
}

/// `GET /v1/models`: the manifests alone say all OpenAI lists.
pub async fn models(State(st): State<AppState>) -> Response {
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(list) => Json(json!({
            "object": "list",
            "data": list.iter().map(model_object).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /v1/models/{model}`: one manifest, found as names are everywhere (case-insensitively).
pub async fn model(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    let not_found = || error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    let Ok(want) = name.parse::<corral_store::Name>() else {
        return not_found();
    };
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.get(&want)).await {
        Ok(Ok(entry)) => Json(model_object(&entry)).into_response(),
        Ok(Err(corral_store::StoreError::NotFound(_))) => not_found(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
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
    fn response_formats() {
        assert_eq!(format_from(&None).unwrap(), None);
        assert_eq!(format_from(&Some(json!({"type": "text"}))).unwrap(), None);
        assert_eq!(
            format_from(&Some(json!({"type": "json_object"}))).unwrap(),
            Some(json!("json"))
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            format_from(&Some(
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
            ))
            .unwrap(),
            Some(schema)
        );
        assert!(format_from(&Some(json!({"type": "json_schema"}))).is_err());
        assert!(format_from(&Some(json!({"type": "xml"}))).is_err());
    }

    #[test]
    fn messages_and_tool_calls_map_both_ways() {
        let msgs: Vec<OaMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "in Paris?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}
        ]))
        .unwrap();
        let n = native_messages(&msgs).unwrap();
        assert_eq!(n[0].content, "weather in Paris?");
        assert_eq!(
            n[1].tool_calls.as_ref().unwrap()[0]["function"]["arguments"],
            json!({"city": "Paris"})
        );
        assert_eq!(n[2].tool_name.as_deref(), Some("get_weather"));
        assert_eq!(n[2].tool_call_id.as_deref(), Some("call_1"));

        let back = openai_tool_calls(
            &json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
            true,
        );
        assert_eq!(back[0]["type"], "function");
        assert_eq!(back[0]["index"], 0);
        assert_eq!(back[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert!(back[0]["id"].as_str().unwrap().starts_with("call-"));
        let image: Vec<OaMessage> = serde_json::from_value(json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])).unwrap();
        assert!(native_messages(&image).is_err());
    }

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        let s = base64_f32(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(bytes.len(), 8);
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), -2.5);
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("stop"), false), "stop");
        assert_eq!(finish_reason(Some("length"), false), "length");
        assert_eq!(finish_reason(Some("stop"), true), "tool_calls");
    }
}
