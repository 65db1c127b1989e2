//! Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`), as Ollama
//! 0.14 added it for Claude Code and other Anthropic clients. A request is mapped onto a
//! native chat and answered by the same code; the answer comes back as a `message` or as
//! Anthropic's stream events (`message_start`, `content_block_*`, `message_delta`,
//! `message_stop`, `ping`). Errors have Anthropic's shape.
//!
//! Mapping: `system` (a string or text blocks) -> a system message; text blocks -> content;
//! `tool_use` blocks -> tool calls, `tool_result` blocks -> `tool` messages named after the
//! call; `thinking` blocks -> the message's thinking; `max_tokens` -> `num_predict`,
//! `stop_sequences` -> `stop`, `temperature`, `top_p`, `top_k`; `tools` (`input_schema`) ->
//! function tools; `tool_choice` `auto`/`any`/`tool`/`none` -> `auto`/`required`/a named
//! function/`none`; `thinking.type` `enabled`/`disabled` and `output_config.effort` ->
//! `think` (`adaptive`, or a type newer than this code, leaves it to the model). `document`
//! blocks with text are text; images are refused; other blocks are skipped, as Ollama skips
//! them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::{anthropic_error, anthropic_error_body};
use crate::{inference, AppState};

mod request;

use request::*;

fn bad(message: impl Into<String>) -> Response {
    anthropic_error(StatusCode::BAD_REQUEST, message)
}

fn message_id() -> String {
    format!("msg_{}", crate::openai::unique_hex())
}

fn tool_use_id() -> String {
    format!("toolu_{}", crate::openai::unique_hex())
}

/// Anthropic's `stop_reason` and `stop_sequence` from the native final object. Only the
/// request's own `stop_sequences` count as such: a stop string from the model's Modelfile
/// ends the turn (`end_turn`), as the model's end-of-turn token would.
fn stop_of(v: &Value, tool_calls: bool, asked: &[String]) -> (&'static str, Value) {
    let sequence = v["stop_sequence"]
        .as_str()
        .filter(|s| asked.iter().any(|a| a == s));
    match v["done_reason"].as_str() {
        _ if tool_calls => ("tool_use", Value::Null),
        Some("length") => ("max_tokens", Value::Null),
        _ => match sequence {
            Some(s) => ("stop_sequence", json!(s)),
            None => ("end_turn", Value::Null),
        },
    }
}

/// Anthropic counts the cache apart: the prompt is `input_tokens` + `cache_read_input_tokens`.
fn usage(v: &Value) -> Value {
    let cached = v["prompt_cached_count"].as_u64().unwrap_or(0);
    let prompt = v["prompt_eval_count"].as_u64().unwrap_or(0);
    json!({
        "input_tokens": prompt.saturating_sub(cached),
        "output_tokens": v["eval_count"].as_u64().unwrap_or(0),
        "cache_read_input_tokens": cached,
    })
}

/// A native tool call as a `tool_use` block.
fn tool_use(call: &Value) -> Value {
    json!({
        "type": "tool_use",
        "id": call.get("id").and_then(Value::as_str).map_or_else(tool_use_id, str::to_string),
        "name": call["function"]["name"],
        "input": call["function"]["arguments"],
    })
}

/// Parse a body, answering malformed JSON in Anthropic's shape.
fn parse(body: &Bytes) -> Result<MessagesRequest, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("missing request body".into());
    }
    if crate::json::is_array(body) {
        return Err(crate::json::ARRAY_BODY.into());
    }
    crate::json::from_body(body).map_err(|e| format!("invalid request body: {e}"))
}

/// A native error answer in Anthropic's shape.
async fn from_native_error(resp: Response) -> Response {
    let (status, message) = crate::error::native_error(resp).await;
    anthropic_error(status, message)
}

/// `POST /v1/messages`.
pub async fn messages(State(st): State<AppState>, body: Bytes) -> Response {
    let req = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    if req.max_tokens.is_none() {
        return bad("max_tokens: Field required");
    }
    if let Err(e) = check_ranges(&req) {
        return bad(e);
    }
    if req.messages.is_empty() {
        return bad("messages: at least one message is required");
    }
    let native = match native_request(&req, req.stream) {
        Ok(n) => n,
        Err(e) => return bad(e),
    };
    let resp = inference::chat_at(st, native, "/v1/messages").await;
    if !resp.status().is_success() {
        return from_native_error(resp).await;
    }
    let id = message_id();
    let asked = req.stop_sequences.clone().unwrap_or_default();
    if !req.stream {
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let m = &v["message"];
        let mut content = Vec::new();
        if let Some(t) = m["thinking"].as_str().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
        }
        if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": t}));
        }
        let calls = m["tool_calls"].as_array().cloned().unwrap_or_default();
        content.extend(calls.iter().map(tool_use));
        let (reason, sequence) = stop_of(&v, !calls.is_empty(), &asked);
        return Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": v["model"],
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": usage(&v),
        }))
        .into_response();
    }
    let prompt_tokens = resp
        .extensions()
        .get::<inference::PromptTokens>()
        .map_or(0, |p| p.0);
    let mut stream = StreamState::new(id, req.model.clone(), prompt_tokens, asked);
    crate::sse::from_ndjson(resp.into_body(), move |v| stream.events(v))
}

