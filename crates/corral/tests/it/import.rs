//! `create` from a Hugging Face folder (Ollama's `FROM /path/to/safetensors/folder`): the
//! folder's weights, config and tokenizer converted into a GGUF model by a runner child. The
//! folder is SmolLM2 in Hugging Face's layout (`tests/clients/hf_model.py`, checked there with
//! Hugging Face's `tokenizers`), holding the very tensors of the F16 GGUF model, so the
//! converted model must answer exactly as that one does.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Map, Value};

/// Upload `bytes` as a blob unless the server has it (as the CLI does); returns its digest.
fn upload(s: &TestServer, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let url = s.url(&format!("/api/blobs/{digest}"));
    if s.http.head(&url).send().unwrap().status().is_success() {
        return digest;
    }
    let resp = s.http.post(url).body(bytes.to_vec()).send().unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    digest
}

/// Every file of `dir`, uploaded, as `/api/create`'s `files`.
fn upload_folder(s: &TestServer, dir: &Path) -> Map<String, Value> {
    let mut files = Map::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        files.insert(name, json!(upload(s, &std::fs::read(e.path()).unwrap())));
    }
    files
}

/// A greedy answer with the log probabilities of its tokens and their five rivals.
fn answer(s: &TestServer, model: &str) -> Value {
    let (code, v) = s.post(
        "/api/chat",
        json!({"model": model, "stream": false, "logprobs": true, "top_logprobs": 5,
               "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "options": {"temperature": 0, "num_predict": 24}}),
    );
    assert_eq!(code, 200, "{v}");
    v
}

/// Temp files of unfinished blobs in the store.
fn unfinished(s: &TestServer) -> Vec<String> {
    s.store_files()
        .into_iter()
        .filter(|f| f.contains("/blobs/new-"))
        .collect()
}

#[test]
fn a_hugging_face_folder_becomes_a_model_that_answers_as_its_gguf_does() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(&[("TMPDIR", tmp.path().to_str().unwrap())]);
    let hf = smol_hf();
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));

    // The CLI: FROM the folder.
    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", hf.display())).unwrap();
    let out = s.corral(&["create", "smol-hf", "-f", mf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("converting model") && err.contains("success"),
        "{err}"
    );

    // Described as the GGUF model is: the same architecture, size, type and chat template.
    let show = |name: &str| {
        let (code, v) = s.post("/api/show", json!({"model": name}));
        assert_eq!(code, 200, "{v}");
        v
    };
    let (hf_show, f16_show) = (show("smol-hf"), show("smol-f16"));
    assert_eq!(hf_show["details"], f16_show["details"], "{hf_show}");
    assert_eq!(hf_show["details"]["quantization_level"], "F16");
    assert_eq!(hf_show["details"]["family"], "llama");
    assert_eq!(hf_show["template"], f16_show["template"]);
    for key in [
        "general.parameter_count",
        "llama.context_length",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
    ] {
        assert_eq!(
            hf_show["model_info"][key], f16_show["model_info"][key],
            "{key}: {hf_show}"
        );
    }

    // The same tensors, the same tokenizer: the same answer, token for token, with the same
    // probabilities (a Q or K left in Hugging Face's order, or another split of the text,
    // would change them).
    let (a, b) = (answer(&s, "smol-hf"), answer(&s, "smol-f16"));
    assert_eq!(a["message"]["content"], b["message"]["content"], "{a}\n{b}");
    assert!(
        a["message"]["content"].as_str().unwrap().contains("Paris"),
        "{a}"
    );
    assert_eq!(a["prompt_eval_count"], b["prompt_eval_count"]);
    let (la, lb) = (
        a["logprobs"].as_array().unwrap(),
        b["logprobs"].as_array().unwrap(),
    );
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(lb) {
        let tokens = |v: &Value| -> Vec<Value> {
            v["top_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["token"].clone())
                .collect()
        };
        assert_eq!(tokens(x), tokens(y), "{x}\n{y}");
        let d = x["logprob"].as_f64().unwrap() - y["logprob"].as_f64().unwrap();
        assert!(d.abs() < 1e-4, "{x}\n{y}");
    }

    // The API, the same files: a progress line per tensor, then quantized in the same create.
    let files = upload_folder(&s, &hf);
    let lines = s.stream(
        "/api/create",
        json!({"model": "smol-hf-q8", "files": files, "quantize": "q8_0"}),
    );
    let converting: Vec<&Value> = lines
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["status"] == "converting model" && v["total"].is_u64())
        .collect();
    assert_eq!(
        converting.last().map(|v| (&v["completed"], &v["total"])),
        Some((&json!(272), &json!(272))),
        "one line per tensor, 272 in all: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(_, v)| v["status"] == "quantizing F16 model to Q8_0"),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap().1["status"], "success", "{lines:?}");
    assert_eq!(show("smol-hf-q8")["details"]["quantization_level"], "Q8_0");
    let q8 = answer(&s, "smol-hf-q8");
    assert_eq!(q8["done"], true, "{q8}");
    assert!(
        q8["message"]["content"].as_str().unwrap().contains("Paris"),
        "{q8}"
    );

    // Nothing left: no temp blob, no converter, no folder of links.
    assert!(unfinished(&s).is_empty(), "{:?}", unfinished(&s));
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "temp files left: {:?}",
        std::fs::read_dir(tmp.path()).unwrap().collect::<Vec<_>>()
    );
}

