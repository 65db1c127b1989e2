//! OpenAI-compatible endpoints, structured output, embeddings and tool calls, over raw HTTP
//! against the real server and model (the client libraries are in `clients.rs`).

use crate::common;

use std::io::Read;

use common::*;
use serde_json::{json, Value};

pub(crate) fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

/// POST and return the status, content type and raw body.
pub(crate) fn post_raw_body(s: &TestServer, path: &str, body: Value) -> (u16, String, String) {
    let mut resp = s.http.post(s.url(path)).json(&body).send().unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut text = String::new();
    resp.read_to_string(&mut text).unwrap();
    (resp.status().as_u16(), ct, text)
}

/// POST, and the JSON chunks of the event stream that answers (without `[DONE]`).
pub(crate) fn sse_chunks(s: &TestServer, path: &str, body: Value) -> Vec<Value> {
    let (status, _, text) = post_raw_body(s, path, body);
    assert_eq!(status, 200, "{text}");
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[test]
fn server_sent_events_are_framed_as_openai_sends_them() {
    let s = TestServer::start();
    s.create_smol();
    for (path, body, object) in [
        (
            "/v1/chat/completions",
            json!({"model": "smol", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6, "stream": true, "stream_options": {"include_usage": true}}),
            "chat.completion.chunk",
        ),
        (
            "/v1/completions",
            json!({"model": "smol", "prompt": "Once upon a time", "max_tokens": 6, "stream": true}),
            "text_completion",
        ),
    ] {
        let (status, ct, text) = post_raw_body(&s, path, body);
        assert_eq!(status, 200, "{text}");
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text:?}");
        let events: Vec<&str> = text.trim_end().split("\n\n").collect();
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data: prefix")).unwrap())
            .collect();
        assert!(chunks.len() >= 3, "{text}");
        let id = chunks[0]["id"].clone();
        for c in &chunks {
            assert_eq!(c["object"], object);
            assert_eq!(c["id"], id, "one id for the whole stream");
            // The name as the request gave it, as Ollama and OpenAI echo it.
            assert_eq!(c["model"], "smol");
        }
        let finishes: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0).map(|ch| &ch["finish_reason"]))
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, vec![&json!("length")], "{text}");
        if path == "/v1/chat/completions" {
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]));
            assert_eq!(last["usage"]["completion_tokens"], 6);
            let text: String = chunks
                .iter()
                .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
                .collect();
            assert!(!text.is_empty());
        }
    }
    // Errors in OpenAI's shape, with the status that fits.
    let (status, body) = s.post(
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "not_found_error");
    assert_eq!(body["error"]["message"], "model 'nope' not found");
    let (status, body) = s.post(
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (400, Some("model is required"))
    );
    let (status, body) = s.post("/api/embed", json!({"model": " ", "input": "x"}));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("model is required"))
    );
    assert_eq!(s.get("/v1/models/SMOL")["id"], "SMOL");
    assert_eq!(s.get("/v1/models/smol:latest")["id"], "smol:latest");
    let (status, body) = s.post_raw("/v1/chat/completions", "{not json");
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request body"),
        "{body}"
    );
    let (status, body) = s.post(
        "/v1/embeddings",
        json!({"model": "smol", "input": [[1, 2, 3]]}),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token arrays"),
        "{body}"
    );
    let (status, body) = s.post("/v1/chat/completions", json!({"model": "smol", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}));
    assert_eq!(status, 400, "{body}");
    // What Corral cannot do is refused by name, not silently answered without it.
    let user = json!([{"role": "user", "content": "x"}]);
    for (path, extra, message) in [
        (
            "/v1/chat/completions",
            json!({"n": 0}),
            "n must be between 1 and 128, got 0",
        ),
        (
            "/v1/completions",
            json!({"n": 129}),
            "n must be between 1 and 128, got 129",
        ),
        (
            "/v1/chat/completions",
            json!({"top_logprobs": 2}),
            "top_logprobs needs logprobs set to true",
        ),
        (
            "/v1/chat/completions",
            json!({"tool_choice": "required"}),
            "tool_choice is only allowed when tools are given",
        ),
    ] {
        let mut body = if path == "/v1/completions" {
            json!({"model": "smol", "prompt": "x"})
        } else {
            json!({"model": "smol", "messages": user})
        };
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, v) = s.post(path, body);
        assert_eq!(
            (status, v["error"]["message"].as_str()),
            (400, Some(message)),
            "{extra}"
        );
    }
    // What asks for nothing passes: one choice, no biases, "auto" with no tools; a format's
    // type is read in any case.
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol", "messages": user, "n": 1, "logit_bias": {}, "tool_choice": "auto",
               "response_format": {"type": "JSON_Object"}, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .trim_start()
            .starts_with('{'),
        "{v}"
    );
}