/// Which content block a stream has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Thinking,
    Text,
}

/// Turns native answer objects into Anthropic's stream events.
struct StreamState {
    id: String,
    model: String,
    /// The prompt's tokens, for `message_start`'s usage (the final counts come at the end).
    prompt_tokens: u64,
    /// The request's `stop_sequences`.
    asked: Vec<String>,
    started: bool,
    open: Open,
    /// Index of the next content block.
    next: usize,
    tool_calls: bool,
    ended: bool,
}

fn event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

impl StreamState {
    fn new(id: String, model: String, prompt_tokens: u64, asked: Vec<String>) -> Self {
        StreamState {
            id,
            model,
            prompt_tokens,
            asked,
            started: false,
            open: Open::None,
            next: 0,
            tool_calls: false,
            ended: false,
        }
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if self.open != Open::None {
            out.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next - 1}),
            ));
            self.open = Open::None;
        }
    }

    /// Open a block of this kind unless it is the one open.
    fn open(&mut self, kind: Open, out: &mut Vec<Event>) {
        if self.open == kind {
            return;
        }
        self.close(out);
        let block = match kind {
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next, "content_block": block}),
        ));
        self.next += 1;
        self.open = kind;
    }

    fn events(&mut self, v: Option<&Value>) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
                }}),
            ));
            out.push(event("ping", json!({"type": "ping"})));
        }
        let Some(v) = v else {
            return out;
        };
        if self.ended {
            return out;
        }
        if let Some(e) = v["error"].as_str() {
            self.ended = true;
            out.push(event(
                "error",
                anthropic_error_body(StatusCode::INTERNAL_SERVER_ERROR, e),
            ));
            return out;
        }
        let m = &v["message"];
        if let Some(t) = m["thinking"].as_str().filter(|t| !t.is_empty()) {
            self.open(Open::Thinking, &mut out);
            out.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": self.next - 1,
                       "delta": {"type": "thinking_delta", "thinking": t}}),
            ));
        }
        if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
            self.open(Open::Text, &mut out);
            out.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": self.next - 1,
                       "delta": {"type": "text_delta", "text": t}}),
            ));
        }
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            self.close(&mut out);
            self.tool_calls = true;
            let mut block = tool_use(call);
            let input = block["input"].take();
            block["input"] = json!({});
            let index = self.next;
            self.next += 1;
            out.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": block}),
            ));
            out.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            ));
            out.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
        if v["done"].as_bool().unwrap_or(false) {
            self.ended = true;
            self.close(&mut out);
            let (reason, sequence) = stop_of(v, self.tool_calls, &self.asked);
            out.push(event(
                "message_delta",
                json!({"type": "message_delta",
                       "delta": {"stop_reason": reason, "stop_sequence": sequence},
                       "usage": usage(v)}),
            ));
            out.push(event("message_stop", json!({"type": "message_stop"})));
        }
        out
    }
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the model's template renders the
/// messages, system and tools.
pub async fn count_tokens(State(st): State<AppState>, body: Bytes) -> Response {
    let req = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    if req.messages.is_empty() {
        return bad("messages: at least one message is required");
    }
    // The tool choice is checked as /v1/messages checks it, and shapes the prompt the same
    // way (`none` leaves the tools out); counting forces no call.
    let native = match native_request(&req, false) {
        Ok(n) => n,
        Err(e) => return bad(e),
    };
    match inference::count_chat_tokens(&st, native).await {
        Ok(n) => Json(json!({"input_tokens": n})).into_response(),
        Err(e) => anthropic_error(e.status, e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_map_onto_native_messages() {
        let msgs: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "call the tool", "signature": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]}]}
        ]))
        .unwrap();
        let n =
            native_messages(&Some(json!([{"type": "text", "text": "Be brief."}])), &msgs).unwrap();
        assert_eq!(n[0].role, "system");
        assert_eq!(n[0].content, "Be brief.");
        assert_eq!(n[1].content, "Weather in Paris?");
        assert_eq!(n[2].thinking.as_deref(), Some("call the tool"));
        assert_eq!(
            n[2].tool_calls.as_ref().unwrap()[0]["function"]["arguments"],
            json!({"city": "Paris"})
        );
        assert_eq!(n[3].role, "tool");
        assert_eq!(n[3].content, "18C");
        assert_eq!(n[3].tool_name.as_deref(), Some("get_weather"));
        let image: Vec<InMessage> = serde_json::from_value(
            json!([{"role": "user", "content": [{"type": "image", "source": {}}]}]),
        )
        .unwrap();
        assert!(native_messages(&None, &image)
            .unwrap_err()
            .contains("missing data required for image input"));
    }

    #[test]
    fn a_conversation_of_skipped_blocks_is_refused() {
        for content in [json!([{"type": "bogus"}]), json!(""), json!([])] {
            let msgs: Vec<InMessage> =
                serde_json::from_value(json!([{"role": "user", "content": content}])).unwrap();
            let e = native_messages(&Some(json!("Be brief.")), &msgs).unwrap_err();
            assert!(
                e.starts_with("messages: nothing to answer"),
                "{content}: {e}"
            );
        }
    }

    #[test]
    fn documents_errors_and_unknown_blocks() {
        let msgs: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."}},
                {"type": "search_result", "source": "x", "title": "t", "content": []},
                {"type": "text", "text": "What colour is the sky?"}]},
            {"role": "assistant", "content": [
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "sky"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result", "title": "Sky", "url": "u"}]},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [{"type": "text", "text": "no eyes"}, {"type": "search_result"}]}]}
        ]))
        .unwrap();
        let n = native_messages(&None, &msgs).unwrap();
        assert_eq!(n[0].content, "The sky is green.\nWhat colour is the sky?");
        // The assistant's calls include the server tool's; its result follows them.
        let calls = n[1].tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(n[2].role, "tool");
        assert_eq!(n[2].tool_name.as_deref(), Some("web_search"));
        assert!(n[2].content.contains("web_search_result"));
        assert_eq!(n[3].content, "Error: no eyes");
        assert_eq!(n[3].tool_name.as_deref(), Some("look"));
        // Blocks in the wrong role, and unreadable documents, are errors that name them.
        let wrong: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
        ]))
        .unwrap();
        assert_eq!(
            native_messages(&None, &wrong).unwrap_err(),
            "messages.0: a tool_use block cannot be in a user message"
        );
        let pdf: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": ""}}]}
        ]))
        .unwrap();
        assert!(native_messages(&None, &pdf)
            .unwrap_err()
            .contains("document source type 'base64' is not supported"));
    }

    #[test]
    fn thinking_types_and_effort() {
        let think = |v: Value| {
            let mut r = v;
            r["messages"] = json!([]);
            think_of(&serde_json::from_value(r).unwrap())
        };
        assert_eq!(think(json!({})).unwrap(), None);
        assert_eq!(
            think(json!({"thinking": {"type": "adaptive"}})).unwrap(),
            None
        );
        assert_eq!(
            think(json!({"thinking": {"type": "enabled", "budget_tokens": 1024}})).unwrap(),
            Some(json!(true))
        );
        assert_eq!(
            think(json!({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}))
                .unwrap(),
            Some(json!(false))
        );
        assert_eq!(
            think(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}))
                .unwrap(),
            Some(json!("low"))
        );
        assert_eq!(
            think(json!({"output_config": {"effort": "max"}})).unwrap(),
            Some(json!("high"))
        );
        assert_eq!(
            think(json!({"thinking": {"type": "some-future-type"}})).unwrap(),
            None
        );
        assert!(think(json!({"output_config": {"effort": "lots"}}))
            .unwrap_err()
            .contains("'lots'"));
    }

    #[test]
    fn tool_choices_and_stop_reasons() {
        assert_eq!(
            native_tool_choice(&Some(json!({"type": "any"}))).unwrap(),
            Some(json!("required"))
        );
        assert_eq!(
            native_tool_choice(&Some(json!({"type": "tool", "name": "f"}))).unwrap(),
            Some(json!({"type": "function", "function": {"name": "f"}}))
        );
        assert!(native_tool_choice(&Some(json!({"type": "tool"}))).is_err());
        let done = |reason: &str| json!({"done_reason": reason});
        let none: &[String] = &[];
        assert_eq!(stop_of(&done("length"), false, none).0, "max_tokens");
        assert_eq!(stop_of(&done("stop"), true, none).0, "tool_use");
        assert_eq!(stop_of(&done("stop"), false, none).0, "end_turn");
        let stopped = json!({"done_reason": "stop", "stop_sequence": "\n\n"});
        assert_eq!(
            stop_of(&stopped, false, &["\n\n".to_string()]),
            ("stop_sequence", json!("\n\n"))
        );
        // A stop string the request did not send (the Modelfile's) ends the turn.
        assert_eq!(
            stop_of(&stopped, false, &["END".to_string()]),
            ("end_turn", Value::Null)
        );
    }

    #[test]
    fn a_stream_opens_and_closes_its_blocks_in_order() {
        let mut s = StreamState::new("msg_1".into(), "smol".into(), 7, Vec::new());
        let mut counts = Vec::new();
        for v in [
            json!({"message": {"thinking": "hm"}, "done": false}),
            json!({"message": {"content": "Hi"}, "done": false}),
            json!({"message": {"content": "!"}, "done": false}),
            json!({"message": {"content": ""}, "done": true, "done_reason": "stop", "eval_count": 3}),
        ] {
            counts.push(s.events(Some(&v)).len());
        }
        // message_start + ping + start/delta (thinking), stop/start/delta (text), delta,
        // stop + message_delta + message_stop.
        assert_eq!(counts, vec![4, 3, 1, 3]);
        assert_eq!(s.next, 2);
        assert!(s.events(None).is_empty());
    }
}
