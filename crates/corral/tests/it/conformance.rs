//! Details real clients and Ollama's own parser tests depend on: `load_duration` on every
//! answer, OpenAI error types and cached-prompt usage, Modelfile errors and deprecated
//! parameters, and `show --modelfile` values that read back the same.

use crate::common;

use common::*;
use serde_json::{json, Value};

#[test]
fn answers_and_errors_as_clients_expect() {
    let s = TestServer::start();
    s.create_smol();
    let short = json!({"temperature": 0, "num_predict": 3});
    // load_duration is there and above 0 on every final object, loaded model or not.
    for round in 0..2 {
        for (path, body) in [
            (
                "/api/generate",
                json!({"model": "smol", "prompt": "Hi", "stream": false, "options": short}),
            ),
            (
                "/api/chat",
                json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "stream": false, "options": short}),
            ),
        ] {
            let (status, v) = s.post(path, body.clone());
            assert_eq!(status, 200, "{v}");
            assert!(
                v["load_duration"].as_u64().unwrap_or(0) > 0,
                "round {round} {path}: {v}"
            );
            let mut streamed = body;
            streamed["stream"] = json!(true);
            let last = s.stream(path, streamed).pop().unwrap().1;
            assert_eq!(last["done"], true);
            assert!(
                last["load_duration"].as_u64().unwrap_or(0) > 0,
                "{path} streamed: {last}"
            );
        }
    }

    // Answers name the model as the request did, as Ollama's do (its full name is in /api/ps).
    for name in ["smol", "smol:latest"] {
        for (path, body) in [
            (
                "/api/generate",
                json!({"model": name, "prompt": "Hi", "stream": false, "options": short}),
            ),
            (
                "/api/chat",
                json!({"model": name, "messages": [{"role": "user", "content": "Hi"}], "stream": false, "options": short}),
            ),
            ("/api/embed", json!({"model": name, "input": "Hi"})),
            ("/v1/embeddings", json!({"model": name, "input": "Hi"})),
        ] {
            let (status, v) = s.post(path, body);
            assert_eq!(
                (status, v["model"].as_str()),
                (200, Some(name)),
                "{path}: {v}"
            );
        }
    }

    // OpenAI errors carry Ollama's types.
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(status, 404);
    assert_eq!(v["error"]["type"], "not_found_error", "{v}");
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol", "messages": "not a list"}),
    );
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");

    // usage.prompt_tokens counts the whole prompt; the cached part is named apart.
    let chat = json!({
        "model": "smol",
        "messages": [{"role": "user", "content": "Name three colours of the rainbow, please."}],
        "max_tokens": 3, "temperature": 0,
    });
    let (_, first) = s.post("/v1/chat/completions", chat.clone());
    let (_, second) = s.post("/v1/chat/completions", chat);
    let (u1, u2) = (&first["usage"], &second["usage"]);
    assert!(u1["prompt_tokens"].as_u64().unwrap() > 10, "{u1}");
    assert_eq!(u2["prompt_tokens"], u1["prompt_tokens"], "{u1} {u2}");
    let cached = u2["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached > 5, "the second request reused nothing: {u2}");
    assert_eq!(
        u2["total_tokens"].as_u64().unwrap(),
        u2["prompt_tokens"].as_u64().unwrap() + u2["completion_tokens"].as_u64().unwrap()
    );
    // So does the native prompt_eval_count, as Ollama's: the cached part is counted in it,
    // and named apart in prompt_cached_count.
    let chat = json!({
        "model": "smol", "stream": false, "options": {"num_predict": 3, "temperature": 0},
        "messages": [{"role": "user", "content": "Name three colours of the sea, please."}],
    });
    let (_, first) = s.post("/api/chat", chat.clone());
    let (_, second) = s.post("/api/chat", chat);
    assert!(first["prompt_eval_count"].as_u64().unwrap() > 10, "{first}");
    assert_eq!(
        second["prompt_eval_count"], first["prompt_eval_count"],
        "{second}"
    );
    assert!(
        second["prompt_cached_count"].as_u64().unwrap() > 5,
        "{second}"
    );
}

