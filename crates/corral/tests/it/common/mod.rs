//! Test harness: a real `corral serve` on a loopback port with its own store, the real CLI
//! pointed at it, and the real models fetched by `scripts/fetch-models.sh`.
#![allow(dead_code)]

pub mod gguf;
pub mod registry;
pub mod worker;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
/// all-MiniLM-L6-v2, a BERT sentence-transformers model, as its Hugging Face folder.
pub const MINILM: &str = "all-MiniLM-L6-v2";

/// A test model file from the cache that `scripts/fetch-models.sh` fills.
pub fn model_file(name: &str) -> PathBuf {
    let p = model_cache().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-models.sh first",
        p.display()
    );
    p
}

/// A model folder `scripts/fetch-models.sh` keeps (a Hugging Face model's files).
pub fn model_dir(name: &str) -> PathBuf {
    let p = model_cache().join(name);
    assert!(
        p.join("config.json").is_file(),
        "{} is missing: run scripts/fetch-models.sh first",
        p.display()
    );
    p
}

fn model_cache() -> PathBuf {
    std::env::var_os("CORRAL_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/corral/models-src")
        })
}

/// The Python of the test virtual environment (`scripts/test.sh` makes it; `CORRAL_CLIENT_VENV`
/// names another), with the pinned clients and gguf-py.
pub fn client_python() -> PathBuf {
    let venv = std::env::var_os("CORRAL_CLIENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/corral/client-venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: scripts/test.sh creates it (python3 -m venv, pip install -r tests/clients/requirements.txt)",
        python.display()
    );
    python
}

/// SmolLM2 with F16 weights (its Q4_1 weights dequantized by gguf-py,
/// `tests/clients/f16_model.py`): what `create --quantize` starts from.
pub fn smol_f16() -> PathBuf {
    from_model(SMOL, "f16_model.py", "F16.gguf", |p| p.is_file())
}

/// Gemma 3 270M with F16 weights, made as [`smol_f16`] is.
pub fn gemma_f16() -> PathBuf {
    from_model(GEMMA, "f16_model.py", "F16.gguf", |p| p.is_file())
}

/// Gemma 3 270M as a Hugging Face folder (`Gemma3ForCausalLM`, a SentencePiece
/// `tokenizer.model`; `tests/clients/hf_model.py`), holding the tensors of [`gemma_f16`]
/// (its norms as Gemma stores them, offsets from 1).
pub fn gemma_hf() -> PathBuf {
    from_model(GEMMA, "hf_model.py", "hf", |p| {
        p.join("model.safetensors").is_file()
    })
}

/// SmolLM2 as a Hugging Face model folder (config.json, model.safetensors, tokenizer.json ...;
/// `tests/clients/hf_model.py`), holding the same F16 and F32 tensors as [`smol_f16`] in
/// Hugging Face's layout: what `FROM <folder>` imports.
pub fn smol_hf() -> PathBuf {
    from_model(SMOL, "hf_model.py", "hf", |p| {
        p.join("model.safetensors").is_file()
    })
}

/// What `tests/clients/<script> <the model's GGUF> <path>` makes, at a path named by `suffix`
/// in the build folder: made once, and again when the script or the pinned packages change
/// (`done` says whether the path holds it already).
fn from_model(model: &str, script: &str, suffix: &str, done: impl Fn(&Path) -> bool) -> PathBuf {
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients");
    let script = clients.join(script);
    let mut inputs = std::fs::read(&script).unwrap();
    inputs.extend(std::fs::read(clients.join("requirements.txt")).unwrap());
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}.{}.{suffix}",
        model.trim_end_matches(".gguf"),
        &sha256_hex(&inputs)[..12]
    ));
    if !done(&path) {
        let out = Command::new(client_python())
            .arg(&script)
            .arg(model_file(model))
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            script.display(),
            stderr(&out)
        );
    }
    path
}

/// The Modelfile of `smol-tools`.
pub fn tools_modelfile() -> String {
    fixture_modelfile("smol-tools")
}

/// The Modelfile of `smol-think`: `smol-tools`' template, able to think.
pub fn think_modelfile() -> String {
    fixture_modelfile("smol-think")
}

fn fixture_modelfile(name: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/models/{name}.Modelfile")),
    )
    .unwrap();
    format!("FROM {}\n{text}", model_file(SMOL).display())
}

