//! Corral's HTTP server: Ollama's `/api/*` on top of the model store and supervised runners.
//!
//! Request flow: `routes` -> handler (`inference`, `manage`) -> validation into a typed job
//! -> `scheduler` (which model is loaded where) -> `runner` (the child process) -> events
//! streamed back as NDJSON.
//!
//! Architecture Invariant: this crate never links llama.cpp. A model runs in a child process,
//! and whatever happens to that process becomes an error message, never a dead server.

mod create;
mod error;
mod inference;
mod json;
mod manage;
mod models;
mod runner;
mod scheduler;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use corral_api::duration::KeepAlive;
use corral_store::Store;

pub use error::ApiError;
pub use runner::RunnerCommand;
use scheduler::Scheduler;

/// Server settings, already resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub models_dir: PathBuf,
    pub keep_alive: KeepAlive,
    pub load_timeout: Duration,
    pub threads: u32,
    pub runner: RunnerCommand,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    scheduler: Arc<Scheduler>,
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(manage::root).head(manage::root))
        .route("/api/version", get(manage::version))
        .route("/api/tags", get(manage::tags))
        .route("/api/ps", get(manage::ps))
        .route("/api/show", post(manage::show))
        .route("/api/create", post(manage::create))
        .route(
            "/api/blobs/{digest}",
            post(manage::post_blob).head(manage::head_blob),
        )
        .route("/api/generate", post(inference::generate))
        .route("/api/chat", post(inference::chat))
        // Blob uploads are model files: no body limit there beyond the disk.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Run the server until SIGTERM or Ctrl-C, then stop every runner.
pub async fn serve(config: Config) -> Result<(), String> {
    let store = Store::open(&config.models_dir).map_err(|e| e.to_string())?;
    let scheduler = Scheduler::new(config.runner.clone(), config.load_timeout);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.addr))?;
    tracing::info!(addr = %config.addr, models = %config.models_dir.display(), threads = config.threads, "Listening");
    let state = AppState {
        config: Arc::new(config),
        store,
        scheduler: scheduler.clone(),
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("shutting down: stopping runners");
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
