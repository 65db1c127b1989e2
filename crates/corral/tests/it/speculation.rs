//! Speculative decoding: prompt lookup (`prompt_lookup_num_tokens`) and a draft model
//! (`DRAFT` in a Modelfile). With greedy sampling the answer is token for token the one
//! without speculation; only the number of decodes changes.

use crate::common;

use common::*;
use serde_json::{json, Value};

/// An answer that copies from its prompt, so that lookup and drafts have something to find.
const PASSAGE: &str = "The quick brown fox jumps over the lazy dog. A journey of a thousand \
    miles begins with a single step. All that glitters is not gold. Where there is a will \
    there is a way. Actions speak louder than words. The early bird catches the worm.";

fn copy_prompt() -> String {
    format!("Repeat this text exactly, word for word:\n\n{PASSAGE}\n\nRepeat it again:\n\n{PASSAGE}\n\nAnd once more:\n\n")
}

/// A greedy answer: its token ids (the context after the prompt), its text and its counts.
fn answer(s: &TestServer, model: &str, options: Value) -> (Vec<i64>, String, Value) {
    let mut opts = json!({"temperature": 0, "num_predict": 64, "seed": 1});
    opts.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": model, "prompt": copy_prompt(), "stream": false, "options": opts}),
    );
    assert_eq!(status, 200, "{body}");
    let context: Vec<i64> = body["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    let n = body["eval_count"].as_u64().unwrap() as usize;
    let tokens = context[context.len().saturating_sub(n)..].to_vec();
    (tokens, body["response"].as_str().unwrap().to_string(), body)
}

/// A smaller model of the same vocabulary: the first `layers` layers of `model`.
fn truncated(s: &TestServer, model: &str, layers: u32) -> std::path::PathBuf {
    let dest = s.dir.path().join(format!("draft-{layers}-{model}"));
    let edit = gguf::Edit {
        keep_layers: Some(layers),
        ..Default::default()
    };
    gguf::rewrite(&model_file(model), &dest, &edit);
    dest
}

use common::gguf;

