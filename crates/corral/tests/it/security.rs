//! What a local server must refuse, tried as an attacker on the same machine would: requests
//! from other web sites (Origin), DNS rebinding (Host), bodies meant to exhaust memory,
//! path-like file names, missing API keys; and HTTPS with a certificate the test makes.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn body_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

#[test]
fn cross_site_requests_are_refused_and_change_nothing() {
    let s = TestServer::start_with(&[("CORRAL_ORIGINS", "https://*.trusted.example")]);
    s.create_smol();
    let before = s.store_files();
    // "Simple" requests a browser sends from any page without a preflight.
    for (path, body) in [
        ("/api/copy", r#"{"source":"smol","destination":"stolen"}"#),
        ("/api/create", r#"{"model":"planted","from":"smol"}"#),
        ("/api/delete", r#"{"model":"smol"}"#),
    ] {
        let method = if path == "/api/delete" {
            "DELETE"
        } else {
            "POST"
        };
        let (status, _, body) = raw_http(
            s.port,
            method,
            path,
            &[
                ("Host", &format!("127.0.0.1:{}", s.port)),
                ("Origin", "http://evil.example"),
                ("Content-Type", "text/plain"),
            ],
            body.as_bytes(),
        );
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(
            body_json(&body)["error"],
            "origin \"http://evil.example\" is not allowed (add it to CORRAL_ORIGINS)"
        );
    }
    // The OpenAI routes refuse in OpenAI's shape.
    let (status, _, body) = raw_http(
        s.port,
        "GET",
        "/v1/models",
        &[("Host", "localhost"), ("Origin", "http://127.0.0.2:8000")],
        b"",
    );
    assert_eq!(status, 403);
    assert_eq!(body_json(&body)["error"]["type"], "api_error", "{body}");
    assert_eq!(
        s.store_files(),
        before,
        "a refused request changed the store"
    );
    assert_eq!(s.get("/api/tags")["models"].as_array().unwrap().len(), 1);

    // A refused preflight, and an allowed one with the CORS headers.
    let preflight = |origin: &str| {
        raw_http(
            s.port,
            "OPTIONS",
            "/api/copy",
            &[
                ("Host", "localhost"),
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "content-type,authorization",
                ),
            ],
            b"",
        )
    };
    assert_eq!(preflight("http://evil.example").0, 403);
    for origin in [
        "http://localhost:5173",
        "https://app.trusted.example",
        "vscode-webview://abc",
    ] {
        let (status, head, _) = preflight(origin);
        assert!((200..300).contains(&status), "{origin}: {head}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("access-control-allow-origin: {origin}")),
            "{head}"
        );
        assert!(
            head.contains("access-control-allow-methods: post"),
            "{head}"
        );
        assert!(
            head.contains("access-control-allow-headers: content-type,authorization"),
            "{head}"
        );
    }
    // An allowed origin's request runs and carries the header.
    let (status, head, _) = raw_http(
        s.port,
        "POST",
        "/api/copy",
        &[
            ("Host", "localhost"),
            ("Origin", "https://app.trusted.example"),
            ("Content-Type", "text/plain"),
        ],
        br#"{"source":"smol","destination":"copied"}"#,
    );
    assert_eq!(status, 200, "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("access-control-allow-origin: https://app.trusted.example"));
    assert_eq!(s.get("/api/tags")["models"].as_array().unwrap().len(), 2);

    // OLLAMA_ORIGINS counts when CORRAL_ORIGINS is unset.
    let o = TestServer::start_with(&[("OLLAMA_ORIGINS", "http://ollama-ui.example:8080")]);
    let ask = |origin: &str| {
        raw_http(
            o.port,
            "GET",
            "/api/tags",
            &[("Host", "localhost"), ("Origin", origin)],
            b"",
        )
        .0
    };
    assert_eq!(ask("http://ollama-ui.example:8080"), 200);
    assert_eq!(ask("http://ollama-ui.example:8081"), 403);
}

#[test]
fn dns_rebinding_hosts_are_refused_on_loopback() {
    let s = TestServer::start();
    let port = s.port.to_string();
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "localhost.evil.example",
        "8.8.8.8",
    ] {
        for (method, path, body) in [
            ("GET", "/api/tags", ""),
            ("POST", "/api/show", r#"{"model":"smol"}"#),
            ("GET", "/v1/models", ""),
        ] {
            let (status, _, text) =
                raw_http(s.port, method, path, &[("Host", host)], body.as_bytes());
            assert_eq!(status, 403, "{host} {path}: {text}");
            let v = body_json(&text);
            let message = if path.starts_with("/v1/") {
                v["error"]["message"].clone()
            } else {
                v["error"].clone()
            };
            assert!(
                message
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("host \"{host}\" is not allowed")),
                "{v}"
            );
        }
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("ui.localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "0.0.0.0".to_string(),
        format!("{}:{port}", hostname.trim().to_uppercase()),
    ] {
        let (status, _, text) = raw_http(s.port, "GET", "/api/tags", &[("Host", &host)], b"");
        assert_eq!(status, 200, "{host}: {text}");
    }
    assert!(s
        .log()
        .contains("refused: Host is not a name of this machine"));

    // A server on every address is meant to be reached under any name, as Ollama's.
    let open = TestServer::start_with(&[("CORRAL_HOST", "0.0.0.0:{port}")]);
    let (status, _, text) = raw_http(
        open.port,
        "GET",
        "/api/tags",
        &[("Host", "evil.example")],
        b"",
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn bodies_over_the_limit_get_413_and_memory_stays_small() {
    let s = TestServer::start_with(&[("CORRAL_MAX_BODY", "1MiB")]);
    // Blob uploads are exempt: the 94 MB model goes in through /api/blobs.
    s.create_smol();
    let pid = s.child.as_ref().unwrap().id();
    let big = format!(r#"{{"model":"smol","prompt":"{}"}}"#, "a".repeat(3 << 20));
    let host = ("Host", "localhost");
    // With a length: refused before the body is read.
    let t = Instant::now();
    let (status, _, text) = raw_http(s.port, "POST", "/api/generate", &[host], big.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert_eq!(
        body_json(&text)["error"],
        "request body is larger than 1 MiB (set CORRAL_MAX_BODY to change the limit)"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // Chunked, with no length: read up to the limit, then refused.
    let mut chunked = Vec::new();
    for part in big.as_bytes().chunks(1 << 16) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, _, text) = raw_http(
        s.port,
        "POST",
        "/v1/chat/completions",
        &[host, ("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(status, 413, "{text}");
    let v = body_json(&text);
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than 1 MiB"));
    // A body under the limit, chunked, still works.
    let small = br#"{"model":"smol","prompt":"Hi","stream":false,"options":{"num_predict":2}}"#;
    let mut chunked = format!("{:x}\r\n", small.len()).into_bytes();
    chunked.extend_from_slice(small);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, _, text) = raw_http(
        s.port,
        "POST",
        "/api/generate",
        &[host, ("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(body_json(&text)["done"], true);
    // Deeply nested JSON is a fast 400, not a stack overflow.
    let nested = format!(
        r#"{{"model":"smol","prompt":"x","format":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let t = Instant::now();
    let (status, _, text) = raw_http(s.port, "POST", "/api/generate", &[host], nested.as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("recursion limit exceeded"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // The CLI piping a prompt far over the limit: the server closes the connection while the
    // CLI still writes, and the CLI says why instead of "broken pipe" (or shows the 413).
    let out = s.corral_stdin(&["run", "smol"], Some(&"a few words. ".repeat(3_000_000)));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("Error: ") && err.contains("CORRAL_MAX_BODY") && !err.contains("pipe"),
        "{err}"
    );
    assert!(
        peak_rss(pid) < 100 << 20,
        "server peak RSS {} MB",
        peak_rss(pid) >> 20
    );
}

#[test]
fn a_prompt_far_longer_than_the_context_costs_little_memory() {
    let s = TestServer::start();
    s.create_smol();
    let server = s.child.as_ref().unwrap().id();
    // Load the model first, to know the runner's own size.
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "options": {"num_ctx": 512}}),
    );
    assert_eq!(status, 200);
    let runner = s.runner_pids()[0];
    let loaded = peak_rss(runner);
    // 30 MB of prompt (under the default 32 MiB body limit) into a 512-token context.
    let words = "lorem ipsum dolor sit amet ".repeat(30 << 20 >> 5);
    let body = json!({
        "model": "smol",
        "prompt": format!("{words} What is the capital of France?"),
        "stream": false,
        "options": {"num_ctx": 512, "num_predict": 4, "temperature": 0},
    });
    let (status, v) = s.post("/api/generate", body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["done"], true);
    assert!(v["prompt_eval_count"].as_u64().unwrap() <= 512, "{v}");
    assert_eq!(s.runner_pids(), vec![runner], "the runner was replaced");
    let grown = peak_rss(runner).saturating_sub(loaded);
    eprintln!(
        "runner loaded {} MB, grown {} MB; server peak {} MB",
        loaded >> 20,
        grown >> 20,
        peak_rss(server) >> 20
    );
    assert!(
        grown < 64 << 20,
        "the runner grew by {} MB for one long prompt (loaded: {} MB)",
        grown >> 20,
        loaded >> 20
    );
    // The server holds the body and a copy or two of it (about 80 MB here; 130 MB when the
    // whole prompt is passed on).
    assert!(
        peak_rss(server) < 112 << 20,
        "server peak RSS {} MB",
        peak_rss(server) >> 20
    );
    assert!(
        s.log().contains("cut before it is sent to the runner"),
        "{}",
        s.log()
    );
}

#[test]
fn create_refuses_path_like_file_names() {
    let s = TestServer::start();
    s.create_smol();
    let digest = {
        let tags = s.get("/api/tags");
        let (_, show) = s.post("/api/show", json!({"model": "smol"}));
        assert!(show["modelfile"].is_string(), "{tags}");
        // The model layer's digest: an uploaded blob that really exists.
        let manifest = std::fs::read_to_string(
            s.models_dir()
                .join("manifests/registry.ollama.ai/library/smol/latest"),
        )
        .unwrap();
        let m: Value = serde_json::from_str(&manifest).unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    let before = s.store_files();
    for (name, want) in [
        (
            "../../../../outside/x.gguf",
            "file path must be relative and may not contain '..'",
        ),
        (
            "a/../../b.gguf",
            "file path must be relative and may not contain '..'",
        ),
        ("..", "file path must be relative and may not contain '..'"),
        ("/tmp/abs.gguf", "file path must be relative"),
        ("dir\\..\\x.gguf", "no backslash"),
        ("nul\u{0}.gguf", "NUL byte"),
    ] {
        for field in ["files", "adapters"] {
            let mut req = json!({"model": "evil", "from": "smol"});
            req[field] = json!({ name: digest });
            let (status, v) = s.post("/api/create", req);
            assert_eq!(status, 400, "{field} {name:?}: {v}");
            assert!(v["error"].as_str().unwrap().contains(want), "{name:?}: {v}");
        }
    }
    assert_eq!(s.store_files(), before);
    assert!(!s.dir.path().join("outside").exists());
    assert_eq!(s.get("/api/tags")["models"].as_array().unwrap().len(), 1);
}

#[test]
fn api_keys_guard_every_route_but_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# team keys\nkey-two\n\n  key-three  \n").unwrap();
    let s = TestServer::start_in(
        dir,
        &[
            ("CORRAL_API_KEY", "key-one"),
            ("CORRAL_API_KEY_FILE", file.to_str().unwrap()),
        ],
    );
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("Host", "localhost")];
        h.extend_from_slice(headers);
        let (status, _, body) = raw_http(s.port, "GET", path, &h, b"");
        (status, body)
    };
    assert_eq!(get("/", &[]).0, 200);
    let (status, body) = get("/api/tags", &[]);
    assert_eq!(status, 401);
    assert_eq!(
        body_json(&body)["error"],
        "an API key is required: send it as \"Authorization: Bearer <key>\""
    );
    let (status, body) = get("/api/tags", &[("Authorization", "Bearer key-on")]);
    assert_eq!(status, 401);
    assert_eq!(body_json(&body)["error"], "invalid API key");
    let (status, body) = get("/v1/models", &[("Authorization", "Bearer nope")]);
    assert_eq!(status, 401);
    assert_eq!(
        body_json(&body)["error"]["code"],
        "invalid_api_key",
        "{body}"
    );
    for auth in [
        ("Authorization", "Bearer key-one"),
        ("Authorization", "bearer key-two"),
        ("x-api-key", "key-three"),
    ] {
        assert_eq!(get("/api/tags", &[auth]).0, 200, "{auth:?}");
        assert_eq!(get("/v1/models", &[auth]).0, 200, "{auth:?}");
    }
    // The CLI sends the key from the same variables.
    let out = s.corral(&["list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("an API key is required"),
        "{}",
        stderr(&out)
    );
    let out = s.corral_env(&["list"], &[("CORRAL_API_KEY", "key-two")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("NAME"));
    let out = s.corral_env(&["ps"], &[("CORRAL_API_KEY_FILE", file.to_str().unwrap())]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A key file with no key is an error at start, not a server without a check.
    let empty = s.dir.path().join("empty-keys");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let out = std::process::Command::new(corral_exe())
        .args(["serve"])
        .env("CORRAL_HOST", "127.0.0.1:1")
        .env("CORRAL_API_KEY_FILE", &empty)
        .env("CORRAL_MODELS", s.dir.path().join("unused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no key in the file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn https_with_a_certificate_the_test_makes() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Corral test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (cert_path, key_path, ca_path) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let s = TestServer::start_in(
        dir,
        &[
            ("CORRAL_TLS_CERT", cert_path.to_str().unwrap()),
            ("CORRAL_TLS_KEY", key_path.to_str().unwrap()),
        ],
    );
    let https = format!("https://localhost:{}", s.port);
    let ca = ("CORRAL_TLS_CA", ca_path.to_str().unwrap());
    let host = ("CORRAL_HOST", https.as_str());
    // The CLI over HTTPS: upload, create, and a streamed answer.
    let mf = s.dir.path().join("Modelfile");
    // A length limit: a sampled answer may otherwise run for a whole context.
    let text = format!(
        "FROM {}\nPARAMETER num_predict 32\n",
        model_file(SMOL).display()
    );
    std::fs::write(&mf, text).unwrap();
    let out = s.corral_env(&["create", "smol", "-f", mf.to_str().unwrap()], &[host, ca]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), s.log());
    let out = s.corral_env(
        &["run", "smol", "What is the capital of France?"],
        &[host, ca],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).trim().is_empty());
    // Without the CA the certificate is refused, and the message says what to do.
    let out = s.corral_env(&["list"], &[host]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("CORRAL_TLS_CA"), "{}", stderr(&out));
    // A client library with the CA gets answers; plain HTTP on the port gets none.
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let resp = client.get(format!("{https}/api/tags")).send().unwrap();
    // HTTP/2, as the handshake offers it (browsers and Go clients take it when offered).
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["models"][0]["name"], "smol:latest");
    // And a streamed answer over it.
    let resp = client
        .post(format!("{https}/api/generate"))
        .json(&json!({"model": "smol", "prompt": "Hi", "options": {"num_predict": 4}}))
        .send()
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let last: Value = serde_json::from_str(resp.text().unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true, "{last}");
    assert!(s.http.get(s.url("/api/tags")).send().is_err());
    // A bad key file stops the server at start with the file's name.
    let out = std::process::Command::new(corral_exe())
        .args(["serve"])
        .env("CORRAL_HOST", "127.0.0.1:1")
        .env("CORRAL_TLS_CERT", &cert_path)
        .env("CORRAL_TLS_KEY", &cert_path)
        .env("CORRAL_MODELS", s.dir.path().join("unused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("CORRAL_TLS_KEY"), "{}", stderr(&out));
}
