//! `create` from a Gemma 3 folder: `Gemma3ForCausalLM` weights and a SentencePiece
//! `tokenizer.model`, as google/gemma-3-270m is laid out, less its `tokenizer.json` (built
//! from the tokenizer.model, and not read when that is there). The folder
//! is Gemma 3 270M's own tensors (`tests/clients/hf_model.py`: its tokenizer.model written with
//! the `sentencepiece` package's own message class and checked by loading it there, its norms
//! stored as Gemma stores them, offsets from 1), so the converted model must be the F16 GGUF
//! made from the same weights: the same answers with the same probabilities.

use crate::common;
use crate::import::{show, unfinished, unreferenced_blobs, upload, upload_folder};

use std::path::Path;

use common::*;
use safetensors::tensor::TensorView;
use serde_json::{json, Value};

/// A greedy continuation of `prompt` (no template) with the log probabilities of its tokens.
fn continuation(s: &TestServer, model: &str, prompt: &str) -> Value {
    let (code, v) = s.post(
        "/api/generate",
        json!({"model": model, "prompt": prompt, "raw": true, "stream": false,
               "logprobs": true, "top_logprobs": 3,
               "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(code, 200, "{v}");
    v
}

/// The prompt's tokens: those evaluated and those a slot's cache held.
fn prompt_tokens(v: &Value) -> u64 {
    v["prompt_eval_count"].as_u64().unwrap()
}

fn same_answer(a: &Value, b: &Value) {
    assert_eq!(a["response"], b["response"], "{a}\n{b}");
    assert_eq!(prompt_tokens(a), prompt_tokens(b), "{a}\n{b}");
    let (la, lb) = (
        a["logprobs"].as_array().unwrap(),
        b["logprobs"].as_array().unwrap(),
    );
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(lb) {
        assert_eq!(x["top_logprobs"].as_array().unwrap().len(), 3, "{x}");
        for (p, q) in x["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(y["top_logprobs"].as_array().unwrap())
        {
            assert_eq!(p["token"], q["token"], "{x}\n{y}");
        }
        let d = x["logprob"].as_f64().unwrap() - y["logprob"].as_f64().unwrap();
        assert!(d.abs() < 1e-4, "{x}\n{y}");
    }
}

#[test]
fn a_gemma_folder_with_a_sentencepiece_vocabulary_answers_as_its_gguf_does() {
    let s = TestServer::start();
    let hf = gemma_hf();
    assert!(hf.join("tokenizer.model").is_file() && !hf.join("tokenizer.json").exists());
    s.create("gemma-f16", &format!("FROM {}\n", gemma_f16().display()));

    // The CLI: FROM the folder.
    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", hf.display())).unwrap();
    let out = s.corral(&["create", "gemma-hf", "-f", mf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let show = |name: &str| show(&s, name);
    let (hf_show, f16_show) = (show("gemma-hf"), show("gemma-f16"));
    assert_eq!(hf_show["details"], f16_show["details"], "{hf_show}");
    assert_eq!(hf_show["details"]["family"], "gemma3");
    for key in [
        "general.parameter_count",
        "gemma3.attention.sliding_window",
        "gemma3.attention.key_length",
        "gemma3.attention.head_count_kv",
        "gemma3.rope.freq_base",
        "tokenizer.ggml.model",
        "tokenizer.ggml.add_space_prefix",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
    ] {
        assert_eq!(
            hf_show["model_info"][key], f16_show["model_info"][key],
            "{key}: {hf_show}"
        );
        assert!(!hf_show["model_info"][key].is_null(), "{key}: {hf_show}");
    }
    // The chat template of tokenizer_config.json (the GGUF has none).
    let template = hf_show["template"].as_str().unwrap();
    assert!(template.contains("<start_of_turn>"), "{template}");

    // The same tensors and vocabulary: the same continuations, token for token, with the
    // same probabilities. The texts split into pieces merged by score, byte pieces, and the
    // user-defined pieces of runs of spaces and newlines (whose `▁` became spaces).
    for prompt in [
        "The capital of France is",
        "def add(a, b):\n\n    return a + b\n\n\n# Käse, crème brûlée, 東京 🦀\n",
    ] {
        let (a, b) = (
            continuation(&s, "gemma-hf", prompt),
            continuation(&s, "gemma-f16", prompt),
        );
        same_answer(&a, &b);
        assert_eq!(a["done"], true, "{a}");
    }

    // A chat through Gemma's own template: the turn the template renders, continued as the
    // GGUF continues the same text (this Gemma is the pretrained model, not the instruction
    // tuned one, so what it says to a question is no test of the template).
    let (code, chat) = s.post(
        "/api/chat",
        json!({"model": "gemma-hf", "stream": false,
               "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(code, 200, "{chat}");
    let turn = "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n\
                <start_of_turn>model\n";
    let raw = continuation(&s, "gemma-f16", turn);
    assert_eq!(chat["message"]["content"], raw["response"], "{chat}\n{raw}");
    assert_eq!(prompt_tokens(&chat), prompt_tokens(&raw), "{chat}\n{raw}");
    assert_eq!(chat["eval_count"], 12, "{chat}");

    // Gemma 3 4B and larger are vision-language checkpoints: the text model's tensors under
    // `language_model.`, its settings in `text_config` (leaving out what Transformers
    // defaults), a vision tower beside them. The text model converts to the same model.
    let vl = s.dir.path().join("gemma-vl");
    write_vision_language(&hf, &vl);
    std::fs::write(&mf, format!("FROM {}\n", vl.display())).unwrap();
    let out = s.corral(&["create", "gemma-vl", "-f", mf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let prompt = "The capital of France is";
    same_answer(
        &continuation(&s, "gemma-vl", prompt),
        &continuation(&s, "gemma-f16", prompt),
    );
}

/// `hf` as Gemma 3's vision-language checkpoints are laid out (`Gemma3ForConditionalGeneration`,
/// Transformers 4.50's names), with a token vision tower and projector, in `dir`.
fn write_vision_language(hf: &Path, dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    for f in [
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::os::unix::fs::symlink(hf.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = weights
        .tensors()
        .into_iter()
        .map(|(name, view)| (format!("language_model.{name}"), view))
        .collect();
    let zeros = vec![0u8; 1152 * 4];
    for name in [
        "vision_tower.vision_model.post_layernorm.weight",
        "multi_modal_projector.mm_soft_emb_norm.weight",
    ] {
        let view = TensorView::new(safetensors::Dtype::F32, vec![1152], &zeros).unwrap();
        views.push((name.to_string(), view));
    }
    let meta = Some([("format".to_string(), "pt".to_string())].into());
    safetensors::serialize_to_file(views, meta, &dir.join("model.safetensors")).unwrap();

    let mut text: Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    let text_config = text.as_object_mut().unwrap();
    // What Transformers' Gemma3TextConfig defaults to, as the 4B model's config leaves out.
    for key in [
        "architectures",
        "head_dim",
        "query_pre_attn_scalar",
        "rms_norm_eps",
        "rope_local_base_freq",
        "rope_theta",
    ] {
        text_config.remove(key);
    }
    let config = json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
        "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
        "text_config": text,
        "vision_config": {"hidden_size": 1152, "image_size": 896, "model_type": "siglip_vision_model",
                          "num_hidden_layers": 27, "patch_size": 14},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn a_gemma_folder_llama_cpp_would_run_differently_is_refused() {
    let s = TestServer::start();
    let hf = gemma_hf();
    let files = upload_folder(&s, &hf);
    let config: Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    let uploaded = std::cell::RefCell::new(files.values().cloned().collect::<Vec<_>>());
    let with = |name: &str, bytes: Vec<u8>| -> Value {
        let mut f = files.clone();
        let digest = upload(&s, &bytes);
        uploaded.borrow_mut().push(json!(digest));
        f.insert(name.to_string(), json!(digest));
        Value::Object(f)
    };
    let edited = |key: &str, value: Value| {
        let mut c = config.clone();
        c[key] = value;
        with("config.json", serde_json::to_vec(&c).unwrap())
    };
    let layers = config["layer_types"].as_array().unwrap().len();

    // Refused before anything runs: settings llama.cpp's gemma3 would compute differently.
    let refused = [
        (
            edited("query_pre_attn_scalar", json!(100)),
            "query_pre_attn_scalar 100 is not 256",
        ),
        (
            edited("layer_types", json!(vec!["sliding_attention"; layers])),
            "layer_types is not a sliding window on all but every 6th of its 18 layers",
        ),
        (
            edited("hidden_activation", json!("silu")),
            "hidden_activation \"silu\" is not gelu_pytorch_tanh",
        ),
        (
            edited("use_bidirectional_attention", json!(true)),
            "use_bidirectional_attention is set",
        ),
    ];
    for (files, message) in refused {
        let (code, v) = s.post("/api/create", json!({"model": "bad", "files": files}));
        assert_eq!(code, 400, "{message}: {v}");
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(message), "{message}: {err}");
    }

    // Refused by the converter: a tokenizer.model that is not SentencePiece's, and one of
    // another kind (its trainer spec says Unigram: field 2, model_type 1).
    let mut unigram = std::fs::read(hf.join("tokenizer.model")).unwrap();
    unigram.extend([0x12, 0x02, 0x18, 0x01]);
    for (bytes, message) in [
        (
            b"{\"model\": \"tiktoken\"}".to_vec(),
            "tokenizer.model: not a SentencePiece model",
        ),
        (unigram, "tokenizer.model: a Unigram SentencePiece model"),
    ] {
        let lines = s.stream(
            "/api/create",
            json!({"model": "bad", "files": with("tokenizer.model", bytes)}),
        );
        let last = &lines.last().unwrap().1;
        let err = last["error"].as_str().unwrap_or_default();
        assert!(err.contains(message), "{message}: {lines:?}");
    }
    // Nothing was made: no model, no converted blob, no temp file.
    let tags = s.get("/api/tags");
    assert_eq!(tags["models"].as_array().unwrap().len(), 0, "{tags}");
    assert!(unfinished(&s).is_empty(), "{:?}", unfinished(&s));
    let uploaded = uploaded.into_inner();
    let made: Vec<String> = unreferenced_blobs(&s)
        .into_iter()
        .filter(|d| !uploaded.contains(&json!(d)))
        .collect();
    assert!(made.is_empty(), "blobs no upload made: {made:?}");
}

#[test]
fn a_peft_lora_folder_for_gemma_becomes_the_adapter_its_gguf_is() {
    let s = TestServer::start();
    s.create("gemma", &format!("FROM {}\n", model_file(GEMMA).display()));
    let (gguf, peft) = (s.dir.path().join("lora.gguf"), s.dir.path().join("peft"));
    write_lora(&gguf, &GEMMA_LORA, 8);
    write_peft(&peft, &GEMMA_LORA, 8);
    s.create(
        "gemma-lora",
        &format!("FROM gemma\nADAPTER {}\n", gguf.display()),
    );
    s.create(
        "gemma-peft",
        &format!("FROM gemma\nADAPTER {}\n", peft.display()),
    );

    // The same update of every query projection (Gemma's rope is NeoX's: B's rows are not
    // permuted): the GGUF adapter's continuation, not the plain model's.
    let prompt = "The capital of France is";
    let (a, b, plain) = (
        continuation(&s, "gemma-peft", prompt),
        continuation(&s, "gemma-lora", prompt),
        continuation(&s, "gemma", prompt),
    );
    same_answer(&a, &b);
    assert_ne!(a["response"], plain["response"], "{a}\n{plain}");

    // The same adapter trained on a vision-language Gemma (4B and larger): the text layers
    // under `language_model`, and a LoRA of the vision tower, which is left out.
    let vl = s.dir.path().join("peft-vl");
    std::fs::create_dir(&vl).unwrap();
    std::fs::copy(
        peft.join("adapter_config.json"),
        vl.join("adapter_config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(peft.join("adapter_model.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = weights
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let text = name.replacen("base_model.model.", "base_model.model.language_model.", 1);
            (text, view)
        })
        .collect();
    let zeros = vec![0u8; 8 * 1152 * 4];
    for ab in ["A", "B"] {
        let name = format!(
            "base_model.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.lora_{ab}.weight"
        );
        let shape = if ab == "A" {
            vec![8, 1152]
        } else {
            vec![1152, 8]
        };
        let view = TensorView::new(safetensors::Dtype::F32, shape, &zeros).unwrap();
        views.push((name, view));
    }
    let meta = Some([("format".to_string(), "pt".to_string())].into());
    safetensors::serialize_to_file(views, meta, &vl.join("adapter_model.safetensors")).unwrap();
    s.create(
        "gemma-peft-vl",
        &format!("FROM gemma\nADAPTER {}\n", vl.display()),
    );
    same_answer(&continuation(&s, "gemma-peft-vl", prompt), &b);
}

#[test]
fn a_tokenizer_model_is_read_first_and_passed_over_when_it_is_not_sentencepiece() {
    let s = TestServer::start();
    let mf = s.dir.path().join("Modelfile");
    let tokenizer_model = |name: &str| show(&s, name)["model_info"]["tokenizer.ggml.model"].clone();
    // A folder's files, linked, with one more written beside them.
    let variant = |name: &str, from: &Path, extra: (&str, &str)| {
        let dir = s.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
        std::fs::write(dir.join(extra.0), extra.1).unwrap();
        std::fs::write(&mf, format!("FROM {}\n", dir.display())).unwrap();
        let out = s.corral(&["create", name, "-f", mf.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    };

    // Gemma's real folder also has a tokenizer.json, a BPE with byte fallback built from the
    // tokenizer.model (which the BPE reader alone would refuse): the tokenizer.model is read.
    let bpe = r#"{"model": {"type": "BPE", "byte_fallback": true, "vocab": {}, "merges": []}}"#;
    variant("gemma-both", &gemma_hf(), ("tokenizer.json", bpe));
    assert_eq!(tokenizer_model("gemma-both"), "llama");

    // A tokenizer.model that is not SentencePiece's (Llama 3's is tiktoken's text) beside a
    // tokenizer.json: the tokenizer.json is read, as llama.cpp's converter falls back to it.
    let tiktoken = "IQ== 0\nIg== 1\nIw== 2\n";
    variant("smol-tiktoken", &smol_hf(), ("tokenizer.model", tiktoken));
    assert_eq!(tokenizer_model("smol-tiktoken"), "gpt2");
    let (code, v) = s.post(
        "/api/generate",
        json!({"model": "smol-tiktoken", "prompt": "The capital of France is", "raw": true,
               "stream": false, "options": {"temperature": 0, "num_predict": 4}}),
    );
    assert_eq!((code, &v["done"]), (200, &json!(true)), "{v}");
}