#[test]
fn modelfile_errors_deprecated_parameters_and_round_trips() {
    let s = TestServer::start();
    let from = format!("FROM {}\n", model_file(SMOL).display());
    // A PARAMETER or MESSAGE with nothing after its name is an unexpected EOF on its line.
    for (text, line) in [
        (format!("{from}PARAMETER temperature\n"), 2),
        (format!("{from}\nMESSAGE user\n"), 3),
    ] {
        let out = s.try_create("bad", &text);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&format!("(line {line}): unexpected EOF")),
            "{err}"
        );
    }
    // Parameters Ollama dropped are ignored with a warning, in Modelfiles and in /api/create.
    let out = s.try_create(
        "old",
        &format!("{from}PARAMETER mirostat 2\nPARAMETER tfs_z 1.0\nPARAMETER penalize_newline true\nPARAMETER top_k 7\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for p in ["mirostat", "tfs_z", "penalize_newline"] {
        assert!(
            stderr(&out).contains(&format!(
                "warning: parameter '{p}' is no longer supported and was ignored"
            )),
            "{}",
            stderr(&out)
        );
    }
    let (_, show) = s.post("/api/show", json!({"model": "old"}));
    assert_eq!(
        show["parameters"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["top_k", "7"]
    );
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "old2", "from": "old", "parameters": {"mirostat_eta": 0.1, "low_vram": true, "top_k": 9}}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(s
        .log()
        .contains("parameter is no longer supported and was ignored"));

    // Values with newlines and quotes survive show --modelfile and a second create.
    s.create(
        "quoting",
        &format!(
            "{from}PARAMETER stop \"\"\"### User:\n\"\"\"\nPARAMETER stop <end>\nSYSTEM \"\"\"Say \"yes\".\nThen stop.\"\"\"\nMESSAGE user \"\"\"line one\nline \"two\" end\"\"\"\n"
        ),
    );
    let printed = stdout(&s.corral(&["show", "quoting", "--modelfile"]));
    assert!(
        printed.contains("PARAMETER stop \"\"\"### User:\n\"\"\"\n"),
        "{printed}"
    );
    std::fs::write(s.dir.path().join("Modelfile.again"), &printed).unwrap();
    let out = s.corral(&[
        "create",
        "again",
        "-f",
        s.dir.path().join("Modelfile.again").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}\n{printed}", stderr(&out));
    let show = |m: &str| -> Value { s.post("/api/show", json!({"model": m})).1 };
    let (a, b) = (show("quoting"), show("again"));
    for field in ["parameters", "system", "messages"] {
        assert_eq!(
            a[field], b[field],
            "{field} changed in the round trip:\n{printed}"
        );
    }
    assert_eq!(a["system"], "Say \"yes\".\nThen stop.");
}

/// A conversation that ends with the assistant's words is continued from them (a prefill),
/// with the GGUF's own Jinja template too: greedy decoding from the same context goes on
/// exactly as the model's own answer did, instead of opening a new turn.
#[test]
fn a_final_assistant_message_is_continued() {
    let s = TestServer::start();
    s.create_smol();
    let user = json!({"role": "user", "content": "Why is the sky blue? Answer in two sentences."});
    let greedy = json!({"temperature": 0, "num_predict": 24, "repeat_penalty": 1.0});
    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "smol", "messages": [user], "stream": false, "options": greedy}),
    );
    assert_eq!(status, 200, "{v}");
    let whole = v["message"]["content"].as_str().unwrap().to_string();
    // Cut after the first few words, at a space, so the prefill ends where a token does.
    let cut = whole
        .match_indices(' ')
        .nth(3)
        .map(|(i, _)| i)
        .expect("a few words");
    let (start, rest) = whole.split_at(cut);
    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "smol", "stream": false, "options": greedy,
               "messages": [user, {"role": "assistant", "content": start}]}),
    );
    assert_eq!(status, 200, "{v}");
    let continued = v["message"]["content"].as_str().unwrap();
    // The continuation is the rest of the model's own answer (as far as both go: the second
    // one had fewer tokens left before its limit).
    let n = continued.len().min(rest.len()).min(40);
    assert!(n > 10, "too short to compare: {continued:?} / {rest:?}");
    assert_eq!(
        &continued[..n],
        &rest[..n],
        "{start:?} | {continued:?} | {rest:?}"
    );
}

/// What Ollama's Go decoder takes is taken, on every route: `null` for a field of the request
/// or of a message (the field left out), escapes of lone UTF-16 surrogates and bytes that are
/// not UTF-8 (both read as U+FFFD).
#[test]
fn what_gos_decoder_takes_is_taken() {
    let s = TestServer::start();
    s.create_smol();
    let n = r#""options": {"num_predict": 2}, "stream": false"#;
    for (path, body) in [
        (
            "/api/generate",
            format!(r#"{{"model": "smol", "prompt": "Hi \ud83d", {n}}}"#),
        ),
        (
            "/api/generate",
            format!(r#"{{"model": "smol", "prompt": null, "system": null, {n}}}"#),
        ),
        (
            "/api/chat",
            format!(
                r#"{{"model": "smol", "messages": [{{"role": "user", "content": "Hi \ude00"}},
                    {{"role": "assistant", "content": null, "tool_calls": null}},
                    {{"role": "user", "content": "Bye"}}], {n}}}"#
            ),
        ),
        (
            "/api/chat",
            format!(r#"{{"model": "smol", "messages": null, {n}}}"#),
        ),
        (
            "/v1/chat/completions",
            r#"{"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi \ud83d"}]}"#.to_string(),
        ),
        (
            "/v1/messages",
            r#"{"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi \ude00"}]}"#.to_string(),
        ),
    ] {
        let (status, v) = s.post_raw(path, &body);
        assert_eq!(status, 200, "{path} {body}: {v}");
    }
    let resp = s
        .http
        .post(s.url("/api/generate"))
        .body(b"{\"model\": \"smol\", \"prompt\": \"Hi \xff\", \"stream\": false}".to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // A null where a value is needed is still refused, with the field named.
    let (status, v) = s.post_raw("/api/generate", r#"{"model": null, "prompt": "Hi"}"#);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("null"), "{v}");
}

/// Ollama's `_debug_render_only`: the prompt as the model's template renders it, in
/// `_debug_info.rendered_template`, and no answer; on the native routes and OpenAI's chat.
#[test]
fn debug_render_only_shows_the_rendered_prompt() {
    let s = TestServer::start();
    s.create_smol_think();
    let messages =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "smol-think", "messages": messages, "_debug_render_only": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["done"], false, "{v}");
    assert_eq!(v["message"]["content"], "", "{v}");
    // The test model's template (tests/models/smol-think.Modelfile), thinking on by default.
    let rendered = "<|im_start|>system\nBe brief.\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n";
    assert_eq!(v["_debug_info"]["rendered_template"], rendered, "{v}");
    // Streaming asked for or not, one object; and the same through OpenAI's route.
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol-think", "messages": messages, "stream": true, "_debug_render_only": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["_debug_info"]["rendered_template"], rendered, "{v}");
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "smol-think", "prompt": "1, 2, 3", "raw": true, "_debug_render_only": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["_debug_info"]["rendered_template"], "1, 2, 3", "{v}");
    assert_eq!(v["response"], "", "{v}");
}
