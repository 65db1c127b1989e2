//! `create` from a Hugging Face folder (Ollama's `FROM /path/to/safetensors/folder`): the
//! folder's weights, config and tokenizer converted into a GGUF model by a runner child. The
//! folder is SmolLM2 in Hugging Face's layout (`tests/clients/hf_model.py`, checked there with
//! Hugging Face's `tokenizers`), holding the very tensors of the F16 GGUF model, so the
//! converted model must answer exactly as that one does.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Map, Value};

/// Upload `bytes` as a blob unless the server has it (as the CLI does); returns its digest.
pub fn upload(s: &TestServer, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let url = s.url(&format!("/api/blobs/{digest}"));
    if s.http.head(&url).send().unwrap().status().is_success() {
        return digest;
    }
    let resp = s.http.post(url).body(bytes.to_vec()).send().unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    digest
}

/// Every file of `dir`, uploaded, as `/api/create`'s `files`.
pub fn upload_folder(s: &TestServer, dir: &Path) -> Map<String, Value> {
    let mut files = Map::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        files.insert(name, json!(upload(s, &std::fs::read(e.path()).unwrap())));
    }
    files
}

/// A greedy answer with the log probabilities of its tokens and their five rivals.
fn answer(s: &TestServer, model: &str) -> Value {
    let (code, v) = s.post(
        "/api/chat",
        json!({"model": model, "stream": false, "logprobs": true, "top_logprobs": 5,
               "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "options": {"temperature": 0, "num_predict": 24}}),
    );
    assert_eq!(code, 200, "{v}");
    v
}

/// `/api/show` of a model that exists.
pub fn show(s: &TestServer, name: &str) -> Value {
    let (code, v) = s.post("/api/show", json!({"model": name}));
    assert_eq!(code, 200, "{v}");
    v
}

/// Converter children of this server (its runners started with `--convert`).
fn converters(s: &TestServer) -> Vec<u32> {
    s.runner_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--convert"))
        })
        .collect()
}

/// Blobs in the store that no manifest names.
pub fn unreferenced_blobs(s: &TestServer) -> Vec<String> {
    let files = s.store_files();
    let mut named = Vec::new();
    for f in files.iter().filter(|f| f.contains("/manifests/")) {
        let m: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        named.push(m["config"]["digest"].as_str().unwrap().to_string());
        for l in m["layers"].as_array().unwrap() {
            named.push(l["digest"].as_str().unwrap().to_string());
        }
    }
    files
        .iter()
        .filter_map(|f| f.rsplit_once("/blobs/sha256-"))
        .map(|(_, hex)| format!("sha256:{hex}"))
        .filter(|d| !named.contains(d))
        .collect()
}

/// Temp files of unfinished blobs in the store.
pub fn unfinished(s: &TestServer) -> Vec<String> {
    s.store_files()
        .into_iter()
        .filter(|f| f.contains("/blobs/new-"))
        .collect()
}

