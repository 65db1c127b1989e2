//! The seed matrix with a real GPU backend present: llama.cpp's Vulkan module on Mesa's
//! lavapipe (llvmpipe, a conformant Vulkan device on the CPU). ggml leaves CPU-type Vulkan
//! devices out unless `GGML_VK_VISIBLE_DEVICES` names them, so the device is visible only when
//! named: every other form of the variable must still answer to the end on the CPU.
//!
//! llvmpipe evaluates about 6 tokens/s here, so each answer asks for a few tokens only.

use crate::common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn vulkan_devices(r: &Value) -> Vec<Value> {
    r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["backend"] == "Vulkan")
        .cloned()
        .collect()
}

/// A greedy answer of `n` tokens, streamed; returns its text and final object.
fn answer(s: &TestServer, options: Value, n: u64) -> (String, Value) {
    let mut o = options;
    o["num_predict"] = json!(n);
    o["temperature"] = json!(0);
    o["num_ctx"] = json!(256);
    let body =
        json!({"model": "smol", "prompt": "The capital of France is", "raw": true, "options": o});
    let resp = s
        .http
        .post(s.url("/api/generate"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let lines: Vec<Value> = BufReader::new(resp)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let last = lines.last().unwrap().clone();
    assert_eq!(last["done"], true, "{last}");
    let text = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect::<String>();
    (text, last)
}

#[test]
fn the_software_device_is_visible_only_when_named() {
    let r = devices_json(&[]);
    let vk = r["modules"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["backend"] == "vulkan")
        .cloned()
        .expect("the Vulkan module is in the build");
    assert_eq!(vk["loaded"], true, "{vk}");
    assert!(
        vulkan_devices(&r).is_empty(),
        "ggml leaves CPU-type devices out: {r}"
    );
    assert_eq!(r["decision"], "cpu");
    let named = devices_json(&[("GGML_VK_VISIBLE_DEVICES", "0")]);
    let module = named["modules"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["backend"] == "vulkan")
        .cloned()
        .unwrap();
    assert_eq!(module["note"], "loaded, 1 device");
    let vk = vulkan_devices(&named);
    assert_eq!(vk.len(), 1, "{named}");
    assert!(
        vk[0]["description"].as_str().unwrap().contains("llvmpipe"),
        "{vk:?}"
    );
    assert_eq!(named["decision"], "gpu", "{named}");
}

#[test]
fn a_named_device_takes_the_layers_asked_for() {
    let mut s = TestServer::start_with(&[("GGML_VK_VISIBLE_DEVICES", "0")]);
    s.create_smol();
    // Every layer that fits: all of them.
    let (gpu_text, last) = answer(&s, json!({}), 4);
    assert_eq!(last["eval_count"], 4);
    let ps = s.get("/api/ps");
    let m = &ps["models"][0];
    assert_eq!(m["size_vram"], m["size"], "{ps}");
    assert!(stdout(&s.corral(&["ps"])).contains("100% GPU"));
    // Greedy tokens on the device match the CPU's for the first ones (the kernels differ in
    // rounding, so longer answers may part ways).
    let (cpu_text, _) = answer(&s, json!({"num_gpu": 0}), 4);
    assert!(stdout(&s.corral(&["ps"])).contains("100% CPU"));
    let first = |t: &str| t.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(
        first(&gpu_text),
        first(&cpu_text),
        "GPU {gpu_text:?} CPU {cpu_text:?}"
    );
    // A part of the layers: the split shows.
    let (_, last) = answer(&s, json!({"num_gpu": 15}), 2);
    assert_eq!(last["done"], true);
    let ps = stdout(&s.corral(&["ps"]));
    assert!(ps.contains("% CPU/GPU"), "{ps}");
    s.stop();
    assert!(wait_for(Duration::from_secs(2), || s
        .runner_pids()
        .is_empty()));
}

#[test]
fn cpu_mode_and_hidden_devices_answer_to_the_end() {
    // (what, server environment, request options): each must run 100% CPU and finish.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Value);
    let cases: Vec<Case> = vec![
        ("GGML_VK_VISIBLE_DEVICES unset", vec![], json!({})),
        (
            "GGML_VK_VISIBLE_DEVICES empty",
            vec![("GGML_VK_VISIBLE_DEVICES", "")],
            json!({}),
        ),
        (
            "GGML_VK_VISIBLE_DEVICES=-1",
            vec![("GGML_VK_VISIBLE_DEVICES", "-1")],
            json!({}),
        ),
        (
            "GGML_VK_VISIBLE_DEVICES=abc",
            vec![("GGML_VK_VISIBLE_DEVICES", "abc")],
            json!({}),
        ),
        (
            "GGML_VK_VISIBLE_DEVICES=7",
            vec![("GGML_VK_VISIBLE_DEVICES", "7")],
            json!({}),
        ),
        (
            "CUDA_VISIBLE_DEVICES=-1",
            vec![("CUDA_VISIBLE_DEVICES", "-1")],
            json!({}),
        ),
        (
            "CUDA_VISIBLE_DEVICES empty",
            vec![("CUDA_VISIBLE_DEVICES", "")],
            json!({}),
        ),
        (
            "CORRAL_DEVICE=cpu with the device named",
            vec![("GGML_VK_VISIBLE_DEVICES", "0"), ("CORRAL_DEVICE", "cpu")],
            json!({}),
        ),
        (
            "options.num_gpu 0 with the device named",
            vec![("GGML_VK_VISIBLE_DEVICES", "0")],
            json!({"num_gpu": 0}),
        ),
    ];
    for (what, env, options) in cases {
        answers_to_the_end_on_the_cpu(what, &env, options);
    }
    // A messy value that still names device 0 (blanks, a duplicate) is normalized, not
    // passed on for ggml to choke on: the device runs the model.
    let mut s = TestServer::start_with(&[("GGML_VK_VISIBLE_DEVICES", " 0, 0 ")]);
    s.create_smol();
    let (_, last) = answer(&s, json!({}), 2);
    assert_eq!(last["done"], true);
    let ps = s.get("/api/ps");
    assert_eq!(
        ps["models"][0]["size_vram"], ps["models"][0]["size"],
        "{ps}"
    );
    s.stop();
}

#[test]
fn a_load_the_device_cannot_hold_falls_back_to_the_cpu() {
    // llvmpipe reports the machine's memory; a fault on the real device stands in for a
    // driver that fails the load.
    let s = TestServer::start_with(&[
        ("GGML_VK_VISIBLE_DEVICES", "0"),
        ("CORRAL_RUNNER_FAULT", "fail@gpu-load"),
    ]);
    s.create_smol();
    let (_, last) = answer(&s, json!({}), 2);
    assert_eq!(last["done"], true);
    let ps = s.get("/api/ps");
    let m = &ps["models"][0];
    assert_eq!(m["size_vram"], 0, "{ps}");
    assert!(
        m["warning"]
            .as_str()
            .unwrap_or("")
            .starts_with("loading on the GPU failed, running on the CPU instead"),
        "{ps}"
    );
    let out = stdout(&s.corral(&["ps"]));
    assert!(
        out.contains("100% CPU") && out.contains("loading on the GPU failed"),
        "{out}"
    );
}
