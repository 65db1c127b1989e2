//! The client half of the `corral` command: each subcommand talks to a running server over
//! its HTTP API, exactly as Ollama's CLI does, so it works against either.

pub mod client;
pub mod format;
pub mod host;
pub mod repl;
pub mod run;
pub mod transfer;

pub use run::{run, RunArgs};

use std::path::{Path, PathBuf};

use anyhow::Context;
use corral_api::{
    CreateRequest, GenerateRequest, GenerateResponse, ListResponse, Message, Metrics,
    ProcessResponse, ProgressResponse,
};
use corral_modelfile::{Command, Modelfile};
use sha2::Digest as _;

use crate::client::Client;
use crate::format::{go_duration, human_bytes, human_time, table};

/// `corral create` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Name of the new model.
    pub model: String,
    /// Modelfile to build from [default: Modelfile; without one, the current folder is
    /// imported as a Hugging Face model, as `FROM .`].
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Quantize the model's F16 or F32 weights to this type (q4_K_M, q8_0, ...).
    #[arg(short = 'q', long)]
    pub quantize: Option<String>,
}

/// Ollama's `--verbose` statistics, labels padded to one column; a line only for what is
/// above zero.
pub fn stats_block(m: &Metrics) -> String {
    let rate = |count: u64, ns: u64| count as f64 / (ns as f64 / 1e9);
    let mut rows: Vec<(&str, String)> = Vec::new();
    if m.total_duration > 0 {
        rows.push(("total duration:", go_duration(m.total_duration)));
    }
    if m.load_duration > 0 {
        rows.push(("load duration:", go_duration(m.load_duration)));
    }
    if m.prompt_eval_count > 0 {
        rows.push((
            "prompt eval count:",
            format!("{} token(s)", m.prompt_eval_count),
        ));
    }
    if m.prompt_eval_duration > 0 {
        rows.push(("prompt eval duration:", go_duration(m.prompt_eval_duration)));
        rows.push((
            "prompt eval rate:",
            format!(
                "{:.2} tokens/s",
                rate(m.prompt_eval_count, m.prompt_eval_duration)
            ),
        ));
    }
    if m.eval_count > 0 {
        rows.push(("eval count:", format!("{} token(s)", m.eval_count)));
    }
    if m.eval_duration > 0 {
        rows.push(("eval duration:", go_duration(m.eval_duration)));
        rows.push((
            "eval rate:",
            format!("{:.2} tokens/s", rate(m.eval_count, m.eval_duration)),
        ));
    }
    rows.iter().map(|(k, v)| format!("{k:<22}{v}\n")).collect()
}

