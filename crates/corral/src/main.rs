//! `corral`: a thin binary that parses the command line and hands over to the library crates.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corral_api::duration::{KeepAlive, DEFAULT_KEEP_ALIVE};
use corral_cli::client::Client;
use corral_cli::host::Host;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Large language models, run locally",
    disable_version_flag = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Show version information: the server's, and the client's where it differs (`-v` as
    /// Ollama's, `-V` as clap's).
    #[arg(short = 'v', short_alias = 'V', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand)]
enum Commands {
    /// Start the server.
    #[command(alias = "start")]
    Serve(Box<ServeArgs>),
    /// Create a model from a Modelfile.
    Create(corral_cli::CreateArgs),
    /// Run a model.
    Run(corral_cli::RunArgs),
    /// Pull a model from a registry.
    Pull(corral_cli::transfer::TransferArgs),
    /// Push a model to a registry.
    Push(corral_cli::transfer::TransferArgs),
    /// List models.
    #[command(alias = "ls")]
    List {
        /// Only models whose name starts with this.
        prefix: Option<String>,
    },
    /// List running models.
    Ps {
        /// Only models whose name starts with this.
        prefix: Option<String>,
    },
    /// Show information for a model.
    Show(corral_cli::ShowArgs),
    /// Copy a model.
    Cp { source: String, destination: String },
    /// Remove models.
    Rm {
        #[arg(required = true)]
        models: Vec<String>,
    },
    /// Stop a running model.
    Stop {
        /// Model to unload.
        model: String,
    },
    /// Show the CPU, memory and GPUs found, and where models will run.
    Devices {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve this machine's devices to other machines' Corral over ggml's RPC protocol.
    RpcWorker(corral_runner::RpcWorkerArgs),
    /// Print the devices llama.cpp sees as JSON (run by `devices` and the server as a child).
    #[command(hide = true)]
    Probe,
    /// Run one model for the server (started by the server, not by people).
    #[command(hide = true)]
    Runner(corral_runner::RunnerArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (OLLAMA_HOST is used when CORRAL_HOST is unset).
    #[arg(long, env = "CORRAL_HOST")]
    host: Option<String>,
    /// Model store folder (OLLAMA_MODELS is used when CORRAL_MODELS is unset; default ~/.corral/models).
    #[arg(long, env = "CORRAL_MODELS")]
    models: Option<std::path::PathBuf>,
    /// How long an idle model stays loaded (OLLAMA_KEEP_ALIVE is used when this is unset).
    #[arg(long, env = "CORRAL_KEEP_ALIVE")]
    keep_alive: Option<String>,
    /// Longest wait for a runner to load its model (OLLAMA_LOAD_TIMEOUT is used when unset).
    #[arg(long, env = "CORRAL_LOAD_TIMEOUT")]
    load_timeout: Option<String>,
    /// A request with no new token for this long fails and its runner is replaced [default: 60s].
    #[arg(long, env = "CORRAL_STALL_TIMEOUT")]
    stall_timeout: Option<String>,
    /// A pull or push part that receives nothing for this long is retried [default: 30s].
    #[arg(long, env = "CORRAL_REGISTRY_STALL_TIMEOUT")]
    registry_stall_timeout: Option<String>,
    /// CPU threads per runner (default: physical cores).
    #[arg(long, env = "CORRAL_NUM_THREADS")]
    threads: Option<u32>,
    /// Requests each model serves at once, decoded in one batch (OLLAMA_NUM_PARALLEL) [default: 1].
    #[arg(long, env = "CORRAL_NUM_PARALLEL")]
    num_parallel: Option<u32>,
    /// Default context length in tokens, clamped to each model's training length
    /// (OLLAMA_CONTEXT_LENGTH) [default: 4096].
    #[arg(long, env = "CORRAL_CONTEXT_LENGTH")]
    context_length: Option<u32>,
    /// KV cache type: f16, q8_0 or q4_0 (OLLAMA_KV_CACHE_TYPE) [default: f16].
    #[arg(long, env = "CORRAL_KV_CACHE_TYPE")]
    kv_cache_type: Option<String>,
    /// Flash attention: auto, 1/on or 0/off (OLLAMA_FLASH_ATTENTION) [default: auto].
    #[arg(long, env = "CORRAL_FLASH_ATTENTION")]
    flash_attention: Option<String>,
    /// RPC workers (`host:port`, comma-separated, from `corral rpc-worker`) whose devices
    /// take a model's layers like GPUs.
    #[arg(long, env = "CORRAL_RPC_SERVERS")]
    rpc_servers: Option<String>,
    /// Serve Prometheus metrics at /metrics; 0 or false turns them off [default: on].
    #[arg(long, env = "CORRAL_METRICS")]
    metrics: Option<String>,
    /// Requests that may wait for a model beyond its parallel slots (OLLAMA_MAX_QUEUE) [default: 512].
    #[arg(long, env = "CORRAL_MAX_QUEUE")]
    max_queue: Option<usize>,
    /// Models loaded at once (OLLAMA_MAX_LOADED_MODELS) [default: 3].
    #[arg(long, env = "CORRAL_MAX_LOADED_MODELS")]
    max_loaded_models: Option<usize>,
    /// Keep unused blobs at start-up instead of removing those older than an hour (OLLAMA_NOPRUNE).
    #[arg(long, env = "CORRAL_NOPRUNE")]
    noprune: Option<String>,
    /// Extra origins browser pages may call from, comma separated, `*` wildcards (OLLAMA_ORIGINS).
    #[arg(long, env = "CORRAL_ORIGINS")]
    origins: Option<String>,
    /// Require this key as `Authorization: Bearer <key>` on every route but `/`.
    #[arg(long, env = "CORRAL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A file of accepted API keys, one a line.
    #[arg(long, env = "CORRAL_API_KEY_FILE")]
    api_key_file: Option<std::path::PathBuf>,
    /// Largest request body (blob uploads are exempt) [default: 32MiB].
    #[arg(long, env = "CORRAL_MAX_BODY")]
    max_body: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "CORRAL_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "CORRAL_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
}

/// The guard's settings: origins, API keys, body limit; TLS files.
fn security(
    args: &mut ServeArgs,
) -> anyhow::Result<(corral_server::Security, Option<corral_server::TlsFiles>)> {
    let origins = setting(args.origins.take(), "OLLAMA_ORIGINS")
        .map(|s| s.split(',').map(|o| o.trim().to_string()).collect())
        .unwrap_or_default();
    let mut api_keys = Vec::new();
    if let Some(k) = args.api_key.take().filter(|k| !k.trim().is_empty()) {
        api_keys.push(k.trim().to_string());
    }
    if let Some(f) = args
        .api_key_file
        .take()
        .filter(|f| !f.as_os_str().is_empty())
    {
        api_keys.extend(corral_cli::client::read_key_file(&f)?);
    }
    let max_body = match args.max_body.take().filter(|s| !s.trim().is_empty()) {
        Some(s) => corral_server::guard::parse_size(&s)
            .map_err(|e| anyhow::anyhow!("CORRAL_MAX_BODY: {e}"))?,
        None => corral_server::guard::DEFAULT_MAX_BODY,
    };
    let nonempty = |p: Option<std::path::PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    let tls = match (
        nonempty(args.tls_cert.take()),
        nonempty(args.tls_key.take()),
    ) {
        (Some(cert), Some(key)) => Some(corral_server::TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("CORRAL_TLS_CERT is set but CORRAL_TLS_KEY is not"),
        (None, Some(_)) => anyhow::bail!("CORRAL_TLS_KEY is set but CORRAL_TLS_CERT is not"),
    };
    Ok((
        corral_server::Security {
            origins,
            api_keys,
            max_body,
        },
        tls,
    ))
}

/// Settings as Ollama reads them: spaces and quotes around a value are not part of it, so
/// `OLLAMA_HOST="0.0.0.0"` from a Compose file or a systemd unit means 0.0.0.0. Done once, before
/// anything reads the environment (clap's `env` options included) and before any thread
/// starts; the runners inherit the cleaned values.
fn clean_environment() {
    for (key, value) in std::env::vars_os() {
        let (Some(k), Some(v)) = (key.to_str(), value.to_str()) else {
            continue;
        };
        if !(k.starts_with("CORRAL_") || k.starts_with("OLLAMA_")) {
            continue;
        }
        let clean = v.trim().trim_matches(|c| c == '"' || c == '\'');
        if clean.is_empty() {
            // Empty is unset, as Ollama reads it (`CORRAL_MODELS=` means the default store).
            std::env::remove_var(k);
        } else if clean != v {
            std::env::set_var(k, clean);
        }
    }
}

/// The server's numeric settings that clap reads from the environment: a value that is not a
/// number is named here, by its variable, in one line (clap's own error names a flag the user
/// never typed).
fn check_number_settings() -> Result<(), String> {
    for var in [
        "CORRAL_NUM_THREADS",
        "CORRAL_NUM_PARALLEL",
        "CORRAL_CONTEXT_LENGTH",
        "CORRAL_MAX_QUEUE",
        "CORRAL_MAX_LOADED_MODELS",
    ] {
        // Ollama's variable is read when Corral's is not set: named the same way then.
        let ollama = var.replace("CORRAL_", "OLLAMA_");
        let set = std::env::var(var)
            .map(|v| (var, v))
            .or_else(|_| std::env::var(&ollama).map(|v| (ollama.as_str(), v)));
        if let Ok((var, v)) = set {
            if v.parse::<u32>().is_err() {
                return Err(format!(
                    "{var}: {v:?} is not a number (a whole number, 0 to {})",
                    u32::MAX
                ));
            }
        }
    }
    Ok(())
}

/// A boolean setting as Go's `strconv.ParseBool` reads it (Ollama's rule): `1`, `t`, `true`
/// in any of its cases are true, `0`, `f`, `false` false, and any other value set is true.
fn flag_setting(v: Option<String>) -> bool {
    match v.as_deref() {
        None => false,
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
        Some(_) => true,
    }
}

/// A setting from its CORRAL_ value, else the OLLAMA_ one.
fn setting(corral: Option<String>, ollama_var: &str) -> Option<String> {
    corral
        .or_else(|| std::env::var(ollama_var).ok())
        .filter(|v| !v.trim().is_empty())
}

fn not_a_duration(var: &str, value: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{var}: {value:?} is not a duration (a Go duration such as \"5m\" or \"1h30m\", or seconds)"
    )
}

/// A duration setting (Go duration or seconds); zero or negative means the default.
fn duration_setting(
    flag: Option<String>,
    name: &str,
    ollama_var: &str,
    default_secs: u64,
) -> anyhow::Result<Duration> {
    match setting(flag, ollama_var) {
        Some(t) => match KeepAlive::parse(&t).map_err(|_| not_a_duration(name, &t))? {
            KeepAlive::For(d) if !d.is_zero() => Ok(d),
            _ => Ok(Duration::from_secs(default_secs)),
        },
        None => Ok(Duration::from_secs(default_secs)),
    }
}

fn init_logging(runner: bool) {
    use std::io::IsTerminal;
    // The same switch rule as every other (`FALSE` and `f` are off too).
    let debug = ["CORRAL_DEBUG", "OLLAMA_DEBUG"]
        .iter()
        .any(|v| flag_setting(std::env::var(v).ok()));
    // llama.cpp's own info lines are many; a runner keeps them for debug runs, so that the log
    // tail the server quotes after a crash holds warnings and errors.
    let level = match (runner, debug) {
        (false, false) => "info",
        (false, true) => "debug",
        (true, false) => "info,llama-cpp-2=warn",
        (true, true) => "debug,llama-cpp-2=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let (security, tls) = security(&mut args)?;
    let host = match setting(args.host, "OLLAMA_HOST") {
        Some(h) => Host::parse(&h)?,
        None => Host::parse("")?,
    };
    let models_dir = match args.models {
        Some(m) => m,
        None => corral_store::Store::root_from_env(),
    };
    let keep_alive = match setting(args.keep_alive, "OLLAMA_KEEP_ALIVE") {
        Some(k) => KeepAlive::parse(&k).map_err(|e| anyhow::anyhow!("CORRAL_KEEP_ALIVE: {e}"))?,
        None => DEFAULT_KEEP_ALIVE,
    };
    // Zero or a negative value means no limit, as for Ollama (a very slow disk and a huge
    // model); the stall timeout still ends a runner that stops answering once loaded.
    let load_timeout = match setting(args.load_timeout, "OLLAMA_LOAD_TIMEOUT") {
        Some(t) => {
            match KeepAlive::parse(&t).map_err(|_| not_a_duration("CORRAL_LOAD_TIMEOUT", &t))? {
                KeepAlive::For(d) if !d.is_zero() => d,
                _ => NO_LIMIT,
            }
        }
        None => Duration::from_secs(300),
    };
    let stall_timeout = duration_setting(
        args.stall_timeout,
        "CORRAL_STALL_TIMEOUT",
        "OLLAMA_STALL_TIMEOUT",
        60,
    )?;
    let registry_stall_timeout = duration_setting(
        args.registry_stall_timeout,
        "CORRAL_REGISTRY_STALL_TIMEOUT",
        "OLLAMA_REGISTRY_STALL_TIMEOUT",
        30,
    )?;
    let number = |v: Option<usize>, var: &str, default: usize| -> anyhow::Result<usize> {
        match v {
            Some(n) => Ok(n),
            None => match setting(None, var) {
                Some(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{var}: {s:?} is not a number")),
                None => Ok(default),
            },
        }
    };
    let config = corral_server::Config {
        addr: host.socket_addr()?,
        models_dir,
        keep_alive,
        load_timeout,
        stall_timeout,
        registry_stall_timeout,
        threads: args
            .threads
            .unwrap_or_else(|| corral_os::default_threads() as u32),
        num_parallel: match number(
            args.num_parallel.map(|n| n as usize),
            "OLLAMA_NUM_PARALLEL",
            1,
        )? {
            // As a model's num_parallel: each slot is a context's worth of KV cache.
            n if n > 64 => anyhow::bail!("CORRAL_NUM_PARALLEL: {n} is over the most, 64"),
            n => n.max(1) as u32,
        },
        context_length: match number(
            args.context_length.map(|n| n as usize),
            "OLLAMA_CONTEXT_LENGTH",
            0,
        )? {
            0 => None,
            n if n > 1 << 20 => anyhow::bail!("context length {n} is over the most, 1048576"),
            n => Some(n as u32),
        },
        kv_cache_type: setting(args.kv_cache_type.take(), "OLLAMA_KV_CACHE_TYPE")
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("CORRAL_KV_CACHE_TYPE: {e}"))?,
        flash_attention: setting(args.flash_attention.take(), "OLLAMA_FLASH_ATTENTION")
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("CORRAL_FLASH_ATTENTION: {e}"))?,
        rpc_servers: corral_api::options::parse_rpc_servers(
            args.rpc_servers.as_deref().unwrap_or(""),
        )
        .map_err(|e| anyhow::anyhow!("CORRAL_RPC_SERVERS: {e}"))?,
        metrics: args
            .metrics
            .as_deref()
            .is_none_or(|v| !matches!(v.trim(), "0" | "false" | "off")),
        max_queue: number(args.max_queue, "OLLAMA_MAX_QUEUE", 512)?,
        // 0 is Ollama's "automatic": its default for a machine without GPUs, 3.
        max_loaded_models: match number(args.max_loaded_models, "OLLAMA_MAX_LOADED_MODELS", 3)? {
            0 => 3,
            n => n,
        },
        noprune: flag_setting(setting(args.noprune, "OLLAMA_NOPRUNE")),
        runner: corral_server::RunnerCommand {
            program: std::env::current_exe()?,
            prefix_args: vec!["runner".into()],
            env: Vec::new(),
        },
        security,
        tls,
    };
    // A default cache no model could use with flash attention off would fail every request:
    // refused here, as a setting of the server's.
    if config.kv_cache_type.is_quantized()
        && config.flash_attention == corral_api::cache::FlashAttention::Off
    {
        anyhow::bail!(
            "CORRAL_KV_CACHE_TYPE {} needs flash attention, which CORRAL_FLASH_ATTENTION=off turns off",
            config.kv_cache_type.as_str()
        );
    }
    corral_server::serve(config)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

/// The exit status of a command that runs without the async runtime, its error printed.
fn exit_code(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A wait with no limit: a century, which any clock arithmetic still holds.
const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn main() -> ExitCode {
    clean_environment();
    if matches!(std::env::args().nth(1).as_deref(), Some("serve" | "start")) {
        if let Err(e) = check_number_settings() {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) if !cli.version => c,
        // `corral -v`, or flags alone (clap prints the help for no arguments at all).
        _ => return async_main(None),
    };
    if let Commands::Probe = command {
        return exit_code(corral_runner::probe());
    }
    if let Commands::RpcWorker(args) = command {
        init_logging(true);
        return exit_code(corral_runner::rpc_worker(args));
    }
    if let Commands::Runner(args) = command {
        // The runner owns llama.cpp on its main thread and needs no async runtime.
        init_logging(true);
        return exit_code(corral_runner::run(args));
    }
    async_main(Some(command))
}

/// The commands that need the async runtime; `None` is `corral -v`.
fn async_main(command: Option<Commands>) -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async {
        let Some(command) = command else {
            return corral_cli::version(client().ok().as_ref(), env!("CARGO_PKG_VERSION")).await;
        };
        match command {
            Commands::Serve(args) => {
                init_logging(false);
                serve(*args).await
            }
            Commands::Create(args) => corral_cli::create(&client()?, args).await,
            Commands::Run(args) => corral_cli::run(&client()?, args).await,
            Commands::Pull(args) => corral_cli::transfer::pull(&client()?, &args).await,
            Commands::Push(args) => corral_cli::transfer::push(&client()?, &args).await,
            Commands::List { prefix } => corral_cli::list(&client()?, prefix.as_deref()).await,
            Commands::Ps { prefix } => corral_cli::ps(&client()?, prefix.as_deref()).await,
            Commands::Stop { model } => corral_cli::stop(&client()?, &model).await,
            Commands::Show(args) => corral_cli::show(&client()?, args).await,
            Commands::Cp {
                source,
                destination,
            } => corral_cli::copy(&client()?, &source, &destination).await,
            Commands::Rm { models } => corral_cli::remove(&client()?, &models).await,
            Commands::Devices { json } => {
                corral_cli::devices(&std::env::current_exe()?, json).await
            }
            Commands::Runner(_) | Commands::Probe | Commands::RpcWorker(_) => {
                unreachable!("handled above")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<corral_cli::Interrupted>() => ExitCode::from(130),
        Err(e) if corral_cli::stdout_closed(&e) => corral_os::die_of_broken_pipe(),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client() -> anyhow::Result<Client> {
    Client::from_env(&Host::from_env()?)
}