#[test]
fn structured_output_and_embeddings() {
    let s = TestServer::start();
    s.create_smol();
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}, "required": ["city", "population"]});
    for format in [json!("json"), schema.clone()] {
        let (status, body) = s.post(
            "/api/generate",
            json!({"model": "smol", "prompt": "Name a big city and its population, as JSON.", "format": format, "stream": false, "options": {"temperature": 0, "num_predict": 120}}),
        );
        assert_eq!(status, 200, "{body}");
        let v: Value =
            serde_json::from_str(body["response"].as_str().unwrap()).expect("the answer is JSON");
        assert!(v.is_object());
        if format == schema {
            assert!(v["city"].is_string() && v["population"].is_i64(), "{v}");
        }
    }
    let (status, body) = s.post(
        "/api/chat",
        json!({"model": "smol", "messages": [{"role": "user", "content": "x"}], "format": "xml"}),
    );
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (
            400,
            "invalid format: \"xml\"; expected \"json\" or a JSON schema"
        )
    );
    // A schema whose grammar llama.cpp refuses (a rule that starts with itself) is a 400 on
    // arrival, not a failure once the request has a slot; the server goes on serving.
    let looping = json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "x", "format": looping, "stream": false}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "format: $defs/a/$ref \"#/$defs/a\" leads back to itself through references alone, with nothing to match",
    );
    // Other mistakes are named too, where llama.cpp would say only that it failed (or would
    // quietly not enforce an invalid pattern).
    for (format, want) in [
        (json!({"type": "nonsense"}), "invalid JSON schema in format: type \"nonsense\" is not a JSON schema type (one of string, number, integer, boolean, object, array, null)"),
        (json!({"type": "object", "properties": {"id": {"type": "string", "pattern": "^(ab$"}}}),
         "invalid JSON schema in format: properties/id/pattern \"^(ab$\": not a regular expression (unclosed group)"),
        (json!({"type": "array", "minItems": 5000}),
         "format: minItems 5000 is more repetitions than a grammar can expand (at most 1000)"),
    ] {
        let (status, body) = s.post(
            "/api/generate",
            json!({"model": "smol", "prompt": "x", "format": format, "stream": false}),
        );
        assert_eq!((status, body["error"].as_str()), (400, Some(want)), "{format}");
    }
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200);

    let (status, body) = s.post(
        "/api/embed",
        json!({"model": "smol", "input": ["a cat", "a dog", "a car"], "dimensions": 64}),
    );
    assert_eq!(status, 200, "{body}");
    let e = body["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    for v in e {
        let v: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 64);
        assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3);
    }
    assert!(body["prompt_eval_count"].as_u64().unwrap() >= 3);
    // Inputs longer than the context: cut by default, an error when truncate is false.
    let long = "word ".repeat(400);
    let (status, body) = s.post(
        "/api/embed",
        json!({"model": "smol", "input": long, "options": {"num_ctx": 128}}),
    );
    assert_eq!(status, 200, "{body}");
    // llama.cpp rounds a context up to a multiple of 256 tokens.
    let n = body["prompt_eval_count"].as_u64().unwrap();
    assert!((128..=256).contains(&n), "{n}");
    let (status, body) = s.post(
        "/api/embed",
        json!({"model": "smol", "input": long, "truncate": false, "options": {"num_ctx": 128}}),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("input length exceeds the context length"),
        "{body}"
    );
    let (status, _) = s.post(
        "/api/embed",
        json!({"model": "smol", "input": "x", "dimensions": 0}),
    );
    assert_eq!(status, 400);
    let (status, body) = s.post("/api/embed", json!({"model": "smol", "input": 5}));
    assert_eq!(status, 400, "{body}");
    // The older endpoint: one vector, not normalized.
    let (status, body) = s.post(
        "/api/embeddings",
        json!({"model": "smol", "prompt": "a cat"}),
    );
    assert_eq!(status, 200);
    let v: Vec<f64> = body["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() > 1e-3);
    // The server keeps serving answers after all that.
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200);
}

