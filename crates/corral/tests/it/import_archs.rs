//! `create` from Phi 3 and Qwen 3 folders, made of SmolLM2's weights.
//!
//! Phi 3 (`Phi3ForCausalLM`) is Llama's layers with Q, K and V in one tensor and the gate and
//! up projections in one, under the NeoX rope: SmolLM2's tensors fused so are the same model.
//!
//! Mixtral (`MixtralForCausalLM`) is Llama's layers with a mixture of experts for the
//! feed-forward: SmolLM2's with two identical experts and a router that weighs them equally
//! is the same model again.
//!
//! Qwen 3 (`Qwen3ForCausalLM`) is Llama's layers with norms of Q and K, the NeoX rope, no
//! biases. No Qwen 3 model can be fetched here, so the folder is SmolLM2's
//! (its tensors in Hugging Face's layout, which the NeoX rope rotates as it is) with Q and K
//! norms of uneven weights in a second shard: a real model llama.cpp runs, not a trained one.
//! Its reference is the GGUF that llama.cpp's own tables make of the same folder
//! (`tests/clients/reference_gguf.py`: gguf-py's TensorNameMap and GGUFWriter), and the
//! converted model must answer exactly as that one does.

use crate::common;
use crate::import::{show, variant, write_safetensors};

use safetensors::Dtype;

use std::path::Path;
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

/// The same continuation, with the same likeliest tokens at each step and log probabilities
/// within `tolerance`.
fn same_continuation(a: &Value, b: &Value, tolerance: f64) {
    assert_eq!(a["response"], b["response"], "{a}\n{b}");
    let steps = |v: &Value| v["logprobs"].as_array().unwrap().clone();
    let (sa, sb) = (steps(a), steps(b));
    assert_eq!(sa.len(), sb.len());
    for (x, y) in sa.iter().zip(&sb) {
        let tokens = |v: &Value| -> Vec<Value> {
            let top = v["top_logprobs"].as_array().unwrap();
            top.iter().map(|t| t["token"].clone()).collect()
        };
        assert_eq!(tokens(x), tokens(y), "{x}\n{y}");
        let d = x["logprob"].as_f64().unwrap() - y["logprob"].as_f64().unwrap();
        assert!(d.abs() < tolerance, "{x}\n{y}");
    }
}

/// SmolLM2's Hugging Face folder and its config.json declaring another architecture.
fn smol_as(architecture: &str, model_type: &str) -> (std::path::PathBuf, Value) {
    let hf = smol_hf();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    config["architectures"] = json!([architecture]);
    config["model_type"] = json!(model_type);
    (hf, config)
}

#[test]
fn a_qwen3_folder_becomes_the_model_llama_cpps_tables_make_of_it() {
    let s = TestServer::start();
    let (hf, mut config) = smol_as("Qwen3ForCausalLM", "qwen3");
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
    same_continuation(&a, &b, 1e-4);
    // Qwen 3 MoE: the same layers, with that MLP as two experts weighed equally, is the
    // same model as this Qwen 3.
    let mut moe_config = config.clone();
    moe_config["architectures"] = json!(["Qwen3MoeForCausalLM"]);
    moe_config["model_type"] = json!("qwen3_moe");
    moe_config["num_experts"] = json!(2);
    moe_config["num_experts_per_tok"] = json!(2);
    moe_config["moe_intermediate_size"] = config["intermediate_size"].clone();
    moe_config["norm_topk_prob"] = json!(true);
    moe_config["decoder_sparse_step"] = json!(1);
    moe_config["mlp_only_layers"] = json!([]);
    let moe = variant(&s, "qwen3moe", &hf, &moe_config);
    write_two_experts(
        &hf,
        &moe.join("model-00001-of-00002.safetensors"),
        "mlp",
        [
            ("gate_proj", "gate_proj"),
            ("up_proj", "up_proj"),
            ("down_proj", "down_proj"),
        ],
    );
    std::os::unix::fs::symlink(
        dir.join("model-00002-of-00002.safetensors"),
        moe.join("model-00002-of-00002.safetensors"),
    )
    .unwrap();
    s.create("qwen3moe", &format!("FROM {}\n", moe.display()));
    let info = show("qwen3moe");
    assert_eq!(info["model_info"]["qwen3moe.expert_count"], 2, "{info}");
    same_continuation(&continuation(&s, "qwen3moe"), &a, 0.01);

    // The norms are in play: not SmolLM2's own answer.
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));
    assert_ne!(
        a["response"],
        continuation(&s, "smol-f16")["response"],
        "{a}"
    );
}

