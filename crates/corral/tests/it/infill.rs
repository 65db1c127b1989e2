//! Fill-in-the-middle: `suffix` on `/api/generate` through a template that uses `.Suffix`,
//! through a GGUF's FIM tokens, and refused for a model with neither.

use crate::common;

use std::path::Path;

use common::gguf;
use common::*;
use serde_json::{json, Value};

/// A copy of a GGUF with `tokenizer.ggml.fim_{pre,suf,mid}_token_id` added to its metadata.
fn with_fim_tokens(src: &Path, dest: &Path, ids: [u32; 3]) {
    let keys = [
        ("tokenizer.ggml.fim_pre_token_id", ids[0]),
        ("tokenizer.ggml.fim_suf_token_id", ids[1]),
        ("tokenizer.ggml.fim_mid_token_id", ids[2]),
    ];
    let edit = gguf::Edit {
        add_u32: &keys,
        ..Default::default()
    };
    gguf::rewrite(src, dest, &edit);
}

fn capabilities(s: &TestServer, model: &str) -> Vec<String> {
    let (status, show) = s.post("/api/show", json!({"model": model}));
    assert_eq!(status, 200, "{show}");
    serde_json::from_value(show["capabilities"].clone()).unwrap()
}

/// The prompt's tokens of a non-streamed generate (its `context` without the answer).
fn prompt_tokens(answer: &Value) -> Vec<i64> {
    let n = answer["prompt_eval_count"].as_u64().unwrap();
    let context: Vec<i64> = serde_json::from_value(answer["context"].clone()).unwrap();
    context[..n as usize].to_vec()
}

