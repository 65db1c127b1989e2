//! Embedding models: all-MiniLM-L6-v2 (sentence-transformers' BERT, Ollama's `all-minilm`)
//! imported from its Hugging Face folder as llama.cpp's `bert` (and as a DistilBERT), compared with the same weights
//! run by numpy (`tests/clients/bert_reference.py`, with Hugging Face's `tokenizers` for the
//! ids). An embedding model embeds and writes no text, as in Ollama.

use crate::common;

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

/// Texts with punctuation, case, accents, CJK, digits and a contraction, which WordPiece
/// splits and normalizes in its own ways; and two that mean nearly the same.
const TEXTS: &[&str] = &[
    "A cat sat on the mat.",
    "A kitten was resting on the rug.",
    "Stock markets fell sharply on Tuesday.",
    "Héllo, WORLD! naïve café 東京 it's 123,456.78 #tags",
];

/// The reference's tokens and vectors for [`TEXTS`], mean-pooled or, with `cls`, the first
/// token's.
fn reference(cls: bool) -> Vec<(Vec<i64>, Vec<f64>)> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/bert_reference.py"
    );
    let out = Command::new(client_python())
        .arg(script)
        .args(cls.then_some("--cls"))
        .arg(model_dir(MINILM))
        .args(TEXTS)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.iter()
        .map(|r| {
            let ids = r["ids"].as_array().unwrap().iter();
            let e = r["embedding"].as_array().unwrap().iter();
            (
                ids.map(|x| x.as_i64().unwrap()).collect(),
                e.map(|x| x.as_f64().unwrap()).collect(),
            )
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn a_bert_folder_imports_as_an_embedding_model_that_matches_its_weights() {
    let s = TestServer::start();
    s.create("minilm", &format!("FROM {}\n", model_dir(MINILM).display()));
    let (status, show) = s.post("/api/show", json!({"model": "minilm"}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["capabilities"], json!(["embedding"]));
    assert_eq!(show["details"]["family"], "bert");
    // Mean pooling, from the Pooling module's config.json below the folder.
    assert_eq!(show["model_info"]["bert.pooling_type"], 1);

    let (status, body) = s.post("/api/embed", json!({"model": "minilm", "input": TEXTS}));
    assert_eq!(status, 200, "{body}");
    let got: Vec<Vec<f64>> = body["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let want = reference(false);
    // The same tokens as Hugging Face's tokenizer ([CLS] and [SEP] included) ...
    let tokens: usize = want.iter().map(|(ids, _)| ids.len()).sum();
    assert_eq!(body["prompt_eval_count"], tokens as u64, "{want:?}");
    // ... and the same vectors, to the precision of F16 weights.
    for ((text, g), (_, w)) in TEXTS.iter().zip(&got).zip(&want) {
        assert_eq!(g.len(), 384);
        let cos = dot(g, w);
        assert!(cos > 0.9999, "{text}: cosine {cos}");
    }
    // Meaning: the two sentences about a resting cat are closer than either is to markets.
    assert!(
        dot(&got[0], &got[1]) > dot(&got[0], &got[2]) + 0.3,
        "{got:?}"
    );

    // OpenAI's route embeds too.
    let (status, body) = s.post(
        "/v1/embeddings",
        json!({"model": "minilm", "input": TEXTS[0]}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(dot(&floats(&body["data"][0]["embedding"]), &got[0]) > 0.99999);

    // It writes no text: generate and chat are refused in Ollama's words, on every route.
    for (path, body, what) in [
        (
            "/api/generate",
            json!({"model": "minilm", "prompt": "hi"}),
            "generate",
        ),
        ("/api/generate", json!({"model": "minilm"}), "generate"),
        (
            "/api/chat",
            json!({"model": "minilm", "messages": []}),
            "chat",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "minilm", "messages": [{"role": "user", "content": "hi"}]}),
            "chat",
        ),
    ] {
        let (status, resp) = s.post(path, body);
        assert_eq!(status, 400, "{path}: {resp}");
        let message = resp["error"]["message"]
            .as_str()
            .or(resp["error"].as_str())
            .unwrap();
        assert_eq!(
            message,
            format!("\"minilm:latest\" does not support {what}")
        );
    }

    // `corral run` prints the vector, as Ollama's does; --dimensions shortens it.
    let out = s.corral(&["run", "minilm", TEXTS[0]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(dot(&floats(&printed), &got[0]) > 0.99999);
    let out = s.corral(&["run", "minilm", "--dimensions", "8", TEXTS[0]]);
    let short = floats(&serde_json::from_str(stdout(&out).trim()).unwrap());
    assert_eq!(short.len(), 8);
    assert!((dot(&short, &short) - 1.0).abs() < 1e-4, "{short:?}");
    let out = s.corral(&["run", "minilm"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "Error: embedding models require input text. Usage: corral run minilm [your text here]"
    );

    // It can be stopped like any model, though it writes no text.
    assert_eq!(s.get("/api/ps")["models"][0]["name"], "minilm:latest");
    let out = s.corral(&["stop", "minilm"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.get("/api/ps")["models"], json!([]));
}

/// DistilBERT (`DistilBertModel`: no token types, other names and settings) imports too. No
/// DistilBERT model can be fetched here, so the test writes MiniLM's weights as the DistilBERT
/// model that computes the same vectors (`tests/clients/distil_from_bert.py`: the first token
/// type's row folded into the position embeddings), and its vectors must be MiniLM's.
#[test]
fn a_distilbert_folder_imports_and_embeds_as_its_bert_twin() {
    let s = TestServer::start();
    let dir = s.dir.path().join("distil");
    let out = Command::new(client_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/clients/distil_from_bert.py"
        ))
        .arg(model_dir(MINILM))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    s.create("distil", &format!("FROM {}\n", dir.display()));
    let (_, show) = s.post("/api/show", json!({"model": "distil"}));
    assert_eq!(show["capabilities"], json!(["embedding"]));
    let (status, body) = s.post("/api/embed", json!({"model": "distil", "input": TEXTS}));
    assert_eq!(status, 200, "{body}");
    let want = reference(false);
    let tokens: usize = want.iter().map(|(ids, _)| ids.len()).sum();
    assert_eq!(body["prompt_eval_count"], tokens as u64);
    for (i, text) in TEXTS.iter().enumerate() {
        let cos = dot(&floats(&body["embeddings"][i]), &want[i].1);
        assert!(cos > 0.9999, "{text}: cosine {cos}");
    }
}

/// all-MiniLM-L6-v2's folder in `dir` (links to its files) with another pooling config.
fn minilm_pooled(dir: &std::path::Path, pooling: &str) {
    let src = model_dir(MINILM);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "modules.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("1_Pooling/config.json"), pooling).unwrap();
}

/// CLS pooling (BGE's, mxbai-embed-large's, Snowflake Arctic's): the same weights pooled by
/// their first token's state match the reference pooled so, and differ from mean pooling.
#[test]
fn cls_pooling_takes_the_first_tokens_state() {
    let s = TestServer::start();
    let dir = s.dir.path().join("cls-pooled");
    minilm_pooled(&dir, r#"{"pooling_mode_cls_token": true}"#);
    s.create("minilm-cls", &format!("FROM {}\n", dir.display()));
    let (_, show) = s.post("/api/show", json!({"model": "minilm-cls"}));
    assert_eq!(show["model_info"]["bert.pooling_type"], 2);
    let (status, body) = s.post("/api/embed", json!({"model": "minilm-cls", "input": TEXTS}));
    assert_eq!(status, 200, "{body}");
    let cls = reference(true);
    let mean = reference(false);
    for (i, text) in TEXTS.iter().enumerate() {
        let got = floats(&body["embeddings"][i]);
        let cos = dot(&got, &cls[i].1);
        assert!(cos > 0.9999, "{text}: cosine {cos}");
        assert!(
            dot(&got, &mean[i].1) < 0.99,
            "{text}: the same as mean pooling"
        );
    }
}

#[test]
fn pooling_llama_cpp_cannot_do_is_refused_and_nothing_is_left() {
    let s = TestServer::start();
    let dir = s.dir.path().join("max-pooled");
    minilm_pooled(
        &dir,
        r#"{"word_embedding_dimension": 384, "pooling_mode_max_tokens": true}"#,
    );
    let before = s.store_files();
    let out = s.try_create("maxed", &format!("FROM {}\n", dir.display()));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "1_Pooling/config.json: pooling_mode_max_tokens is not a pooling llama.cpp does \
             (mean, cls or last token)"
        ),
        "{}",
        stderr(&out)
    );
    let (status, _) = s.post("/api/show", json!({"model": "maxed"}));
    assert_eq!(status, 404);
    // A module after the pooling that llama.cpp would not run (LaBSE's Dense) is refused too.
    std::fs::remove_file(dir.join("modules.json")).unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true}"#,
    )
    .unwrap();
    let out = s.try_create("dense", &format!("FROM {}\n", dir.display()));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "modules.json: module sentence_transformers.models.Dense (2_Dense) is not one \
             llama.cpp runs"
        ),
        "{}",
        stderr(&out)
    );
    // The uploaded files stay as blobs (as any upload); no model, no half-written one.
    assert!(s
        .store_files()
        .iter()
        .filter(|f| !before.contains(f))
        .all(|f| f.contains("/blobs/sha256-")));
}

/// A long embedding request is served a piece at a time: the runner answers health checks
/// meanwhile, and a client that goes away stops it, so the next request does not wait for
/// vectors nobody will read.
#[test]
fn an_abandoned_embedding_request_stops() {
    let s = TestServer::start();
    s.create("minilm", &format!("FROM {}\n", model_dir(MINILM).display()));
    let inputs = |n: usize, tag: &str| -> Vec<String> {
        (0..n)
            .map(|i| format!("{tag} sentence number {i} about cats"))
            .collect()
    };
    let (status, _) = s.post("/api/embed", json!({"model": "minilm", "input": "warm"}));
    assert_eq!(status, 200);
    let runner = s.runner_pids();
    // How long 2,000 inputs take here.
    let started = Instant::now();
    let (status, v) = s.post(
        "/api/embed",
        json!({"model": "minilm", "input": inputs(2000, "a")}),
    );
    assert_eq!(status, 200);
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2000);
    let some = started.elapsed();
    // Ten times as many, from a client that leaves.
    let body = json!({"model": "minilm", "input": inputs(20000, "b")}).to_string();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        c,
        "POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(some / 2);
    drop(c);
    let started = Instant::now();
    let (status, _) = s.post("/api/embed", json!({"model": "minilm", "input": "Hi"}));
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < some,
        "waited {:?}; 2,000 inputs take {some:?}",
        started.elapsed()
    );
    assert_eq!(s.runner_pids(), runner, "the runner was replaced");
}

