//! Corral's HTTP server: Ollama's `/api/*` on top of the model store and supervised runners.
//!
//! Request flow: `routes` -> handler (`inference`, `manage`) -> validation into a typed job
//! -> `scheduler` (which model is loaded where) -> `runner` (the child process) -> events
//! streamed back as NDJSON.
//!
//! Architecture Invariant: this crate never links llama.cpp. A model runs in a child process,
//! and whatever happens to that process becomes an error message, never a dead server.

mod anthropic;
mod create;
mod embed;
mod error;
pub mod guard;
mod inference;
mod json;
mod manage;
mod metrics;
mod models;
mod openai;
mod output;
mod runner;
mod scheduler;
mod sse;
mod tls;
mod transfer;
mod weights;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use corral_api::duration::KeepAlive;
use corral_store::Store;

pub use error::ApiError;
pub use guard::Security;
pub use runner::RunnerCommand;
use scheduler::Scheduler;
pub use tls::TlsFiles;

/// Server settings, already resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub models_dir: PathBuf,
    pub keep_alive: KeepAlive,
    pub load_timeout: Duration,
    /// A request that gets no token for this long ends with an error; its runner is replaced.
    pub stall_timeout: Duration,
    /// A registry transfer that receives nothing for this long is retried.
    pub registry_stall_timeout: Duration,
    pub threads: u32,
    /// Requests each model serves at once (a model's `num_parallel` overrides it).
    pub num_parallel: u32,
    /// The default context length (`CORRAL_CONTEXT_LENGTH`); `None`: 4096. Clamped to each
    /// model's training length.
    pub context_length: Option<u32>,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// The default KV cache type (`CORRAL_KV_CACHE_TYPE`); a model's `kv_cache_type` overrides it.
    pub kv_cache_type: corral_api::cache::KvCacheType,
    /// `CORRAL_FLASH_ATTENTION`.
    pub flash_attention: corral_api::cache::FlashAttention,
    /// `CORRAL_RPC_SERVERS`: RPC workers (`host:port`) every runner adds as devices.
    pub rpc_servers: Vec<String>,
    /// Requests a model may have waiting beyond its parallel slots before 503.
    pub max_queue: usize,
    pub max_loaded_models: usize,
    /// Keep unreferenced blobs at start-up (otherwise those older than an hour are removed).
    pub noprune: bool,
    pub runner: RunnerCommand,
    /// Host, Origin, API key and body-size rules (`guard`).
    pub security: Security,
    /// Serve HTTPS with these PEM files.
    pub tls: Option<TlsFiles>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    scheduler: Arc<Scheduler>,
    /// GGUF metadata by model blob, read once.
    gguf: Arc<
        std::sync::Mutex<
            std::collections::HashMap<corral_store::Digest, Arc<corral_gguf::GgufInfo>>,
        >,
    >,
    /// Where models run (`CORRAL_DEVICE`, visibility variables, the probe at start).
    devices: Arc<DeviceState>,
    /// Becomes true when the server starts shutting down; open streams end with an error line.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// What `/metrics` reports.
    metrics: Arc<metrics::Metrics>,
}

/// The device decision made at start.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub mode: corral_devices::DeviceMode,
    /// GPUs models may use (none on a CPU build or with them hidden).
    pub gpus: Vec<corral_devices::ProbedDevice>,
}

/// The router with every endpoint, behind the guard's checks.
pub fn router(state: AppState) -> Router {
    let guard = guard::Guard::new(state.config.addr, &state.config.security);
    let mut router = Router::new();
    if state.config.metrics {
        router = router.route("/metrics", get(metrics::metrics));
    }
    router
        .route("/", get(manage::root).head(manage::root))
        .route("/api/version", get(manage::version))
        .route("/api/tags", get(manage::tags))
        .route("/api/ps", get(manage::ps))
        .route("/api/show", post(manage::show))
        .route("/api/create", post(manage::create))
        .route("/api/copy", post(manage::copy))
        .route("/api/delete", axum::routing::delete(manage::delete))
        .route(
            "/api/blobs/{digest}",
            post(manage::post_blob).head(manage::head_blob),
        )
        .route("/api/pull", post(transfer::pull))
        .route("/api/push", post(transfer::push))
        .route("/api/generate", post(inference::generate))
        .route("/api/chat", post(inference::chat))
        .route("/api/embed", post(embed::embed))
        .route("/api/embeddings", post(embed::embeddings))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/responses", post(openai::responses))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        // Unknown routes and methods answer in their route family's error shape (an SDK reads
        // the message from it), with the words Ollama's router uses.
        .fallback(|uri: axum::http::Uri| async move {
            error::family_error(
                uri.path(),
                axum::http::StatusCode::NOT_FOUND,
                "404 page not found".into(),
            )
        })
        .method_not_allowed_fallback(|uri: axum::http::Uri| async move {
            error::family_error(
                uri.path(),
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "405 method not allowed".into(),
            )
        })
        // The guard caps bodies itself (blob uploads, model files, are exempt), answering in
        // each route family's error shape; axum's own limit would answer in plain text.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            guard.clone(),
            guard::check_request,
        ))
        .layer(guard::cors())
        .layer(middleware::from_fn_with_state(guard, guard::check_site))
        .with_state(state)
}