#[test]
fn a_hugging_face_folder_becomes_a_model_that_answers_as_its_gguf_does() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(&[("TMPDIR", tmp.path().to_str().unwrap())]);
    let hf = smol_hf();
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));

    // The CLI: FROM the folder.
    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", hf.display())).unwrap();
    let out = s.corral(&["create", "smol-hf", "-f", mf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("converting model") && err.contains("success"),
        "{err}"
    );

    // Described as the GGUF model is: the same architecture, size, type and chat template.
    let show = |name: &str| show(&s, name);
    let (hf_show, f16_show) = (show("smol-hf"), show("smol-f16"));
    assert_eq!(hf_show["details"], f16_show["details"], "{hf_show}");
    assert_eq!(hf_show["details"]["quantization_level"], "F16");
    assert_eq!(hf_show["details"]["family"], "llama");
    assert_eq!(hf_show["template"], f16_show["template"]);
    for key in [
        "general.parameter_count",
        "llama.context_length",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
    ] {
        assert_eq!(
            hf_show["model_info"][key], f16_show["model_info"][key],
            "{key}: {hf_show}"
        );
    }

    // The same tensors, the same tokenizer: the same answer, token for token, with the same
    // probabilities (a Q or K left in Hugging Face's order, or another split of the text,
    // would change them).
    let (a, b) = (answer(&s, "smol-hf"), answer(&s, "smol-f16"));
    assert_eq!(a["message"]["content"], b["message"]["content"], "{a}\n{b}");
    assert!(
        a["message"]["content"].as_str().unwrap().contains("Paris"),
        "{a}"
    );
    assert_eq!(a["prompt_eval_count"], b["prompt_eval_count"]);
    let (la, lb) = (
        a["logprobs"].as_array().unwrap(),
        b["logprobs"].as_array().unwrap(),
    );
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(lb) {
        let tokens = |v: &Value| -> Vec<Value> {
            v["top_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["token"].clone())
                .collect()
        };
        assert_eq!(tokens(x), tokens(y), "{x}\n{y}");
        let d = x["logprob"].as_f64().unwrap() - y["logprob"].as_f64().unwrap();
        assert!(d.abs() < 1e-4, "{x}\n{y}");
    }

    // As Ollama: without -f or a Modelfile, `create` in the model's folder imports it (`FROM
    // .`, or its one GGUF file); in a folder without weights it says what it lacks.
    let out = s.corral_in(&hf, &["create", "smol-here"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(show("smol-here")["details"], hf_show["details"]);
    let empty = tempfile::tempdir().unwrap();
    let out = s.corral_in(empty.path(), &["create", "nothing"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Error: no Modelfile or safetensors files found"),
        "{}",
        stderr(&out)
    );
    // An index that names a shard not there is named, not taken for no weights.
    std::fs::write(
        empty.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let out = s.corral_in(empty.path(), &["create", "nothing"]);
    let missing = "model-00001-of-00002.safetensors (named by model.safetensors.index.json) is \
                   missing";
    assert!(stderr(&out).contains(missing), "{}", stderr(&out));
    // A folder with one GGUF file and no Modelfile: that file, as Ollama takes it.
    let gguf_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(model_file(SMOL), gguf_dir.path().join("smol.gguf")).unwrap();
    let out = s.corral_in(gguf_dir.path(), &["create", "smol-gguf-here"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        show("smol-gguf-here")["details"]["quantization_level"],
        "Q4_1"
    );

    // The API, the same files: a progress line per tensor, then quantized in the same create.
    let files = upload_folder(&s, &hf);
    let lines = s.stream(
        "/api/create",
        json!({"model": "smol-hf-q8", "files": files, "quantize": "q8_0"}),
    );
    let converting: Vec<&Value> = lines
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["status"] == "converting model" && v["total"].is_u64())
        .collect();
    assert_eq!(
        converting.last().map(|v| (&v["completed"], &v["total"])),
        Some((&json!(272), &json!(272))),
        "one line per tensor, 272 in all: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(_, v)| v["status"] == "quantizing F16 model to Q8_0"),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap().1["status"], "success", "{lines:?}");
    assert_eq!(show("smol-hf-q8")["details"]["quantization_level"], "Q8_0");
    let q8 = answer(&s, "smol-hf-q8");
    assert_eq!(q8["done"], true, "{q8}");
    assert!(
        q8["message"]["content"].as_str().unwrap().contains("Paris"),
        "{q8}"
    );

    // Nothing left: no temp blob, no converter, no folder of links.
    assert!(unfinished(&s).is_empty(), "{:?}", unfinished(&s));
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "temp files left: {:?}",
        std::fs::read_dir(tmp.path()).unwrap().collect::<Vec<_>>()
    );
}

/// A folder beside the test's files holding `hf`'s tokenizer files (linked) and `config`.
pub fn variant(s: &TestServer, name: &str, hf: &Path, config: &Value) -> std::path::PathBuf {
    let dir = s.dir.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::os::unix::fs::symlink(hf.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("config.json"), serde_json::to_vec(config).unwrap()).unwrap();
    dir
}

/// Write safetensors `tensors` (name, dtype, shape, bytes) into `path` with Hugging Face's
/// own library.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)],
) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (n.clone(), view)
        })
        .collect();
    let meta = Some([("format".to_string(), "pt".to_string())].into());
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

/// The top five tokens of the first answer token.
fn first_top(v: &Value) -> Vec<Value> {
    v["logprobs"][0]["top_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].clone())
        .collect()
}

#[test]
fn qwen2_in_shards_and_bf16_weights_convert_too() {
    let s = TestServer::start();
    let hf = smol_hf();
    s.create("smol-f16", &format!("FROM {}\n", smol_f16().display()));
    let reference = answer(&s, "smol-f16");
    let config: Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    let st = std::fs::read(hf.join("model.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&st).unwrap();

    // Qwen 2 is SmolLM2's layers with Q, K and V biases and the NeoX rope, which rotates
    // Hugging Face's layout as it is: the same weights, declared Qwen2ForCausalLM, with zero
    // biases in a second shard, are the same model.
    let mut qwen_config = config.clone();
    qwen_config["architectures"] = json!(["Qwen2ForCausalLM"]);
    qwen_config["model_type"] = json!("qwen2");
    qwen_config["use_sliding_window"] = json!(false);
    let qwen = variant(&s, "qwen", &hf, &qwen_config);
    std::os::unix::fs::symlink(
        hf.join("model.safetensors"),
        qwen.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    let layers = config["num_hidden_layers"].as_u64().unwrap();
    let mut biases = Vec::new();
    for n in 0..layers {
        for p in ["q", "k", "v"] {
            let rows = weights
                .tensor(&format!("model.layers.{n}.self_attn.{p}_proj.weight"))
                .unwrap()
                .shape()[0];
            biases.push((
                format!("model.layers.{n}.self_attn.{p}_proj.bias"),
                safetensors::Dtype::F16,
                vec![rows],
                vec![0u8; 2 * rows],
            ));
        }
    }
    write_safetensors(&qwen.join("model-00002-of-00002.safetensors"), &biases);
    s.create("smol-qwen2", &format!("FROM {}\n", qwen.display()));
    let (code, show) = s.post("/api/show", json!({"model": "smol-qwen2"}));
    assert_eq!(code, 200, "{show}");
    assert_eq!(show["details"]["family"], "qwen2", "{show}");
    assert_eq!(
        show["model_info"]["qwen2.attention.head_count_kv"], 3,
        "{show}"
    );
    let q = answer(&s, "smol-qwen2");
    assert_eq!(
        q["message"]["content"], reference["message"]["content"],
        "{q}"
    );
    assert_eq!(first_top(&q), first_top(&reference), "{q}");
    // The same numbers up to the order of additions in the rotated dot products.
    let d = q["logprobs"][0]["logprob"].as_f64().unwrap()
        - reference["logprobs"][0]["logprob"].as_f64().unwrap();
    assert!(d.abs() < 0.01, "{q}\n{reference}");

    // Most checkpoints are BF16: the same weights rounded to BF16 stay BF16 in the model
    // (norms F32), answer as the F16 model nearly does, and quantize.
    let bf16: Vec<_> = weights
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let data: Vec<u8> = match t.dtype() {
                safetensors::Dtype::F16 => t
                    .data()
                    .chunks_exact(2)
                    .flat_map(|c| {
                        let x = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                        half::bf16::from_f32(x).to_le_bytes()
                    })
                    .collect(),
                _ => t.data().to_vec(),
            };
            let dtype = match t.dtype() {
                safetensors::Dtype::F16 => safetensors::Dtype::BF16,
                other => other,
            };
            (name, dtype, t.shape().to_vec(), data)
        })
        .collect();
    let mut bf16_config = config.clone();
    bf16_config["torch_dtype"] = json!("bfloat16");
    let dir = variant(&s, "bf16", &hf, &bf16_config);
    write_safetensors(&dir.join("model.safetensors"), &bf16);
    drop(bf16);
    drop(weights);
    drop(st);
    let mf = s.dir.path().join("Modelfile.bf16");
    std::fs::write(&mf, format!("FROM {}\n", dir.display())).unwrap();
    // Quantized first: the converted BF16 file is then the quantizer's source only, and no
    // blob may be left of it (the uploaded files of both folders stay, as after any create).
    let uploaded: Vec<String> = [&qwen, &dir]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
        .map(|e| format!("sha256:{}", sha256_hex(&std::fs::read(e.path()).unwrap())))
        .collect();
    for (name, q, level) in [
        ("smol-bf16-q4", Some("q4_K_M"), "Q4_K_M"),
        ("smol-bf16", None, "BF16"),
    ] {
        let mut args = vec!["create", name, "-f", mf.to_str().unwrap()];
        args.extend(q.iter().flat_map(|q| ["-q", *q]));
        let out = s.corral(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let (code, show) = s.post("/api/show", json!({"model": name}));
        assert_eq!(code, 200, "{show}");
        assert_eq!(show["details"]["quantization_level"], level, "{show}");
        let v = answer(&s, name);
        assert_eq!(v["done"], true, "{v}");
        let top = first_top(&v);
        let want = first_top(&reference);
        let shared = top.iter().filter(|t| want.contains(t)).count();
        assert!(
            shared >= 3 && top.contains(&want[0]),
            "{name}: {top:?}, F16: {want:?}"
        );
        let left: Vec<String> = unreferenced_blobs(&s)
            .into_iter()
            .filter(|d| !uploaded.contains(d))
            .collect();
        assert!(left.is_empty(), "{name}: blobs of no model: {left:?}");
    }
    assert!(unfinished(&s).is_empty(), "{:?}", unfinished(&s));
}

#[test]
fn a_bad_hugging_face_folder_is_refused_by_name_and_leaves_nothing() {
    let s = TestServer::start_with(&[("CORRAL_RUNNER_FAULT", "crash@tensor:100")]);
    let hf = smol_hf();
    let files = upload_folder(&s, &hf);
    let read_json = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(hf.join(name)).unwrap()).unwrap()
    };
    // The same files with one replaced (or left out, with null).
    let with = |name: &str, bytes: Option<Vec<u8>>| -> Value {
        let mut f = files.clone();
        match bytes {
            Some(b) => f.insert(name.to_string(), json!(upload(&s, &b))),
            None => f.remove(name),
        };
        Value::Object(f)
    };
    let config = read_json("config.json");
    let edited_config = |key: &str, value: Value| {
        let mut c = config.clone();
        c[key] = value;
        Some(serde_json::to_vec(&c).unwrap())
    };
    let mut tokenizer = read_json("tokenizer.json");
    tokenizer["pre_tokenizer"] = json!({"type": "Metaspace", "replacement": "▁",
                                        "prepend_scheme": "first", "split": false});
    let weights = std::fs::read(hf.join("model.safetensors")).unwrap();

    // Refused before anything runs: a 400 that names the problem.
    let refused = [
        (with("config.json", None), "config.json is missing"),
        (
            with("tokenizer.json", None),
            "tokenizer.json or tokenizer.model is missing",
        ),
        (
            with(
                "config.json",
                edited_config("architectures", json!(["GPT2LMHeadModel"])),
            ),
            "unsupported architecture \"GPT2LMHeadModel\"",
        ),
        (
            with(
                "config.json",
                edited_config("rope_scaling", json!({"rope_type": "yarn"})),
            ),
            "rope_scaling \"yarn\" is not supported",
        ),
        (
            with("config.json", edited_config("hidden_size", Value::Null)),
            "config.json: \"hidden_size\" is missing",
        ),
        (
            with("config.json", Some(b"{\"architectures\": [".to_vec())),
            "config.json: not valid JSON",
        ),
    ];
    let mut lowercase = read_json("tokenizer.json");
    lowercase["normalizer"] = json!({"type": "Lowercase"});
    let index = json!({"metadata": {}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors"}});
    // Found by the converter: the stream ends with an error that names it.
    let failed = [
        (
            with("tokenizer.json", Some(serde_json::to_vec(&lowercase).unwrap())),
            "tokenizer.json: its normalizer (Lowercase) is one llama.cpp does not apply",
        ),
        (
            with(
                "model.safetensors.index.json",
                Some(serde_json::to_vec(&index).unwrap()),
            ),
            "model-00001-of-00002.safetensors (named by model.safetensors.index.json) is missing",
        ),
        (
            with("tokenizer.json", Some(serde_json::to_vec(&tokenizer).unwrap())),
            "tokenizer.json: its pre-tokenizer (Metaspace) is not one Corral can map",
        ),
        (
            with("config.json", edited_config("num_hidden_layers", json!(31))),
            "tensor model.layers.30.input_layernorm.weight is missing",
        ),
        (
            with("config.json", edited_config("hidden_size", json!(512))),
            "tensor model.embed_tokens.weight has shape [49152, 576]; config.json makes it [49152, 512]",
        ),
        (
            with("model.safetensors", Some(weights[..1 << 20].to_vec())),
            "model.safetensors: ",
        ),
        // The fault: the converter dies at its 100th tensor.
        (
            Value::Object(files.clone()),
            "converting the model failed (the converter ended with signal 6 (SIGABRT))",
        ),
    ];
    let before = s.store_files();
    for (files, says) in refused {
        let (code, v) = s.post("/api/create", json!({"model": "x", "files": files}));
        assert_eq!(code, 400, "{says}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{says}: {v}");
        assert_eq!(s.store_files(), before);
    }
    for (files, says) in failed {
        let lines = s.stream("/api/create", json!({"model": "x", "files": files}));
        let last = &lines.last().unwrap().1;
        let error = last["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert!(error.contains(says), "{says}: {error}");
        assert!(
            wait_for(Duration::from_secs(10), || converters(&s).is_empty()),
            "a converter is left"
        );
        assert_eq!(s.store_files(), before, "{says}");
    }
    assert!(s.get("/api/tags")["models"].as_array().unwrap().is_empty());

    // The CLI refuses what the server would refuse at once before it uploads anything: a
    // folder without weights, without a tokenizer, of an unknown architecture.
    let folder = s.dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let link = |f: &str| std::os::unix::fs::symlink(hf.join(f), folder.join(f)).unwrap();
    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", folder.display())).unwrap();
    let mut gpt2 = config.clone();
    gpt2["architectures"] = json!(["GPT2LMHeadModel"]);
    for (step, says) in [
        (0, "no *.safetensors weights in this folder"),
        (1, "tokenizer.json or tokenizer.model is missing"),
        (2, "unsupported architecture \"GPT2LMHeadModel\""),
    ] {
        match step {
            0 => std::fs::write(
                folder.join("config.json"),
                serde_json::to_vec(&gpt2).unwrap(),
            )
            .unwrap(),
            1 => link("model.safetensors"),
            _ => link("tokenizer.json"),
        }
        let out = s.corral(&["create", "x", "-f", mf.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{says}: {}", stderr(&out));
        assert_eq!(s.store_files(), before);
    }
}

#[test]
fn a_peft_lora_folder_becomes_the_adapter_its_gguf_is() {
    let s = TestServer::start();
    s.create_smol();
    let (gguf, peft) = (s.dir.path().join("lora.gguf"), s.dir.path().join("peft"));
    write_lora(&gguf, &SMOL_LORA, 8);
    write_peft(&peft, &SMOL_LORA, 8);
    s.create(
        "smol-lora",
        &format!("FROM smol\nADAPTER {}\n", gguf.display()),
    );
    let mf = s.dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM smol\nADAPTER {}\n", peft.display())).unwrap();
    let out = s.corral(&["create", "smol-peft", "-f", mf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("converting adapter"),
        "{}",
        stderr(&out)
    );

    // The same update of every query projection: the same answer as the GGUF adapter's, with
    // the same probabilities, and not the plain model's (a B left in Hugging Face's row order
    // would rotate the wrong pairs).
    let (a, b, plain) = (
        answer(&s, "smol-peft"),
        answer(&s, "smol-lora"),
        answer(&s, "smol"),
    );
    assert_eq!(a["message"]["content"], b["message"]["content"], "{a}\n{b}");
    assert_ne!(a["message"]["content"], plain["message"]["content"], "{a}");
    for (x, y) in a["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["logprobs"].as_array().unwrap())
    {
        assert_eq!(x["token"], y["token"]);
        let d = x["logprob"].as_f64().unwrap() - y["logprob"].as_f64().unwrap();
        assert!(d.abs() < 1e-4, "{x}\n{y}");
    }
    let out = s.corral(&["show", "smol-peft", "--modelfile"]);
    assert!(stdout(&out).contains("ADAPTER "), "{}", stdout(&out));

    // Both from folders in one create: the adapter is converted for the model converted
    // before it, and the pair answers as the F16 GGUF with the GGUF adapter does.
    let f16 = smol_f16();
    s.create(
        "f16-lora",
        &format!("FROM {}\nADAPTER {}\n", f16.display(), gguf.display()),
    );
    let both = s.dir.path().join("Modelfile.both");
    let modelfile = format!("FROM {}\nADAPTER {}\n", smol_hf().display(), peft.display());
    std::fs::write(&both, modelfile).unwrap();
    let out = s.corral(&["create", "hf-peft", "-f", both.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (x, y) = (answer(&s, "hf-peft"), answer(&s, "f16-lora"));
    assert_eq!(x["message"]["content"], y["message"]["content"], "{x}\n{y}");
    assert_eq!(first_top(&x), first_top(&y));

    // Refusals: at once (400) for what the config says, in the stream for the weights.
    let files = upload_folder(&s, &peft);
    let config: Value =
        serde_json::from_slice(&std::fs::read(peft.join("adapter_config.json")).unwrap()).unwrap();
    let with_config = |key: &str, v: Value| {
        let mut c = config.clone();
        c[key] = v;
        let mut f = files.clone();
        f.insert(
            "adapter_config.json".into(),
            json!(upload(&s, &serde_json::to_vec(&c).unwrap())),
        );
        f
    };
    let mut no_weights = files.clone();
    no_weights.remove("adapter_model.safetensors");
    let refused = [
        (
            with_config("peft_type", json!("IA3")),
            "peft_type \"IA3\" is not LORA",
        ),
        (
            with_config("use_dora", json!(true)),
            "DoRA is not supported",
        ),
        (no_weights, "adapter_model.safetensors is missing"),
    ];
    let rank_4 = with_config("r", json!(4));
    let before = s.store_files();
    for (adapters, says) in refused {
        let (code, v) = s.post(
            "/api/create",
            json!({"model": "x", "from": "smol", "adapters": adapters}),
        );
        assert_eq!(code, 400, "{says}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{says}: {v}");
        assert_eq!(s.store_files(), before);
    }
    let lines = s.stream(
        "/api/create",
        json!({"model": "x", "from": "smol", "adapters": rank_4}),
    );
    let error = lines.last().unwrap().1["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("are not a rank-4 update of the base model's blk.0.attn_q"),
        "{lines:?}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || converters(&s).is_empty()),
        "a converter is left"
    );
    assert_eq!(s.store_files(), before);
    assert!(unfinished(&s).is_empty(), "{:?}", unfinished(&s));

    // The CLI checks the folder before it uploads.
    std::fs::remove_file(peft.join("adapter_config.json")).unwrap();
    let out = s.corral(&["create", "x", "-f", mf.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("adapter_config.json is missing"),
        "{}",
        stderr(&out)
    );
}
