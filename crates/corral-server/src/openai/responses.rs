//! `/v1/responses`: OpenAI's Responses API, stateless as Ollama 0.13.3 serves it. `input` (a
//! string or items) and `instructions` map onto a native chat; the answer comes back as a
//! `response` object with `message`, `function_call` and `reasoning` output items, or as the
//! Responses stream events (`response.created`, `response.output_text.delta`, ...,
//! `response.completed`). `previous_response_id` is refused: nothing is stored.

use super::*;

#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<i64>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(flatten)]
    sampling: Sampling,
}

/// The text of an item's content: a string or `input_text`/`output_text` parts.
fn item_text(content: &Value) -> Result<String, Invalid> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match p["type"].as_str() {
                    Some("input_text" | "output_text" | "text") => {
                        out.push_str(p["text"].as_str().unwrap_or_default())
                    }
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
        other => Err(invalid(format!("invalid content: {other}"))),
    }
}

/// `instructions` and `input` as native messages: messages by role (`developer` is a system
/// message), `function_call` items as an assistant's tool calls, `function_call_output`
/// items as `tool` messages named after their call. Reasoning items are left out.
fn native_messages(
    instructions: &Option<String>,
    input: &Value,
) -> Result<Vec<corral_api::Message>, Invalid> {
    let mut out = Vec::new();
    if let Some(i) = instructions.as_ref().filter(|i| !i.is_empty()) {
        out.push(corral_api::Message::new("system", i.clone()));
    }
    let items = match input {
        Value::String(s) => {
            return Ok([out, vec![corral_api::Message::new("user", s.clone())]].concat())
        }
        Value::Array(items) => items,
        Value::Null => return Err(invalid("input is required")),
        other => return Err(invalid(format!("invalid input: {other}"))),
    };
    let mut call_names: BTreeMap<String, String> = BTreeMap::new();
    for item in items {
        match item["type"].as_str().unwrap_or("message") {
            "message" => {
                let role = match item["role"].as_str() {
                    Some("developer") => "system",
                    Some(r @ ("user" | "system" | "assistant")) => r,
                    _ => {
                        return Err(invalid(format!(
                            "invalid role {}: expected user, system, developer or assistant",
                            item["role"]
                        )))
                    }
                };
                out.push(corral_api::Message::new(role, item_text(&item["content"])?));
            }
            "function_call" => {
                let call_id = item["call_id"].as_str().unwrap_or_default().to_string();
                let name = item["name"].as_str().unwrap_or_default().to_string();
                let args = match &item["arguments"] {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    other => other.clone(),
                };
                call_names.insert(call_id.clone(), name.clone());
                let call = json!({"id": call_id, "function": {"name": name, "arguments": args}});
                // Calls of one turn belong to one assistant message.
                match out.last_mut() {
                    Some(m) if m.role == "assistant" && m.tool_calls.is_some() => {
                        m.tool_calls.get_or_insert_with(Vec::new).push(call)
                    }
                    _ => {
                        let mut m = corral_api::Message::new("assistant", String::new());
                        m.tool_calls = Some(vec![call]);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let call_id = item["call_id"].as_str().unwrap_or_default().to_string();
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    other => item_text(other)?,
                };
                let mut m = corral_api::Message::new("tool", output);
                m.tool_name = call_names.get(&call_id).cloned();
                m.tool_call_id = Some(call_id);
                out.push(m);
            }
            "reasoning" => {}
            other => {
                return Err(invalid(format!(
                    "input item type '{other}' is not supported"
                )))
            }
        }
    }
    Ok(out)
}

/// Responses function tools (`name`, `parameters` at the top) as native ones.
fn native_tools(tools: &Option<Vec<Value>>) -> Result<Option<Vec<Value>>, Invalid> {
    let Some(tools) = tools else { return Ok(None) };
    tools
        .iter()
        .map(|t| match t["type"].as_str() {
            Some("function") => Ok(json!({"type": "function", "function": {
                "name": t["name"], "description": t["description"],
                "parameters": t.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
            }})),
            _ => Err(invalid(format!(
                "tool type {} is not supported: only function tools",
                t["type"]
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `tool_choice`: `auto`, `none`, `required` or `{"type": "function", "name"}`.
fn native_tool_choice(choice: &Option<Value>) -> Option<Value> {
    match choice.as_ref()? {
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => Some(
            json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or_default()}}),
        ),
        other => Some(other.clone()),
    }
}

/// `text.format` as a native `format`.
fn native_format(text: &Option<Value>) -> Result<Option<Value>, Invalid> {
    let Some(f) = text.as_ref().map(|t| &t["format"]).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match f["type"].as_str() {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!("json"))),
        Some("json_schema") => match f.get("schema") {
            Some(s @ Value::Object(_)) => Ok(Some(s.clone())),
            _ => Err(invalid("text.format json_schema needs a schema object")),
        },
        _ => Err(invalid(format!("invalid text.format: {f}"))),
    }
}

fn usage_of(v: &Value) -> Value {
    let u = usage(v);
    json!({
        "input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
        "total_tokens": u["total_tokens"],
        "input_tokens_details": {"cached_tokens": u["prompt_tokens_details"]["cached_tokens"]},
        "output_tokens_details": {"reasoning_tokens": 0},
    })
}

/// The parts of a response object that do not depend on the answer.
struct Shell {
    id: String,
    created_at: i64,
    model: String,
    request: Value,
}

impl Shell {
    fn response(&self, status: &str, output: Vec<Value>, done: Option<&Value>) -> Value {
        let incomplete = done
            .filter(|v| v["done_reason"] == "length")
            .map(|_| json!({"reason": "max_output_tokens"}));
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": if incomplete.is_some() { "incomplete" } else { status },
            "model": self.model, "output": output, "error": null,
            "incomplete_details": incomplete, "parallel_tool_calls": true,
            "usage": done.map(usage_of),
        });
        for k in [
            "instructions",
            "max_output_tokens",
            "temperature",
            "top_p",
            "tools",
            "tool_choice",
            "text",
        ] {
            r[k] = self.request.get(k).cloned().unwrap_or(Value::Null);
        }
        r
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": if status == "completed" { json!([text_part(text)]) } else { json!([]) }})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": text}]})
}