/// A format (or a forced call) constrains what follows the thinking, not the thinking: the
/// model thinks in words, then answers in the format (as Ollama). Three earlier turns show
/// SmolLM2 the shape, thinking then a sentence; greedy decoding follows the thinking, and
/// only the grammar turns the sentence into JSON.
#[test]
fn format_applies_after_thinking() {
    let s = TestServer::start();
    s.create_smol_think();
    let mut messages = Vec::new();
    for (q, a) in [("2+3", 5), ("4+4", 8), ("1+6", 7)] {
        messages.push(json!({"role": "user", "content": format!("What is {q}?")}));
        messages.push(json!({"role": "assistant", "content": format!("<think>\nAdd the numbers.\n</think>\nThe answer is {a}.")}));
    }
    messages.push(json!({"role": "user", "content": "What is 3+3?"}));
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]});
    let (status, body) = s.post(
        "/api/chat",
        json!({"model": "smol-think", "messages": messages, "think": true, "format": schema,
               "stream": false, "options": {"temperature": 0, "num_predict": 60}}),
    );
    assert_eq!(status, 200, "{body}");
    let message = &body["message"];
    assert_eq!(message["thinking"], "Add the numbers.\n", "{body}");
    let answer: serde_json::Value =
        serde_json::from_str(message["content"].as_str().unwrap()).expect("content is JSON");
    assert!(answer["answer"].is_i64(), "{body}");

    // OpenAI's route: reasoning_effort with response_format, streamed.
    let chunks = sse_chunks(
        &s,
        "/v1/chat/completions",
        json!({"model": "smol-think", "messages": messages, "reasoning_effort": "low", "stream": true,
               "response_format": {"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}},
               "temperature": 0, "max_tokens": 60}),
    );
    let (mut reasoning, mut content) = (String::new(), String::new());
    for c in &chunks {
        let delta = &c["choices"][0]["delta"];
        reasoning += delta["reasoning"].as_str().unwrap_or_default();
        content += delta["content"].as_str().unwrap_or_default();
    }
    assert_eq!(reasoning, "Add the numbers.\n", "{chunks:?}");
    let answer: serde_json::Value = serde_json::from_str(&content).expect("content is JSON");
    assert!(answer["answer"].is_i64(), "{content}");
}