#[test]
fn a_phi3_folder_with_fused_projections_answers_as_its_unfused_model() {
    let s = TestServer::start();
    let (hf, mut config) = smol_as("Phi3ForCausalLM", "phi3");
    config["original_max_position_embeddings"] = config["max_position_embeddings"].clone();
    config["sliding_window"] = Value::Null;
    let dir = variant(&s, "phi3", &hf, &config);

    // Each layer's Q, K and V rows one after another in qkv_proj, gate's then up's rows in
    // gate_up_proj (Phi 3's layout); the rest as it is.
    let bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Vec::new();
    let fused = |parts: &[&str], layer: &str| -> (Vec<usize>, Vec<u8>) {
        let mut data = Vec::new();
        let mut rows = 0;
        let mut cols = 0;
        for p in parts {
            let t = weights.tensor(&format!("{layer}.{p}.weight")).unwrap();
            assert_eq!(t.dtype(), Dtype::F16);
            rows += t.shape()[0];
            cols = t.shape()[1];
            data.extend_from_slice(t.data());
        }
        (vec![rows, cols], data)
    };
    let layers = config["num_hidden_layers"].as_u64().unwrap();
    for n in 0..layers {
        let layer = format!("model.layers.{n}");
        for (name, parts) in [
            (
                "self_attn.qkv_proj",
                &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"][..],
            ),
            ("mlp.gate_up_proj", &["mlp.gate_proj", "mlp.up_proj"][..]),
        ] {
            let (shape, data) = fused(parts, &layer);
            out.push((format!("{layer}.{name}.weight"), Dtype::F16, shape, data));
        }
    }
    let folded = ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"];
    for (name, t) in weights.tensors() {
        if !folded.iter().any(|f| name.contains(&format!(".{f}."))) {
            out.push((name, t.dtype(), t.shape().to_vec(), t.data().to_vec()));
        }
    }
    write_safetensors(&dir.join("model.safetensors"), &out);

    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", dir.display())).unwrap();
    let out = s.corral(&["create", "phi3", "-f", mf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = show(&s, "phi3");
    assert_eq!(info["details"]["family"], "phi3", "{info}");
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));

    // The same model: the same continuation and likeliest tokens, the same numbers up to the
    // order of additions in the rotated dot products.
    let (a, b) = (continuation(&s, "phi3"), continuation(&s, "smol-f16"));
    same_continuation(&a, &b, 0.01);
}

/// SmolLM2's weights with each layer's MLP twice, as experts 0 and 1 of a mixture under
/// `<moe>.experts.E.` (`names`: each MLP projection's name there), and a router of zeros at
/// `<moe>.gate`: both experts chosen, each weighed 0.5, their sum the MLP's output.
fn write_two_experts(hf: &Path, path: &Path, moe: &str, names: [(&str, &str); 3]) {
    let bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Vec::new();
    for (name, t) in weights.tensors() {
        let Some((layer, proj)) = name.split_once(".mlp.") else {
            out.push((name, t.dtype(), t.shape().to_vec(), t.data().to_vec()));
            continue;
        };
        let proj = proj.trim_end_matches(".weight");
        let (_, w) = names.iter().find(|(p, _)| *p == proj).unwrap();
        for e in 0..2 {
            let expert = format!("{layer}.{moe}.experts.{e}.{w}.weight");
            out.push((expert, t.dtype(), t.shape().to_vec(), t.data().to_vec()));
        }
        if proj == "gate_proj" {
            let hidden = t.shape()[1];
            let router = format!("{layer}.{moe}.gate.weight");
            out.push((
                router,
                Dtype::F16,
                vec![2, hidden],
                vec![0u8; 2 * 2 * hidden],
            ));
        }
    }
    write_safetensors(path, &out);
}

#[test]
fn a_mixtral_folder_stacks_its_experts_as_llama_cpp_does() {
    let s = TestServer::start();
    let (hf, mut config) = smol_as("MixtralForCausalLM", "mixtral");
    config["num_local_experts"] = json!(2);
    config["num_experts_per_tok"] = json!(2);
    let dir = variant(&s, "mixtral", &hf, &config);

    write_two_experts(
        &hf,
        &dir.join("model.safetensors"),
        "block_sparse_moe",
        [("gate_proj", "w1"), ("up_proj", "w3"), ("down_proj", "w2")],
    );

    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", dir.display())).unwrap();
    let out = s.corral(&["create", "mixtral", "-f", mf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = show(&s, "mixtral");
    assert_eq!(info["model_info"]["llama.expert_count"], 2, "{info}");
    assert_eq!(info["model_info"]["llama.expert_used_count"], 2, "{info}");
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));
    let (a, b) = (continuation(&s, "mixtral"), continuation(&s, "smol-f16"));
    same_continuation(&a, &b, 0.01);
}
