//! `create` from a Qwen 3 folder (`Qwen3ForCausalLM`: Llama's layers with norms of Q and K,
//! the NeoX rope, no biases). No Qwen 3 model can be fetched here, so the folder is SmolLM2's
//! (its tensors in Hugging Face's layout, which the NeoX rope rotates as it is) with Q and K
//! norms of uneven weights in a second shard: a real model llama.cpp runs, not a trained one.
//! Its reference is the GGUF that llama.cpp's own tables make of the same folder
//! (`tests/clients/reference_gguf.py`: gguf-py's TensorNameMap and GGUFWriter), and the
//! converted model must answer exactly as that one does.

use crate::common;
use crate::import::{show, variant, write_safetensors};

use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn continuation(s: &TestServer, model: &str) -> Value {
    let (code, v) = s.post(
        "/api/generate",
        json!({"model": model, "prompt": "The capital of France is", "raw": true,
               "stream": false, "logprobs": true, "top_logprobs": 3,
               "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(code, 200, "{v}");
    v
}

#[test]
fn a_qwen3_folder_becomes_the_model_llama_cpps_tables_make_of_it() {
    let s = TestServer::start();
    let hf = smol_hf();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    config["architectures"] = json!(["Qwen3ForCausalLM"]);
    config["model_type"] = json!("qwen3");
    config["head_dim"] = json!(64);
    config["use_sliding_window"] = json!(false);
    let dir = variant(&s, "qwen3", &hf, &config);
    std::os::unix::fs::symlink(
        hf.join("model.safetensors"),
        dir.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    // Norms of Q and K (per head of 64), each weight its own, so that a norm left out, put on
    // the wrong projection or rotated wrongly changes the answer.
    let mut norms = Vec::new();
    for n in 0..config["num_hidden_layers"].as_u64().unwrap() {
        for (p, phase) in [("q", 0.0f32), ("k", 1.0)] {
            let w: Vec<u8> = (0..64)
                .flat_map(|i| {
                    (1.0 + 0.5 * (i as f32 * 0.37 + phase + n as f32).sin()).to_le_bytes()
                })
                .collect();
            norms.push((
                format!("model.layers.{n}.self_attn.{p}_norm.weight"),
                safetensors::Dtype::F32,
                vec![64],
                w,
            ));
        }
    }
    write_safetensors(&dir.join("model-00002-of-00002.safetensors"), &norms);

    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", dir.display())).unwrap();
    let out = s.corral(&["create", "qwen3", "-f", mf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let reference = s.dir.path().join("reference.gguf");
    let out = Command::new(client_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/clients/reference_gguf.py"
        ))
        .args([&dir, &smol_f16(), &reference])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    s.create(
        "qwen3-reference",
        &format!("FROM {}\n", reference.display()),
    );

    let show = |name: &str| show(&s, name);
    let (ours, theirs) = (show("qwen3"), show("qwen3-reference"));
    assert_eq!(ours["details"], theirs["details"], "{ours}");
    assert_eq!(ours["details"]["family"], "qwen3");
    for key in [
        "general.parameter_count",
        "qwen3.attention.head_count_kv",
        "qwen3.rope.freq_base",
        "qwen3.attention.layer_norm_rms_epsilon",
        "tokenizer.ggml.pre",
    ] {
        assert_eq!(ours["model_info"][key], theirs["model_info"][key], "{key}");
    }

    let (a, b) = (
        continuation(&s, "qwen3"),
        continuation(&s, "qwen3-reference"),
    );
    assert_eq!(a["response"], b["response"], "{a}\n{b}");
    for (x, y) in a["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["logprobs"].as_array().unwrap())
    {
        assert_eq!(x["top_logprobs"], y["top_logprobs"], "{x}\n{y}");
    }
    // The norms are in play: not SmolLM2's own answer.
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));
    assert_ne!(
        a["response"],
        continuation(&s, "smol-f16")["response"],
        "{a}"
    );
}
