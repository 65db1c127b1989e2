//! Every bad input gets a clear error with Ollama's status code, the server keeps serving,
//! and the store is unchanged.

use crate::common;

use std::io::Write;

use common::*;
use serde_json::json;

fn still_serving(s: &TestServer) {
    let v = s.get("/api/version");
    // The Ollama API level, which clients gate features on, and Corral's own version.
    assert_eq!(v["version"], "0.13.3");
    assert_eq!(v["corral_version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn unknown_model_and_malformed_requests() {
    let s = TestServer::start();
    s.create_smol();
    let before = s.store_files();
    let cases = [
        (
            "/api/generate",
            json!({"model": "nope", "prompt": "hi"}),
            404,
            "model 'nope' not found",
        ),
        (
            "/api/chat",
            json!({"model": "nope", "messages": []}),
            404,
            "model 'nope' not found",
        ),
        (
            "/api/show",
            json!({"model": "nope"}),
            404,
            "model 'nope' not found",
        ),
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "hi", "options": {"temperature": "hot"}}),
            400,
            "option \"temperature\" must be of type float",
        ),
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "hi", "options": {"top_p": 7}}),
            400,
            "option \"top_p\" must be > 0.0 and <= 1.0",
        ),
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "hi", "keep_alive": "soon"}),
            400,
            "invalid keep_alive",
        ),
        (
            "/api/chat",
            json!({"model": "smol", "messages": [{"role": "wizard", "content": "x"}]}),
            400,
            "invalid message role 'wizard'",
        ),
        // Images for a model that cannot see are refused, not dropped, in Ollama's words.
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "What is in this picture?", "images": ["iVBORw0KGgo="]}),
            400,
            "this model is missing data required for image input: 'smol:latest' has no vision projector",
        ),
        (
            "/api/chat",
            json!({"model": "smol", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "and this?", "images": ["iVBORw0KGgo="]}]}),
            400,
            "this model is missing data required for image input",
        ),
        (
            "/api/create",
            json!({"model": "bad/../name", "from": "smol"}),
            400,
            "invalid model name",
        ),
        (
            "/api/create",
            json!({"model": "x", "from": "smol", "template": "{{ .Prompt "}),
            400,
            "template error:",
        ),
        (
            "/api/create",
            json!({"model": "x", "from": "smol", "parameters": {"Temperature": 1}}),
            400,
            "unknown parameter 'Temperature'",
        ),
        (
            "/api/create",
            json!({"model": "x", "files": {"m.gguf": "sha256:../../etc"}}),
            400,
            "invalid digest",
        ),
        (
            "/api/create",
            json!({"model": "x", "from": "missing"}),
            404,
            "model 'missing' not found",
        ),
    ];
    for (path, body, want_status, want_msg) in cases {
        let (status, resp) = s.post(path, body.clone());
        assert_eq!(status, want_status, "{path} {body} -> {resp}");
        let msg = resp["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {resp}"));
        assert!(
            msg.contains(want_msg),
            "{path} {body}: {msg:?} should contain {want_msg:?}"
        );
        still_serving(&s);
    }
    let (status, resp) = s.post_raw("/api/generate", "{\"model\": \"smol\", ");
    assert_eq!(status, 400);
    assert!(
        resp["error"].as_str().unwrap().contains("invalid JSON"),
        "{resp}"
    );
    let (status, resp) = s.post_raw("/api/chat", "");
    assert_eq!(status, 400);
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("missing request body"),
        "{resp}"
    );
    let (status, resp) = s.post_raw("/api/generate", "{\"prompt\": 5}");
    assert_eq!(status, 400, "{resp}");
    // An empty list of images is no image: the answer comes.
    let (status, resp) = s.post(
        "/api/chat",
        json!({"model": "smol", "messages": [{"role": "user", "content": "hi", "images": []}],
               "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["done"], true, "{resp}");
    assert_eq!(s.store_files(), before, "the store changed");
    still_serving(&s);
    // Older clients' field names for create, which Ollama still reads; and Ollama's Go
    // client, which sends `"name": ""` beside `model` with every request.
    let (status, body) = s.post(
        "/api/create",
        json!({"name": "smol-old", "from": "smol", "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    for path in ["/api/show", "/api/create"] {
        let (status, body) = s.post(
            path,
            json!({"model": "smol-old", "name": "", "from": "smol", "stream": false}),
        );
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = s.post(
        "/api/create",
        json!({"name": "smol-q", "from": "smol", "quantization": "q8_0", "stream": false}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("quantization is only supported for F16 and F32 models"),
        "{body}"
    );
    // An option that changes nothing here is answered, and the log says why.
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "hi", "stream": false,
               "options": {"main_gpu": 1, "num_predict": 1}}),
    );
    assert_eq!(status, 200, "{body}");
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    assert!(log.contains("option main_gpu has no effect"), "{log}");
}

#[test]
fn files_that_are_not_loadable_gguf_are_refused_at_create() {
    let s = TestServer::start();
    let before = s.store_files();
    let dir = s.dir.path();
    std::fs::write(dir.join("notes.gguf"), "these are not weights").unwrap();
    let smol = std::fs::read(model_file(SMOL)).unwrap();
    std::fs::File::create(dir.join("cut.gguf"))
        .unwrap()
        .write_all(&smol[..smol.len() / 2])
        .unwrap();
    // A device (it would never end) and a link to nothing are named as what they are.
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.gguf")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone.gguf"), dir.join("dangling.gguf")).unwrap();
    for (file, want) in [
        ("notes.gguf", "not a GGUF file"),
        ("cut.gguf", "truncated"),
        ("absent.gguf", "FROM ./absent.gguf: no such file"),
        (
            "zero.gguf",
            "FROM ./zero.gguf: not a regular file or a folder",
        ),
        (
            "dangling.gguf",
            "FROM ./dangling.gguf: a symbolic link to nothing",
        ),
    ] {
        let out = s.try_create("broken", &format!("FROM ./{file}\n"));
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.starts_with("Error: ") && err.contains(want),
            "{file}: {err}"
        );
    }
    assert_eq!(
        s.store_files(),
        before,
        "nothing may be written for a bad file"
    );

    // Through the API alone: the blob is accepted (it is only bytes), the model is not.
    let bytes = b"these are not weights".to_vec();
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    let resp = s
        .http
        .post(s.url(&format!("/api/blobs/{digest}")))
        .body(bytes)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let (status, resp) = s.post(
        "/api/create",
        json!({"model": "broken", "files": {"notes.gguf": digest}}),
    );
    assert_eq!(status, 400);
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("invalid model file 'notes.gguf': not a GGUF file"),
        "{resp}"
    );
    // A blob whose content does not match its digest is refused and not kept.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let resp = s
        .http
        .post(s.url(&format!("/api/blobs/{wrong}")))
        .body("abc")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().unwrap().contains("digest mismatch"));
    assert_eq!(
        s.http
            .head(s.url(&format!("/api/blobs/{wrong}")))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(s.get("/api/tags")["models"], json!([]));
    still_serving(&s);
}