/// `corral create`.
pub async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<()> {
    let (file, text) = modelfile(args.file.as_deref())?;
    let mf = Modelfile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let parameters = mf.parameters().map_err(|e| anyhow::anyhow!(e))?;
    for name in mf.deprecated_parameters() {
        eprintln!("warning: parameter '{name}' is no longer supported and was ignored");
    }
    let mut req = CreateRequest {
        model: args.model.clone(),
        quantize: args.quantize.clone(),
        ..Default::default()
    };
    if !parameters.is_empty() {
        req.parameters = Some(parameters);
    }
    let mut messages = Vec::new();
    let mut licenses = Vec::new();
    for c in &mf.commands {
        match c {
            Command::From(from) => {
                let path = resolve_path(&dir, from);
                if path.is_file() {
                    req.files = Some(upload_named(client, &path).await?);
                    req.from = None;
                } else if path.is_dir() {
                    req.files = Some(upload_folder(client, &path).await?);
                    req.from = None;
                } else if looks_like_path(from) {
                    anyhow::bail!("{}: FROM {from}: no such file", file.display());
                } else {
                    req.from = Some(from.clone());
                    req.files = None;
                }
            }
            Command::Template(t) => req.template = Some(t.clone()),
            Command::System(s) => req.system = Some(s.clone()),
            Command::License(l) => licenses.push(serde_json::Value::String(l.clone())),
            Command::Message { role, content } => {
                messages.push(Message::new(role.clone(), content.clone()))
            }
            Command::Adapter(a) => {
                if req.adapters.is_some() {
                    anyhow::bail!("{}: only one ADAPTER is supported", file.display());
                }
                let path = resolve_path(&dir, a);
                req.adapters = Some(if path.is_dir() {
                    upload_adapter_folder(client, &path).await?
                } else if path.is_file() {
                    upload_named(client, &path).await?
                } else {
                    anyhow::bail!("{}: ADAPTER {a}: no such file", file.display());
                });
            }
            Command::Draft(d) => {
                let path = resolve_path(&dir, d);
                if path.is_file() {
                    let from = mf.commands.iter().find_map(|c| match c {
                        Command::From(f) => Some(resolve_path(&dir, f)),
                        _ => None,
                    });
                    let same = |a: &std::path::Path, b: &std::path::Path| {
                        a.canonicalize()
                            .ok()
                            .zip(b.canonicalize().ok())
                            .is_some_and(|(a, b)| a == b)
                    };
                    if from.is_some_and(|f| same(&f, &path)) {
                        anyhow::bail!(
                            "{}: DRAFT {d}: the draft is the FROM model itself",
                            file.display()
                        );
                    }
                    req.draft_files = Some(upload_named(client, &path).await?);
                    req.draft = None;
                } else if looks_like_path(d) {
                    anyhow::bail!("{}: DRAFT {d}: no such file", file.display());
                } else {
                    req.draft = Some(d.clone());
                    req.draft_files = None;
                }
            }
            Command::Requires(v) => req.requires = Some(v.clone()),
            Command::Parameter { .. } => {}
        }
    }
    if !messages.is_empty() {
        req.messages = Some(messages);
    }
    if !licenses.is_empty() {
        req.license = Some(serde_json::Value::Array(licenses));
    }
    let mut view = transfer::View::new();
    let result = client
        .stream("/api/create", &req, |p: ProgressResponse| {
            view.show(&p);
            Ok(())
        })
        .await;
    view.finish();
    result
}

/// The Modelfile `create` builds from, and its text: the file `-f` names, else `Modelfile`
/// here, else (as Ollama does) this folder: `FROM .` when it holds a Hugging Face model's
/// safetensors weights, else `FROM` its one GGUF file.
fn modelfile(named: Option<&Path>) -> anyhow::Result<(PathBuf, String)> {
    let default = PathBuf::from("Modelfile");
    if let Some(path) = named {
        return Ok((path.to_path_buf(), read_modelfile(path)?));
    }
    if default.exists() {
        let text = read_modelfile(&default)?;
        return Ok((default, text));
    }
    let here = Path::new(".");
    let folder = corral_convert::Files::open(here).context("read this folder")?;
    // A folder whose index names a missing shard says so here, rather than "no weights".
    if !folder.safetensors()?.is_empty() {
        return Ok((default, "FROM .\n".to_string()));
    }
    let ggufs: Vec<&str> = folder
        .iter()
        .map(|(name, _)| name)
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok((default, format!("FROM ./{one}\n"))),
        [] => anyhow::bail!(
            "no Modelfile or safetensors files found: there is no Modelfile here (name one \
             with -f), and this folder holds no *.safetensors weights or GGUF file to import"
        ),
        many => anyhow::bail!(
            "no Modelfile here, and this folder holds {} GGUF files ({}): name the model's in \
             a Modelfile (FROM ./file.gguf)",
            many.len(),
            many.join(", ")
        ),
    }
}

fn read_modelfile(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    // UTF-16 files (with a byte-order mark) come from Windows editors.
    let utf16 = |bytes: &[u8], le: bool| -> anyhow::Result<String> {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units)
            .map_err(|_| anyhow::anyhow!("{}: invalid UTF-16", path.display()))
    };
    match bytes.as_slice() {
        [0xff, 0xfe, rest @ ..] => utf16(rest, true),
        [0xfe, 0xff, rest @ ..] => utf16(rest, false),
        _ => String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: not valid UTF-8", path.display())),
    }
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('.')
        || s.starts_with('/')
        || s.starts_with('~')
        || s.ends_with(".gguf")
        || s.contains('\\')
}

fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        dir.join(path)
    }
}

/// Check a GGUF locally, then upload it unless the server has it. Returns its digest.
/// Upload a GGUF; the map from its file name to its digest that create requests carry.
async fn upload_named(
    client: &Client,
    path: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let digest = upload_gguf(client, path).await?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok([(file, digest)].into_iter().collect())
}

/// A Hugging Face model folder, uploaded as the files a create from it needs, named as in
/// the folder: the weights the converter reads (`model*.safetensors`, or those the index
/// names), every JSON file (config, tokenizer, generation settings), `chat_template.jinja` and
/// `tokenizer.model`, as Ollama's client picks them. What the server would refuse at once (no
/// weights, no config.json or tokenizer, an architecture it cannot convert) is refused
/// here, before gigabytes are uploaded.
async fn upload_folder(
    client: &Client,
    dir: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let here = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", dir.display());
    let folder = corral_convert::Files::open(dir).map_err(|e| here(&e))?;
    let weights = folder.safetensors().map_err(|e| here(&e))?;
    if weights.is_empty() {
        anyhow::bail!(
            "{}: no *.safetensors weights in this folder (FROM a folder imports a Hugging Face \
             model: {})",
            dir.display(),
            corral_convert::NEEDS
        );
    }
    let needs = corral_convert::NEEDS;
    if !folder.has("config.json") {
        anyhow::bail!("{}: config.json is missing ({needs})", dir.display());
    }
    if !corral_convert::TOKENIZERS.iter().any(|t| folder.has(t)) {
        let dir = dir.display();
        anyhow::bail!("{dir}: tokenizer.json or tokenizer.model is missing ({needs})");
    }
    let config = std::fs::read(dir.join("config.json"))?;
    corral_convert::check_config(&config).map_err(|e| here(&e))?;
    let mut files: Vec<(&str, &Path)> = folder
        .iter()
        .filter(|(n, _)| {
            n.ends_with(".json") || *n == "chat_template.jinja" || *n == "tokenizer.model"
        })
        .chain(weights)
        .collect();
    files.sort();
    eprintln!("gathering model components");
    let mut named = std::collections::BTreeMap::new();
    for (name, path) in files {
        named.insert(name.to_string(), upload_file(client, path).await?);
    }
    Ok(named)
}

/// A PEFT LoRA adapter's folder: `adapter_config.json` (checked here first) and
/// `adapter_model.safetensors`.
async fn upload_adapter_folder(
    client: &Client,
    dir: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    use corral_convert::{ADAPTER_FILES, ADAPTER_NEEDS};
    for name in ADAPTER_FILES {
        if !dir.join(name).is_file() {
            anyhow::bail!("{}: {name} is missing ({ADAPTER_NEEDS})", dir.display());
        }
    }
    let config = std::fs::read(dir.join(ADAPTER_FILES[0]))?;
    corral_convert::check_adapter_config(&config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    eprintln!("gathering model components");
    let mut named = std::collections::BTreeMap::new();
    for name in ADAPTER_FILES {
        named.insert(
            name.to_string(),
            upload_file(client, &dir.join(name)).await?,
        );
    }
    Ok(named)
}

async fn upload_gguf(client: &Client, path: &Path) -> anyhow::Result<String> {
    corral_gguf::read(path)
        .map_err(|e| anyhow::anyhow!("invalid model file {}: {e}", path.display()))?;
    eprintln!("gathering model components");
    upload_file(client, path).await
}

/// Upload a file as a blob unless the server has it; returns its digest.
async fn upload_file(client: &Client, path: &Path) -> anyhow::Result<String> {
    let p = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut f = std::fs::File::open(&p)?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    })
    .await??;
    let blob = format!("/api/blobs/{digest}");
    if !client.head_ok(&blob).await? {
        eprintln!("copying file {digest}");
        let file = tokio::fs::File::open(path).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        client.post_body(&blob, body).await?;
    }
    Ok(digest)
}

