//! Device discovery and selection: CPU mode never hangs, whatever hides the GPUs.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn devices_json_explains_the_decision() {
    let r = devices_json(&[]);
    assert!(r["cpu"]["physical_cores"].as_u64().unwrap() >= 1);
    assert!(r["memory_total"].as_u64().unwrap() > 0);
    assert!(
        r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "cpu"),
        "{r}"
    );
    assert_eq!(r["decision"], "cpu", "this machine has no GPU: {r}");
    let cuda = |r: &Value| {
        r["visibility"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["variable"] == "CUDA_VISIBLE_DEVICES")
            .unwrap()
            .clone()
    };
    assert_eq!(
        cuda(&r)["reason"],
        "all CUDA devices visible: CUDA_VISIBLE_DEVICES is unset"
    );

    let r = devices_json(&[("CUDA_VISIBLE_DEVICES", "")]);
    assert_eq!(
        cuda(&r)["reason"],
        "CUDA devices hidden: CUDA_VISIBLE_DEVICES is empty"
    );
    assert_eq!(cuda(&r)["normalized"], "-1");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("CUDA devices hidden: CUDA_VISIBLE_DEVICES is empty"),
        "{r}"
    );
    let r = devices_json(&[("CUDA_VISIBLE_DEVICES", " 1, abc,1")]);
    assert_eq!(cuda(&r)["normalized"], "1");
    assert_eq!(cuda(&r)["ignored"].as_array().unwrap().len(), 2);
    let r = devices_json(&[("CORRAL_DEVICE", "cpu")]);
    assert_eq!(
        (r["decision"].as_str(), r["reason"].as_str()),
        (Some("cpu"), Some("CORRAL_DEVICE=cpu"))
    );
    let r = devices_json(&[("CORRAL_DEVICE", "gpu")]);
    assert_eq!(r["decision"], "error");
    assert!(r["reason"]
        .as_str()
        .unwrap()
        .starts_with("CORRAL_DEVICE=gpu, but no GPU is available"));

    let text = Command::new(corral_exe())
        .arg("devices")
        .env("CUDA_VISIBLE_DEVICES", "-1")
        .output()
        .unwrap();
    let text = stdout(&text);
    assert!(
        text.contains("CUDA devices hidden: CUDA_VISIBLE_DEVICES is -1")
            && text.contains("Models run on: CPU"),
        "{text}"
    );
}

/// The seed's scenarios: each way of forcing CPU mode gives a full answer that streams to the
/// end, and no process is left after the server stops.
#[test]
fn every_way_of_forcing_cpu_mode_answers_to_the_end() {
    // (what, server environment, request options, use a `PARAMETER num_gpu 0` model)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Value, bool);
    let cases: Vec<Case> = vec![
        ("variables unset", vec![], json!({}), false),
        (
            "CUDA_VISIBLE_DEVICES empty",
            vec![("CUDA_VISIBLE_DEVICES", "")],
            json!({}),
            false,
        ),
        (
            "CUDA_VISIBLE_DEVICES=-1",
            vec![("CUDA_VISIBLE_DEVICES", "-1")],
            json!({}),
            false,
        ),
        (
            "CUDA_VISIBLE_DEVICES=0",
            vec![("CUDA_VISIBLE_DEVICES", "0")],
            json!({}),
            false,
        ),
        (
            "CUDA_VISIBLE_DEVICES=abc",
            vec![("CUDA_VISIBLE_DEVICES", "abc")],
            json!({}),
            false,
        ),
        (
            "CORRAL_DEVICE=cpu",
            vec![("CORRAL_DEVICE", "cpu")],
            json!({}),
            false,
        ),
        ("options.num_gpu 0", vec![], json!({"num_gpu": 0}), false),
        (
            "a Modelfile with PARAMETER num_gpu 0",
            vec![("CUDA_VISIBLE_DEVICES", "-1")],
            json!({}),
            true,
        ),
    ];
    for (what, env, options, cpu_variant) in cases {
        let mut s = TestServer::start_with(&env);
        s.create_smol();
        let model = if cpu_variant {
            // The seed's workaround, `ollama create mistral:cpu`, with our model.
            // (And a length limit for `corral run`: a sampled answer may run for a context.)
            s.create(
                "smol:cpu",
                "FROM smol\nPARAMETER num_gpu 0\nPARAMETER num_predict 32\n",
            );
            "smol:cpu"
        } else {
            "smol"
        };
        let mut opts = options.clone();
        opts["num_predict"] = json!(24);
        opts["temperature"] = json!(0);
        let body = json!({"model": model, "messages": [{"role": "user", "content": "Tell me about the sea."}], "options": opts});
        let resp = s.http.post(s.url("/api/chat")).json(&body).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{what}");
        let lines: Vec<Value> = BufReader::new(resp)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        let last = lines.last().unwrap();
        assert_eq!(last["done"], true, "{what}: {last}");
        assert_eq!(last["eval_count"], 24, "{what}: {last}");
        assert!(lines.len() > 5, "{what}: the answer streamed");
        let ps = s.get("/api/ps");
        assert_eq!(ps["models"][0]["size_vram"], 0, "{what}");
        if cpu_variant {
            let out = s.corral(&["run", "smol:cpu", "Hi", "--verbose"]);
            assert!(
                out.status.success() && stderr(&out).contains("eval rate:"),
                "{what}: {}",
                stderr(&out)
            );
        }
        s.stop();
        assert!(
            wait_for(Duration::from_secs(2), || s.runner_pids().is_empty()),
            "{what}: runner left behind"
        );
    }
}

#[test]
fn corral_device_gpu_without_a_gpu_fails_clearly_and_bad_modes_stop_the_server() {
    let s = TestServer::start_with(&[("CORRAL_DEVICE", "gpu")]);
    s.create_smol();
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false}),
    );
    assert_eq!(status, 500);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("CORRAL_DEVICE=gpu, but no GPU is available"),
        "{body}"
    );
    assert!(s.runner_pids().is_empty());

    let out = Command::new(corral_exe())
        .arg("serve")
        .env("CORRAL_DEVICE", "tpu")
        .env("CORRAL_HOST", "127.0.0.1:9")
        .env("CORRAL_MODELS", s.dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("CORRAL_DEVICE must be auto, cpu or gpu, not \"tpu\""),
        "{}",
        stderr(&out)
    );
}
