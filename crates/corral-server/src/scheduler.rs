//! Which models are loaded, for how long, and in which runner.
//!
//! A request takes a [`Lease`] on a loaded model; while any lease is held the model is busy
//! and never unloaded. When the last lease goes, the model's `keep_alive` starts counting; a
//! reaper unloads it when that runs out (at once for `keep_alive: 0`, never for negative).
//!
//! Loading a model that does not fit (more than `max_loaded` models, or more memory than is
//! available) first unloads idle models, least recently used first, then waits for busy ones
//! to become idle. A model that can never fit is refused with an error instead.
//!
//! Waiting is fair, as in Ollama's scheduler: the busy model a request waits for is marked
//! draining, and while that request waits, new requests for the model wait too instead of
//! joining it. Otherwise a model kept busy by a stream of requests would never become idle and
//! the other model would never load (the same for a reload with other settings). The mark is a
//! count of the requests waiting for the model, so it goes when they load, fail, turn to wait
//! for another model or leave with their clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use corral_api::duration::KeepAlive;
use corral_api::{ModelDetails, ProcessModel};
use tokio::sync::Mutex;

use crate::metrics::{ExitReason, LoadedModel, Metrics};
use crate::runner::{LoadSpec, RunnerCommand, RunnerProcess};

/// How often idle runners are checked, and how long they have to answer.
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// What `ps` shows about a model besides its runner, and what it needs to load.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub name: String,
    pub digest: String,
    pub details: ModelDetails,
    /// Estimated memory once loaded: weights plus KV cache.
    pub required_memory: u64,
    /// The part of it in this machine's memory (less what RPC workers hold).
    pub local_memory: u64,
    /// Repeating layers (for the share of the model a GPU holds).
    pub n_layers: u32,
}

/// Scheduling limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_loaded: usize,
    /// Requests a model may have waiting beyond its parallel slots.
    pub max_queue: usize,
    pub load_timeout: Duration,
}

/// Why a model could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
    #[error("server busy, please try again.  maximum pending requests exceeded")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

struct Loaded {
    runner: Arc<RunnerProcess>,
    /// The settings asked for (the runner's own may differ after a fall-back to the CPU).
    spec: LoadSpec,
    /// Why the model runs other than asked, e.g. on the CPU after a GPU load failed.
    warning: Option<String>,
    meta: ModelMeta,
    active: usize,
    keep_alive: KeepAlive,
    /// When an idle model is unloaded; `None` while busy or kept forever.
    expires: Option<Instant>,
    last_used: Instant,
    /// Requests waiting for this model to become idle (to unload it, or to reload it with
    /// other settings): new requests do not join it while there are any.
    drainers: Arc<AtomicUsize>,
}

/// The loaded models.
pub struct Scheduler {
    state: Mutex<HashMap<String, Loaded>>,
    /// Models being loaded, with the memory they will take: a load runs without the lock on
    /// `state`, so that loaded models, `ps`, `stop` and `/metrics` answer meanwhile. Added only
    /// while `state` is locked (so two requests never load one model); removed when the load
    /// ends, however it ends (a [`Loading`] guard).
    loading: std::sync::Mutex<HashMap<String, u64>>,
    cmd: RunnerCommand,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Set when the server shuts down: no more loads (requests still waiting fail).
    closing: std::sync::atomic::AtomicBool,
}

/// A model counted in [`Scheduler::loading`] until its load ends, however it ends.
struct Loading<'a> {
    set: &'a std::sync::Mutex<HashMap<String, u64>>,
    key: String,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.key);
    }
}

/// A waiting request's mark on the busy model it waits for, counted in [`Loaded::drainers`]
/// until the request stops waiting for that model.
struct Drain(Arc<AtomicUsize>);

