//! Tool calls on every route: a native round trip (call, result, answer), calls forced by a
//! grammar (with their tools' own definitions, and cut short by the token limit), and one call
//! at most when parallel calls are off.

use crate::common;
use crate::openai::{sse_chunks, weather_tool};

use common::*;
use serde_json::{json, Value};

#[test]
fn native_tool_call_round_trip() {
    let s = TestServer::start();
    s.create_smol();
    s.create_smol_tools();
    let (_, show) = s.post("/api/show", json!({"model": "smol-tools"}));
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));

    let user = json!({"role": "user", "content": "What is the weather in Paris?"});
    let (status, body) = s.post(
        "/api/chat",
        json!({"model": "smol-tools", "messages": [user], "tools": [weather_tool()], "tool_choice": "required", "stream": false, "options": {"temperature": 0}}),
    );
    assert_eq!(status, 200, "{body}");
    let calls = body["message"]["tool_calls"]
        .as_array()
        .expect("tool calls")
        .clone();
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let city = calls[0]["function"]["arguments"]["city"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!city.is_empty());
    assert_eq!(body["message"]["content"], "");

    // Streaming: the call arrives as one chunk with tool_calls.
    let lines = s.stream(
        "/api/chat",
        json!({"model": "smol-tools", "messages": [user], "tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "options": {"temperature": 0}}),
    );
    let streamed: Vec<&Value> = lines
        .iter()
        .filter_map(|(_, v)| v["message"].get("tool_calls"))
        .collect();
    assert_eq!(streamed.len(), 1, "{lines:?}");
    assert_eq!(lines.last().unwrap().1["done"], true);

    // The result goes back in; the model answers in words.
    let mut result = json!({"role": "tool", "tool_name": "get_weather", "content": format!("{{\"city\": \"{city}\", \"temperature_c\": 18}}")});
    result["tool_name"] = json!("get_weather");
    let (status, body) = s.post(
        "/api/chat",
        json!({"model": "smol-tools", "messages": [user, {"role": "assistant", "content": "", "tool_calls": calls}, result],
               "tools": [weather_tool()], "stream": false, "options": {"temperature": 0, "num_predict": 40}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["message"]["content"]
            .as_str()
            .unwrap()
            .trim()
            .is_empty(),
        "{body}"
    );

    // Errors: a model without tool support, a tool_choice naming no tool, thinking without support.
    let (status, body) = s.post(
        "/api/chat",
        json!({"model": "smol", "messages": [user], "tools": [weather_tool()]}),
    );
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "smol:latest does not support tools")
    );
    let (status, body) = s.post("/api/chat", json!({"model": "smol-tools", "messages": [user], "tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "hi", "think": true}),
    );
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "\"smol:latest\" does not support thinking")
    );
    // Thinking where the template supports it: the answer starts inside the thinking.
    s.create_smol_think();
    let (_, show) = s.post("/api/show", json!({"model": "smol-think"}));
    assert_eq!(
        show["capabilities"],
        json!(["completion", "tools", "thinking"])
    );
    let (status, body) = s.post("/api/generate", json!({"model": "smol-think", "prompt": "What is 2+2?", "think": true, "stream": false, "options": {"temperature": 0, "num_predict": 30}}));
    assert_eq!(status, 200, "{body}");
    let thought = body["thinking"].as_str().unwrap_or_default().to_string();
    assert!(!thought.is_empty(), "{body}");
    // A model that can think does when `think` is unset, as Ollama decides; `false` stops it.
    for path in ["/api/generate", "/api/chat"] {
        let base = json!({"model": "smol-think", "prompt": "What is 2+2?", "stream": false,
                          "messages": [{"role": "user", "content": "What is 2+2?"}],
                          "options": {"temperature": 0, "num_predict": 30}});
        let (status, unset) = s.post(path, base.clone());
        assert_eq!(status, 200, "{unset}");
        let thinking = |b: &Value| {
            b["thinking"]
                .as_str()
                .or(b["message"]["thinking"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(thinking(&unset), thought, "{path}: {unset}");
        let mut off = base;
        off["think"] = json!(false);
        let (_, off) = s.post(path, off);
        assert_eq!(thinking(&off), "", "{path}: {off}");
    }
}

/// A forced call to a tool whose parameters refer to their own definitions (`$defs`, as
/// Pydantic writes nested models): the references still resolve inside the call's schema.
#[test]
fn a_forced_call_keeps_its_tools_definitions() {
    let s = TestServer::start();
    s.create_smol();
    s.create_smol_tools();
    let tool = json!({"type": "function", "function": {"name": "ship", "description": "Ship a parcel to an address",
        "parameters": {"type": "object", "properties": {"to": {"$ref": "#/$defs/Address"}}, "required": ["to"],
                       "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}}});
    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "smol-tools", "messages": [{"role": "user", "content": "Ship my parcel to Paris."}],
               "tools": [tool], "tool_choice": "required", "stream": false,
               "options": {"temperature": 0, "num_predict": 100}}),
    );
    assert_eq!(status, 200, "{v}");
    let call = &v["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "ship", "{v}");
    assert!(call["arguments"]["to"]["city"].is_string(), "{v}");
}

/// A forced call that the token limit cuts short is no call and no text: the call's markup
/// (`<tool_call>{"na`) never reaches the client as content, streamed or not, on any route.
#[test]
fn a_forced_call_cut_short_writes_no_markup() {
    let s = TestServer::start();
    s.create_smol_tools();
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}});
    let ask = json!([{"role": "user", "content": "Weather in Paris?"}]);
    for n in [1, 2, 5] {
        let (status, v) = s.post(
            "/api/chat",
            json!({"model": "smol-tools", "messages": ask, "tools": [tool], "tool_choice": "required",
                   "stream": false, "options": {"temperature": 0, "num_predict": n}}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["message"]["content"], "", "{n}: {v}");
        assert!(v["message"].get("tool_calls").is_none(), "{n}: {v}");
        assert_eq!(v["done_reason"], "length");
        let events = sse_chunks(
            &s,
            "/v1/chat/completions",
            json!({"model": "smol-tools", "messages": ask, "tools": [tool], "tool_choice": "required",
                   "stream": true, "max_tokens": n, "temperature": 0}),
        );
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "", "{n}");
        let (status, v) = s.post(
            "/v1/messages",
            json!({"model": "smol-tools", "messages": ask, "max_tokens": n,
                   "tools": [{"name": "get_weather", "input_schema": tool["function"]["parameters"]}],
                   "tool_choice": {"type": "any"}}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["stop_reason"], "max_tokens", "{v}");
        assert!(
            v["content"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| !b["text"].as_str().unwrap_or_default().contains('<')),
            "{n}: {v}"
        );
    }
}

/// `parallel_tool_calls: false` (OpenAI's chat and Responses), Anthropic's
/// `disable_parallel_tool_use` and the native field: the answer holds one call, the first, and
/// ends where it closes. The model here echoes its prompt (a template of the messages alone,
/// given calls to copy), so it writes two calls when nothing stops it.
#[test]
fn parallel_calls_off_keeps_one_call_on_every_route() {
    let s = TestServer::start();
    s.create(
        "echo",
        &format!(
            "FROM {}\nTEMPLATE \"\"\"{{{{ if .Tools }}}}{{{{ end }}}}{{{{ range .Messages }}}}{{{{ .Content }}}}{{{{ end }}}}\"\"\"\nPARAMETER repeat_penalty 1\nPARAMETER temperature 0\n",
            model_file(SMOL).display()
        ),
    );
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}});
    let calls = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"London\"}}\n</tool_call>\n";
    let ask = json!([{"role": "user", "content": calls.repeat(4)}]);
    let native = |parallel: Value| {
        let (status, v) = s.post(
            "/api/chat",
            json!({"model": "echo", "messages": ask, "tools": [tool], "stream": false,
                   "parallel_tool_calls": parallel, "options": {"num_predict": 64}}),
        );
        assert_eq!(status, 200, "{v}");
        v
    };
    let both = native(Value::Null);
    let cities = |calls: &Value| -> Vec<String> {
        calls
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["function"]["arguments"]["city"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        cities(&both["message"]["tool_calls"]),
        ["Paris", "London"],
        "{both}"
    );
    let one = native(json!(false));
    assert_eq!(cities(&one["message"]["tool_calls"]), ["Paris"], "{one}");
    assert_eq!(one["message"]["content"], "", "{one}");
    // It ended at the call's end, and the stop that did it is not the request's to see.
    assert_eq!(one["done_reason"], "stop", "{one}");
    assert!(one.get("stop_sequence").is_none(), "{one}");
    assert!(
        one["eval_count"].as_u64() < both["eval_count"].as_u64(),
        "{one}"
    );

    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "echo", "messages": ask, "tools": [tool], "parallel_tool_calls": false,
               "max_tokens": 64, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let calls_out = &v["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls_out.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        calls_out[0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );

    let (status, v) = s.post(
        "/v1/responses",
        json!({"model": "echo", "input": calls.repeat(4), "parallel_tool_calls": false,
               "max_output_tokens": 64, "temperature": 0,
               "tools": [{"type": "function", "name": "get_weather", "parameters": tool["function"]["parameters"]}]}),
    );
    assert_eq!(status, 200, "{v}");
    let items: Vec<&Value> = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "function_call")
        .collect();
    assert_eq!(items.len(), 1, "{v}");

    let (status, v) = s.post(
        "/v1/messages",
        json!({"model": "echo", "messages": ask, "max_tokens": 64, "temperature": 0,
               "tools": [{"name": "get_weather", "input_schema": tool["function"]["parameters"]}],
               "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    assert!(v["stop_sequence"].is_null(), "{v}");
    let uses: Vec<&Value> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .collect();
    assert_eq!(uses.len(), 1, "{v}");
    assert_eq!(uses[0]["input"], json!({"city": "Paris"}));
}
