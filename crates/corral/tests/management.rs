//! Managing models as Ollama users do: show, cp, rm, and what `list`, `ps` and `show` print.

mod common;

use common::*;
use serde_json::json;

#[test]
fn create_show_copy_remove_round_trip() {
    let s = TestServer::start();
    let modelfile = format!(
        "FROM {}\nPARAMETER temperature 0.2\nPARAMETER stop \"<|im_end|>\"\nSYSTEM \"\"\"You are terse.\nVery terse.\"\"\"\nLICENSE MIT\n",
        model_file(SMOL).display()
    );
    s.create("smol", &modelfile);

    let show = stdout(&s.corral(&["show", "smol"]));
    let expected = "  Model\n    architecture        llama\n    parameters          134.52M\n    context length      8192\n    embedding length    576\n    quantization        Q4_1\n\n  Capabilities\n    completion\n\n  Parameters\n    stop           \"<|im_end|>\"\n    temperature    0.2\n\n  System\n    You are terse.\n    Very terse.\n\n  License\n    MIT\n\n";
    assert_eq!(show, expected);
    assert_eq!(
        stdout(&s.corral(&["show", "smol", "--system"])),
        "You are terse.\nVery terse.\n"
    );
    assert_eq!(stdout(&s.corral(&["show", "smol", "--license"])), "MIT\n");

    // The printed Modelfile builds the same model again.
    let printed = stdout(&s.corral(&["show", "smol", "--modelfile"]));
    assert!(
        printed.contains("PARAMETER temperature 0.2\n")
            && printed.contains("PARAMETER stop \"<|im_end|>\"\n"),
        "{printed}"
    );
    s.create("again", &printed);
    let (_, a) = s.post("/api/show", json!({"model": "smol"}));
    let (_, b) = s.post("/api/show", json!({"model": "again"}));
    for field in ["system", "parameters", "template", "license", "details"] {
        assert_eq!(a[field], b[field], "{field}");
    }

    // cp: a second name for the same blobs; rm removes a name, the blobs go with the last one.
    let out = s.corral(&["cp", "smol", "me/smol2:v1"]);
    assert_eq!(stdout(&out), "copied 'smol' to 'me/smol2:v1'\n");
    let list = stdout(&s.corral(&["ls"]));
    let ids: Vec<&str> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{list}");
    assert!(
        ids.iter().filter(|i| **i == ids[0]).count() >= 2,
        "a copy has the same ID: {list}"
    );
    let blob = s
        .models_dir()
        .join("blobs/sha256-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    for name in ["smol", "again"] {
        assert_eq!(
            stdout(&s.corral(&["rm", name])),
            format!("deleted '{name}'\n")
        );
        assert!(blob.exists(), "the weights are still used by me/smol2:v1");
    }
    let (status, body) = s.post("/api/generate", json!({"model": "me/smol2:v1", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}));
    assert_eq!(status, 200, "{body}");
    let resp = s
        .http
        .delete(s.url("/api/delete"))
        .json(&json!({"model": "me/smol2:v1"}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(!blob.exists(), "the last name took its blobs with it");
    assert!(s.runner_pids().is_empty(), "rm unloads the model first");
    assert_eq!(s.get("/api/tags")["models"], json!([]));
    let files = s.store_files();
    assert!(files.iter().all(|f| !f.contains("/blobs/")), "{files:?}");

    // Errors.
    let out = s.corral(&["rm", "nope"]);
    assert_eq!(stderr(&out).trim(), "Error: model 'nope' not found");
    let (status, body) = s.post("/api/copy", json!({"source": "nope", "destination": "x"}));
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (404, "model 'nope' not found")
    );
    let out = s.corral(&["show", "nope"]);
    assert_eq!(stderr(&out).trim(), "Error: model 'nope' not found");
}

#[test]
fn list_and_ps_print_ollamas_tables() {
    let s = TestServer::start();
    s.create_smol();
    let list = stdout(&s.corral(&["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "NAME          ID             SIZE    MODIFIED");
    let row: Vec<&str> = lines[1].splitn(4, "   ").map(str::trim).collect();
    assert_eq!(row[0], "smol:latest");
    assert_eq!(row[1].len(), 12);
    assert!(row[1].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(row[2], "98 MB");
    assert!(row[3].ends_with("ago"), "{row:?}");

    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "", "keep_alive": "10m"}),
    );
    assert_eq!(status, 200);
    let ps = stdout(&s.corral(&["ps"]));
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(
        lines[0],
        "NAME          ID             SIZE     PROCESSOR   CONTEXT   UNTIL"
    );
    assert!(lines[1].starts_with("smol:latest   "), "{ps}");
    assert!(lines[1].contains("   100% CPU    4096      "), "{ps}");
    assert!(lines[1].ends_with("minutes from now"), "{ps}");
}

#[test]
fn an_adapter_changes_the_answer_and_only_one_is_allowed() {
    let s = TestServer::start();
    s.create_smol();
    write_smol_lora(&s.dir.path().join("lora.gguf"), 8);
    s.create("smol-lora", "FROM smol\nADAPTER ./lora.gguf\n");
    let (status, show) = s.post("/api/show", json!({"model": "smol-lora"}));
    assert_eq!(status, 200);
    assert!(
        show["modelfile"].as_str().unwrap().contains("\nADAPTER "),
        "{show}"
    );

    let ask = |model: &str| {
        let (status, body) = s.post(
            "/api/generate",
            json!({"model": model, "prompt": "What is the capital of France?", "stream": false, "options": {"temperature": 0, "num_predict": 12}}),
        );
        assert_eq!(status, 200, "{body}");
        body["response"].as_str().unwrap().to_string()
    };
    let base = ask("smol");
    let adapted = ask("smol-lora");
    assert!(!adapted.is_empty());
    assert_ne!(base, adapted, "the adapter had no effect");
    assert_eq!(ask("smol"), base, "the base model is unchanged");

    let out = s.try_create(
        "two",
        "FROM smol\nADAPTER ./lora.gguf\nADAPTER ./lora.gguf\n",
    );
    assert!(
        stderr(&out).contains("only one ADAPTER is supported"),
        "{}",
        stderr(&out)
    );
    let base_file = model_file(SMOL);
    let out = s.try_create(
        "wrong",
        &format!("FROM smol\nADAPTER {}\n", base_file.display()),
    );
    assert!(
        stderr(&out).contains("not a LoRA adapter"),
        "{}",
        stderr(&out)
    );
    let (status, body) = s.post("/api/create", json!({"model": "x", "from": "smol", "adapters": {"a.gguf": format!("sha256:{}", "1".repeat(64)), "b.gguf": format!("sha256:{}", "2".repeat(64))}}));
    assert_eq!(status, 400);
    assert_eq!(body["error"], "only one adapter is supported, got 2");
}

#[test]
fn start_up_prunes_old_unused_blobs_unless_told_not_to() {
    let mut s = TestServer::start();
    s.create_smol();
    let stray = b"an upload no model uses".to_vec();
    let resp = s
        .http
        .post(s.url(
            "/api/blobs/sha256:b1f1ad29c4bb5e2a1d5a0e5a8cf9a9d0b2f6bd1ef0c4a04b7b3a2d04cde7a2e3",
        ))
        .body(stray)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "digest mismatch");
    let digest = {
        use std::process::{Command, Stdio};
        let mut c = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut c.stdin.take().unwrap(), b"an upload no model uses")
            .unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()[..64].to_string()
    };
    let resp = s
        .http
        .post(s.url(&format!("/api/blobs/sha256:{digest}")))
        .body("an upload no model uses")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    s.stop();
    let path = s.models_dir().join(format!("blobs/sha256-{digest}"));
    let age = |p: &std::path::Path| {
        let st = std::process::Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    };
    age(&path);
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let s = TestServer::start_in(dir, &[("CORRAL_NOPRUNE", "1")]);
    assert!(path.exists(), "CORRAL_NOPRUNE keeps it");
    let mut s = s;
    s.stop();
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let s = TestServer::start_in(dir, &[]);
    assert!(!path.exists(), "an old unused blob is pruned at start-up");
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "the model's own blobs stay: {body}");
}

