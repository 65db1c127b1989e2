//! Fill-in-the-middle: `suffix` on `/api/generate` through a template that uses `.Suffix`,
//! through a GGUF's FIM tokens, and refused for a model with neither.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// A copy of a GGUF with `tokenizer.ggml.fim_{pre,suf,mid}_token_id` added to its metadata
/// (the tensor data is copied as it is, re-aligned after the longer header).
fn with_fim_tokens(src: &Path, dest: &Path, ids: [u32; 3]) {
    let b = std::fs::read(src).unwrap();
    fn u32_at(b: &[u8], pos: &mut usize) -> u32 {
        *pos += 4;
        u32::from_le_bytes(b[*pos - 4..*pos].try_into().unwrap())
    }
    fn u64_at(b: &[u8], pos: &mut usize) -> u64 {
        *pos += 8;
        u64::from_le_bytes(b[*pos - 8..*pos].try_into().unwrap())
    }
    fn skip(b: &[u8], pos: &mut usize, t: u32) {
        match t {
            0 | 1 | 7 => *pos += 1,
            2 | 3 => *pos += 2,
            4..=6 => *pos += 4,
            10..=12 => *pos += 8,
            8 => {
                let n = u64_at(b, pos) as usize;
                *pos += n;
            }
            9 => {
                let item = u32_at(b, pos);
                for _ in 0..u64_at(b, pos) {
                    skip(b, pos, item);
                }
            }
            other => panic!("GGUF type {other}"),
        }
    }
    let mut pos = 4usize;
    assert_eq!(&b[..4], b"GGUF");
    let version = u32_at(&b, &mut pos);
    let n_tensors = u64_at(&b, &mut pos);
    let n_kv = u64_at(&b, &mut pos);
    let kv_start = pos;
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let len = u64_at(&b, &mut pos) as usize;
        let key = String::from_utf8(b[pos..pos + len].to_vec()).unwrap();
        pos += len;
        let t = u32_at(&b, &mut pos);
        if key == "general.alignment" {
            alignment = u32_at(&b, &mut pos.clone()) as u64;
        }
        skip(&b, &mut pos, t);
    }
    let kv_end = pos;
    for _ in 0..n_tensors {
        let len = u64_at(&b, &mut pos) as usize;
        pos += len;
        let dims = u32_at(&b, &mut pos) as usize;
        pos += 8 * dims + 4 + 8;
    }
    let infos_end = pos;
    let data_start = (infos_end as u64).div_ceil(alignment) as usize * alignment as usize;

    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&n_tensors.to_le_bytes());
    out.extend_from_slice(&(n_kv + 3).to_le_bytes());
    out.extend_from_slice(&b[kv_start..kv_end]);
    for (name, id) in ["pre", "suf", "mid"].iter().zip(ids) {
        let key = format!("tokenizer.ggml.fim_{name}_token_id");
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(&b[kv_end..infos_end]);
    while !(out.len() as u64).is_multiple_of(alignment) {
        out.push(0);
    }
    out.extend_from_slice(&b[data_start..]);
    std::fs::write(dest, out).unwrap();
}

fn capabilities(s: &TestServer, model: &str) -> Vec<String> {
    let (status, show) = s.post("/api/show", json!({"model": model}));
    assert_eq!(status, 200, "{show}");
    serde_json::from_value(show["capabilities"].clone()).unwrap()
}

/// The prompt's tokens of a non-streamed generate (its `context` without the answer).
fn prompt_tokens(answer: &Value) -> Vec<i64> {
    let n = answer["prompt_eval_count"].as_u64().unwrap()
        + answer["prompt_cached_count"].as_u64().unwrap_or(0);
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