/// A generative model embeds slowly (a few hundred tokens a second on this machine): a
/// completion beside a long embedding request is served between the request's pieces, each
/// sized to take a fraction of a second, and ends long before the embedding does.
#[test]
fn a_completion_beside_a_long_embedding_request_is_not_held_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let s = TestServer::start();
    s.create_smol();
    let hi =
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 5}});
    assert_eq!(s.post("/api/generate", hi.clone()).0, 200);
    let inputs = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "{i}: {}",
                    "The quick brown fox jumps over the lazy dog. ".repeat(10)
                )
            })
            .collect()
    };
    // As many inputs (of about 100 tokens) as take some 30 s here: how long do 8 take?
    let started = Instant::now();
    let (status, _) = s.post("/api/embed", json!({"model": "smol", "input": inputs(8)}));
    assert_eq!(status, 200);
    let each = started.elapsed().as_secs_f64() / 8.0;
    let inputs = inputs(((30.0 / each) as usize).clamp(80, 20_000));
    let embedded = Arc::new(AtomicBool::new(false));
    let done = embedded.clone();
    let url = s.url("/api/embed");
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(None).build();
        let body = json!({"model": "smol", "input": inputs});
        let _ = client.unwrap().post(url).json(&body).send();
        done.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (status, body) = s.post("/api/generate", hi);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 5, "{body}");
    assert!(
        !embedded.load(Ordering::SeqCst),
        "the completion waited for the embedding request to end"
    );
}

/// An embedding request queued behind a long one waits for it: the runner still answers
/// while it works, so it is not taken for a stalled one and killed (which failed both).
#[test]
fn an_embedding_request_queued_behind_a_long_one_waits_for_it() {
    let s = TestServer::start_with(&[("CORRAL_STALL_TIMEOUT", "2s")]);
    s.create_smol();
    let sentence = "The quick brown fox jumps over the lazy dog. ".repeat(10);
    let inputs = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{i}: {sentence}")).collect() };
    // As many inputs as take some 8 s here, four times the stall timeout.
    let started = Instant::now();
    let (status, _) = s.post("/api/embed", json!({"model": "smol", "input": inputs(4)}));
    assert_eq!(status, 200);
    let each = started.elapsed().as_secs_f64() / 4.0;
    let long = inputs(((8.0 / each) as usize).clamp(16, 5_000));
    let runner = s.runner_pids();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| s.post("/api/embed", json!({"model": "smol", "input": long})));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (status, v) = s.post(
            "/v1/embeddings",
            json!({"model": "smol", "input": ["a", "b"]}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        let (status, v) = first.join().unwrap();
        assert_eq!(status, 200, "{v}");
    });
    assert_eq!(s.runner_pids(), runner, "the runner was replaced");
}
