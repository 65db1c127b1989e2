//! `GET /metrics`: what the server is doing, in Prometheus' text format (prometheus-client).
//!
//! Nothing here sits on the token path. A request takes its model's handles (counters and
//! gauges are atomics shared with the registry) when it arrives and touches them again only
//! at a few moments: when it gets a slot, at its first token, and at its end. The families'
//! own lock is taken then, not per token. Values that describe loaded runners (KV cache use,
//! GPU layers, models loaded) are read from the scheduler when Prometheus scrapes.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    model: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    model: String,
    reason: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Why a runner went away, for `corral_runner_exits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// It died on its own (a crash in llama.cpp or a driver, a signal).
    Crash,
    /// It stopped making progress (a request's stall timeout, a failed health check).
    Stall,
    /// It could not load the model.
    LoadFailed,
    /// Its keep_alive ran out.
    Idle,
    /// It was unloaded to make room for another model.
    Evicted,
    /// It was unloaded on request (`corral stop`, `keep_alive: 0`), reloaded with other
    /// settings, or stopped with the server.
    Unloaded,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Crash => "crash",
            ExitReason::Stall => "stall",
            ExitReason::LoadFailed => "load_failed",
            ExitReason::Idle => "idle",
            ExitReason::Evicted => "evicted",
            ExitReason::Unloaded => "unloaded",
        }
    }
}

/// A loaded model as the scrape sees it.
pub struct LoadedModel {
    pub name: String,
    pub kv_used: u64,
    pub kv_total: u64,
    pub gpu_layers: u32,
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    running: Family<ModelLabel, Gauge>,
    waiting: Family<ModelLabel, Gauge>,
    kv_usage: Family<ModelLabel, Gauge<f64, AtomicU64>>,
    duration: Histograms<EndpointLabels>,
    ttft: Histograms<ModelLabel>,
    prompt_tokens: Family<ModelLabel, Counter>,
    prompt_cached: Family<ModelLabel, Counter>,
    generation_tokens: Family<ModelLabel, Counter>,
    models_loaded: Gauge,
    load_seconds: Histograms<ModelLabel>,
    exits: Family<ExitLabels, Counter>,
    gpu_layers: Family<ModelLabel, Gauge>,
    truncations: Family<ModelLabel, Counter>,
    drafted: Family<ModelLabel, Counter>,
    draft_accepted: Family<ModelLabel, Counter>,
}

/// Seconds from 10 ms to about 20 minutes.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            running: Family::default(),
            waiting: Family::default(),
            kv_usage: Family::default(),
            duration: Family::new_with_constructor(seconds),
            ttft: Family::new_with_constructor(seconds),
            prompt_tokens: Family::default(),
            prompt_cached: Family::default(),
            generation_tokens: Family::default(),
            models_loaded: Gauge::default(),
            load_seconds: Family::new_with_constructor(seconds),
            exits: Family::default(),
            gpu_layers: Family::default(),
            truncations: Family::default(),
            drafted: Family::default(),
            draft_accepted: Family::default(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "corral_requests_running",
            "Requests being decoded (holding a slot)",
            m.running.clone(),
        );
        registry.register(
            "corral_requests_waiting",
            "Requests waiting for a slot or for their model to load",
            m.waiting.clone(),
        );
        registry.register(
            "corral_kv_cache_usage_ratio",
            "KV cache cells held by running requests over the runner's cells (0 to 1)",
            m.kv_usage.clone(),
        );
        registry.register(
            "corral_request_duration_seconds",
            "Time from a request's arrival to its last byte",
            m.duration.clone(),
        );
        registry.register(
            "corral_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token",
            m.ttft.clone(),
        );
        registry.register(
            "corral_prompt_tokens",
            "Prompt tokens evaluated",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "corral_prompt_tokens_cached",
            "Prompt tokens reused from a slot's cache instead of evaluated",
            m.prompt_cached.clone(),
        );
        registry.register(
            "corral_generation_tokens",
            "Tokens generated",
            m.generation_tokens.clone(),
        );
        registry.register(
            "corral_models_loaded",
            "Models loaded in runners",
            m.models_loaded.clone(),
        );
        registry.register(
            "corral_model_load_seconds",
            "Time to load a model into a new runner",
            m.load_seconds.clone(),
        );
        registry.register(
            "corral_runner_exits",
            "Runners that went away, by reason (crash, stall, load_failed, idle, evicted, unloaded)",
            m.exits.clone(),
        );
        registry.register(
            "corral_gpu_layers",
            "Layers of a loaded model offloaded to a GPU",
            m.gpu_layers.clone(),
        );
        registry.register(
            "corral_prompt_truncations",
            "Prompts cut to fit the context",
            m.truncations.clone(),
        );
        registry.register(
            "corral_speculative_tokens",
            "Tokens proposed by speculative decoding (a draft model or prompt lookup)",
            m.drafted.clone(),
        );
        registry.register(
            "corral_speculative_tokens_accepted",
            "Proposed tokens the model confirmed",
            m.draft_accepted.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A request to `endpoint` for `model` has arrived: it waits until [`Tracker::started`].
    pub fn track(self: &Arc<Self>, model: &str, endpoint: &'static str) -> Tracker {
        let label = ModelLabel {
            model: model.to_string(),
        };
        let waiting = self.waiting.get_or_create(&label).clone();
        waiting.inc();
        Tracker {
            metrics: self.clone(),
            label,
            endpoint,
            arrived: Instant::now(),
            waiting: Some(waiting),
            running: None,
            first_token: false,
        }
    }

    pub fn model_loaded(&self, model: &str, seconds: f64) {
        self.load_seconds
            .get_or_create(&ModelLabel {
                model: model.to_string(),
            })
            .observe(seconds);
    }

    pub fn runner_exit(&self, model: &str, reason: ExitReason) {
        self.exits
            .get_or_create(&ExitLabels {
                model: model.to_string(),
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    /// The text Prometheus scrapes, with the loaded models' values as they are now.
    pub fn render(&self, loaded: &[LoadedModel]) -> String {
        self.kv_usage.clear();
        self.gpu_layers.clear();
        self.models_loaded.set(loaded.len() as i64);
        for m in loaded {
            let label = ModelLabel {
                model: m.name.clone(),
            };
            let ratio = if m.kv_total == 0 {
                0.0
            } else {
                m.kv_used as f64 / m.kv_total as f64
            };
            self.kv_usage.get_or_create(&label).set(ratio.min(1.0));
            self.gpu_layers
                .get_or_create(&label)
                .set(i64::from(m.gpu_layers));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One request's life in the metrics: waiting, then running, then gone (on drop, which also
/// records its duration; a client that goes away is counted too).
pub struct Tracker {
    metrics: Arc<Metrics>,
    label: ModelLabel,
    endpoint: &'static str,
    arrived: Instant,
    waiting: Option<Gauge>,
    running: Option<Gauge>,
    first_token: bool,
}

impl Tracker {
    /// The request has a slot in its runner.
    pub fn started(&mut self) {
        if let Some(w) = self.waiting.take() {
            w.dec();
            let r = self.metrics.running.get_or_create(&self.label).clone();
            r.inc();
            self.running = Some(r);
        }
    }

    /// A token arrived; only the first one costs anything.
    pub fn token(&mut self) {
        if !self.first_token {
            self.first_token = true;
            self.started();
            self.metrics
                .ttft
                .get_or_create(&self.label)
                .observe(self.arrived.elapsed().as_secs_f64());
        }
    }

    /// The request's counts, from its final event.
    /// An embedding request's prompt tokens.
    pub fn embedded(&mut self, prompt: u64) {
        self.metrics
            .prompt_tokens
            .get_or_create(&self.label)
            .inc_by(prompt);
    }

    pub fn finished(&mut self, d: &corral_api::runner::DoneInfo) {
        let m = &self.metrics;
        m.prompt_tokens
            .get_or_create(&self.label)
            .inc_by(d.prompt_eval_count);
        m.prompt_cached
            .get_or_create(&self.label)
            .inc_by(d.prompt_cached);
        m.generation_tokens
            .get_or_create(&self.label)
            .inc_by(d.eval_count);
        if d.prompt_truncated > 0 {
            m.truncations.get_or_create(&self.label).inc();
        }
        if d.draft_proposed > 0 {
            m.drafted
                .get_or_create(&self.label)
                .inc_by(d.draft_proposed);
            m.draft_accepted
                .get_or_create(&self.label)
                .inc_by(d.draft_accepted);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(w) = self.waiting.take() {
            w.dec();
        }
        if let Some(r) = self.running.take() {
            r.dec();
        }
        self.metrics
            .duration
            .get_or_create(&EndpointLabels {
                model: self.label.model.clone(),
                endpoint: self.endpoint.to_string(),
            })
            .observe(self.arrived.elapsed().as_secs_f64());
    }
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>) -> Response {
    let loaded = st.scheduler.metrics_snapshot().await;
    let body = st.metrics.render(&loaded);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
