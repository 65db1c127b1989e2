//! Token biases (`logit_bias`, OpenAI's field, also on the native routes): a bias of -100 bans
//! a token and +100 forces it, with greedy sampling and with a temperature, on every route;
//! bad ids and values are refused by name.

use crate::common;

use common::*;
use serde_json::{json, Value};

const PROMPT: &str = "The capital of France is";

/// A native greedy answer of `n` tokens: its text and its token ids (the tail of `context`).
fn answer(s: &TestServer, n: u64, extra: Value) -> (String, Vec<i64>) {
    let mut body = json!({"model": "smol", "prompt": PROMPT, "stream": false,
                          "options": {"temperature": 0, "num_predict": n}});
    for (k, v) in extra.as_object().unwrap() {
        if k == "options" {
            for (o, ov) in v.as_object().unwrap() {
                body["options"][o] = ov.clone();
            }
        } else {
            body[k] = v.clone();
        }
    }
    let (status, v) = s.post("/api/generate", body);
    assert_eq!(status, 200, "{v}");
    let context: Vec<i64> = v["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    let eval = v["eval_count"].as_u64().unwrap() as usize;
    assert!(eval > 0 && eval <= context.len(), "{v}");
    (
        v["response"].as_str().unwrap().to_string(),
        context[context.len() - eval..].to_vec(),
    )
}

#[test]
fn biases_ban_and_force_tokens_on_every_route() {
    let s = TestServer::start();
    s.create_smol();
    let (text, plain) = answer(&s, 4, json!({}));
    assert_eq!(plain.len(), 4, "{text:?}");

    // Banned: the greedy answer can no longer start with its first token, nor use it later;
    // speculation (prompt lookup) picks the same tokens under the same ban.
    let ban = json!({"logit_bias": {plain[0].to_string(): -100}});
    let (banned_text, banned) = answer(&s, 4, ban.clone());
    assert!(!banned.contains(&plain[0]), "{banned:?} {banned_text:?}");
    let mut looked_up = ban.clone();
    looked_up["options"] = json!({"prompt_lookup_num_tokens": 4});
    assert_eq!(answer(&s, 4, looked_up).1, banned);
    // A small bias is no ban: it leaves a confident choice where it was.
    let (_, nudged) = answer(&s, 4, json!({"logit_bias": {plain[0].to_string(): -0.01}}));
    assert_eq!(nudged[0], plain[0]);

    // Forced: a token the answer did not have, every time, greedy and with a temperature.
    let forced = plain[1] + 1;
    let force = json!({"logit_bias": {forced.to_string(): 100}});
    let (forced_text, tokens) = answer(&s, 3, force.clone());
    assert_eq!(tokens, vec![forced; 3], "{forced_text:?}");
    let mut hot = force.clone();
    hot["options"] = json!({"temperature": 1.5, "top_k": 0, "seed": 7});
    assert_eq!(answer(&s, 3, hot).1, vec![forced; 3]);

    // OpenAI's routes: the same biases, chat at its default temperature of 1.
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "smol", "messages": [{"role": "user", "content": PROMPT}],
               "max_tokens": 3, "seed": 1, "logit_bias": force["logit_bias"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], forced_text.as_str());
    let (status, v) = s.post(
        "/v1/completions",
        json!({"model": "smol", "prompt": "Hello", "max_tokens": 3, "temperature": 0,
               "logit_bias": force["logit_bias"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], forced_text.as_str());
    // Streamed, with log probabilities (the model's own, before the bias).
    let events = s.stream(
        "/api/chat",
        json!({"model": "smol", "messages": [{"role": "user", "content": PROMPT}],
               "logit_bias": force["logit_bias"], "logprobs": true,
               "options": {"temperature": 0, "num_predict": 3}}),
    );
    let streamed: String = events
        .iter()
        .map(|(_, e)| e["message"]["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(streamed, forced_text);
    assert!(events.last().unwrap().1["done"] == true);
}

#[test]
fn bad_biases_are_refused_by_name() {
    let s = TestServer::start();
    s.create_smol();
    let user = json!([{"role": "user", "content": "x"}]);
    for (bias, message) in [
        (
            json!({"abc": 1}),
            "logit_bias: \"abc\" is not a token id (a whole number, 0 or more)",
        ),
        (
            json!({"-3": 1}),
            "logit_bias: \"-3\" is not a token id (a whole number, 0 or more)",
        ),
        (
            json!({" 57": 1}),
            "logit_bias: \" 57\" is not a token id (a whole number, 0 or more)",
        ),
        (
            json!({"57": 1, "057": -1}),
            "logit_bias: \"057\" and \"57\" both name token 57",
        ),
        (
            json!({"99999999999999999999": 1}),
            "logit_bias: token 99999999999999999999 is out of range",
        ),
        (
            json!({"42": 101}),
            "logit_bias: the bias of token 42 must be a number from -100 to 100, got 101",
        ),
        (
            json!({"42": "ban"}),
            "logit_bias: the bias of token 42 must be a number from -100 to 100, got \"ban\"",
        ),
        (
            json!([42, -100]),
            "logit_bias: expected an object of token ids and biases, got [42,-100]",
        ),
        (
            json!({"49152": -100}),
            "logit_bias: token 49152 is out of range (the vocabulary has 49152 tokens)",
        ),
    ] {
        let (status, v) = s.post(
            "/v1/chat/completions",
            json!({"model": "smol", "messages": user, "logit_bias": bias, "max_tokens": 1}),
        );
        assert_eq!(
            (status, v["error"]["message"].as_str()),
            (400, Some(message)),
            "{bias}"
        );
        let (status, v) = s.post(
            "/api/generate",
            json!({"model": "smol", "prompt": "x", "logit_bias": bias, "stream": false}),
        );
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some(message)),
            "{bias}"
        );
    }
    // Nothing to bias is no bias.
    for bias in [json!({}), Value::Null] {
        let (status, v) = s.post(
            "/v1/completions",
            json!({"model": "smol", "prompt": "x", "logit_bias": bias, "max_tokens": 1}),
        );
        assert_eq!(status, 200, "{v}");
    }
}