#[test]
fn suffix_fills_in_the_middle_by_template_or_fim_tokens() {
    let s = TestServer::start();
    s.create_smol();
    // SmolLM2 has no FIM tokens and its template no `.Suffix`.
    assert!(!capabilities(&s, "smol").contains(&"insert".to_string()));
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "def add(a, b):\n", "suffix": "\n    return c"}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "smol:latest does not support insert");

    // A template with `.Suffix`: the prompt is the template rendered with both parts.
    s.create(
        "smol-fim",
        &format!(
            "FROM {}\nTEMPLATE \"\"\"<PRE> {{{{ .Prompt }}}} <SUF>{{{{ .Suffix }}}} <MID>\"\"\"\n",
            model_file(SMOL).display()
        ),
    );
    assert!(capabilities(&s, "smol-fim").contains(&"insert".to_string()));
    let (prefix, suffix) = ("def add(a, b):\n    c = ", "\n    return c\n");
    let greedy = json!({"temperature": 0, "num_predict": 8});
    let (status, filled) = s.post(
        "/api/generate",
        json!({"model": "smol-fim", "prompt": prefix, "suffix": suffix, "stream": false, "options": greedy}),
    );
    assert_eq!(status, 200, "{filled}");
    // The same text as a plain prompt through `{{ .Prompt }}`.
    s.create(
        "smol-plain",
        &format!(
            "FROM {}\nTEMPLATE \"{{{{ .Prompt }}}}\"\n",
            model_file(SMOL).display()
        ),
    );
    let (_, plain) = s.post(
        "/api/generate",
        json!({"model": "smol-plain", "prompt": format!("<PRE> {prefix} <SUF>{suffix} <MID>"),
               "stream": false, "options": {"num_predict": 1}}),
    );
    assert_eq!(prompt_tokens(&filled), prompt_tokens(&plain));
    // A suffix far longer than the context: the template's prompt is cut part by part, as
    // with FIM tokens, so the prefix, the `<SUF>` marker and the suffix's start (the text
    // nearest the middle) stay, and the suffix's end goes.
    let line = "    x = x + 1\n";
    let (status, cut) = s.post(
        "/api/generate",
        json!({"model": "smol-fim", "prompt": prefix, "suffix": line.repeat(3000), "stream": false,
               "options": {"num_predict": 4, "num_ctx": 1024}}),
    );
    assert_eq!(status, 200, "{cut}");
    let t = prompt_tokens(&cut);
    assert!(t.len() <= 1024 - 4, "{}", t.len());
    assert!(
        cut["prompt_truncated_tokens"].as_u64().unwrap() > 1000,
        "{cut}"
    );
    let plain_tokens = |text: String| {
        let (_, v) = s.post(
            "/api/generate",
            json!({"model": "smol-plain", "prompt": text, "stream": false, "options": {"num_predict": 1}}),
        );
        prompt_tokens(&v)
    };
    let head = plain_tokens(format!("<PRE> {prefix} <SUF>{}", line.repeat(3)));
    assert!(t.starts_with(&head[..head.len() - 1]), "{t:?} vs {head:?}");
    let mid = plain_tokens("<MID>".to_string());
    assert!(t.ends_with(&mid[1..]), "{t:?} vs {mid:?}");
    // raw mode and a suffix do not mix.
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol-fim", "prompt": prefix, "suffix": suffix, "raw": true}),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"], "raw mode does not support suffix");

    // A GGUF that names FIM tokens: the prompt is built from them, prefix first.
    let gguf = s.dir.path().join("smol-fim-tokens.gguf");
    let ids = [3u32, 5, 6];
    with_fim_tokens(&model_file(SMOL), &gguf, ids);
    s.create("smol-tokens", &format!("FROM {}\n", gguf.display()));
    assert!(capabilities(&s, "smol-tokens").contains(&"insert".to_string()));
    let (status, filled) = s.post(
        "/api/generate",
        json!({"model": "smol-tokens", "prompt": prefix, "suffix": suffix, "stream": false, "options": greedy}),
    );
    assert_eq!(status, 200, "{filled}");
    // `_debug_render_only` shows that prompt: the FIM tokens written out around the parts.
    let (status, shown) = s.post(
        "/api/generate",
        json!({"model": "smol-tokens", "prompt": prefix, "suffix": suffix, "_debug_render_only": true}),
    );
    assert_eq!(status, 200, "{shown}");
    let text = shown["_debug_info"]["rendered_template"].as_str().unwrap();
    assert!(
        text.contains(prefix) && text.contains(suffix) && text.len() > prefix.len() + suffix.len(),
        "{text:?}"
    );
    let tokens = prompt_tokens(&filled);
    let at = |id: u32| tokens.iter().position(|&t| t == id as i64).unwrap();
    let (pre, suf, mid) = (at(ids[0]), at(ids[1]), at(ids[2]));
    assert!(pre < suf && suf < mid, "{tokens:?}");
    assert_eq!(
        mid,
        tokens.len() - 1,
        "the middle token ends the prompt: {tokens:?}"
    );
    assert!(pre <= 1, "only a BOS may come first: {tokens:?}");
    // A suffix far longer than the context is cut at its end, never across the markers: the
    // prompt still has all three, the middle last, and says how much was dropped.
    let long_suffix = "    x = x + 1\n".repeat(3000);
    let (status, cut) = s.post(
        "/api/generate",
        json!({"model": "smol-tokens", "prompt": prefix, "suffix": long_suffix, "stream": false,
               "options": {"num_predict": 4, "num_ctx": 1024}}),
    );
    assert_eq!(status, 200, "{cut}");
    let t = prompt_tokens(&cut);
    assert!(t.len() <= 1024, "{}", t.len());
    let at = |id: u32| t.iter().position(|&x| x == id as i64).unwrap();
    assert!(
        at(ids[0]) < at(ids[1]) && at(ids[2]) == t.len() - 1,
        "{t:?}"
    );
    assert!(
        cut["prompt_truncated_tokens"].as_u64().unwrap() > 1000,
        "{cut}"
    );
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol-tokens", "prompt": prefix, "suffix": "    x = x + 1\n".repeat(400),
               "truncate": false, "stream": false, "options": {"num_ctx": 1024}}),
    );
    assert_eq!(status, 400, "{body}");
    // The parts between are the prefix's and the suffix's own tokens.
    let (_, plain_prefix) = s.post(
        "/api/generate",
        json!({"model": "smol-plain", "prompt": prefix, "stream": false, "options": {"num_predict": 1}}),
    );
    let prefix_tokens = prompt_tokens(&plain_prefix);
    assert!(
        prefix_tokens.ends_with(&tokens[pre + 1..suf]),
        "{prefix_tokens:?} vs {tokens:?}"
    );
}
