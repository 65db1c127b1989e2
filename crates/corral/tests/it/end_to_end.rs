//! The end-to-end path a new user takes: create, list, run, chat, generate, stream.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn create_both_models_and_list_them_with_sizes() {
    let s = TestServer::start();
    s.create_smol();
    let out = s.try_create("gemma", &format!("FROM {}\n", model_file(GEMMA).display()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("success"));

    let list = s.corral(&["list"]);
    let text = stdout(&list);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("ID") && lines[0].contains("SIZE"),
        "{text}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .to_string()
    };
    assert!(row("smol:latest").contains("98 MB"), "{text}");
    assert!(row("gemma:latest").contains("253 MB"), "{text}");

    let tags = s.get("/api/tags");
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"smol:latest") && names.contains(&"gemma:latest"),
        "{tags}"
    );
    let smol = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "smol:latest")
        .unwrap();
    assert_eq!(smol["size"], 98_362_432);
    assert_eq!(smol["details"]["family"], "llama");
    assert_eq!(smol["details"]["quantization_level"], "Q4_1");
}

#[test]
fn chat_answers_the_capital_of_france() {
    let s = TestServer::start();
    s.create_smol();
    let (status, body) = s.post(
        "/api/chat",
        json!({
            "model": "smol",
            "stream": false,
            "options": {"temperature": 0},
            "messages": [
                {"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": "What is the capital of France?"}
            ]
        }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["role"], "assistant");
    assert!(
        body["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{body}"
    );
    assert_eq!(body["done"], true);
    assert_eq!(body["done_reason"], "stop");
    for field in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(
            body[field].as_u64().unwrap_or(0) > 0,
            "{field} missing in {body}"
        );
    }
}

#[test]
fn generate_is_reproducible_with_a_seed_and_honours_limits_and_stops() {
    let s = TestServer::start();
    s.create_smol();
    let gen = |opts: serde_json::Value| {
        let (status, body) = s.post(
            "/api/generate",
            json!({"model": "smol", "prompt": "Write a short poem about the sea.", "stream": false, "options": opts}),
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    let a = gen(json!({"seed": 42, "temperature": 0.9, "num_predict": 40}));
    let b = gen(json!({"seed": 42, "temperature": 0.9, "num_predict": 40}));
    assert!(!a["response"].as_str().unwrap().is_empty());
    assert_eq!(a["response"], b["response"]);
    assert!(
        a["context"].as_array().is_some_and(|c| !c.is_empty()),
        "generate returns context: {a}"
    );

    let short = gen(json!({"num_predict": 5, "temperature": 0}));
    assert_eq!(short["done_reason"], "length", "{short}");
    assert_eq!(short["eval_count"], 5, "{short}");

    // Find a word the model writes, then ask it to stop there.
    let full = gen(json!({"temperature": 0, "num_predict": 30}));
    let text = full["response"].as_str().unwrap().to_string();
    let word = text
        .split_whitespace()
        .nth(3)
        .expect("a few words")
        .to_string();
    let stopped = gen(json!({"temperature": 0, "num_predict": 30, "stop": [word.clone()]}));
    let cut = stopped["response"].as_str().unwrap();
    assert!(!cut.contains(&word), "{cut:?} should end before {word:?}");
    assert!(
        text.starts_with(cut.trim_end()),
        "{cut:?} is not a prefix of {text:?}"
    );
    assert_eq!(stopped["done_reason"], "stop");
    // Which stop sequence ended it (Corral's addition); none when none did.
    assert_eq!(stopped["stop_sequence"], word.as_str(), "{stopped}");
    let unstopped = gen(json!({"temperature": 0, "num_predict": 30, "stop": ["no such words"]}));
    assert!(unstopped.get("stop_sequence").is_none(), "{unstopped}");
}

#[test]
fn answers_stream_while_they_are_written() {
    let s = TestServer::start();
    s.create_smol();
    // Load first so the stream timing measures generation only.
    let (status, body) = s.post("/api/generate", json!({"model": "smol", "prompt": ""}));
    assert_eq!(status, 200);
    assert_eq!(body["done_reason"], "load");

    let lines = s.stream(
        "/api/chat",
        json!({"model": "smol", "messages": [{"role": "user", "content": "Tell me a long story about a dragon."}],
               "options": {"num_predict": 60, "temperature": 0}}),
    );
    assert!(
        lines.len() > 10,
        "expected many chunks, got {}",
        lines.len()
    );
    let (first_at, first) = &lines[0];
    let (last_at, last) = lines.last().unwrap();
    assert_eq!(first["done"], false);
    assert!(!first["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"], 60);
    // 59 more tokens were still to be generated when the first arrived.
    assert!(
        *last_at - *first_at > Duration::from_millis(100),
        "first chunk came with the last: {:?}",
        *last_at - *first_at
    );
}

#[test]
fn cli_run_answers_from_arguments_and_stdin_with_statistics() {
    let s = TestServer::start();
    // Greedy decoding and a system message make the answer reproducible; a length limit keeps
    // the free-form one short.
    s.create(
        "smol",
        &format!(
            "FROM {}\nPARAMETER temperature 0\nPARAMETER num_predict 48\nSYSTEM Answer in one short sentence.\n",
            model_file(SMOL).display()
        ),
    );
    let out = s.corral(&["run", "smol", "What is the capital of France?", "--verbose"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Paris"), "{}", stdout(&out));
    let err = stderr(&out);
    for label in [
        "total duration:",
        "load duration:",
        "prompt eval count:",
        "prompt eval rate:",
        "eval count:",
        "eval duration:",
        "eval rate:",
    ] {
        let line = err
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label} missing in {err}"));
        // Values start in one column, as Ollama aligns them.
        assert_eq!(
            line.find(|c: char| c.is_ascii_digit()),
            Some(22),
            "{line:?}"
        );
    }
    assert!(err.contains("tokens/s"));

    let out = s.corral_stdin(&["run", "smol"], Some("Why is the sky blue?"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).split_whitespace().count() > 3,
        "{}",
        stdout(&out)
    );

    let ps = stdout(&s.corral(&["ps"]));
    assert!(
        ps.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("smol:latest") && l.contains("100% CPU")),
        "{ps}"
    );
}

#[test]
fn a_model_without_a_chat_template_answers() {
    let s = TestServer::start();
    s.create("gemma", &format!("FROM {}\n", model_file(GEMMA).display()));
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "gemma", "prompt": "The capital of France is", "stream": false, "options": {"num_predict": 8, "temperature": 0}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["response"].as_str().unwrap().trim().is_empty(),
        "{body}"
    );
    assert_eq!(body["eval_count"], 8);
}

#[test]
fn create_from_an_existing_model_with_parameters_system_and_template() {
    let s = TestServer::start();
    s.create_smol();
    s.create(
        "smol-cpu",
        "FROM smol\nPARAMETER num_predict 3\nPARAMETER temperature 0\nSYSTEM Be terse.\nTEMPLATE \"\"\"<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n\"\"\"\n",
    );
    let (status, show) = s.post("/api/show", json!({"model": "smol-cpu"}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["system"], "Be terse.");
    assert!(show["template"].as_str().unwrap().contains("{{ .Prompt }}"));
    assert!(
        show["parameters"].as_str().unwrap().contains("num_predict"),
        "{show}"
    );
    assert_eq!(show["details"]["family"], "llama");
    assert_eq!(show["model_info"]["general.architecture"], "llama");

    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol-cpu", "prompt": "Name a colour.", "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["eval_count"], 3,
        "the model's num_predict applies: {body}"
    );
    assert_eq!(body["done_reason"], "length");
    // The blob is shared, not copied.
    let blobs = s
        .store_files()
        .iter()
        .filter(|f| f.contains("sha256-b179c95"))
        .count();
    assert_eq!(blobs, 1);
}

#[test]
fn no_runner_is_left_after_the_server_stops() {
    let mut s = TestServer::start();
    s.create_smol();
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "", "keep_alive": -1}),
    );
    assert_eq!(status, 200);
    assert_eq!(s.runner_pids().len(), 1);
    let ps = s.get("/api/ps");
    assert_eq!(ps["models"][0]["name"], "smol:latest");
    assert_eq!(ps["models"][0]["context_length"], 4096);
    s.stop();
    assert!(
        wait_for(Duration::from_secs(5), || s.runner_pids().is_empty()),
        "runner left behind"
    );
}

