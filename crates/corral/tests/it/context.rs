//! Context settings: the default context length (`CORRAL_CONTEXT_LENGTH`, clamped to the
//! model's training length), prompts longer than the context (`truncate`), answers that fill
//! it (`shift`), and each model's own number of slots (`num_parallel`).

use crate::common;

use common::*;
use serde_json::{json, Value};

/// A prompt of about `n` tokens.
fn long_prompt(words: usize) -> String {
    (0..words)
        .map(|i| format!("w{}", i % 97))
        .collect::<Vec<_>>()
        .join(" ")
}

fn generate(s: &TestServer, body: Value) -> (u16, Value) {
    s.post("/api/generate", body)
}

#[test]
fn prompts_over_the_context_are_refused_or_cut_and_counted() {
    let s = TestServer::start();
    s.create(
        "smol",
        &format!(
            "FROM {}\nPARAMETER num_ctx 256\n",
            model_file(SMOL).display()
        ),
    );
    let prompt = long_prompt(600);

    // truncate: false refuses the prompt with a 400, streamed or not, generate and chat.
    for stream in [false, true] {
        let (status, body) = generate(
            &s,
            json!({"model": "smol", "prompt": prompt, "truncate": false, "stream": stream}),
        );
        assert_eq!(status, 400, "{body}");
        let e = body["error"].as_str().unwrap();
        assert!(
            e.starts_with("the input length exceeds the context length"),
            "{e}"
        );
        assert!(e.contains("num_ctx 256"), "{e}");
    }
    let (status, body) = s.post(
        "/api/chat",
        json!({"model": "smol", "messages": [{"role": "user", "content": prompt}], "truncate": false}),
    );
    assert_eq!(status, 400, "{body}");
    // Far beyond the context: refused before it reaches the runner.
    let huge = long_prompt(40_000);
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": huge, "truncate": false, "stream": false}),
    );
    assert_eq!(status, 400, "{body}");
    // A prompt that fits is answered with truncate: false.
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "truncate": false, "stream": false, "options": {"num_predict": 3}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.get("prompt_truncated_tokens").is_none(), "{body}");

    // By default the prompt is cut to fit, and the answer says how much was dropped.
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": prompt, "stream": false, "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200, "{body}");
    let dropped = body["prompt_truncated_tokens"].as_u64().unwrap();
    let kept = body["prompt_eval_count"].as_u64().unwrap();
    assert!(kept <= 256, "{body}");
    assert!(dropped >= 300, "{body}");
    assert!(s
        .log()
        .contains("prompt longer than the context: truncated"));
    // Streamed: the final object carries it.
    let lines = s.stream(
        "/api/chat",
        json!({"model": "smol", "messages": [{"role": "user", "content": prompt}], "options": {"num_predict": 4}}),
    );
    let last = &lines.last().unwrap().1;
    assert!(
        last["prompt_truncated_tokens"].as_u64().unwrap() >= 300,
        "{last}"
    );
    // Text far beyond the context is cut by bytes first; the dropped tokens are estimated.
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": huge, "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
    let estimated = body["prompt_truncated_tokens"].as_u64().unwrap();
    assert!(
        (30_000..=200_000).contains(&estimated),
        "about 40,000 words dropped, counted {estimated}"
    );
    let metrics = s.get_text("/metrics");
    assert!(
        metrics.contains(r#"corral_prompt_truncations_total{model="smol:latest"} 3"#),
        "{metrics}"
    );
}

#[test]
fn shift_false_ends_an_answer_that_fills_the_context() {
    let s = TestServer::start();
    s.create(
        "smol",
        &format!(
            "FROM {}\nPARAMETER num_ctx 64\n",
            model_file(SMOL).display()
        ),
    );
    // Counting goes on for ever with greedy sampling and no repeat penalty.
    let body = |shift: bool| {
        json!({"model": "smol", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "raw": true, "stream": false,
               "shift": shift, "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 400}})
    };
    let (status, a) = generate(&s, body(false));
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["done_reason"], "length", "{a}");
    // The last token is sampled from a full context and never stored: one over.
    let used = a["prompt_eval_count"].as_u64().unwrap() + a["eval_count"].as_u64().unwrap();
    assert!(used <= 257, "the answer stayed inside the context: {a}");
    assert!(a["eval_count"].as_u64().unwrap() >= 150, "{a}");
    // Shifting (the default) goes on past the context to num_predict.
    let (status, b) = generate(&s, body(true));
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["eval_count"], 400, "{b}");
    assert!(s.log().contains("context full: shifting"));
}

/// The context length the loaded model runs with, from `/api/ps`.
fn ps_context(s: &TestServer) -> u64 {
    s.get("/api/ps")["models"][0]["context_length"]
        .as_u64()
        .unwrap()
}

