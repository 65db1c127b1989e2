//! Which models are loaded, for how long, and in which runner.
//!
//! A request takes a [`Lease`] on a loaded model; while any lease is held the model is busy
//! and never unloaded. When the last lease goes, the model's `keep_alive` starts counting; a
//! reaper unloads it when that runs out (at once for `keep_alive: 0`, never for negative).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use corral_api::duration::KeepAlive;
use corral_api::{ModelDetails, ProcessModel};
use tokio::sync::Mutex;

use crate::runner::{LoadSpec, RunnerCommand, RunnerProcess};

/// What `ps` shows about a model besides its runner.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub details: ModelDetails,
}

struct Loaded {
    runner: Arc<RunnerProcess>,
    meta: ModelMeta,
    active: usize,
    keep_alive: KeepAlive,
    /// When an idle model is unloaded; `None` while busy or kept forever.
    expires: Option<Instant>,
}

/// The loaded models.
pub struct Scheduler {
    state: Mutex<HashMap<String, Loaded>>,
    cmd: RunnerCommand,
    load_timeout: Duration,
}

/// A request's hold on a loaded model.
pub struct Lease {
    pub runner: Arc<RunnerProcess>,
    /// How long loading took, when this request loaded the model.
    pub load_duration: Option<Duration>,
    key: String,
    keep_alive: KeepAlive,
    sched: Weak<Scheduler>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.sched.upgrade() {
            let (key, ka, pid) = (self.key.clone(), self.keep_alive, self.runner.pid);
            tokio::spawn(async move { s.release(&key, ka, pid).await });
        }
    }
}

impl Scheduler {
    /// A scheduler that starts runners with `cmd`; its reaper runs until the scheduler is dropped.
    pub fn new(cmd: RunnerCommand, load_timeout: Duration) -> Arc<Scheduler> {
        let s = Arc::new(Scheduler {
            state: Mutex::new(HashMap::new()),
            cmd,
            load_timeout,
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Some(s) = weak.upgrade() else { break };
                s.reap().await;
            }
        });
        s
    }

    /// Get the model loaded as `spec` says, loading (or reloading) it if needed.
    pub async fn acquire(
        self: &Arc<Self>,
        meta: ModelMeta,
        spec: LoadSpec,
        keep_alive: KeepAlive,
    ) -> Result<Lease, String> {
        let key = meta.name.clone();
        let mut state = self.state.lock().await;
        let reusable = state
            .get(&key)
            .is_some_and(|l| l.runner.spec == spec && !l.runner.has_exited());
        let mut load_duration = None;
        if !reusable {
            if let Some(old) = state.remove(&key) {
                tracing::info!(model = %key, "reloading with new settings");
                old.runner.stop().await;
            }
            let started = Instant::now();
            let runner = RunnerProcess::start(&self.cmd, spec, self.load_timeout).await?;
            load_duration = Some(started.elapsed());
            state.insert(
                key.clone(),
                Loaded {
                    runner,
                    meta,
                    active: 0,
                    keep_alive,
                    expires: None,
                },
            );
        }
        let l = state.get_mut(&key).expect("just inserted");
        l.active += 1;
        l.expires = None;
        l.keep_alive = keep_alive;
        Ok(Lease {
            runner: l.runner.clone(),
            load_duration,
            key,
            keep_alive,
            sched: Arc::downgrade(self),
        })
    }

    async fn release(&self, key: &str, keep_alive: KeepAlive, pid: u32) {
        let mut state = self.state.lock().await;
        let Some(l) = state.get_mut(key).filter(|l| l.runner.pid == pid) else {
            return;
        };
        l.active = l.active.saturating_sub(1);
        if l.active == 0 {
            l.keep_alive = keep_alive;
            l.expires = match keep_alive {
                KeepAlive::Forever => None,
                KeepAlive::For(d) => Some(Instant::now() + d),
            };
            if keep_alive == KeepAlive::For(Duration::ZERO) {
                let l = state.remove(key).expect("present");
                drop(state);
                l.runner.stop().await;
            }
        }
    }

    /// Unload a model now (when idle); true if it was loaded.
    pub async fn unload(&self, key: &str) -> bool {
        let mut state = self.state.lock().await;
        let Some(l) = state.get_mut(key) else {
            return false;
        };
        if l.active > 0 {
            // Busy: unload as soon as its last request ends.
            l.keep_alive = KeepAlive::For(Duration::ZERO);
            return true;
        }
        let l = state.remove(key).expect("present");
        drop(state);
        l.runner.stop().await;
        true
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
        let mut stopping = Vec::new();
        for k in expired {
            if let Some(l) = state.remove(&k) {
                tracing::info!(model = %k, "unloading");
                stopping.push(l.runner);
            }
        }
        drop(state);
        for r in stopping {
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
                let until = match (l.active, l.keep_alive, l.expires) {
                    (_, _, Some(e)) => Utc::now() + (e.saturating_duration_since(Instant::now())),
                    (0, KeepAlive::Forever, None) => far_future(),
                    (_, KeepAlive::For(d), None) => Utc::now() + d,
                    (_, KeepAlive::Forever, None) => far_future(),
                };
                ProcessModel {
                    name: l.meta.name.clone(),
                    model: l.meta.name.clone(),
                    size: l.meta.size,
                    digest: l.meta.digest.clone(),
                    details: l.meta.details.clone(),
                    expires_at: until,
                    size_vram: 0,
                    context_length: l.runner.info.n_ctx,
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

fn far_future() -> chrono::DateTime<Utc> {
    // Ollama shows models kept forever with a far-future expiry.
    chrono::DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_else(Utc::now)
}
