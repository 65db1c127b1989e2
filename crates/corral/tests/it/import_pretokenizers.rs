//! Each byte-level pre-tokenizer Corral maps onto one of llama.cpp's by name (Llama 3's, Qwen
//! 2's, Tekken's, GPT-4o's) splits text as Hugging Face's own `tokenizers` library does with
//! the same `tokenizer.json`. No model with these vocabularies can be fetched here, so each is
//! SmolLM2's vocabulary and merges under that pre-tokenizer: a real model llama.cpp runs, and
//! a tokenizer `tokenizers` loads (`tests/clients/hf_tokens.py` gives its ids).

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

/// Texts whose splits differ between the patterns: contractions in any case, digits in runs,
/// case changes inside words, runs of spaces and newlines, letters with marks, CJK, emoji.
const TEXTS: &[&str] = &[
    "I'm sure it's 12345 items; they've said DON'T, we'LL see",
    "CamelCaseWords and HTTPServer, iPhone 15 Pro Max",
    "  indented\n\n\tcode(x) // comment\r\n    return 1000000.5;",
    "Käse, crème brûlée, naïve façade: 東京タワー 🦀🦀 ok",
    "path/to/file.rs\n\n\n/// doc\nA.B.C 3.14159 -42",
];

fn hf_ids(tokenizer: &std::path::Path) -> Vec<Vec<i64>> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/hf_tokens.py"
    );
    let mut child = Command::new(client_python())
        .arg(script)
        .arg(tokenizer)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let texts = serde_json::to_vec(TEXTS).unwrap();
    child.stdin.take().unwrap().write_all(&texts).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// SmolLM2's vocabulary has single digits only and no word with a contraction, so the
/// patterns that group digits in threes (Llama 3's, GPT-4o's) and keep a contraction with its
/// word (GPT-4o's) would split the test texts as the others do. Four of its last tokens are
/// renamed `12`, `123`, `45` and ` it's`, with merges that make them put first, so that a
/// pattern that splits differently gives different ids; merges that made or used the old
/// four are dropped (the `tokenizers` library refuses a merge whose parts are not tokens).
fn teach_groupings(tokenizer: &mut Value) {
    let vocab = tokenizer["model"]["vocab"].as_object_mut().unwrap();
    let last = vocab.len() as u64;
    let new = ["12", "123", "45", "\u{120}it's"];
    let mut gone = Vec::new();
    for (i, text) in new.iter().enumerate() {
        let id = last - 1 - i as u64;
        let old = vocab
            .iter()
            .find(|(_, v)| v.as_u64() == Some(id))
            .map(|(k, _)| k.clone())
            .unwrap();
        vocab.remove(&old);
        vocab.insert(text.to_string(), json!(id));
        gone.push(old);
    }
    let merges = tokenizer["model"]["merges"].as_array_mut().unwrap();
    merges.retain(|m| {
        let m = m.as_str().unwrap();
        let (a, b) = m.split_once(' ').unwrap();
        !gone
            .iter()
            .any(|g| g == a || g == b || *g == format!("{a}{b}"))
    });
    for (i, m) in ["1 2", "12 3", "4 5", "\u{120}it 's"].iter().enumerate() {
        merges.insert(i, json!(m));
    }
}

#[test]
fn each_mapped_pre_tokenizer_splits_text_as_hugging_faces_tokenizers_does() {
    let s = TestServer::start();
    let hf = smol_hf();
    let mut tokenizer: Value =
        serde_json::from_slice(&std::fs::read(hf.join("tokenizer.json")).unwrap()).unwrap();
    teach_groupings(&mut tokenizer);
    for (name, pattern) in corral_convert::SPLIT_PRE_TOKENIZERS {
        let mut t = tokenizer.clone();
        t["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
             "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": false}]});
        // llama.cpp takes a word that is a token whole for these two, as their tokenizers
        // say (`ignore_merges`).
        t["model"]["ignore_merges"] = json!(matches!(*name, "llama-bpe" | "tekken"));
        let dir = s.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(&hf).unwrap().flatten() {
            if e.file_name() != "tokenizer.json" {
                std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
        std::fs::write(dir.join("tokenizer.json"), t.to_string()).unwrap();
        // The prompt alone as the template: the context an answer gives back is its ids.
        let template = "TEMPLATE {{ .Prompt }}";
        s.create(name, &format!("FROM {}\n{template}\n", dir.display()));
        let (code, show) = s.post("/api/show", json!({"model": name}));
        assert_eq!(code, 200, "{show}");
        assert_eq!(show["model_info"]["tokenizer.ggml.pre"], *name, "{show}");

        // The prompt's ids, as the answer's context gives them back (Ollama's `context`, which
        // a raw request does not get), then the one token answered.
        for (text, ids) in TEXTS.iter().zip(hf_ids(&dir.join("tokenizer.json"))) {
            let (code, v) = s.post(
                "/api/generate",
                json!({"model": name, "prompt": text, "stream": false,
                       "options": {"temperature": 0, "num_predict": 1}}),
            );
            assert_eq!(code, 200, "{v}");
            let context: Vec<i64> = serde_json::from_value(v["context"].clone()).unwrap();
            assert_eq!(context.len(), ids.len() + 1, "{name}: {text:?}\n{v}");
            assert_eq!(context[..ids.len()], ids[..], "{name}: {text:?}");
        }
    }
}
