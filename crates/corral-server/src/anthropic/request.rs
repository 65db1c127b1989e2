//! What an Anthropic request asks, in the native chat's terms: its fields, the blocks of its
//! messages as native messages, its tools, tool choice and thinking, and the ranges
//! Anthropic holds its settings to.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
pub(super) struct MessagesRequest {
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) max_tokens: Option<i64>,
    #[serde(default)]
    pub(super) system: Option<Value>,
    #[serde(default)]
    pub(super) messages: Vec<InMessage>,
    #[serde(default)]
    pub(super) stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub(super) temperature: Option<f64>,
    #[serde(default)]
    pub(super) top_p: Option<f64>,
    #[serde(default)]
    pub(super) top_k: Option<i64>,
    #[serde(default)]
    pub(super) stream: bool,
    #[serde(default)]
    pub(super) tools: Option<Vec<Value>>,
    #[serde(default)]
    pub(super) tool_choice: Option<Value>,
    #[serde(default)]
    pub(super) thinking: Option<Value>,
    /// `{"effort": "low" | "medium" | "high" | "max"}`: the thinking level.
    #[serde(default)]
    pub(super) output_config: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct InMessage {
    pub(super) role: String,
    pub(super) content: Value,
}

/// The text of a string or a list of blocks (`system`, a tool result's content): text blocks
/// and text documents are kept, images refused (Corral runs no vision model), other blocks
/// (search results, citations, blocks newer than this code) skipped, as Ollama skips them.
pub(super) fn text_of(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for b in blocks {
                match b["type"].as_str() {
                    Some("text") => out.push(b["text"].as_str().unwrap_or_default().to_string()),
                    Some("document") => out.push(document_text(b, what)?),
                    Some("image") => return Err(format!("{what}: {IMAGES_REFUSED}")),
                    Some(other) => tracing::debug!(what, block = other, "content block skipped"),
                    None => return Err(format!("{what}: a content block has no type")),
                }
            }
            Ok(out.join("\n"))
        }
        other => Err(format!(
            "{what}: expected a string or content blocks, got {other}"
        )),
    }
}

/// Images are refused with Ollama's words for a model without a vision projector.
const IMAGES_REFUSED: &str = "this model is missing data required for image input";

/// A `document` block's text: a plain-text source, or a content source's text blocks. A PDF
/// or a URL would need reading that Corral does not do: refused, not dropped unseen.
pub(super) fn document_text(b: &Value, what: &str) -> Result<String, String> {
    let source = &b["source"];
    match source["type"].as_str() {
        Some("text") => Ok(source["data"].as_str().unwrap_or_default().to_string()),
        Some("content") => text_of(&source["content"], what),
        other => Err(format!(
            "{what}: document source type '{}' is not supported (only \"text\" and \"content\")",
            other.unwrap_or("none")
        )),
    }
}

