//! `create --quantize` (Ollama's `ollama create -q`): F16 weights quantized by a runner child
//! into a new model that answers, refusals that name the problem, and a quantizer that dies
//! or is abandoned leaving nothing behind.

use crate::common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Temp files of unfinished blobs in the store.
fn unfinished(s: &TestServer) -> Vec<String> {
    s.store_files()
        .into_iter()
        .filter(|f| f.contains("/blobs/new-") || f.ends_with("-partial"))
        .collect()
}

fn size_of(s: &TestServer, name: &str) -> u64 {
    let tags = s.get("/api/tags");
    let m = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {tags}"));
    m["size"].as_u64().unwrap()
}

fn greedy(s: &TestServer, model: &str) -> Value {
    let (code, v) = s.post(
        "/api/chat",
        json!({"model": model, "stream": false,
               "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(code, 200, "{v}");
    v
}

/// The five likeliest first tokens of the answer, likeliest first.
fn first_tokens(s: &TestServer, model: &str) -> Vec<String> {
    let (code, v) = s.post(
        "/api/chat",
        json!({"model": model, "stream": false, "logprobs": true, "top_logprobs": 5,
               "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "options": {"temperature": 0, "num_predict": 1}}),
    );
    assert_eq!(code, 200, "{v}");
    v["logprobs"][0]["top_logprobs"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|t| t["token"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn f16_weights_quantized_to_q4_k_m_and_q8_0_answer_from_a_smaller_model() {
    let s = TestServer::start();
    let f16 = smol_f16();
    s.create("smol-f16", &format!("FROM {}\n", f16.display()));

    // The CLI, from the file: `corral create -q q4_K_M`.
    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", f16.display())).unwrap();
    let out = s.corral(&[
        "create",
        "smol-q4",
        "-q",
        "q4_K_M",
        "-f",
        mf.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("quantizing F16 model to Q4_K_M") && stderr(&out).contains("success"),
        "{}",
        stderr(&out)
    );

    // The API, from the model: a line per tensor, streamed as it goes, then success.
    let lines = s.stream(
        "/api/create",
        json!({"model": "smol-q8", "from": "smol-f16", "quantize": "Q8_0"}),
    );
    let counted: Vec<&Value> = lines
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["status"] == "quantizing F16 model to Q8_0" && v["total"].is_u64())
        .collect();
    assert!(counted.len() > 100, "one line per tensor: {lines:?}");
    let total = counted[0]["total"].as_u64().unwrap();
    assert_eq!(counted.last().unwrap()["completed"].as_u64(), Some(total));
    assert_eq!(lines.last().unwrap().1["status"], "success", "{lines:?}");
    // Not streamed: one object at the end.
    let (code, v) = s.post(
        "/api/create",
        json!({"model": "smol-q4-0", "from": "smol-f16", "quantize": "q4_0", "stream": false}),
    );
    assert_eq!((code, &v), (200, &json!({"status": "success"})));

    for (name, level, ftype, at_most) in [
        ("smol-q4:latest", "Q4_K_M", 15, 0.45),
        ("smol-q8:latest", "Q8_0", 7, 0.6),
        ("smol-q4-0:latest", "Q4_0", 2, 0.45),
    ] {
        let (code, show) = s.post("/api/show", json!({"model": name}));
        assert_eq!(code, 200, "{show}");
        assert_eq!(show["details"]["quantization_level"], level, "{show}");
        assert_eq!(show["model_info"]["general.file_type"], ftype, "{show}");
        let ratio = size_of(&s, name) as f64 / size_of(&s, "smol-f16:latest") as f64;
        assert!(ratio < at_most, "{name} is {ratio:.2} of the F16 model");
        let v = greedy(&s, name);
        assert_eq!(v["done"], true, "{v}");
        assert!(v["eval_count"].as_u64().unwrap() > 0, "{v}");
        assert!(
            !v["message"]["content"].as_str().unwrap().trim().is_empty(),
            "{v}"
        );
    }
    // The same model, quantized: its five likeliest first tokens are mostly the F16 model's,
    // the F16 model's choice among them. (The greedy answers may differ: the first token's
    // candidates are within 0.2 nats of each other for this prompt.)
    let f16_top = first_tokens(&s, "smol-f16");
    for name in ["smol-q4", "smol-q8"] {
        let top = first_tokens(&s, name);
        let shared = top.iter().filter(|t| f16_top.contains(t)).count();
        assert!(
            shared >= 3 && top.contains(&f16_top[0]),
            "{name}: {top:?}, F16: {f16_top:?}"
        );
    }
    let out = s.corral(&["show", "smol-q4"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["quantization", "Q4_K_M"]),
        "{}",
        stdout(&out)
    );
    assert!(unfinished(&s).is_empty(), "{:?}", unfinished(&s));
}

#[test]
fn quantizing_refuses_what_it_cannot_do_and_a_dead_or_abandoned_quantizer_leaves_nothing() {
    let s = TestServer::start_with(&[("CORRAL_RUNNER_FAULT", "crash@tensor:40")]);
    s.create_smol();
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));
    let before = s.store_files();

    // Refusals, each a 400 that names the problem, the store unchanged.
    for (body, says) in [
        (
            json!({"model": "x", "from": "smol", "quantize": "q4_K_M"}),
            "quantization is only supported for F16 and F32 models (and BF16); this one is Q4_1",
        ),
        (
            json!({"model": "x", "from": "smol-f16", "quantize": "q3_x"}),
            "unsupported quantization type 'q3_x'",
        ),
    ] {
        let (code, v) = s.post("/api/create", body);
        assert_eq!(code, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
    }
    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, "FROM smol-f16\n").unwrap();
    let out = s.corral(&["create", "x", "-q", "iq2_xxs", "-f", mf.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unsupported quantization type 'iq2_xxs'"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.store_files(), before);

    // The quantizer dies at its 40th tensor: the stream ends with an error naming the
    // signal, no model, no file, and the server goes on answering.
    let lines = s.stream(
        "/api/create",
        json!({"model": "smol-crashed", "from": "smol-f16", "quantize": "q4_K_M"}),
    );
    let last = &lines.last().unwrap().1;
    let error = last["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        error.contains("quantizing to Q4_K_M failed") && error.contains("SIGABRT"),
        "{error}"
    );
    assert_eq!(s.store_files(), before);
    assert_eq!(greedy(&s, "smol")["done"], true);
    drop(s);

    // The client leaves after the first tensors (a server without the fault): the quantizer
    // is stopped, nothing is kept.
    let s = TestServer::start();
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));
    let before = s.store_files();
    let resp = s
        .http
        .post(s.url("/api/create"))
        .json(&json!({"model": "smol-left", "from": "smol-f16", "quantize": "q8_0"}))
        .send()
        .unwrap();
    let mut reader = BufReader::new(resp);
    let mut line = String::new();
    while !line.contains("\"completed\":5") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended: {line}"
        );
    }
    assert!(
        !s.runner_pids().is_empty(),
        "the quantizer is a runner child of this store"
    );
    drop(reader);
    assert!(
        wait_for(Duration::from_secs(30), || s.runner_pids().is_empty()
            && s.store_files() == before),
        "left behind: {:?} {:?}",
        s.runner_pids(),
        unfinished(&s)
    );
    assert!(s.get("/api/tags")["models"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["name"] != "smol-left:latest"));
}