fn load(s: &TestServer, options: Value) {
    let (status, body) = generate(
        s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": options}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_default_context_length_comes_from_the_environment_within_the_training_length() {
    let s = TestServer::start_with(&[("CORRAL_CONTEXT_LENGTH", "1024")]);
    s.create_smol();
    load(&s, json!({"num_predict": 1}));
    assert_eq!(ps_context(&s), 1024);
    // A request's num_ctx comes first.
    load(&s, json!({"num_predict": 1, "num_ctx": 512}));
    assert_eq!(ps_context(&s), 512);

    let s = TestServer::start_with(&[("OLLAMA_CONTEXT_LENGTH", "2048")]);
    s.create_smol();
    load(&s, json!({"num_predict": 1}));
    assert_eq!(ps_context(&s), 2048);

    // SmolLM2 was trained with 8192 tokens: more is clamped, with a warning.
    let s = TestServer::start_with(&[("CORRAL_CONTEXT_LENGTH", "100000")]);
    s.create_smol();
    load(&s, json!({"num_predict": 1}));
    assert_eq!(ps_context(&s), 8192);
    assert!(s
        .log()
        .contains("context length over the model's training length"));

    let out = std::process::Command::new(corral_exe())
        .arg("serve")
        .env("CORRAL_HOST", "127.0.0.1:0")
        .env("CORRAL_CONTEXT_LENGTH", "lots")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a bad CORRAL_CONTEXT_LENGTH stops the server"
    );
    assert!(stderr(&out).contains("lots"), "{}", stderr(&out));
}

/// Start `n` long answers at once; the statuses they got.
fn at_once(s: &TestServer, model: &str, n: usize, options: Value) -> Vec<u16> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let options = options.clone();
                scope.spawn(move || {
                    let mut o = json!({"num_predict": 48, "temperature": 0});
                    o.as_object_mut()
                        .unwrap()
                        .extend(options.as_object().unwrap().clone());
                    s.post(
                        "/api/generate",
                        json!({"model": model, "prompt": format!("Story {i}:"), "stream": false, "options": o}),
                    )
                    .0
                })
            })
            .collect();
        let mut statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        statuses.sort();
        statuses
    })
}

#[test]
fn each_model_may_have_its_own_number_of_slots() {
    // One slot and no queue: a second request at once is refused (503)...
    let s = TestServer::start_with(&[("CORRAL_NUM_PARALLEL", "1"), ("CORRAL_MAX_QUEUE", "0")]);
    s.create_smol();
    s.create(
        "smol2",
        &format!(
            "FROM {}\nPARAMETER num_parallel 2\n",
            model_file(SMOL).display()
        ),
    );
    assert_eq!(at_once(&s, "smol", 2, json!({})), vec![200, 503]);
    // ...but a model with num_parallel 2 answers two at once, and refuses a third.
    assert_eq!(at_once(&s, "smol2", 3, json!({})), vec![200, 200, 503]);
    // options.num_parallel does the same for one request's model.
    assert_eq!(
        at_once(&s, "smol", 2, json!({"num_parallel": 2})),
        vec![200, 200]
    );
    // Each slot's KV cache counts in the model's size.
    let ps = s.get("/api/ps");
    let size = |name: &str| {
        ps["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["size"].as_u64().unwrap())
    };
    let (one, two) = (size("smol:latest"), size("smol2:latest"));
    assert!(two.is_some(), "{ps}");
    assert_eq!(one, two, "both loaded with two slots: {ps}");
    load(&s, json!({"num_parallel": 1, "num_predict": 1}));
    let ps = s.get("/api/ps");
    let single = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "smol:latest")
        .map(|m| m["size"].as_u64().unwrap())
        .unwrap();
    assert!(single < two.unwrap(), "{ps}");

    // Out of range is a clear error, in a request and in a Modelfile.
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "options": {"num_parallel": 100}}),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "option \"num_parallel\" must be >= 1 and <= 64, got 100"
    );
    let out = s.try_create(
        "bad",
        &format!(
            "FROM {}\nPARAMETER num_parallel 0\n",
            model_file(SMOL).display()
        ),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("num_parallel"), "{}", stderr(&out));
}

#[test]
fn an_unrelated_prompt_does_not_evict_a_cached_conversation() {
    // Two slots: a short prompt that shares nothing with the cached long one goes to the
    // other slot, so the long one's next turn still finds its prefix (as llama-server's
    // slot choice by similarity, else least recently used).
    let s = TestServer::start_with(&[("CORRAL_NUM_PARALLEL", "2")]);
    s.create_smol();
    let history = long_prompt(400);
    let ask = |prompt: &str| {
        let (status, v) = generate(
            &s,
            json!({"model": "smol", "prompt": prompt, "raw": true, "stream": false,
                   "options": {"num_predict": 1, "temperature": 0}}),
        );
        assert_eq!(status, 200, "{v}");
        v["prompt_cached_count"].as_u64().unwrap_or(0)
    };
    assert_eq!(ask(&history), 0);
    for other in ["Hello there", "Tell me a joke", "w1 w2 w3"] {
        ask(other);
        let cached = ask(&format!("{history} w5 w6"));
        assert!(
            cached > 300,
            "the long prompt's prefix was evicted by {other:?}: {cached} tokens reused"
        );
    }
}