/// Run the server until SIGTERM or Ctrl-C, then stop every runner.
pub async fn serve(config: Config) -> Result<(), String> {
    let store = Store::open(&config.models_dir)
        .map_err(|e| e.to_string())?
        .keep_replaced(config.noprune);
    let mut config = config;
    let program = config.runner.program.clone();
    // No RPC workers here: runners probe theirs at each load, and a silent worker would hold
    // the start up for the probe's 3 s.
    let report = tokio::task::spawn_blocking(move || corral_devices::report(&program, &[]))
        .await
        .map_err(|e| e.to_string())??;
    tracing::info!(
        cpu = %report.cpu.model, physical_cores = report.cpu.physical_cores, simd = %report.cpu.simd,
        memory_gib = format!("{:.1}", report.memory_total as f64 / (1u64 << 30) as f64), "system"
    );
    if let Some(m) = &report.modules {
        tracing::info!(dir = %m.dir, from = %m.dir_from, cpu_variant = ?m.cpu_variant, "backend modules");
        for x in &m.modules {
            tracing::info!(module = %x.file, loaded = x.loaded, "{}", x.note);
        }
    }
    for d in &report.visibility {
        tracing::info!(variable = %d.variable, ignored = ?d.ignored, "{}", d.reason);
    }
    if let Some(e) = &report.probe_error {
        tracing::warn!("{e}");
    }
    tracing::info!(decision = %report.decision, "models run on {}: {}", report.decision.to_uppercase(), report.reason);
    config.runner.env = corral_devices::runner_env(&report.visibility);
    let devices = Arc::new(DeviceState {
        mode: report.mode,
        gpus: corral_devices::place(report.mode, &report.visibility, &Ok(report.devices.clone()))
            .gpus,
    });
    if !config.noprune {
        let store = store.clone();
        let removed = tokio::task::spawn_blocking(move || store.prune(Duration::from_secs(3600)))
            .await
            .unwrap_or_default();
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), "removed unused blobs");
        }
    }
    let limits = scheduler::Limits {
        max_loaded: config.max_loaded_models,
        max_queue: config.max_queue,
        load_timeout: config.load_timeout,
    };
    let tls = match &config.tls {
        Some(files) => Some(tls::server_config(files)?),
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let scheduler = Scheduler::new(config.runner.clone(), limits, metrics.clone());
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.addr))?;
    // Port 0 asks the system for a free port: the log, and the Host check, need the real one.
    if let Ok(bound) = listener.local_addr() {
        config.addr = bound;
    }
    tracing::info!(
        addr = %config.addr,
        models = %config.models_dir.display(),
        threads = config.threads,
        parallel = config.num_parallel,
        context_length = ?config.context_length,
        kv_cache_type = %config.kv_cache_type,
        flash_attention = %config.flash_attention,
        metrics = config.metrics,
        https = tls.is_some(),
        api_key = !config.security.api_keys.is_empty(),
        max_body = %guard::human_size(config.security.max_body),
        "Listening"
    );
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        config: Arc::new(config),
        store,
        scheduler: scheduler.clone(),
        gguf: Default::default(),
        devices,
        shutdown: shutdown_rx,
        metrics,
    };
    let app = router(state);
    let closing = scheduler.clone();
    let stop = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: ending open answers");
        closing.close();
        let _ = shutdown_tx.send(true);
    };
    match tls {
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls).map_err(|e| e.to_string())?;
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    tracing::info!("stopping runners");
    scheduler.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