#[test]
fn a_bad_hugging_face_folder_is_refused_by_name_and_leaves_nothing() {
    let s = TestServer::start_with(&[("CORRAL_RUNNER_FAULT", "crash@tensor:100")]);
    let hf = smol_hf();
    let files = upload_folder(&s, &hf);
    let read_json = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(hf.join(name)).unwrap()).unwrap()
    };
    // The same files with one replaced (or left out, with null).
    let with = |name: &str, bytes: Option<Vec<u8>>| -> Value {
        let mut f = files.clone();
        match bytes {
            Some(b) => f.insert(name.to_string(), json!(upload(&s, &b))),
            None => f.remove(name),
        };
        Value::Object(f)
    };
    let config = read_json("config.json");
    let edited_config = |key: &str, value: Value| {
        let mut c = config.clone();
        c[key] = value;
        Some(serde_json::to_vec(&c).unwrap())
    };
    let mut tokenizer = read_json("tokenizer.json");
    tokenizer["pre_tokenizer"] = json!({"type": "Metaspace", "replacement": "▁",
                                        "prepend_scheme": "first", "split": false});
    let weights = std::fs::read(hf.join("model.safetensors")).unwrap();

    // Refused before anything runs: a 400 that names the problem.
    let refused = [
        (with("config.json", None), "config.json is missing"),
        (with("tokenizer.json", None), "tokenizer.json is missing"),
        (
            with(
                "config.json",
                edited_config("architectures", json!(["GPT2LMHeadModel"])),
            ),
            "unsupported architecture \"GPT2LMHeadModel\"",
        ),
        (
            with("config.json", Some(b"{\"architectures\": [".to_vec())),
            "config.json: not valid JSON",
        ),
    ];
    // Found by the converter: the stream ends with an error that names it.
    let failed = [
        (
            with("tokenizer.json", Some(serde_json::to_vec(&tokenizer).unwrap())),
            "tokenizer.json: its pre-tokenizer (Metaspace) is not one Corral can map",
        ),
        (
            with("config.json", edited_config("num_hidden_layers", json!(31))),
            "tensor model.layers.30.input_layernorm.weight is missing",
        ),
        (
            with("config.json", edited_config("hidden_size", json!(512))),
            "tensor model.embed_tokens.weight has shape [49152, 576]; config.json makes it [49152, 512]",
        ),
        (
            with("model.safetensors", Some(weights[..1 << 20].to_vec())),
            "model.safetensors: ",
        ),
        // The fault: the converter dies at its 100th tensor.
        (
            Value::Object(files.clone()),
            "converting the model failed (the converter ended with signal 6 (SIGABRT))",
        ),
    ];
    let before = s.store_files();
    for (files, says) in refused {
        let (code, v) = s.post("/api/create", json!({"model": "x", "files": files}));
        assert_eq!(code, 400, "{says}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{says}: {v}");
        assert_eq!(s.store_files(), before);
    }
    for (files, says) in failed {
        let lines = s.stream("/api/create", json!({"model": "x", "files": files}));
        let last = &lines.last().unwrap().1;
        let error = last["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert!(error.contains(says), "{says}: {error}");
        assert!(
            wait_for(Duration::from_secs(10), || s.runner_pids().is_empty()),
            "a converter is left"
        );
        assert_eq!(s.store_files(), before, "{says}");
    }
    assert!(s.get("/api/tags")["models"].as_array().unwrap().is_empty());

    // The CLI refuses a folder without weights before it uploads anything.
    let empty = s.dir.path().join("empty-model");
    std::fs::create_dir(&empty).unwrap();
    std::fs::copy(hf.join("config.json"), empty.join("config.json")).unwrap();
    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", empty.display())).unwrap();
    let out = s.corral(&["create", "x", "-f", mf.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no *.safetensors weights in this folder"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.store_files(), before);
}