/// `echo` puts the prompt before the completion, in whole answers and at the start of each
/// choice's stream, as OpenAI's legacy completions do; with `logprobs` (which would need the
/// prompt's own) it is refused by name.
#[test]
fn completions_echo_the_prompt_first() {
    let s = TestServer::start();
    s.create_smol();
    let prompt = "The capital of France is";
    let ask = |extra: Value| {
        let mut body =
            json!({"model": "smol", "prompt": prompt, "max_tokens": 6, "temperature": 0});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let (status, plain) = s.post("/v1/completions", ask(json!({})));
    assert_eq!(status, 200, "{plain}");
    let plain = plain["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!plain.is_empty());
    let (status, echoed) = s.post("/v1/completions", ask(json!({"echo": true})));
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["choices"][0]["text"], format!("{prompt}{plain}"));
    let chunks = sse_chunks(
        &s,
        "/v1/completions",
        ask(json!({"echo": true, "stream": true, "n": 2})),
    );
    for index in 0..2 {
        let text: String = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().unwrap())
            .filter(|ch| ch["index"] == index)
            .map(|ch| ch["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, format!("{prompt}{plain}"), "choice {index}");
    }
    let (status, body) = s.post("/v1/completions", ask(json!({"echo": true, "logprobs": 2})));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("echo with logprobs is not supported"),
        "{body}"
    );
}

/// A thinking model that would end its answer before closing its thinking gets the close
/// written for it, then the format or the forced call: the client gets what it asked for,
/// not an empty answer. (Greedy SmolLM2 ends these answers inside its thinking.)
#[test]
fn a_format_or_a_forced_call_follows_thinking_the_model_did_not_close() {
    let s = TestServer::start();
    s.create_smol_think();
    let question = json!([{"role": "user", "content": "What is 2+3?"}]);
    // Without a format the model ends its answer inside its thinking: no content at all.
    let (status, body) = s.post(
        "/api/chat",
        json!({"model": "smol-think", "messages": question, "think": true,
               "stream": false, "options": {"temperature": 0, "num_predict": 80}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done_reason"], "stop", "{body}");
    assert_eq!(body["message"]["content"], "", "{body}");
    let thinking = body["message"]["thinking"].clone();
    assert!(!thinking.as_str().unwrap().is_empty(), "{body}");
    // With one, the same thinking, then the format.
    let (status, body) = s.post(
        "/api/chat",
        json!({"model": "smol-think", "messages": question, "think": true, "format": "json",
               "stream": false, "options": {"temperature": 0, "num_predict": 80}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done_reason"], "stop", "{body}");
    assert_eq!(body["message"]["thinking"], thinking, "{body}");
    let content = body["message"]["content"].as_str().unwrap();
    serde_json::from_str::<Value>(content).unwrap_or_else(|e| panic!("{e}: {body}"));

    let add = json!({"type": "function", "function": {"name": "add", "description": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}}});
    let (status, body) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol-think", "messages": question, "reasoning_effort": "medium",
               "tools": [add], "tool_choice": "required", "temperature": 0, "max_tokens": 150}),
    );
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"], "add",
        "{body}"
    );
}

/// Roles are matched without regard to case (as Ollama), and OpenAI's `developer` is the
/// system: each gives the same prompt, so the same tokens and the same greedy answer.
#[test]
fn roles_match_any_case_and_developer_is_system() {
    let s = TestServer::start();
    s.create_smol();
    let chat = |path: &str, system_role: &str, user_role: &str| {
        let messages = json!([{"role": system_role, "content": "You answer in French."},
                              {"role": user_role, "content": "Name a fruit."}]);
        let (status, body) = s.post(
            path,
            json!({"model": "smol", "messages": messages, "stream": false, "temperature": 0,
                   "max_tokens": 8, "options": {"temperature": 0, "num_predict": 8}}),
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    let native = chat("/api/chat", "system", "user");
    let shouted = chat("/api/chat", "SYSTEM", "User");
    // The second asks with the same prompt, so most of it comes from the cache.
    let prompt = |b: &Value| b["prompt_eval_count"].as_u64().unwrap();
    assert_eq!(prompt(&native), prompt(&shouted), "{shouted}");
    assert!(
        shouted["prompt_cached_count"].as_u64() > Some(1),
        "{shouted}"
    );
    assert_eq!(native["message"]["content"], shouted["message"]["content"]);
    let system = chat("/v1/chat/completions", "system", "user");
    let developer = chat("/v1/chat/completions", "developer", "user");
    assert_eq!(
        system["usage"]["prompt_tokens"], developer["usage"]["prompt_tokens"],
        "{developer}"
    );
    assert_eq!(
        system["choices"][0]["message"]["content"],
        developer["choices"][0]["message"]["content"]
    );
    // The developer message's text is in the prompt: a longer one makes a longer prompt.
    let (_, longer) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol", "max_tokens": 1, "messages": [
            {"role": "developer", "content": "You answer in French, always, and in one word."},
            {"role": "user", "content": "Name a fruit."}]}),
    );
    assert!(
        longer["usage"]["prompt_tokens"].as_u64() > developer["usage"]["prompt_tokens"].as_u64(),
        "{longer}"
    );
}