fn call_item(call: &Value, status: &str) -> Value {
    json!({
        "type": "function_call", "id": new_id("fc"),
        "call_id": call.get("id").and_then(Value::as_str).map_or_else(|| new_id("call"), str::to_string),
        "name": call["function"]["name"], "arguments": call["function"]["arguments"].to_string(),
        "status": status,
    })
}

pub async fn responses(State(st): State<AppState>, body: Bytes) -> Response {
    let raw: Value = match parse(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let req: ResponsesRequest = match serde_json::from_value(raw.clone()) {
        Ok(r) => r,
        Err(e) => return bad(format!("invalid request body: {e}")),
    };
    if req.previous_response_id.is_some() {
        return bad("previous_response_id is not supported: responses are not stored; send the whole conversation in input");
    }
    let build = || -> Result<corral_api::ChatRequest, Invalid> {
        let mut options = req.sampling.options()?;
        if let Some(n) = req.max_output_tokens {
            options.insert("num_predict".into(), json!(n));
        }
        let think = think_from_effort(
            req.reasoning
                .as_ref()
                .and_then(|r| r.get("effort"))
                .and_then(Value::as_str),
        )?;
        Ok(corral_api::ChatRequest {
            model: req.model.clone(),
            messages: native_messages(&req.instructions, &req.input)?,
            stream: Some(req.stream),
            format: native_format(&req.text)?,
            options: Some(options),
            keep_alive: req.keep_alive.clone(),
            tools: native_tools(&req.tools)?,
            tool_choice: native_tool_choice(&req.tool_choice),
            parallel_tool_calls: req.parallel_tool_calls,
            think,
            ..Default::default()
        })
    };
    let native = match build() {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let resp = inference::chat_at(st, native, "/v1/responses").await;
    if !resp.status().is_success() {
        return from_native_error(resp).await;
    }
    let shell = Shell {
        id: new_id("resp"),
        created_at: now(),
        model: String::new(),
        request: raw,
    };
    if !req.stream {
        let v = whole_answer(resp).await;
        let shell = Shell {
            model: v["model"].as_str().unwrap_or_default().to_string(),
            ..shell
        };
        let m = &v["message"];
        let mut output = Vec::new();
        if let Some(t) = m["thinking"].as_str().filter(|t| !t.is_empty()) {
            output.push(reasoning_item(&new_id("rs"), t));
        }
        if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
            output.push(message_item(&new_id("msg"), t, "completed"));
        }
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            output.push(call_item(call, "completed"));
        }
        return Json(shell.response("completed", output, Some(&v))).into_response();
    }
    let mut stream = ResponseStream {
        shell,
        seq: 0,
        started: false,
        output: Vec::new(),
        open: None,
    };
    crate::sse::from_ndjson(resp.into_body(), move |v| stream.events(v))
}

/// The output item a stream is adding to: reasoning or a message, with its text so far.
struct OpenItem {
    reasoning: bool,
    id: String,
    text: String,
}

/// Turns native answer objects into the Responses stream events.
struct ResponseStream {
    shell: Shell,
    seq: u64,
    started: bool,
    /// Finished output items.
    output: Vec<Value>,
    open: Option<OpenItem>,
}