/// Anthropic messages as native ones: a user message's `tool_result` blocks become `tool`
/// messages (named after the `tool_use` they answer), an assistant's `tool_use` blocks its
/// tool calls and its `thinking` blocks its thinking.
pub(super) fn native_messages(
    system: &Option<Value>,
    msgs: &[InMessage],
) -> Result<Vec<corral_api::Message>, String> {
    let mut out = Vec::new();
    if let Some(sys) = system {
        let text = text_of(sys, "system")?;
        if !text.is_empty() {
            out.push(corral_api::Message::new("system", text));
        }
    }
    let mut call_names: BTreeMap<String, String> = BTreeMap::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            return Err(format!(
                "messages.{i}.role: '{}' is not one of \"user\" or \"assistant\"",
                m.role
            ));
        }
        let blocks = match &m.content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            other => return Err(format!("messages.{i}.content: invalid content {other}")),
        };
        let mut msg = corral_api::Message::new(m.role.clone(), String::new());
        let mut texts = Vec::new();
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for b in &blocks {
            match b["type"].as_str() {
                Some("text") => texts.push(b["text"].as_str().unwrap_or_default().to_string()),
                Some("document") => texts.push(document_text(b, &format!("messages.{i}"))?),
                Some("image") => return Err(format!("messages.{i}: {IMAGES_REFUSED}")),
                Some("thinking") if m.role == "assistant" => {
                    msg.thinking = b["thinking"].as_str().map(str::to_string)
                }
                // A server tool's call (web search ...) and its result, as Ollama maps them:
                // a tool call, and a tool message with the result's content as JSON.
                Some("tool_use" | "server_tool_use") if m.role == "assistant" => {
                    let id = b["id"].as_str().unwrap_or_default().to_string();
                    let name = b["name"].as_str().unwrap_or_default().to_string();
                    call_names.insert(id.clone(), name.clone());
                    calls.push(
                        json!({"id": id, "function": {"name": name, "arguments": b["input"]}}),
                    );
                }
                Some("tool_result") if m.role == "user" => {
                    let id = b["tool_use_id"].as_str().unwrap_or_default().to_string();
                    let mut text = text_of(&b["content"], &format!("messages.{i}.tool_result"))?;
                    if b["is_error"].as_bool() == Some(true) {
                        // Templates have no place for the flag: the model reads it in words.
                        text = format!("Error: {text}");
                    }
                    let mut r = corral_api::Message::new("tool", text);
                    r.tool_name = call_names.get(&id).cloned();
                    r.tool_call_id = Some(id);
                    results.push(r);
                }
                Some("web_search_tool_result") => {
                    let id = b["tool_use_id"].as_str().unwrap_or_default().to_string();
                    let mut r = corral_api::Message::new("tool", b["content"].to_string());
                    r.tool_name = call_names.get(&id).cloned();
                    r.tool_call_id = Some(id);
                    results.push(r);
                }
                Some(t @ ("tool_use" | "server_tool_use" | "tool_result" | "thinking")) => {
                    return Err(format!(
                        "messages.{i}: a {t} block cannot be in a {} message",
                        m.role
                    ))
                }
                // Blocks a local model has no use for (redacted thinking, citations, container
                // uploads, blocks newer than this code) are skipped, as Ollama skips them: one
                // in a long history must not make every later turn fail.
                Some(other) => {
                    tracing::debug!(message = i, block = other, "content block skipped")
                }
                None => return Err(format!("messages.{i}: a content block has no type")),
            }
        }
        msg.content = texts.join("\n");
        if !calls.is_empty() {
            msg.tool_calls = Some(calls);
        }
        let keep = !msg.content.is_empty() || msg.tool_calls.is_some() || msg.thinking.is_some();
        // A user's tool results answer the previous turn's calls: they come first, then any
        // text. An assistant's server-tool results follow the calls they answer.
        if m.role == "user" {
            out.extend(results);
            out.extend(keep.then_some(msg));
        } else {
            out.extend(keep.then_some(msg));
            out.extend(results);
        }
    }
    // Skipped blocks must not leave a conversation with nothing in it: the model would answer
    // a prompt nobody wrote.
    if !msgs.is_empty() && out.iter().all(|m| m.role == "system") {
        return Err(
            "messages: nothing to answer: every message is empty or holds only blocks that are \
             skipped (such as redacted_thinking or search results)"
                .into(),
        );
    }
    Ok(out)
}

/// Anthropic tools (`name`, `description`, `input_schema`) as native function tools.
pub(super) fn native_tools(tools: &Option<Vec<Value>>) -> Option<Vec<Value>> {
    let tools = tools.as_ref()?;
    Some(
        tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t["name"], "description": t["description"],
                    "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
                }})
            })
            .collect(),
    )
}

pub(super) fn native_tool_choice(choice: &Option<Value>) -> Result<Option<Value>, String> {
    let Some(c) = choice.as_ref().filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    Ok(Some(match c["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match c["name"].as_str() {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => return Err("tool_choice of type \"tool\" needs a name".into()),
        },
        _ => return Err(format!("invalid tool_choice: {c}")),
    }))
}