#[test]
fn modelfile_errors_name_the_line() {
    let s = TestServer::start();
    let out = s.try_create("x", "FROM ./a.gguf\n# fine\nFROMM b\n");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("(line 3): command must be one of"),
        "{}",
        stderr(&out)
    );
    let out = s.try_create(
        "x",
        &format!(
            "FROM {}\nPARAMETER Temperature 1\n",
            model_file(SMOL).display()
        ),
    );
    assert!(
        stderr(&out).contains("unknown parameter 'Temperature'"),
        "{}",
        stderr(&out)
    );
    assert!(s.store_files().is_empty() || s.get("/api/tags")["models"] == json!([]));
}

#[test]
fn prompts_longer_than_the_context_are_truncated_not_fatal() {
    let s = TestServer::start();
    s.create_smol();
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(200);
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": long, "stream": false, "options": {"num_ctx": 256, "num_predict": 8}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"], true);
    assert!(body["prompt_eval_count"].as_u64().unwrap() < 256, "{body}");
    // The runner survived: a normal request on the same model works.
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_ctx": 256, "num_predict": 4}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 4);
}

#[test]
fn cli_reports_errors_and_exits_non_zero() {
    let s = TestServer::start();
    // A model that is not here is pulled first, as with Ollama; here its registry is down.
    let out = s.corral(&["run", "127.0.0.1:9/me/nope", "hi"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.starts_with("pulling manifest\n"), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("Error: pull model manifest: ") && last.contains("127.0.0.1:9"),
        "{err}"
    );
    let out = std::process::Command::new(corral_exe())
        .args(["list"])
        .env("CORRAL_HOST", "127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("could not connect"),
        "{}",
        stderr(&out)
    );
}

/// What a request brings that could break its runner, or that is the client's mistake, is a
/// 400 that names it, and the runner that answered it is the one that answers next.
#[test]
fn request_data_that_would_break_the_runner_is_refused() {
    let s = TestServer::start();
    s.create_smol();
    s.create_smol_tools();
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "hi", "stream": false, "options": {"num_predict": 1}}),
    );
    assert_eq!(status, 200);
    let runner = s.runner_pids();
    let user = json!([{"role": "user", "content": "hi"}]);
    for (path, body, want) in [
        // A template that calls itself would overflow the runner's stack.
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "hi", "template": "{{ define \"a\" }}{{ template \"a\" }}{{ end }}{{ template \"a\" }}"}),
            "template error: template \"a\" calls itself: recursive templates are not supported",
        ),
        // Loops that would keep the runner busy for ever are cut off.
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "hi", "template": "{{ range 1000 }}{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}{{ end }}"}),
            "template error: range iteration budget exhausted",
        ),
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "hi", "template": "{{ .Foo }}"}),
            "template error: map has no entry for key: Foo",
        ),
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "hi", "context": [49152]}),
            "context: token 49152 is out of range (the vocabulary has 49152 tokens)",
        ),
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "hi", "context": [-1]}),
            "context: token -1 is out of range (the vocabulary has 49152 tokens)",
        ),
        // SmolLM2 adds no BOS: an empty text has no token to pool.
        (
            "/api/embed",
            json!({"model": "smol", "input": ["", "a"]}),
            "input 0 has no tokens to embed",
        ),
        (
            "/api/chat",
            json!({"model": "smol-tools", "messages": user, "tools": [1]}),
            "tools[0] is not an object",
        ),
        (
            "/api/chat",
            json!({"model": "smol-tools", "messages": user, "tools": [{"type": "function", "function": {"description": "x"}}]}),
            "tools[0] has no function name",
        ),
        (
            "/api/chat",
            json!({"model": "smol-tools", "messages": user, "tools": [{"type": "retrieval"}]}),
            "tools[0] has type \"retrieval\"; only \"function\" tools are supported",
        ),
        (
            "/api/chat",
            json!({"model": "smol-tools", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [{}]}]}),
            "messages[1].tool_calls[0] has no function name",
        ),
        (
            "/api/chat",
            json!({"model": "smol-tools", "messages": user, "tool_choice": "required"}),
            "tool_choice is only allowed when tools are given",
        ),
    ] {
        let mut body = body;
        body["stream"] = json!(false);
        let (status, v) = s.post(path, body.clone());
        assert_eq!((status, v["error"].as_str()), (400, Some(want)), "{body}");
    }
    assert_eq!(s.runner_pids(), runner, "the runner was replaced");
    // What Ollama's library templates use renders: `slice` to find the last message, a
    // variable set again inside a range, `break`, and a tool's arguments printed as JSON.
    let go = "{{ $user := -1 }}{{ range $i, $m := .Messages }}{{ if eq $m.Role \"user\" }}{{ $user = $i }}{{ end }}{{ end }}\
              {{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}{{ $m.Content }}\
              {{ range .ToolCalls }}{{ .Function.Arguments }}{{ break }}{{ end }}{{ if $last }}/{{ $user }}{{ end }}{{ end }}";
    let chat = |model: &str| {
        let (status, v) = s.post(
            "/api/chat",
            json!({"model": model, "stream": false, "options": {"num_predict": 1},
                   "messages": [{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"b": 1, "a": "<"}}}]},
                                {"role": "user", "content": "again"}]}),
        );
        assert_eq!(status, 200, "{v}");
        v
    };
    chat("smol-tools");
    s.create(
        "ollama-style",
        &format!("FROM smol\nTEMPLATE \"\"\"{go}\"\"\"\n"),
    );
    let v = chat("ollama-style");
    // hi + {"a":"\u003c","b":1} + again + /2: the arguments as Go's JSON, in key order.
    let expected = "hi{\"a\":\"\\u003c\",\"b\":1}again/2";
    let (_, count) = s.post(
        "/api/generate",
        json!({"model": "smol", "raw": true, "prompt": expected, "stream": false, "options": {"num_predict": 1}}),
    );
    assert_eq!(
        v["prompt_eval_count"].as_u64().unwrap(),
        count["prompt_eval_count"].as_u64().unwrap(),
        "{v} {count}"
    );
    // A model cannot be created with such a template either.
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "loop", "from": "smol", "template": "{{ block \"b\" . }}{{ template \"b\" . }}{{ end }}", "stream": false}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("calls itself"), "{v}");
    still_serving(&s);
}

