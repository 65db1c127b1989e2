//! KV cache types (`CORRAL_KV_CACHE_TYPE`, `PARAMETER kv_cache_type`, the option) and flash
//! attention (`CORRAL_FLASH_ATTENTION`): the runner's memory follows the type, answers
//! complete, and bad or contradictory settings are clear errors.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn modelfile(extra: &str) -> String {
    format!(
        "FROM {}\nPARAMETER num_ctx 8192\n{extra}",
        model_file(SMOL).display()
    )
}

/// A short greedy answer, which must complete.
fn answer(s: &TestServer, model: &str, options: serde_json::Value) {
    let mut o = json!({"temperature": 0, "num_predict": 12});
    o.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": model, "prompt": "Name a colour.", "stream": false, "options": o}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"], true, "{body}");
    assert!(body["eval_count"].as_u64().unwrap() > 0, "{body}");
}

/// The one loaded runner's peak memory and `/api/ps` size; then it is unloaded.
fn measure(s: &TestServer, model: &str) -> (u64, u64) {
    let pids = s.runner_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let rss = peak_rss(pids[0]);
    let size = s.get("/api/ps")["models"][0]["size"].as_u64().unwrap();
    assert!(s.corral(&["stop", model]).status.success());
    assert!(wait_for(Duration::from_secs(10), || s
        .runner_pids()
        .is_empty()));
    (rss, size)
}

#[test]
fn a_quantized_kv_cache_takes_less_memory_and_answers_complete() {
    let s = TestServer::start();
    s.create("smol", &modelfile(""));
    s.create("smol-q8", &modelfile("PARAMETER kv_cache_type q8_0\n"));
    answer(&s, "smol", json!({}));
    let (rss_f16, size_f16) = measure(&s, "smol");
    answer(&s, "smol-q8", json!({}));
    let (rss_q8, size_q8) = measure(&s, "smol-q8");
    // 8192 cells of SmolLM2's KV cache: about 180 MiB as f16, about 96 MiB as q8_0.
    assert!(
        rss_q8 + (60 << 20) < rss_f16,
        "peak memory f16 {rss_f16}, q8_0 {rss_q8}"
    );
    assert!(size_q8 < size_f16, "ps size f16 {size_f16}, q8_0 {size_q8}");
    assert!(s.log().contains("K (q8_0)"), "the runner's cache is q8_0");
    // A request's option does the same (and reloads the runner).
    answer(&s, "smol", json!({"kv_cache_type": "q4_0"}));
    let (rss_q4, _) = measure(&s, "smol");
    assert!(rss_q4 < rss_q8, "q4_0 {rss_q4}, q8_0 {rss_q8}");
    assert!(s.log().contains("K (q4_0)"));

    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "options": {"kv_cache_type": "q5"}}),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "option \"kv_cache_type\" must be one of \"f16\", \"q8_0\" or \"q4_0\", got \"q5\""
    );
    let out = s.try_create("bad", &modelfile("PARAMETER kv_cache_type fp8\n"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("kv_cache_type"), "{}", stderr(&out));
}

/// Lines of the server's log (runners' lines included) that name flash attention.
fn flash_lines(s: &TestServer) -> String {
    s.log()
        .lines()
        .filter(|l| l.contains("flash_attn"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn flash_attention_follows_the_setting() {
    let s = TestServer::start_with(&[("CORRAL_FLASH_ATTENTION", "off")]);
    s.create("smol", &modelfile(""));
    s.create("smol-q8", &modelfile("PARAMETER kv_cache_type q8_0\n"));
    answer(&s, "smol", json!({}));
    assert!(
        flash_lines(&s).contains("= disabled"),
        "{}",
        flash_lines(&s)
    );
    // A quantized cache needs flash attention: refused with the reason, nothing loaded.
    let (status, body) = s.post("/api/generate", json!({"model": "smol-q8", "prompt": "Hi"}));
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "kv_cache_type q8_0 needs flash attention, which CORRAL_FLASH_ATTENTION=off turns off"
    );

    // Ollama's variable, `1`, turns it on; a q8_0 default cache then works.
    let s = TestServer::start_with(&[
        ("OLLAMA_FLASH_ATTENTION", "1"),
        ("CORRAL_KV_CACHE_TYPE", "q8_0"),
    ]);
    s.create("smol", &modelfile(""));
    answer(&s, "smol", json!({}));
    assert!(flash_lines(&s).contains("= enabled"), "{}", flash_lines(&s));
    assert!(s.log().contains("K (q8_0)"));

    for (var, value) in [
        ("CORRAL_FLASH_ATTENTION", "maybe"),
        ("CORRAL_KV_CACHE_TYPE", "q3_k"),
    ] {
        let out = serve_refusing(&[(var, value)]);
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(
            stderr(&out).contains(var) && stderr(&out).contains(value),
            "{}",
            stderr(&out)
        );
    }
    // A default cache that needs flash attention, with flash attention off: refused at start
    // rather than in every request.
    let out = serve_refusing(&[
        ("CORRAL_KV_CACHE_TYPE", "q8_0"),
        ("CORRAL_FLASH_ATTENTION", "off"),
    ]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "Error: CORRAL_KV_CACHE_TYPE q8_0 needs flash attention, which CORRAL_FLASH_ATTENTION=off turns off\n"
    );
}