/// Thinking from `thinking` and `output_config.effort`: `disabled` turns it off; `enabled`
/// turns it on (at the effort's level when one is given); `adaptive`, or no `thinking`, leaves
/// it to the model (on where it can think, as for a native request that leaves `think` out)
/// unless an effort is given. Other types, newer than this code, are ignored as Ollama ignores
/// them. `budget_tokens` has no counterpart in a local model and is ignored.
pub(super) fn think_of(req: &MessagesRequest) -> Result<Option<Value>, String> {
    let effort = match req.output_config.as_ref().map(|o| &o["effort"]) {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(match e.as_str() {
            "low" | "medium" | "high" => e.clone(),
            // Levels above high are high: the most a think level asks of a template.
            "max" | "xhigh" => "high".to_string(),
            _ => {
                return Err(format!(
                    "output_config.effort: '{e}' is not one of \"low\", \"medium\", \"high\" or \"max\""
                ))
            }
        }),
        Some(other) => return Err(format!("output_config.effort: expected a string, got {other}")),
    };
    match req.thinking.as_ref().and_then(|t| t["type"].as_str()) {
        Some("disabled") => Ok(Some(json!(false))),
        Some("enabled") => Ok(Some(effort.map_or(json!(true), Value::from))),
        Some("adaptive") | None => Ok(effort.map(Value::from)),
        Some(other) => {
            tracing::debug!(
                thinking = other,
                "thinking type not known: left to the model"
            );
            Ok(effort.map(Value::from))
        }
    }
}

/// The native chat request for an Anthropic one.
pub(super) fn native_request(
    req: &MessagesRequest,
    stream: bool,
) -> Result<corral_api::ChatRequest, String> {
    let mut options = BTreeMap::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            options.insert(k.to_string(), v);
        }
    };
    set("num_predict", req.max_tokens.map(Value::from));
    set("temperature", req.temperature.map(Value::from));
    set("top_p", req.top_p.map(Value::from));
    set("top_k", req.top_k.map(Value::from));
    set("stop", req.stop_sequences.clone().map(Value::from));
    let think = think_of(req)?;
    Ok(corral_api::ChatRequest {
        model: req.model.clone(),
        messages: native_messages(&req.system, &req.messages)?,
        stream: Some(stream),
        options: Some(options),
        tools: native_tools(&req.tools),
        tool_choice: native_tool_choice(&req.tool_choice)?,
        // `disable_parallel_tool_use` (any choice but `none` may carry it): one call at most.
        parallel_tool_calls: req
            .tool_choice
            .as_ref()
            .and_then(|c| c.get("disable_parallel_tool_use"))
            .and_then(Value::as_bool)
            .map(|disable| !disable),
        think,
        ..Default::default()
    })
}

/// The ranges Anthropic's API holds sampling settings to (where Ollama's options are wider:
/// a temperature of 5 is refused here as Anthropic refuses it), in its words.
pub(super) fn check_ranges(req: &MessagesRequest) -> Result<(), String> {
    let at_least = |name: &str, v: Option<f64>, min: f64| match v {
        Some(v) if v < min => Err(format!(
            "{name}: Input should be greater than or equal to {min}"
        )),
        _ => Ok(()),
    };
    let at_most = |name: &str, v: Option<f64>, max: f64| match v {
        Some(v) if v > max => Err(format!(
            "{name}: Input should be less than or equal to {max}"
        )),
        _ => Ok(()),
    };
    at_least("max_tokens", req.max_tokens.map(|v| v as f64), 1.0)?;
    for (name, v) in [("temperature", req.temperature), ("top_p", req.top_p)] {
        at_least(name, v, 0.0)?;
        at_most(name, v, 1.0)?;
    }
    at_least("top_k", req.top_k.map(|v| v as f64), 0.0)
}