#[test]
fn greedy_answers_are_the_same_with_prompt_lookup_and_with_a_draft() {
    let s = TestServer::start();
    // SmolLM2 has 30 layers, Gemma 3 270M 18: drafts of a third of SmolLM2's and two thirds
    // of Gemma's (a third of Gemma writes nonsense) are often right on copied text and often
    // wrong elsewhere, so both paths (confirmed, refused) are taken.
    for (file, layers) in [(SMOL, 10), (GEMMA, 12)] {
        let name = if file == SMOL { "smol" } else { "gemma" };
        s.create(name, &format!("FROM {}\n", model_file(file).display()));
        let draft = truncated(&s, file, layers);
        let drafted = format!("{name}-drafted");
        s.create(
            &drafted,
            &format!(
                "FROM {}\nDRAFT {}\nPARAMETER draft_num_predict 3\n",
                model_file(file).display(),
                draft.display()
            ),
        );
        let (plain, text, body) = answer(&s, name, json!({}));
        assert!(body.get("draft_tokens").is_none(), "{body}");
        assert!(plain.len() > 20, "{name}: {text}");

        for k in [1, 4, 10] {
            let (tokens, t, body) = answer(&s, name, json!({"prompt_lookup_num_tokens": k}));
            assert_eq!(tokens, plain, "{name}, lookup {k}: {t:?} vs {text:?}");
            assert_eq!(t, text);
            let proposed = body["draft_tokens"].as_u64().unwrap();
            let accepted = body["draft_accepted_tokens"].as_u64().unwrap_or(0);
            assert!(proposed > 0 && accepted > 0, "{name}, lookup {k}: {body}");
            assert!(accepted <= proposed);
        }

        let (tokens, t, body) = answer(&s, &drafted, json!({}));
        assert_eq!(tokens, plain, "{name} with a draft: {t:?} vs {text:?}");
        let proposed = body["draft_tokens"].as_u64().unwrap();
        let accepted = body["draft_accepted_tokens"].as_u64().unwrap_or(0);
        assert!(proposed > 0 && accepted > 0, "{name} with a draft: {body}");
        // A request can turn the draft off.
        let (tokens, _, body) = answer(&s, &drafted, json!({"draft_num_predict": 0}));
        assert_eq!(tokens, plain);
        assert!(body.get("draft_tokens").is_none(), "{body}");

        // A stop sequence found in the middle of confirmed drafts ends the answer there.
        let words: Vec<&str> = text.split_whitespace().collect();
        let stop = words[words.len() / 2];
        let (_, cut, _) = answer(&s, name, json!({"stop": [stop]}));
        let (_, cut_fast, _) = answer(
            &s,
            name,
            json!({"stop": [stop], "prompt_lookup_num_tokens": 10}),
        );
        assert_eq!(cut_fast, cut, "{name}: stop {stop:?}");
        assert!(!cut.contains(stop) && cut.len() < text.len(), "{cut:?}");
    }
    // Several requests at once, each in its own slot, speculate side by side.
    let s = TestServer::start_with(&[("CORRAL_NUM_PARALLEL", "3")]);
    s.create_smol();
    let (plain, _, _) = answer(&s, "smol", json!({}));
    let server = &s;
    std::thread::scope(|scope| {
        let runs: Vec<_> = [1, 4, 10]
            .map(|k| {
                scope.spawn(move || answer(server, "smol", json!({"prompt_lookup_num_tokens": k})))
            })
            .into_iter()
            .collect();
        for r in runs {
            assert_eq!(r.join().unwrap().0, plain);
        }
    });
    let metrics = s.get_text("/metrics");
    assert!(
        metrics.contains(r#"corral_speculative_tokens_accepted_total{model="smol:latest"}"#),
        "{metrics}"
    );
}

#[test]
fn drafts_that_cannot_work_are_refused_at_create() {
    let s = TestServer::start();
    s.create_smol();
    let smol = model_file(SMOL);
    let gemma = model_file(GEMMA);
    // Another vocabulary.
    let out = s.try_create(
        "bad",
        &format!("FROM {}\nDRAFT {}\n", smol.display(), gemma.display()),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot draft for this model: its vocabulary (262144 tokens) is not the model's (49152 tokens)"),
        "{}",
        stderr(&out)
    );
    // The model itself, by path or by name.
    let out = s.try_create(
        "bad",
        &format!("FROM {}\nDRAFT {}\n", smol.display(), smol.display()),
    );
    assert!(
        stderr(&out).contains("the draft is the FROM model itself"),
        "{}",
        stderr(&out)
    );
    let out = s.try_create("bad", "FROM smol\nDRAFT smol\n");
    assert!(
        stderr(&out).contains("is the model itself"),
        "{}",
        stderr(&out)
    );
    // A file that is not there, a model that is not there.
    let out = s.try_create("bad", "FROM smol\nDRAFT ./nowhere.gguf\n");
    assert!(
        stderr(&out).contains("DRAFT ./nowhere.gguf: no such file"),
        "{}",
        stderr(&out)
    );
    let out = s.try_create("bad", "FROM smol\nDRAFT missing-model\n");
    assert!(stderr(&out).contains("missing-model"), "{}", stderr(&out));
    let (status, body) = s.post(
        "/api/create",
        json!({"model": "bad", "from": "smol", "draft": "gemma-nowhere"}),
    );
    assert_eq!(status, 404, "{body}");
    assert!(s.get("/api/tags")["models"].as_array().unwrap().len() == 1);

    // A draft by model name is the other model's weights; show prints it; a model made from
    // one with a draft keeps it.
    let draft = s.dir.path().join("draft.gguf");
    gguf::rewrite(
        &smol,
        &draft,
        &gguf::Edit {
            keep_layers: Some(8),
            ..Default::default()
        },
    );
    s.create("small", &format!("FROM {}\n", draft.display()));
    s.create("drafted", "FROM smol\nDRAFT small\n");
    s.create("child", "FROM drafted\nPARAMETER temperature 0\n");
    for m in ["drafted", "child"] {
        let (_, show) = s.post("/api/show", json!({"model": m}));
        let mf = show["modelfile"].as_str().unwrap();
        assert!(mf.contains("\nDRAFT /"), "{mf}");
    }
    // Bad values of the options are refused with their limits.
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "options": {"prompt_lookup_num_tokens": 99}}),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("option \"prompt_lookup_num_tokens\" must be >= 0 and <= 32, got 99"),
        "{body}"
    );
}