/// `corral serve` on a free port with `env`, for settings it should refuse: its output once it
/// has exited.
pub fn serve_refusing(env: &[(&str, &str)]) -> Output {
    Command::new(corral_exe())
        .arg("serve")
        .env("CORRAL_HOST", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

pub fn corral_exe() -> &'static str {
    env!("CARGO_BIN_EXE_corral")
}

/// A running server with its own store and work folder.
pub struct TestServer {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub http: reqwest::blocking::Client,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> TestServer {
        Self::start_in(tempfile::tempdir().unwrap(), env)
    }

    /// Start a server whose work folder (and store, `models/` inside it) is `dir`.
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> TestServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))
            .unwrap();
        let mut cmd = Command::new(corral_exe());
        cmd.arg("serve")
            .env("CORRAL_HOST", format!("127.0.0.1:{port}"))
            .env("CORRAL_MODELS", dir.path().join("models"))
            .env("CORRAL_DEBUG", "1")
            // Loopback registries in the tests are never reached through a proxy.
            .env("NO_PROXY", "127.0.0.1,localhost")
            // Two tests run at once on two cores: one runner thread each. Two runners of two
            // threads each wait at llama.cpp's barriers for each other's preempted threads:
            // each decodes 3x slower than with one thread here (16 against 46 tokens/s), and
            // on a loaded CI machine a 400-token answer ran past five minutes. Tests that need
            // more threads set it again.
            .env("CORRAL_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(log);
        // "{port}" in a value stands for the port chosen here (CORRAL_HOST=0.0.0.0:{port}).
        for (k, v) in env {
            cmd.env(k, v.replace("{port}", &port.to_string()));
        }
        let child = cmd.spawn().expect("start corral serve");
        let s = TestServer {
            child: Some(child),
            port,
            dir,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // Any answer will do (an API key or TLS may refuse this plain request).
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn models_dir(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Run the CLI against this server.
    pub fn corral(&self, args: &[&str]) -> Output {
        self.corral_stdin(args, None)
    }

    /// Run the CLI against this server in the folder `dir`.
    pub fn corral_in(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(corral_exe())
            .args(args)
            .current_dir(dir)
            .env("CORRAL_HOST", format!("127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run the CLI with extra environment variables.
    pub fn corral_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.corral_full(args, None, env)
    }

    pub fn corral_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.corral_full(args, stdin, &[])
    }

    fn corral_full(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(corral_exe());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("CORRAL_HOST", format!("127.0.0.1:{}", self.port))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Write a Modelfile in the work folder and `corral create` it; panics on failure.
    pub fn create(&self, name: &str, modelfile: &str) {
        let out = self.try_create(name, modelfile);
        assert!(
            out.status.success(),
            "create {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn try_create(&self, name: &str, modelfile: &str) -> Output {
        let path = self.dir.path().join(format!("Modelfile.{name}"));
        std::fs::write(&path, modelfile).unwrap();
        self.corral(&["create", name, "-f", path.to_str().unwrap()])
    }

    pub fn create_smol(&self) {
        self.create("smol", &format!("FROM {}\n", model_file(SMOL).display()));
    }

    /// `smol-tools`: the real SmolLM2 weights with `tests/models/smol-tools.Modelfile`, a
    /// template that renders tools.
    pub fn create_smol_tools(&self) {
        self.create("smol-tools", &tools_modelfile());
    }

    /// `smol-think`: `smol-tools` whose template can think (`tests/models/smol-think.Modelfile`).
    pub fn create_smol_think(&self) {
        self.create("smol-think", &think_modelfile());
    }

    /// POST JSON; returns the status and the parsed body.
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self.http.post(self.url(path)).json(&body).send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .body(body.to_string())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The names `/api/tags` lists.
    pub fn model_names(&self) -> Vec<String> {
        self.get("/api/tags")["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// GET a text body (`/metrics`).
    pub fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// POST and read an NDJSON stream, noting when each line arrived.
    pub fn stream(&self, path: &str, body: Value) -> Vec<(Instant, Value)> {
        let resp = self.http.post(self.url(path)).json(&body).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        BufReader::new(resp)
            .lines()
            .map(|l| (Instant::now(), serde_json::from_str(&l.unwrap()).unwrap()))
            .collect()
    }

    /// Files under the store, for "nothing changed" checks (but `manifests.lock`, which only
    /// orders manifest changes between servers and holds nothing).
    pub fn store_files(&self) -> Vec<String> {
        fn walk(p: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else if e.file_name() != "manifests.lock" {
                    out.push(e.path().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.models_dir(), &mut out);
        out.sort();
        out
    }

    /// Runner processes of this server (found by their model path inside this store).
    pub fn runner_pids(&self) -> Vec<u32> {
        runner_pids_under(&self.models_dir())
    }

    /// Stop the server with SIGTERM and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc_kill(c.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("server did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Send one raw HTTP/1.1 request (headers exactly as given, `Connection: close` added) and
/// return the status and the body, for requests a client library would not send as they are.
pub fn raw_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    if !headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    }) {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    head += "Connection: close\r\n\r\n";
    conn.write_all(head.as_bytes()).unwrap();
    // The body goes from another thread while this one reads: the server may answer (and
    // refuse) before it has read it all, and a failed write is fine then.
    let mut writer = conn.try_clone().unwrap();
    let body = body.to_vec();
    let sender = std::thread::spawn(move || {
        for chunk in body.chunks(1 << 16) {
            if writer.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 1 << 16];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, head.to_string(), body.to_string())
}

/// A process's peak resident memory (VmHWM) in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `corral devices --json` with the device variables cleared, then `env` set.
pub fn devices_json(env: &[(&str, &str)]) -> Value {
    let mut c = Command::new(corral_exe());
    c.args(["devices", "--json"]);
    for v in [
        "CUDA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "GGML_VK_VISIBLE_DEVICES",
        "CORRAL_DEVICE",
    ] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("devices --json prints valid JSON")
}

/// The seed's case, under one server environment: a server started with `env` streams a
/// short greedy answer (4 tokens, plus `options`) to `done` on the CPU (`size_vram` 0), and
/// no runner is left once it stops. `what` names the case in failures.
pub fn answers_to_the_end_on_the_cpu(what: &str, env: &[(&str, &str)], options: Value) {
    let mut s = TestServer::start_with(env);
    s.create_smol();
    let mut o = options;
    o["num_predict"] = 4.into();
    o["temperature"] = 0.into();
    o["num_ctx"] = 256.into();
    let body = serde_json::json!({"model": "smol", "prompt": "The capital of France is", "raw": true, "options": o});
    let lines = s.stream("/api/generate", body);
    let last = &lines.last().expect("an answer").1;
    assert_eq!(last["done"], true, "{what}: {last}");
    assert_eq!(last["eval_count"], 4, "{what}: {last}");
    let ps = s.get("/api/ps");
    assert_eq!(ps["models"][0]["size_vram"], 0, "{what}: {ps}");
    s.stop();
    assert!(
        wait_for(Duration::from_secs(2), || s.runner_pids().is_empty()),
        "{what}: runner left behind"
    );
}

/// Send a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    unsafe { libc_kill(pid as i32, sig) };
}

/// Processes whose command line is a corral runner for a model under `dir`.
pub fn runner_pids_under(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // Zombies have an empty command line and are already gone for our purposes.
        if cmdline.contains(" runner ") && cmdline.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// Wait until `f` holds, at most `timeout`.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The sizes of a base model that [`write_lora`] and [`write_peft`] write adapters for.
pub struct LoraBase {
    arch: &'static str,
    layers: u64,
    /// The query projection's inputs (the hidden size) and outputs (all heads).
    inputs: u64,
    outputs: u64,
    /// Heads whose rows llama.cpp's converter permutes (Q of a `llama` model), if any.
    permuted_heads: Option<usize>,
}

/// SmolLM2: 30 layers, 576 wide, 9 query heads (a `llama`: Q's rows permuted).
pub const SMOL_LORA: LoraBase = LoraBase {
    arch: "llama",
    layers: 30,
    inputs: 576,
    outputs: 576,
    permuted_heads: Some(9),
};

/// Gemma 3 270M: 18 layers, 640 wide, 4 query heads of 256 (NeoX rope: nothing permuted).
pub const GEMMA_LORA: LoraBase = LoraBase {
    arch: "gemma3",
    layers: 18,
    inputs: 640,
    outputs: 1024,
    permuted_heads: None,
};

/// Write a small LoRA adapter GGUF for `base`: rank-`r` updates of every layer's query
/// projection, with fixed pseudo-random weights (large enough to change what the model says).
pub fn write_lora(path: &Path, base: &LoraBase, r: u64) {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    let tensors = lora_tensors(base, r);
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&4u64.to_le_bytes());
    for (k, v) in [
        ("general.architecture", base.arch),
        ("general.type", "adapter"),
        ("adapter.type", "lora"),
    ] {
        s(&mut out, k);
        out.extend_from_slice(&8u32.to_le_bytes());
        s(&mut out, v);
    }
    s(&mut out, "adapter.lora.alpha");
    out.extend_from_slice(&6u32.to_le_bytes());
    out.extend_from_slice(&(r as f32).to_le_bytes());
    let mut offset = 0u64;
    for (name, dims, _) in &tensors {
        s(&mut out, name);
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&dims[0].to_le_bytes());
        out.extend_from_slice(&dims[1].to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // f32
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (dims[0] * dims[1] * 4).div_ceil(32) * 32;
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    for (_, _, values) in &tensors {
        for x in values {
            out.extend_from_slice(&x.to_le_bytes());
        }
        let n = values.len() * 4;
        out.extend(std::iter::repeat_n(0u8, n.div_ceil(32) * 32 - n));
    }
    std::fs::write(path, out).unwrap();
}

/// The tensors of [`write_lora`]'s adapter: GGUF name, GGUF dimensions (innermost first)
/// and values, pseudo-random and the same every time.
fn lora_tensors(base: &LoraBase, r: u64) -> Vec<(String, [u64; 2], Vec<f32>)> {
    let (inputs, outputs) = (base.inputs, base.outputs);
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut values = |n: u64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
            })
            .collect()
    };
    let mut tensors = Vec::new();
    for l in 0..base.layers {
        let a = values(inputs * r);
        tensors.push((format!("blk.{l}.attn_q.weight.lora_a"), [inputs, r], a));
        let b = values(r * outputs);
        tensors.push((format!("blk.{l}.attn_q.weight.lora_b"), [r, outputs], b));
    }
    tensors
}

/// The adapter of [`write_lora`] as PEFT saves a LoRA adapter: `adapter_config.json` and
/// `adapter_model.safetensors` (written with Hugging Face's `safetensors`) under Hugging
/// Face's names, B's rows in Hugging Face's order (for a `llama` base, the inverse of the
/// permutation llama.cpp's converters apply to the query's rows), in the folder `dir`.
pub fn write_peft(dir: &Path, base: &LoraBase, r: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors = Vec::new();
    for (name, dims, values) in lora_tensors(base, r) {
        let (layer, end) = name
            .strip_prefix("blk.")
            .and_then(|n| n.split_once(".attn_q.weight."))
            .unwrap();
        let (rows, cols) = (dims[1] as usize, dims[0] as usize);
        let mut hf = values.clone();
        if let (Some(heads), "lora_b") = (base.permuted_heads, end) {
            // GGUF row i holds Hugging Face row src(i).
            let (per_head, half) = (rows / heads, rows / heads / 2);
            for i in 0..rows {
                let (h, w) = (i / per_head, i % per_head);
                let src = h * per_head + (w % 2) * half + w / 2;
                hf[src * cols..(src + 1) * cols].copy_from_slice(&values[i * cols..(i + 1) * cols]);
            }
        }
        let ab = if end == "lora_a" { "A" } else { "B" };
        let bytes: Vec<u8> = hf.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((
            format!("base_model.model.model.layers.{layer}.self_attn.q_proj.lora_{ab}.weight"),
            vec![rows, cols],
            bytes,
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (n.clone(), view)
        })
        .collect();
    let meta = Some([("format".to_string(), "pt".to_string())].into());
    safetensors::serialize_to_file(views, meta, &dir.join("adapter_model.safetensors")).unwrap();
    let config = serde_json::json!({
        "base_model_name_or_path": base.arch,
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": r,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false,
        "target_modules": ["q_proj"], "use_rslora": false, "use_dora": false,
        "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": null
    });
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// sha256 of bytes, in hex (with the system's sha256sum, to check the server independently).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()[..64].to_string()
}