#[test]
fn modelfiles_in_utf16_with_home_paths_and_messages() {
    let s = TestServer::start();
    // FROM ~/... resolves against $HOME; the file is UTF-16 with a byte-order mark.
    let home = s.dir.path().join("home");
    std::fs::create_dir_all(home.join("models")).unwrap();
    std::fs::copy(model_file(SMOL), home.join("models/smol.gguf")).unwrap();
    let text = "FROM ~/models/smol.gguf\r\nPARAMETER temperature 0\r\nMESSAGE user What is the capital of France?\r\nMESSAGE assistant Paris.\r\n";
    let mut bytes = vec![0xff, 0xfe];
    for unit in text.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    std::fs::write(s.dir.path().join("Modelfile.utf16"), bytes).unwrap();
    let out = std::process::Command::new(corral_exe())
        .args(["create", "smol-msgs", "-f", "Modelfile.utf16"])
        .current_dir(s.dir.path())
        .env("HOME", &home)
        .env("CORRAL_HOST", format!("127.0.0.1:{}", s.port))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, show) = s.post("/api/show", json!({"model": "smol-msgs"}));
    assert_eq!(
        show["messages"],
        json!([{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}])
    );

    // The MESSAGEs go before the request's own messages: the prompt is longer by their tokens.
    s.create("smol", &format!("FROM {}\n", model_file(SMOL).display()));
    let prompt_tokens = |model: &str| {
        let (status, body) = s.post(
            "/api/chat",
            json!({"model": model, "stream": false, "keep_alive": 0, "options": {"num_predict": 1},
                   "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "And of Italy?"}]}),
        );
        assert_eq!(status, 200, "{body}");
        body["prompt_eval_count"].as_u64().unwrap()
    };
    let with = prompt_tokens("smol-msgs");
    let without = prompt_tokens("smol");
    assert!(
        with > without + 10,
        "MESSAGEs were not applied: {with} vs {without} prompt tokens"
    );
}