impl ResponseStream {
    fn event(&mut self, kind: &str, mut data: Value) -> Event {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Event::default().event(kind).data(data.to_string())
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        let Some(item) = self.open.take() else { return };
        let index = self.output.len();
        let done = if item.reasoning {
            out.push(self.event(
                "response.reasoning_summary_text.done",
                json!({"item_id": item.id, "output_index": index, "summary_index": 0, "text": item.text}),
            ));
            reasoning_item(&item.id, &item.text)
        } else {
            out.push(self.event(
                "response.output_text.done",
                json!({"item_id": item.id, "output_index": index, "content_index": 0, "text": item.text}),
            ));
            out.push(self.event(
                "response.content_part.done",
                json!({"item_id": item.id, "output_index": index, "content_index": 0, "part": text_part(&item.text)}),
            ));
            message_item(&item.id, &item.text, "completed")
        };
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        ));
        self.output.push(done);
    }

    /// Add text to the open item of this kind, opening one (and closing another) if needed.
    fn add(&mut self, reasoning: bool, text: &str, out: &mut Vec<Event>) {
        if self.open.as_ref().is_some_and(|i| i.reasoning != reasoning) {
            self.close(out);
        }
        let index = self.output.len();
        if self.open.is_none() {
            let id = new_id(if reasoning { "rs" } else { "msg" });
            let item = if reasoning {
                json!({"type": "reasoning", "id": id, "summary": []})
            } else {
                message_item(&id, "", "in_progress")
            };
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            if !reasoning {
                out.push(self.event(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")}),
                ));
            }
            self.open = Some(OpenItem {
                reasoning,
                id,
                text: String::new(),
            });
        }
        let item = self.open.as_mut().expect("opened");
        item.text.push_str(text);
        let id = item.id.clone();
        let (kind, data) = if reasoning {
            (
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
            )
        } else {
            (
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}),
            )
        };
        out.push(self.event(kind, data));
    }

    fn events(&mut self, v: Option<&Value>) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(v) = v else { return out };
        if !self.started {
            self.started = true;
            self.shell.model = v["model"].as_str().unwrap_or_default().to_string();
            let r = self.shell.response("in_progress", Vec::new(), None);
            out.push(self.event("response.created", json!({"response": r})));
            out.push(self.event("response.in_progress", json!({"response": r})));
        }
        if let Some(e) = v["error"].as_str() {
            let mut r = self
                .shell
                .response("failed", std::mem::take(&mut self.output), None);
            r["error"] = json!({"code": "server_error", "message": e});
            out.push(self.event("response.failed", json!({"response": r})));
            return out;
        }
        let m = &v["message"];
        if let Some(t) = m["thinking"].as_str().filter(|t| !t.is_empty()) {
            self.add(true, t, &mut out);
        }
        if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
            self.add(false, t, &mut out);
        }
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            self.close(&mut out);
            let index = self.output.len();
            let item = call_item(call, "completed");
            let added = json!({"arguments": "", "status": "in_progress"});
            let mut start = item.clone();
            for (k, x) in added.as_object().expect("object") {
                start[k] = x.clone();
            }
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": start}),
            ));
            out.push(self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": item["id"], "output_index": index, "delta": item["arguments"]}),
            ));
            out.push(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": item["id"], "output_index": index, "arguments": item["arguments"]}),
            ));
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
            self.output.push(item);
        }
        if v["done"].as_bool().unwrap_or(false) {
            self.close(&mut out);
            let r = self
                .shell
                .response("completed", std::mem::take(&mut self.output), Some(v));
            let kind = if r["status"] == "incomplete" {
                "response.incomplete"
            } else {
                "response.completed"
            };
            out.push(self.event(kind, json!({"response": r})));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_map_onto_native_messages() {
        let n = native_messages(
            &Some("Be brief.".into()),
            &json!([
                {"role": "developer", "content": "Use tools."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"}
            ]),
        )
        .unwrap();
        let roles: Vec<&str> = n.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "system", "user", "assistant", "tool"]);
        assert_eq!(n[2].content, "Weather in Paris?");
        assert_eq!(
            n[3].tool_calls.as_ref().unwrap()[0]["function"]["arguments"],
            json!({"city": "Paris"})
        );
        assert_eq!(n[4].tool_name.as_deref(), Some("get_weather"));
        assert_eq!(
            native_messages(&None, &json!("Hi")).unwrap()[0].role,
            "user"
        );
        assert!(native_messages(&None, &json!([{"type": "web_search_call"}])).is_err());
    }

    #[test]
    fn a_stream_numbers_its_events_and_completes() {
        let shell = Shell {
            id: "resp_1".into(),
            created_at: 0,
            model: String::new(),
            request: json!({}),
        };
        let mut s = ResponseStream {
            shell,
            seq: 0,
            started: false,
            output: Vec::new(),
            open: None,
        };
        let mut all = Vec::new();
        for v in [
            json!({"model": "smol", "message": {"content": "Hi"}, "done": false}),
            json!({"model": "smol", "message": {"content": " there"}, "done": false}),
            json!({"model": "smol", "message": {"content": ""}, "done": true, "done_reason": "stop", "eval_count": 2}),
        ] {
            all.extend(s.events(Some(&v)));
        }
        // created, in_progress, item added, part added, 2 deltas, text done, part done, item
        // done, completed.
        assert_eq!(all.len(), 10);
        assert_eq!(s.seq, 10);
    }
}
