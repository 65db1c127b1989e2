//! The client half of the `corral` command: each subcommand talks to a running server over
//! its HTTP API, exactly as Ollama's CLI does, so it works against either.

pub mod client;
pub mod create;
pub mod format;
pub mod host;
pub mod repl;
pub mod run;
pub mod transfer;

pub use create::{create, CreateArgs};
pub use run::{run, RunArgs};

/// A command the user stopped with Ctrl-C: `corral` exits with status 130 (128 + SIGINT), as
/// shells report it, and prints nothing more.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Standard output was closed by its reader (`corral show -v | head -1`): the command ends as
/// Unix commands (and Ollama's Go CLI) do there, by SIGPIPE, without a message.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Whether `e` is [`StdoutClosed`] (as itself, or inside an I/O error from a write).
pub fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<StdoutClosed>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// Write `text` to standard output and flush it; a closed pipe is [`StdoutClosed`]. Not
/// `print!`, which panics there.
pub(crate) fn out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if text.is_empty() {
        return Ok(());
    }
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => std::io::Error::other(StdoutClosed),
            _ => e,
        })
}

use std::path::Path;

use corral_api::{GenerateRequest, GenerateResponse, ListResponse, Metrics, ProcessResponse};

use crate::client::Client;
use crate::format::{go_duration, human_bytes, human_time, table};

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
                // The tokens evaluated in that time: the cache's took none.
                rate(
                    m.prompt_eval_count.saturating_sub(m.prompt_cached_count),
                    m.prompt_eval_duration
                )
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
    out(&table(&["NAME", "ID", "SIZE", "MODIFIED"], &rows))?;
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
                // Past its time, a model is being unloaded (Ollama's words).
                if m.expires_at < now {
                    "Stopping...".to_string()
                } else {
                    human_time(m.expires_at, now)
                },
            ]
        })
        .collect();
    out(&table(
        &["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"],
        &rows,
    ))?;
    for m in resp.models.iter().filter(|m| m.warning.is_some()) {
        out(&format!(
            "warning: {}: {}\n",
            m.name,
            m.warning.as_deref().unwrap_or_default()
        ))?;
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

/// `corral -v`: the server's version, as Ollama's `-v` asks its server, with the Ollama API
/// level it speaks; warnings, as Ollama's, when no server answers or the client differs.
pub async fn version(client: Option<&Client>, client_version: &str) -> anyhow::Result<()> {
    let server = match client {
        Some(c) => c
            .get::<corral_api::VersionResponse>("/api/version")
            .await
            .ok(),
        None => None,
    };
    match server {
        Some(v) => {
            let own = v.corral_version.as_deref().unwrap_or("unknown");
            out(&format!(
                "corral version is {own} (Ollama API {})\n",
                v.version
            ))?;
            if own != client_version {
                eprintln!("Warning: client version is {client_version}");
            }
        }
        None => {
            eprintln!("Warning: could not connect to a running Corral instance");
            eprintln!("Warning: client version is {client_version}");
        }
    }
    Ok(())
}

/// `corral cp`.
pub async fn copy(client: &Client, source: &str, destination: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "source": source, "destination": destination });
    client
        .send_ok(reqwest::Method::POST, "/api/copy", &body)
        .await?;
    out(&format!("copied '{source}' to '{destination}'\n"))?;
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
        out(&format!("deleted '{m}'\n"))?;
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
        out(&format!("{text}\n"))?;
        return Ok(());
    }
    out(&show_text(&r, args.verbose))?;
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
        out(&format!("{}\n", serde_json::to_string_pretty(&r)?))?;
        return Ok(());
    }
    out(&device_text(&r))?;
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