#[test]
fn a_long_answer_shifts_the_context_instead_of_stopping() {
    let s = TestServer::start();
    s.create_smol();
    s.create("gemma", &format!("FROM {}\n", model_file(GEMMA).display()));
    for model in ["smol", "gemma"] {
        // Counting goes on for ever; 320 tokens do not fit a 256-token context.
        let (status, body) = s.post(
            "/api/generate",
            serde_json::json!({"model": model, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "raw": true, "stream": false,
                               "options": {"num_ctx": 256, "num_predict": 320, "temperature": 0}}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["eval_count"].as_u64(), body["done_reason"].as_str()),
            (Some(320), Some("length")),
            "{model}: {body}"
        );
        // The count carries on across the shift.
        let text = body["response"].as_str().unwrap();
        assert!(text.contains(" 60, 61, 62,"), "{model}: {text}");
        if model == "gemma" {
            continue;
        }
        // Without num_predict an answer is at most one context long.
        let (_, body) = s.post(
            "/api/generate",
            serde_json::json!({"model": model, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "raw": true, "stream": false,
                               "options": {"num_ctx": 256, "temperature": 0}}),
        );
        assert_eq!(
            (body["eval_count"].as_u64(), body["done_reason"].as_str()),
            (Some(256), Some("length")),
            "{model}: {body}"
        );
    }
    assert!(s.log().contains("context full: shifting"));
}