/// Names, races and odd values: each answer is one a client can act on, never a 500.
#[test]
fn names_races_and_odd_values_get_clear_answers() {
    let s = TestServer::start();
    s.create_smol();
    // A name that differs from an existing model's only in case would be the same model on a
    // case-insensitive lookup: refused, as Ollama refuses it, and the model keeps its name.
    let (status, v) = s.post(
        "/api/copy",
        json!({"source": "smol", "destination": "SMOL"}),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (
            400,
            Some("a model with that name already exists: 'smol:latest'")
        )
    );
    let names = s.model_names();
    assert_eq!(names, ["smol:latest"]);
    // Copies and deletes of one name racing each other, through two servers on the same
    // store: each succeeds or finds nothing.
    let store = s.dir.path().join("models");
    let other = TestServer::start_with(&[("CORRAL_MODELS", store.to_str().unwrap())]);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let s = if t % 2 == 0 { &s } else { &other };
                scope.spawn(move || {
                    (0..30)
                        .map(|i| {
                            if (i + t) % 2 == 0 {
                                s.post(
                                    "/api/copy",
                                    json!({"source": "smol", "destination": "race"}),
                                )
                                .0
                            } else {
                                s.http
                                    .delete(s.url("/api/delete"))
                                    .json(&json!({"model": "race"}))
                                    .send()
                                    .unwrap()
                                    .status()
                                    .as_u16()
                            }
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        statuses.iter().all(|s| [200, 404].contains(s)),
        "{statuses:?}"
    );
    // Empty names are missing, not unknown; a huge unknown name is not echoed whole.
    let r = s
        .http
        .delete(s.url("/api/delete"))
        .json(&json!({"model": ""}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"],
        "model is required"
    );
    // A name that cannot be one is told so (Ollama's words), not "not found".
    for (name, shown) in [
        ("bad name", "bad name".to_string()),
        (&"x/".repeat(50_000), format!("{}...", "x/".repeat(40))),
    ] {
        let r = s
            .http
            .delete(s.url("/api/delete"))
            .json(&json!({ "model": name }))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let error = r.json::<serde_json::Value>().unwrap()["error"].clone();
        assert_eq!(error, format!("name {shown:?} is invalid"));
    }
    let (status, v) = s.post("/api/show", json!({"model": "x".repeat(100_000)}));
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().len() < 300, "{v}");
    // A keep_alive of centuries is forever: /api/ps stays RFC 3339 (a four-digit year).
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "keep_alive": 1e300}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        s.get("/api/ps")["models"][0]["expires_at"],
        "9999-12-31T23:59:59Z"
    );
    // A value out of range names the range, written short.
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "hi", "options": {"temperature": 1e308}}),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (
            400,
            Some("option \"temperature\" must be >= 0 and <= 100, got 1e308")
        )
    );
    // A body must be an object, on every route family.
    for path in ["/api/show", "/v1/chat/completions", "/v1/messages"] {
        let (status, v) = s.post_raw(path, "[\"smol\"]");
        assert_eq!(status, 400, "{path}: {v}");
        assert!(
            v.to_string().contains("expected an object, got an array"),
            "{path}: {v}"
        );
    }
    // Unknown routes and methods answer in their family's shape.
    let r = s.http.get(s.url("/api/nope")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"],
        "404 page not found"
    );
    let r = s.http.get(s.url("/v1/nope")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["message"],
        "404 page not found"
    );
    let r = s.http.get(s.url("/api/generate")).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"],
        "405 method not allowed"
    );
    still_serving(&s);
}
