//! Log probabilities (`logprobs`, `top_logprobs`) on the native routes and OpenAI's, from the
//! real model: each token's own bytes, its log probability, the most likely alternatives.

use crate::common;

use common::*;
use serde_json::{json, Value};

/// Every `logprobs` entry of a list of answer objects, in order.
fn all_logprobs<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
    objects
        .into_iter()
        .flat_map(|o| o["logprobs"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn bytes_of(lps: &[Value]) -> Vec<u8> {
    lps.iter()
        .flat_map(|lp| {
            lp["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Greedy sampling without penalties picks the most likely token: it heads its own
/// alternatives, which are sorted log probabilities (at most 0) that sum to at most 1.
fn check_greedy(lps: &[Value], top: usize) {
    assert!(!lps.is_empty());
    for lp in lps {
        let chosen = lp["logprob"].as_f64().unwrap();
        assert!(chosen <= 0.0, "{lp}");
        let alts = lp["top_logprobs"].as_array().unwrap();
        assert_eq!(alts.len(), top, "{lp}");
        let values: Vec<f64> = alts
            .iter()
            .map(|a| a["logprob"].as_f64().unwrap())
            .collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{lp}");
        assert!(values.iter().map(|v| v.exp()).sum::<f64>() <= 1.0 + 1e-6);
        assert_eq!(alts[0]["token"], lp["token"], "{lp}");
        assert!((values[0] - chosen).abs() < 1e-6, "{lp}");
        // The token's text is its bytes.
        let text = String::from_utf8_lossy(&bytes_of(std::slice::from_ref(lp))).into_owned();
        assert_eq!(lp["token"], text.as_str());
    }
}

#[test]
fn native_routes_give_each_tokens_log_probability() {
    let s = TestServer::start();
    s.create_smol();
    let body = |stream: bool| {
        json!({"model": "smol", "prompt": "Name three colours.", "stream": stream,
               "logprobs": true, "top_logprobs": 3,
               "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 12}})
    };
    let (status, whole) = s.post("/api/generate", body(false));
    assert_eq!(status, 200, "{whole}");
    let lps = whole["logprobs"].as_array().unwrap().clone();
    assert_eq!(lps.len() as u64, whole["eval_count"].as_u64().unwrap());
    check_greedy(&lps, 3);
    assert_eq!(
        bytes_of(&lps),
        whole["response"].as_str().unwrap().as_bytes(),
        "the tokens' bytes are the answer's text"
    );

    // Streamed, each token's numbers come with its text.
    let lines: Vec<Value> = s
        .stream("/api/generate", body(true))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    for l in &lines {
        if let Some(lp) = l["logprobs"].as_array() {
            let text = l["response"].as_str().unwrap();
            if !l["done"].as_bool().unwrap() {
                assert_eq!(bytes_of(lp), text.as_bytes(), "{l}");
            }
        }
    }
    let streamed = all_logprobs(&lines);
    let tokens = |v: &[Value]| v.iter().map(|l| l["token"].clone()).collect::<Vec<_>>();
    assert_eq!(tokens(&streamed), tokens(&lps));
    for (a, b) in streamed.iter().zip(&lps) {
        let (a, b) = (
            a["logprob"].as_f64().unwrap(),
            b["logprob"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 0.05, "{a} vs {b}");
    }

    // Chat too; without top_logprobs there are no alternatives.
    let (status, chat) = s.post(
        "/api/chat",
        json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "stream": false,
               "logprobs": true, "options": {"temperature": 0, "num_predict": 8}}),
    );
    assert_eq!(status, 200, "{chat}");
    let lps = chat["logprobs"].as_array().unwrap();
    assert_eq!(
        bytes_of(lps),
        chat["message"]["content"].as_str().unwrap().as_bytes()
    );
    assert!(lps.iter().all(|lp| lp.get("top_logprobs").is_none()));

    // Not asked for: not there.
    let (_, plain) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 3}}),
    );
    assert!(plain.get("logprobs").is_none(), "{plain}");

    for bad in [21, -1] {
        let (status, e) = s.post(
            "/api/generate",
            json!({"model": "smol", "prompt": "Hi", "logprobs": true, "top_logprobs": bad}),
        );
        assert_eq!(status, 400);
        assert_eq!(e["error"], "top_logprobs must be between 0 and 20");
    }
}

#[test]
fn openai_routes_give_log_probabilities_in_openai_shapes() {
    let s = TestServer::start();
    s.create_smol();
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol", "messages": [{"role": "user", "content": "Name a fruit."}],
               "logprobs": true, "top_logprobs": 2, "max_tokens": 8, "temperature": 0,
               "options": {"repeat_penalty": 1.0}}),
    );
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    check_greedy(content, 2);
    assert_eq!(
        bytes_of(content),
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .as_bytes()
    );
    // Streamed chunks carry theirs.
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .json(
            &json!({"model": "smol", "messages": [{"role": "user", "content": "Name a fruit."}],
               "logprobs": true, "max_tokens": 8, "temperature": 0, "stream": true}),
        )
        .send()
        .unwrap();
    let text = resp.text().unwrap();
    let mut streamed = Vec::new();
    for event in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if event == "[DONE]" {
            continue;
        }
        let c: Value = serde_json::from_str(event).unwrap();
        if let Some(lp) = c["choices"][0]["logprobs"]["content"].as_array() {
            streamed.extend(lp.iter().cloned());
        }
    }
    assert_eq!(streamed.len(), content.len(), "{text}");
    // Without logprobs the field is null.
    let (_, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}),
    );
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");

    // Legacy completions: parallel lists and character offsets.
    let (status, v) = s.post(
        "/v1/completions",
        json!({"model": "smol", "prompt": "The sky is", "logprobs": 2, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.concat(), v["choices"][0]["text"].as_str().unwrap());
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), tokens.len());
    let tops = lp["top_logprobs"].as_array().unwrap();
    assert_eq!(tops.len(), tokens.len());
    assert!(tops.iter().all(|t| {
        let m = t.as_object().unwrap();
        !m.is_empty() && m.len() <= 2
    }));
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    let mut at = 0;
    for (t, o) in tokens.iter().zip(&offsets) {
        assert_eq!(*o, at);
        at += t.chars().count() as u64;
    }
}
