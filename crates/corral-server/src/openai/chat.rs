//! `/v1/chat/completions`: OpenAI messages, tools and response formats onto a native chat,
//! and its answer back as a `chat.completion` or `chat.completion.chunk` events.

use super::*;

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
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    keep_alive: Option<Value>,
    /// Ollama's `_debug_render_only`: the rendered prompt in `_debug_info`, no answer (never
    /// streamed).
    #[serde(default, rename = "_debug_render_only")]
    debug_render_only: bool,
    /// `low`/`medium`/`high` turn thinking on at that level, `none` off.
    #[serde(default)]
    reasoning_effort: Option<String>,
    /// `{"effort": ...}`, the same as `reasoning_effort` (which wins).
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<i64>,
    #[serde(flatten)]
    sampling: Sampling,
}

/// Native log probabilities as a chat choice's `logprobs` (`null` when none were asked).
fn chat_logprobs(v: &Value) -> Value {
    match v["logprobs"].as_array() {
        Some(lps) => json!({"content": lps.iter().map(|lp| json!({
            "token": lp["token"], "logprob": lp["logprob"], "bytes": lp["bytes"],
            "top_logprobs": lp.get("top_logprobs").cloned().unwrap_or_else(|| json!([])),
        })).collect::<Vec<_>>()}),
        None => Value::Null,
    }
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
    /// An earlier answer's reasoning (as Ollama sends it back): the message's thinking.
    #[serde(default)]
    reasoning: Option<String>,
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
    // The type in any case and with spaces around it, as Ollama reads it.
    match rf["type"]
        .as_str()
        .map(|t| t.trim().to_lowercase())
        .as_deref()
    {
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
        // Newer OpenAI clients send their instructions as `developer`.
        let role = match m.role.to_lowercase() {
            r if r == "developer" => "system".to_string(),
            r => r,
        };
        let mut n = corral_api::Message::new(role, content_text(&m.content)?);
        n.thinking = m.reasoning.clone().filter(|r| !r.is_empty());
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
        if n.role == "tool" {
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
                // The call's place in the whole answer (the parser numbers them), not in this
                // chunk: clients merge stream deltas that share an index into one call.
                v["index"] = c["function"].get("index").cloned().unwrap_or(json!(i));
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
        if req.top_logprobs.is_some() && req.logprobs != Some(true) {
            return Err(invalid("top_logprobs needs logprobs set to true"));
        }
        Ok(corral_api::ChatRequest {
            model: req.model.clone(),
            messages: native_messages(&req.messages)?,
            stream: Some(req.stream && !req.debug_render_only),
            format: format_from(&req.response_format)?,
            options: Some(req.sampling.options()?),
            keep_alive: req.keep_alive.clone(),
            tools: req.tools.clone(),
            tool_choice: req.tool_choice.clone(),
            parallel_tool_calls: req.parallel_tool_calls,
            think: think_from_effort(req.reasoning_effort.as_deref().or_else(|| {
                req.reasoning
                    .as_ref()
                    .and_then(|r| r.get("effort"))
                    .and_then(Value::as_str)
            }))?,
            answer: corral_api::AnswerOptions {
                logprobs: req.logprobs,
                top_logprobs: req.top_logprobs,
                logit_bias: req.sampling.logit_bias.clone(),
                debug_render_only: req.debug_render_only,
                ..Default::default()
            },
        })
    };
    let (native, n) = match build().and_then(|b| Ok((b, choices::count(req.sampling.n)?))) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let answers = choices::run(n, &native, |one| {
        inference::chat_at(st.clone(), one, "/v1/chat/completions")
    })
    .await;
    let answers = match answers {
        Ok(a) => a,
        Err(e) => return e,
    };
    let id = new_id("chatcmpl");
    let created = now();
    if !req.stream || req.debug_render_only {
        let whole = choices::whole(answers).await;
        let choices: Vec<Value> = whole
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let calls = openai_tool_calls(&v["message"]["tool_calls"], false);
                let mut message = json!({"role": "assistant", "content": v["message"]["content"]});
                if let Some(t) = v["message"]["thinking"].as_str() {
                    message["reasoning"] = json!(t);
                }
                if !calls.is_empty() {
                    message["tool_calls"] = json!(calls);
                }
                json!({
                    "index": i,
                    "message": message,
                    "logprobs": chat_logprobs(v),
                    "finish_reason": finish_reason(v["done_reason"].as_str(), !calls.is_empty()),
                })
            })
            .collect();
        let mut completion = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": whole[0]["model"],
            "system_fingerprint": "fp_corral",
            "choices": choices,
            "usage": choices::usage_of(&whole),
        });
        if let Some(debug) = whole[0].get("_debug_info") {
            completion["_debug_info"] = debug.clone();
        }
        return Json(completion).into_response();
    }
    let mut tally = req
        .stream_options
        .is_some_and(|o| o.include_usage)
        .then(|| choices::Tally::new(n));
    // Which choices have made a tool call (their finish reason says so).
    let mut saw_calls = vec![false; n];
    sse_from(choices::merge(answers), move |v| {
        let base = |choices: Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": v["model"], "system_fingerprint": "fp_corral", "choices": choices,
            })
        };
        let index = choices::index(v);
        let mut delta = json!({"role": "assistant", "content": v["message"]["content"]});
        if let Some(t) = v["message"]["thinking"].as_str() {
            delta["reasoning"] = json!(t);
        }
        let calls = openai_tool_calls(&v["message"]["tool_calls"], true);
        if !calls.is_empty() {
            delta["tool_calls"] = json!(calls);
        }
        let saw = match saw_calls.get_mut(index as usize) {
            Some(s) => {
                *s |= !calls.is_empty();
                *s
            }
            None => !calls.is_empty(),
        };
        let done = v["done"].as_bool().unwrap_or(false);
        let finish = done.then(|| finish_reason(v["done_reason"].as_str(), saw));
        with_usage(
            base,
            json!({"index": index, "delta": delta, "logprobs": chat_logprobs(v), "finish_reason": finish}),
            v,
            tally.as_mut(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            format_from(&Some(json!({"type": " JSON_Object "}))).unwrap(),
            Some(json!("json"))
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
        // In a stream each chunk carries the calls' places in the whole answer, so a second
        // call in its own chunk is index 1, not a second index 0 that clients would merge.
        let second = openai_tool_calls(
            &json!([{"function": {"index": 1, "name": "get_time", "arguments": {}}}]),
            true,
        );
        assert_eq!(second[0]["index"], 1);
        assert_eq!(
            second[0]["function"],
            json!({"name": "get_time", "arguments": "{}"})
        );
        let earlier: Vec<OaMessage> = serde_json::from_value(json!([
            {"role": "Developer", "content": "Be brief."},
            {"role": "assistant", "content": "4", "reasoning": "2+2 is 4."}
        ]))
        .unwrap();
        let n = native_messages(&earlier).unwrap();
        assert_eq!(n[0].role, "system");
        assert_eq!(n[1].thinking.as_deref(), Some("2+2 is 4."));
        let image: Vec<OaMessage> = serde_json::from_value(json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])).unwrap();
        assert!(native_messages(&image).is_err());
    }
}