impl Drain {
    /// Mark `drainers`' model, unmarking the one marked before (if another).
    fn mark(slot: &mut Option<Drain>, drainers: &Arc<AtomicUsize>) {
        if slot.as_ref().is_some_and(|d| Arc::ptr_eq(&d.0, drainers)) {
            return;
        }
        drainers.fetch_add(1, Ordering::SeqCst);
        *slot = Some(Drain(drainers.clone()));
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request's hold on a loaded model.
pub struct Lease {
    pub runner: Arc<RunnerProcess>,
    /// How long loading took, when this request loaded the model.
    pub load_duration: Option<Duration>,
    key: String,
    sched: Weak<Scheduler>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.sched.upgrade() {
            let (key, pid) = (self.key.clone(), self.runner.pid);
            tokio::spawn(async move { s.release(&key, pid).await });
        }
    }
}

impl Scheduler {
    /// A scheduler that starts runners with `cmd`; its reaper runs until the scheduler is dropped.
    pub fn new(cmd: RunnerCommand, limits: Limits, metrics: Arc<Metrics>) -> Arc<Scheduler> {
        let s = Arc::new(Scheduler {
            state: Mutex::new(HashMap::new()),
            loading: Default::default(),
            cmd,
            limits,
            metrics,
            closing: Default::default(),
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Some(s) = weak.upgrade() else { break };
                s.reap().await;
            }
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEALTH_INTERVAL).await;
                let Some(s) = weak.upgrade() else { break };
                s.check_health().await;
            }
        });
        s
    }

    /// Ping every idle runner; one that does not answer is hung and is killed (the reaper then
    /// removes it, and the next request starts a fresh one). Busy runners are watched by the
    /// stall timeout of their requests instead.
    async fn check_health(&self) {
        let idle: Vec<Arc<RunnerProcess>> = {
            let state = self.state.lock().await;
            state
                .values()
                .filter(|l| l.active == 0 && !l.runner.has_exited())
                .map(|l| l.runner.clone())
                .collect()
        };
        for r in idle {
            if !r.ping(HEALTH_TIMEOUT).await && !r.has_exited() {
                tracing::warn!(pid = r.pid, "runner failed its health check; stopping it");
                r.kill().await;
            }
        }
    }

    /// Refuse loads from now on: the server is shutting down (a request waiting for room
    /// would otherwise load a model only to be told so).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Get the model loaded as `spec` says, loading (or reloading) it if needed.
    pub async fn acquire(
        self: &Arc<Self>,
        meta: ModelMeta,
        spec: LoadSpec,
        keep_alive: KeepAlive,
    ) -> Result<Lease, AcquireError> {
        let key = meta.name.clone();
        // Set while this request waits for a busy model to become idle.
        let mut drain: Option<Drain> = None;
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return Err(AcquireError::Failed("the server is shutting down".into()));
            }
            let mut state = self.state.lock().await;
            if self.loading.lock().unwrap().contains_key(&key) {
                // Being loaded by another request: join it once it is (or load it again with
                // other settings).
                drop(state);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if let Some(l) = state
                .get_mut(&key)
                .filter(|l| l.spec == spec && !l.runner.has_exited())
            {
                let mine = drain
                    .as_ref()
                    .is_some_and(|d| Arc::ptr_eq(&d.0, &l.drainers));
                if l.drainers.load(Ordering::SeqCst) > mine as usize {
                    // Another request waits for this model to drain: queue behind it (no
                    // longer waiting for any model of its own).
                    drain = None;
                    drop(state);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                if l.active >= spec.parallel as usize + self.limits.max_queue {
                    return Err(AcquireError::Busy);
                }
                l.active += 1;
                l.expires = None;
                l.keep_alive = keep_alive;
                l.last_used = Instant::now();
                return Ok(Lease {
                    runner: l.runner.clone(),
                    load_duration: None,
                    key,
                    sched: Arc::downgrade(self),
                });
            }
            // Loaded with other settings: reload once its requests are done.
            if let Some(old) = state.get_mut(&key) {
                if old.active > 0 && !old.runner.has_exited() {
                    Drain::mark(&mut drain, &old.drainers);
                    drop(state);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let old = state.remove(&key).expect("present");
                if old.runner.has_exited() {
                    tracing::info!(model = %key, "starting a new runner: the last one has exited");
                } else {
                    tracing::info!(model = %key, "reloading with new settings");
                }
                self.gone(&key, &old.runner, ExitReason::Unloaded);
                old.runner.stop().await;
            }
            match self.make_room(&mut state, &meta) {
                // The mark goes now, not after the load.
                Room::Ready => drop(drain.take()),
                Room::Loads => {
                    // Room is being taken by loads under way: see once they are done.
                    drain = None;
                    drop(state);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Room::Evict(k) => {
                    drain = None;
                    let l = state.remove(&k).expect("present");
                    tracing::info!(model = %k, "unloading to make room for {key}");
                    self.gone(&k, &l.runner, ExitReason::Evicted);
                    drop(state);
                    l.runner.stop().await;
                    continue;
                }
                Room::Wait(busy) => {
                    if let Some(l) = state.get(&busy) {
                        Drain::mark(&mut drain, &l.drainers);
                    }
                    drop(state);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Room::Never(why) => return Err(AcquireError::Failed(why)),
            }
            // The load runs unlocked; the model counts as loading until it is in `state`.
            let loading = {
                self.loading
                    .lock()
                    .unwrap()
                    .insert(key.clone(), meta.local_memory);
                Loading {
                    set: &self.loading,
                    key: key.clone(),
                }
            };
            drop(state);
            let started = Instant::now();
            let (runner, warning) = match RunnerProcess::start(
                &self.cmd,
                spec.clone(),
                self.limits.load_timeout,
            )
            .await
            {
                Ok(r) => (r, None),
                Err(cause) if spec.num_gpu > 0 => {
                    self.metrics.runner_exit(&key, ExitReason::LoadFailed);
                    // A GPU (or an RPC worker) that fails to load the model is not the
                    // end: load it on the CPU, without the workers.
                    let warning = if spec.rpc_servers.is_empty() {
                        format!("loading on the GPU failed, running on the CPU instead: {cause}")
                    } else {
                        let absent = crate::runner::worker_faults(&spec.rpc_servers).await;
                        format!(
                                "loading with {} layers offloaded (to RPC workers, and GPUs if any) failed, running on the CPU instead: {cause}{absent}",
                                spec.num_gpu
                            )
                    };
                    tracing::warn!(model = %key, "{warning}");
                    let cpu = LoadSpec {
                        num_gpu: 0,
                        rpc_servers: Vec::new(),
                        ..spec.clone()
                    };
                    let r = RunnerProcess::start(&self.cmd, cpu, self.limits.load_timeout)
                        .await
                        .map_err(|cause| {
                            self.metrics.runner_exit(&key, ExitReason::LoadFailed);
                            AcquireError::Failed(cause)
                        })?;
                    (r, Some(warning))
                }
                Err(cause) => {
                    self.metrics.runner_exit(&key, ExitReason::LoadFailed);
                    return Err(AcquireError::Failed(cause));
                }
            };
            // Workers left out are a warning too (their errors name them).
            let warning = std::iter::once(warning)
                .chain(runner.info.workers.iter().map(|w| {
                    w.error
                        .as_ref()
                        .map(|e| format!("left out, the model runs without it: {e}"))
                }))
                .flatten()
                .reduce(|a, b| format!("{a}; {b}"));
            let load_duration = Some(started.elapsed());
            self.metrics
                .model_loaded(&key, started.elapsed().as_secs_f64());
            let now = Instant::now();
            let mut state = self.state.lock().await;
            state.insert(
                key.clone(),
                Loaded {
                    runner: runner.clone(),
                    spec,
                    warning,
                    meta,
                    active: 1,
                    keep_alive,
                    expires: None,
                    last_used: now,
                    drainers: Arc::default(),
                },
            );
            // Loaded, and no longer loading, in one step under the lock.
            drop(loading);
            return Ok(Lease {
                runner,
                load_duration,
                key,
                sched: Arc::downgrade(self),
            });
        }
    }

    fn make_room(&self, state: &mut HashMap<String, Loaded>, meta: &ModelMeta) -> Room {
        let (total, available) = corral_os::memory().unwrap_or((u64::MAX, u64::MAX));
        if meta.local_memory > total {
            return Room::Never(format!(
                "model requires {} of system memory, but the system has {} in all",
                gib(meta.local_memory),
                gib(total)
            ));
        }
        // Memory of loaded models counts as reclaimable: unloading them frees it. Models being
        // loaded take places and memory they may not hold yet.
        let (loads, loads_memory) = {
            let loading = self.loading.lock().unwrap();
            (loading.len(), loading.values().sum::<u64>())
        };
        let fits = state.len() + loads < self.limits.max_loaded.max(1)
            && meta.local_memory.saturating_add(loads_memory) <= available;
        if fits {
            return Room::Ready;
        }
        let idle = state
            .iter()
            .filter(|(_, l)| l.active == 0)
            .min_by_key(|(_, l)| l.last_used)
            .map(|(k, _)| k.clone());
        // Else the busy model to wait for: the least recently used.
        let busy = state
            .iter()
            .filter(|(_, l)| l.active > 0)
            .min_by_key(|(_, l)| l.last_used)
            .map(|(k, _)| k.clone());
        match (idle, busy) {
            (Some(k), _) => Room::Evict(k),
            (None, Some(k)) => Room::Wait(k),
            (None, None) if loads > 0 => Room::Loads,
            (None, None) => Room::Never(format!(
                "model requires {} of system memory, but only {} is available",
                gib(meta.local_memory),
                gib(available)
            )),
        }
    }

    async fn release(&self, key: &str, pid: u32) {
        let mut state = self.state.lock().await;
        let Some(l) = state.get_mut(key).filter(|l| l.runner.pid == pid) else {
            return;
        };
        l.active = l.active.saturating_sub(1);
        l.last_used = Instant::now();
        if l.active == 0 {
            l.expires = match l.keep_alive {
                KeepAlive::Forever => None,
                KeepAlive::For(d) => Some(Instant::now() + d),
            };
            if l.keep_alive == KeepAlive::For(Duration::ZERO) {
                let l = state.remove(key).expect("present");
                self.gone(key, &l.runner, ExitReason::Unloaded);
                drop(state);
                l.runner.stop().await;
            }
        }
    }

    /// Unload a model now, or when its last request ends if busy; false if it was not loaded.
    pub async fn unload(&self, key: &str) -> bool {
        let mut state = self.state.lock().await;
        let Some(l) = state.get_mut(key) else {
            return false;
        };
        if l.active > 0 {
            l.keep_alive = KeepAlive::For(Duration::ZERO);
            return true;
        }
        let l = state.remove(key).expect("present");
        self.gone(key, &l.runner, ExitReason::Unloaded);
        drop(state);
        l.runner.stop().await;
        true
    }

    /// Count a runner's end: the reason given, unless it had already died (a crash) or been
    /// killed for hanging (a stall).
    fn gone(&self, key: &str, runner: &RunnerProcess, reason: ExitReason) {
        let reason = if runner.was_killed() {
            ExitReason::Stall
        } else if runner.has_exited() {
            ExitReason::Crash
        } else {
            reason
        };
        self.metrics.runner_exit(key, reason);
    }

    /// The loaded models' runner-side numbers, for a scrape of `/metrics`.
    pub async fn metrics_snapshot(&self) -> Vec<LoadedModel> {
        let state = self.state.lock().await;
        state
            .values()
            .filter(|l| !l.runner.has_exited())
            .map(|l| {
                let (kv_used, kv_total) = l.runner.kv_usage();
                LoadedModel {
                    name: l.meta.name.clone(),
                    kv_used,
                    kv_total,
                    gpu_layers: l.runner.spec.num_gpu.min(l.meta.n_layers + 1),
                }
            })
            .collect()
    }

    async fn reap(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let expired: Vec<String> = state
            .iter()
            .filter(|(_, l)| {
                l.runner.has_exited() || (l.active == 0 && l.expires.is_some_and(|e| e <= now))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let stopping: Vec<Arc<RunnerProcess>> = expired
            .iter()
            .filter_map(|k| state.remove(k).map(|l| (k, l)))
            .map(|(k, l)| {
                self.gone(k, &l.runner, ExitReason::Idle);
                l.runner
            })
            .collect();
        drop(state);
        for r in stopping {
            tracing::info!(pid = r.pid, "unloading");
            r.stop().await;
        }
    }

    /// The loaded models, as `/api/ps` shows them.
    pub async fn ps(&self) -> Vec<ProcessModel> {
        let state = self.state.lock().await;
        let mut out: Vec<ProcessModel> = state
            .values()
            .filter(|l| !l.runner.has_exited())
            .map(|l| {
                let share = |layers| layer_share(l.meta.required_memory, layers, l.meta.n_layers);
                let left = match (l.expires, l.keep_alive) {
                    (Some(e), _) => Some(e.saturating_duration_since(Instant::now())),
                    (None, KeepAlive::For(d)) => Some(d),
                    (None, KeepAlive::Forever) => None,
                };
                // A keep_alive of centuries is forever too: past year 9999 a time is not
                // RFC 3339 (Go clients, `ollama ps` among them, refuse the whole answer).
                let until = left
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .and_then(|d| Utc::now().checked_add_signed(d))
                    .map_or_else(far_future, |t| t.min(far_future()));
                ProcessModel {
                    name: l.meta.name.clone(),
                    model: l.meta.name.clone(),
                    size: l.meta.required_memory,
                    digest: l.meta.digest.clone(),
                    details: l.meta.details.clone(),
                    expires_at: until,
                    size_vram: share(l.runner.info.offloaded),
                    size_remote: share(l.runner.info.workers.iter().map(|w| w.layers).sum()),
                    context_length: l.runner.info.n_ctx,
                    warning: l.warning.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Stop every runner (server shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<Loaded> = self.state.lock().await.drain().map(|(_, l)| l).collect();
        futures::future::join_all(all.iter().map(|l| l.runner.stop())).await;
    }
}

enum Room {
    Ready,
    Evict(String),
    /// Wait for this busy model to become idle.
    Wait(String),
    /// Wait for the loads under way (the room they take may be all there is).
    Loads,
    Never(String),
}

/// The part of a model's `bytes` that `layers` of its `n_layers` (and the output layer,
/// counted as one more) hold.
pub(crate) fn layer_share(bytes: u64, layers: u32, n_layers: u32) -> u64 {
    bytes * u64::from(layers.min(n_layers + 1)) / u64::from(n_layers + 1)
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

fn far_future() -> chrono::DateTime<Utc> {
    // Ollama shows models kept forever with a far-future expiry.
    chrono::DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_else(Utc::now)
}