/// `corral list`.
pub async fn list(client: &Client, prefix: Option<&str>) -> anyhow::Result<()> {
    let resp: ListResponse = client.get("/api/tags").await?;
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = resp
        .models
        .iter()
        .filter(|m| named(&m.name, prefix))
        .map(|m| {
            vec![
                m.name.clone(),
                m.digest.chars().take(12).collect(),
                human_bytes(m.size),
                human_time(m.modified_at, now),
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "ID", "SIZE", "MODIFIED"], &rows));
    Ok(())
}

/// Whether `list` or `ps` shows a model: every one, or those whose name starts with the
/// prefix given (in any case, as Ollama's `list` matches).
fn named(name: &str, prefix: Option<&str>) -> bool {
    prefix.is_none_or(|p| name.to_lowercase().starts_with(&p.to_lowercase()))
}

/// `corral ps`.
pub async fn ps(client: &Client, prefix: Option<&str>) -> anyhow::Result<()> {
    let resp: ProcessResponse = client.get("/api/ps").await?;
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = resp
        .models
        .iter()
        .filter(|m| named(&m.name, prefix))
        .map(|m| {
            let processor = processor(m.size, m.size_vram, m.size_remote);
            vec![
                m.name.clone(),
                m.digest.chars().take(12).collect(),
                human_bytes(m.size),
                processor,
                m.context_length.to_string(),
                human_time(m.expires_at, now),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"],
            &rows
        )
    );
    for m in resp.models.iter().filter(|m| m.warning.is_some()) {
        println!(
            "warning: {}: {}",
            m.name,
            m.warning.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}

/// Ollama's PROCESSOR column, with Corral's share on RPC workers (`remote`, part of `vram`)
/// as its own part: `100% RPC`, `35%/65% CPU/RPC`, `20%/30%/50% CPU/GPU/RPC`.
pub fn processor(size: u64, vram: u64, remote: u64) -> String {
    let size = size.max(1);
    let pct = |b: u64| (b.min(size) as f64 / size as f64 * 100.0).round() as u64;
    let rpc = pct(remote);
    let gpu = pct(vram).saturating_sub(rpc);
    let cpu = 100u64.saturating_sub(gpu + rpc);
    let parts: Vec<(u64, &str)> = [(cpu, "CPU"), (gpu, "GPU"), (rpc, "RPC")]
        .into_iter()
        .filter(|p| p.0 > 0)
        .collect();
    match parts.as_slice() {
        [] => "100% CPU".into(),
        [(_, name)] => format!("100% {name}"),
        _ => {
            let pcts: Vec<String> = parts.iter().map(|p| format!("{}%", p.0)).collect();
            let names: Vec<&str> = parts.iter().map(|p| p.1).collect();
            format!("{} {}", pcts.join("/"), names.join("/"))
        }
    }
}

/// `corral stop`: unload a model (a generate with `keep_alive: 0`, as Ollama does). A model
/// that is not loaded is already stopped: only one the store lacks is an error.
pub async fn stop(client: &Client, model: &str) -> anyhow::Result<()> {
    let req = GenerateRequest {
        model: model.to_string(),
        keep_alive: Some(serde_json::json!(0)),
        stream: Some(false),
        ..Default::default()
    };
    client
        .stream("/api/generate", &req, |_: GenerateResponse| Ok(()))
        .await
        .map_err(|e| {
            if crate::run::is_not_found(&e) {
                anyhow::anyhow!("couldn't find model \"{model}\" to stop")
            } else {
                e
            }
        })
}

/// `corral cp`.
pub async fn copy(client: &Client, source: &str, destination: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "source": source, "destination": destination });
    client
        .send_ok(reqwest::Method::POST, "/api/copy", &body)
        .await?;
    println!("copied '{source}' to '{destination}'");
    Ok(())
}

/// `corral rm`.
pub async fn remove(client: &Client, models: &[String]) -> anyhow::Result<()> {
    for m in models {
        client
            .send_ok(
                reqwest::Method::DELETE,
                "/api/delete",
                &serde_json::json!({ "model": m }),
            )
            .await?;
        println!("deleted '{m}'");
    }
    Ok(())
}

/// `corral show` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// Model to describe.
    pub model: String,
    /// Show the Modelfile.
    #[arg(long)]
    pub modelfile: bool,
    /// Show the parameters.
    #[arg(long)]
    pub parameters: bool,
    /// Show the template.
    #[arg(long)]
    pub template: bool,
    /// Show the system message.
    #[arg(long)]
    pub system: bool,
    /// Show the license.
    #[arg(long)]
    pub license: bool,
    /// Show all model information, long arrays included.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `corral show`.
pub async fn show(client: &Client, args: ShowArgs) -> anyhow::Result<()> {
    let body = serde_json::json!({ "model": args.model, "verbose": args.verbose });
    let r: corral_api::ShowResponse = client.post("/api/show", &body).await?;
    let single = [
        (args.modelfile, &r.modelfile),
        (args.parameters, &r.parameters),
        (args.template, &r.template),
        (args.system, &r.system),
        (args.license, &r.license),
    ];
    if single.iter().filter(|(on, _)| *on).count() > 1 {
        anyhow::bail!(
            "only one of '--license', '--modelfile', '--parameters', '--system', or \
             '--template' can be specified"
        );
    }
    if let Some((_, text)) = single.iter().find(|(on, _)| *on) {
        println!("{text}");
        return Ok(());
    }
    print!("{}", show_text(&r, args.verbose));
    Ok(())
}

/// The sections `corral show` prints, as Ollama lays them out.
pub fn show_text(r: &corral_api::ShowResponse, verbose: bool) -> String {
    let arch = r
        .model_info
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or(&r.details.family);
    let info_u64 = |k: &str| {
        r.model_info
            .get(&format!("{arch}.{k}"))
            .and_then(|v| v.as_u64())
    };
    let mut rows: Vec<(String, String)> = vec![
        ("architecture".into(), arch.to_string()),
        ("parameters".into(), r.details.parameter_size.clone()),
    ];
    if let Some(n) = info_u64("context_length") {
        rows.push(("context length".into(), n.to_string()));
    }
    if let Some(n) = info_u64("embedding_length") {
        rows.push(("embedding length".into(), n.to_string()));
    }
    rows.push(("quantization".into(), r.details.quantization_level.clone()));
    if !r.requires.is_empty() {
        rows.push(("requires".into(), r.requires.clone()));
    }
    let section = |title: &str, rows: &[(String, String)]| -> String {
        let w = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut s = format!("  {title}\n");
        for (k, v) in rows {
            if v.is_empty() {
                s += &format!("    {k}\n");
            } else {
                s += &format!("    {k:<w$}    {v}\n");
            }
        }
        s + "\n"
    };
    let mut out = section("Model", &rows);
    let caps: Vec<(String, String)> = r
        .capabilities
        .iter()
        .map(|c| (c.clone(), String::new()))
        .collect();
    out += &section("Capabilities", &caps);
    if !r.parameters.is_empty() {
        let params: Vec<(String, String)> = r
            .parameters
            .lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        out += &section("Parameters", &params);
    }
    for (title, text) in [("System", &r.system), ("License", &r.license)] {
        if !text.is_empty() {
            let lines: Vec<String> = text
                .lines()
                .take(if verbose { usize::MAX } else { 2 })
                .map(|l| format!("    {l}"))
                .collect();
            out += &format!("  {title}\n{}\n\n", lines.join("\n"));
        }
    }
    if verbose {
        let info: Vec<(String, String)> = r
            .model_info
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        out += &section("Metadata", &info);
    }
    out
}

/// `corral devices`.
pub async fn devices(program: &Path, json: bool) -> anyhow::Result<()> {
    let program = program.to_path_buf();
    let workers = corral_api::options::parse_rpc_servers(
        &std::env::var("CORRAL_RPC_SERVERS").unwrap_or_default(),
    )
    .map_err(|e| anyhow::anyhow!("CORRAL_RPC_SERVERS: {e}"))?;
    let r = tokio::task::spawn_blocking(move || corral_devices::report(&program, &workers))
        .await?
        .map_err(|e| anyhow::anyhow!(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    print!("{}", device_text(&r));
    Ok(())
}

/// The report in words.
pub fn device_text(r: &corral_devices::Report) -> String {
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let quota = r
        .cpu
        .cgroup_cpu_quota
        .map(|q| format!(", cgroup quota {q:.1} CPUs"))
        .unwrap_or_default();
    let mut out = format!(
        "CPU:     {} ({} physical cores, {} threads, {}{quota})\nMemory:  {} total, {} available\n\n",
        r.cpu.model, r.cpu.physical_cores, r.cpu.logical_cores, r.cpu.simd, gib(r.memory_total), gib(r.memory_available)
    );
    if let Some(m) = &r.modules {
        out += &format!("Backends (from {}, {}):\n", m.dir, m.dir_from);
        let rows: Vec<Vec<String>> = m
            .modules
            .iter()
            .map(|x| {
                vec![
                    x.file.clone(),
                    if x.loaded { "loaded" } else { "-" }.to_string(),
                    x.note.clone(),
                ]
            })
            .collect();
        for line in table(&["MODULE", "STATE", "WHY"], &rows).lines() {
            out += &format!("  {line}\n");
        }
        if let Some(v) = &m.cpu_variant {
            out += &format!("CPU variant: {v}\n");
        }
        out += "\n";
    }
    let rows: Vec<Vec<String>> = r
        .devices
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.backend.clone(),
                d.kind.clone(),
                d.description.clone(),
                format!("{} / {}", gib(d.memory_free), gib(d.memory_total)),
            ]
        })
        .collect();
    out += &table(
        &["DEVICE", "BACKEND", "TYPE", "DESCRIPTION", "FREE / TOTAL"],
        &rows,
    );
    if let Some(e) = &r.probe_error {
        out += &format!("probe: {e}\n");
    }
    if !r.workers.is_empty() {
        out += &format!(
            "\nRPC workers (CORRAL_RPC_SERVERS; this build speaks protocol {}):\n",
            corral_devices::rpc::version_text(corral_devices::rpc::PROTOCOL)
        );
        let rows: Vec<Vec<String>> = r
            .workers
            .iter()
            .map(|w| {
                let (free, total) = w
                    .devices
                    .iter()
                    .fold((0, 0), |a, d| (a.0 + d.memory_free, a.1 + d.memory_total));
                vec![
                    w.endpoint.clone(),
                    if w.usable { "answers" } else { "unusable" }.to_string(),
                    w.protocol.clone().unwrap_or_else(|| "-".into()),
                    w.devices.len().to_string(),
                    if w.devices.is_empty() {
                        "-".into()
                    } else {
                        format!("{} / {}", gib(free), gib(total))
                    },
                    w.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        for line in table(
            &[
                "WORKER",
                "STATE",
                "PROTOCOL",
                "DEVICES",
                "FREE / TOTAL",
                "WHY",
            ],
            &rows,
        )
        .lines()
        {
            out += &format!("  {line}\n");
        }
    }
    out += "\nVisibility:\n";
    for d in &r.visibility {
        out += &format!("  {}\n", d.reason);
        for i in &d.ignored {
            out += &format!("    ignored {i}\n");
        }
    }
    out += &format!(
        "\nModels run on: {} ({})\n",
        r.decision.to_uppercase(),
        r.reason
    );
    out
}