/// A thinking level reaches the template as `.ThinkLevel` (as Ollama's), from `think` and
/// from OpenAI's `reasoning_effort` or `reasoning.effort`; an unknown effort is refused.
#[test]
fn thinking_levels_reach_the_template() {
    let s = TestServer::start();
    s.create_smol();
    let template = "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}\
        <|im_start|>assistant\n{{ if eq .ThinkLevel \"high\" }}Think very carefully about every step first. {{ end }}\
        {{ if .Think }}<think>\n{{ end }}";
    let (status, body) = s.post(
        "/api/create",
        json!({"model": "smol-levels", "from": "smol", "template": template, "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    let user = json!([{"role": "user", "content": "What is 2+2?"}]);
    let prompt_tokens = |path: &str, extra: Value| {
        let mut body = json!({"model": "smol-levels", "messages": user, "stream": false,
                              "max_tokens": 1, "options": {"num_predict": 1}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, resp) = s.post(path, body);
        assert_eq!(status, 200, "{resp}");
        resp["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap_or_else(|| resp["prompt_eval_count"].as_u64().unwrap())
    };
    let on = prompt_tokens("/api/chat", json!({"think": true}));
    let high = prompt_tokens("/api/chat", json!({"think": "high"}));
    assert!(high > on + 5, "{high} {on}");
    assert_eq!(prompt_tokens("/api/chat", json!({"think": "low"})), on);
    let v1 = "/v1/chat/completions";
    assert_eq!(prompt_tokens(v1, json!({"reasoning_effort": "high"})), high);
    assert_eq!(
        prompt_tokens(v1, json!({"reasoning": {"effort": "high"}})),
        high
    );
    assert_eq!(prompt_tokens(v1, json!({"reasoning_effort": "medium"})), on);
    let (status, body) = s.post(
        v1,
        json!({"model": "smol-levels", "messages": user, "reasoning_effort": "banana"}),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "invalid reasoning value: 'banana' (must be \"high\", \"medium\", \"low\", or \"none\")"
    );
}

/// `n` choices: each sampled on its own, streamed interleaved by index, with one usage that
/// counts the prompt once and every choice's tokens.
#[test]
fn several_choices_for_one_request() {
    let s = TestServer::start_with(&[("CORRAL_NUM_PARALLEL", "2")]);
    s.create_smol();
    let ask = json!({"model": "smol", "messages": [{"role": "user", "content": "Name a fruit."}],
                     "n": 3, "seed": 7, "temperature": 1.5, "max_tokens": 12});
    let (status, v) = s.post("/v1/chat/completions", ask.clone());
    assert_eq!(status, 200, "{v}");
    let texts: Vec<String> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i);
            c["message"]["content"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(texts.len(), 3);
    // Each choice has its own seed (7, 8, 9): at this temperature they do not all agree.
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");
    let u = &v["usage"];
    let (_, one) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol", "messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 1}),
    );
    assert_eq!(u["prompt_tokens"], one["usage"]["prompt_tokens"], "{u}");
    assert!(u["completion_tokens"].as_u64().unwrap() > 12, "{u}");
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    // Streamed: chunks of every choice, one finish reason each, the usage once at the end.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = sse_chunks(&s, "/v1/chat/completions", streamed);
    let mut text = vec![String::new(); 3];
    let mut finishes = vec![0; 3];
    let mut eval = 0;
    for c in &chunks {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            text[i] += ch["delta"]["content"].as_str().unwrap_or_default();
            finishes[i] += usize::from(!ch["finish_reason"].is_null());
        }
        if let Some(u) = c.get("usage") {
            eval += u["completion_tokens"].as_u64().unwrap();
        }
    }
    assert!(text.iter().all(|t| !t.is_empty()), "{text:?}");
    assert_eq!(finishes, vec![1, 1, 1]);
    let usages = chunks.iter().filter(|c| c.get("usage").is_some()).count();
    assert_eq!(usages, 1);
    assert!(eval > 12, "{eval}");
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    // Legacy completions too; greedy choices agree.
    let (status, v) = s.post(
        "/v1/completions",
        json!({"model": "smol", "prompt": "Once upon a time", "n": 2, "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][0]["text"], v["choices"][1]["text"]);
    assert_eq!(v["usage"]["completion_tokens"], 8);
}

/// More choices than the model can take at once (its slots and queue places): one 503 that
/// says why "try again" alone would not do, and the choices that did start are cancelled.
#[test]
fn more_choices_than_places_is_one_clear_503() {
    let s = TestServer::start_with(&[("CORRAL_NUM_PARALLEL", "1"), ("CORRAL_MAX_QUEUE", "0")]);
    s.create_smol();
    for path in ["/v1/chat/completions", "/v1/completions"] {
        let mut body = json!({"model": "smol", "n": 3, "max_tokens": 400, "temperature": 0});
        if path == "/v1/completions" {
            body["prompt"] = json!("Tell a long story.");
        } else {
            body["messages"] = json!([{"role": "user", "content": "Tell a long story."}]);
        }
        let started = std::time::Instant::now();
        let (status, v) = s.post(path, body);
        assert_eq!(status, 503, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("each of the 3 choices takes a place"),
            "{message}"
        );
        // The choice that got the slot was cancelled, not written out: the slot is free within
        // moments (its lease is let go as the refusal is sent), not after 400 tokens.
        let refused = std::time::Instant::now();
        loop {
            let (status, v) = s.post(
                "/v1/completions",
                json!({"model": "smol", "prompt": "Hi", "max_tokens": 2}),
            );
            if status == 200 {
                break;
            }
            assert!(
                refused.elapsed() < std::time::Duration::from_secs(5),
                "{v} after {:?}",
                started.elapsed()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
