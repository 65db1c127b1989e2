//! Starting and supervising one runner process.
//!
//! Architecture Invariant: the server never loads a model itself. Each loaded model is a child
//! process (`corral runner ...`) bound to the server's life (parent-death signal, end of its
//! stdin). When it exits unexpectedly, every request in flight on it gets an error naming the
//! exit status or signal and the last lines of its log; the server itself carries on.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_api::runner::{CompletionRequest, ReadyInfo, RunnerEvent, RunnerRequest};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, watch};

/// Lines of runner log kept for error messages.
const TAIL_LINES: usize = 12;

/// How long each RPC worker has to answer when a runner that uses workers fails, to name the
/// one that went away.
pub const WORKER_CHECK: Duration = Duration::from_secs(1);

/// What decides how a runner is started; a request that needs other values gets a new runner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoadSpec {
    pub model_path: PathBuf,
    pub num_ctx: u32,
    pub num_batch: u32,
    pub num_thread: u32,
    pub num_gpu: u32,
    pub use_mmap: bool,
    /// Requests decoded together, each with `num_ctx` tokens of its own.
    pub parallel: u32,
    /// A LoRA adapter applied to the model.
    pub adapter: Option<PathBuf>,
    /// A draft model for speculative decoding.
    pub draft: Option<PathBuf>,
    pub kv_cache_type: corral_api::cache::KvCacheType,
    pub flash_attention: corral_api::cache::FlashAttention,
    /// RPC workers (`host:port`) whose devices take layers like GPUs.
    pub rpc_servers: Vec<String>,
}

/// A running runner process.
pub struct RunnerProcess {
    pub pid: u32,
    pub spec: LoadSpec,
    pub info: ReadyInfo,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<RunnerEvent>>>>,
    exited: watch::Receiver<Option<String>>,
    next_id: AtomicU64,
    /// KV cells held by running requests, and all cells, as the runner last reported.
    kv: Arc<(AtomicU64, AtomicU64)>,
    /// Set when the server killed it for hanging.
    killed: Arc<AtomicBool>,
}

/// Where to find the program that runs `corral runner`.
#[derive(Debug, Clone)]
pub struct RunnerCommand {
    pub program: PathBuf,
    /// Arguments before the runner's own (normally `["runner"]`).
    pub prefix_args: Vec<String>,
    /// Environment for runners: the visibility variables in their normalized form.
    pub env: Vec<(String, String)>,
}

impl RunnerCommand {
    /// `corral runner` with the runners' environment, ready for the runner's own arguments:
    /// stdout and stderr piped, stdin for the caller to set, killed when dropped.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)))
            // ggml's abort attaches gdb for a backtrace when it can: seconds of delay, and a
            // log tail of stack frames in place of the message that says what failed.
            .env("GGML_NO_BACKTRACE", "1")
            .args(&self.prefix_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

impl RunnerProcess {
    /// Start a runner and wait until it has loaded its model, at most `timeout`.
    pub async fn start(
        cmd: &RunnerCommand,
        spec: LoadSpec,
        timeout: Duration,
    ) -> Result<Arc<RunnerProcess>, String> {
        let mut c = cmd.command();
        c.arg("--model")
            .arg(&spec.model_path)
            .args(["--ctx-size", &spec.num_ctx.to_string()])
            .args(["--batch-size", &spec.num_batch.to_string()])
            .args(["--threads", &spec.num_thread.to_string()])
            .args(["--gpu-layers", &spec.num_gpu.to_string()])
            .args(["--parallel", &spec.parallel.to_string()])
            .args(["--cache-type", spec.kv_cache_type.as_str()])
            .args(["--flash-attn", spec.flash_attention.as_str()])
            .stdin(Stdio::piped());
        if !spec.use_mmap {
            c.arg("--no-mmap");
        }
        if let Some(a) = &spec.adapter {
            c.arg("--lora").arg(a);
        }
        if let Some(d) = &spec.draft {
            c.arg("--draft").arg(d);
        }
        if !spec.rpc_servers.is_empty() {
            c.arg("--rpc").arg(spec.rpc_servers.join(","));
        }
        let mut child: Child = corral_os::spawn_bound(c)
            .await
            .map_err(|e| format!("failed to start runner: {e}"))?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(pid, model = %spec.model_path.display(), "runner started");

        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
        let pending: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<RunnerEvent>>>> =
            Default::default();
        let (ready_tx, ready_rx) = oneshot::channel::<ReadyInfo>();
        let (loading_tx, mut loading_rx) = watch::channel(0f32);
        let (exit_tx, exit_rx) = watch::channel::<Option<String>>(None);
        let kv: Arc<(AtomicU64, AtomicU64)> = Default::default();
        let killed: Arc<AtomicBool> = Default::default();

        // Log lines: keep the last few for error messages, pass all on to our log.
        let stderr_done = {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "corral::runner", pid, "{line}");
                    let mut t = tail.lock().unwrap();
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
        };

        // Events: route each to the request it belongs to.
        let stdout_done = {
            let pending = pending.clone();
            let kv = kv.clone();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let ev: RunnerEvent = match serde_json::from_str(&line) {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(pid, "unreadable runner event ({e}): {line}");
                            continue;
                        }
                    };
                    let id = match &ev {
                        RunnerEvent::Loading { progress } => {
                            let _ = loading_tx.send(*progress);
                            continue;
                        }
                        RunnerEvent::Ready(info) => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(info.clone());
                            }
                            continue;
                        }
                        RunnerEvent::Usage { kv_used, kv_total } => {
                            kv.0.store(*kv_used, Ordering::Relaxed);
                            kv.1.store(*kv_total, Ordering::Relaxed);
                            continue;
                        }
                        // Only a runner started to quantize sends it (see `quantize`).
                        RunnerEvent::Quantizing { .. } | RunnerEvent::Converting { .. } => continue,
                        RunnerEvent::Accepted { id, .. }
                        | RunnerEvent::Started { id }
                        | RunnerEvent::Progress { id, .. }
                        | RunnerEvent::Token { id, .. }
                        | RunnerEvent::Pong { id }
                        | RunnerEvent::Error { id, .. }
                        | RunnerEvent::Embeddings { id, .. } => *id,
                        RunnerEvent::Done(d) => d.id,
                    };
                    let last = matches!(
                        ev,
                        RunnerEvent::Done(_)
                            | RunnerEvent::Error { .. }
                            | RunnerEvent::Pong { .. }
                            | RunnerEvent::Embeddings { .. }
                    );
                    let mut p = pending.lock().unwrap();
                    if let Some(tx) = p.get(&id) {
                        let _ = tx.send(ev);
                    }
                    if last {
                        p.remove(&id);
                    }
                }
            })
        };

        // Exit: name the cause and fail everything still in flight.
        {
            let pending = pending.clone();
            let tail = tail.clone();
            let killed = killed.clone();
            let workers = spec.rpc_servers.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                // Let the readers drain what the runner wrote before it died.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stdout_done.await;
                    let _ = stderr_done.await;
                })
                .await;
                let how = match status {
                    Ok(s) => corral_os::describe_exit(&s),
                    Err(e) => format!("unknown exit ({e})"),
                };
                let last: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
                let mut cause = format!("runner process has terminated: {how}");
                // An unexpected end of a runner with RPC workers: name those that went away.
                // (A runner killed for a stall is named by the stall's own check.)
                let unexpected = !pending.lock().unwrap().is_empty();
                if unexpected && !killed.load(Ordering::Relaxed) {
                    cause += &worker_faults(&workers).await;
                }
                if !last.is_empty() {
                    cause += &format!("; last output: {}", last.join(" | "));
                }
                tracing::info!(pid, "{cause}");
                let _ = exit_tx.send(Some(cause.clone()));
                for (id, tx) in pending.lock().unwrap().drain() {
                    let _ = tx.send(RunnerEvent::Error {
                        id,
                        message: cause.clone(),
                        invalid: false,
                    });
                }
            });
        }

        // Wait for the model to load. The timeout counts from the last sign of progress, so a
        // large model that keeps loading is not killed, and a stuck one is.
        let mut exited = exit_rx.clone();
        let mut ready_rx = ready_rx;
        let info = loop {
            tokio::select! {
                info = &mut ready_rx => match info {
                    Ok(info) => break info,
                    Err(_) => return Err(wait_cause(&mut exited).await),
                },
                changed = loading_rx.changed() => {
                    if changed.is_err() {
                        // The event reader ended: the runner is gone.
                        match tokio::time::timeout(Duration::from_secs(2), &mut ready_rx).await {
                            Ok(Ok(info)) => break info,
                            _ => return Err(wait_cause(&mut exited).await),
                        }
                    }
                }
                _ = tokio::time::sleep(timeout) => {
                    corral_os::kill(pid);
                    return Err(format!(
                        "timed out waiting for the model to load: no progress for {}s",
                        timeout.as_secs_f32()
                    ));
                }
            }
        };
        Ok(Arc::new(RunnerProcess {
            pid,
            spec,
            info,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            exited: exit_rx,
            next_id: AtomicU64::new(1),
            kv,
            killed,
        }))
    }

    /// Stop the process at once (a stalled runner) and wait until it is gone, so the next
    /// request cannot be given to it.
    pub async fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        corral_os::kill(self.pid);
        let mut exited = self.exited.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|c| c.is_some())).await;
    }

    /// Its RPC workers that do not answer now (see [`worker_faults`]).
    pub async fn worker_faults(&self) -> String {
        worker_faults(&self.spec.rpc_servers).await
    }

    /// Whether the server killed it for hanging.
    pub fn was_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// KV cells held by running requests, and the runner's cells in all.
    pub fn kv_usage(&self) -> (u64, u64) {
        (
            self.kv.0.load(Ordering::Relaxed),
            self.kv.1.load(Ordering::Relaxed),
        )
    }

    /// Whether the process has ended.
    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// Send a completion; events arrive on the returned channel, ending with `Done` or `Error`.
    pub async fn completion(
        &self,
        mut req: CompletionRequest,
    ) -> Result<(u64, mpsc::UnboundedReceiver<RunnerEvent>), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        req.id = id;
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().unwrap().insert(id, tx);
        if let Err(e) = self.send(&RunnerRequest::Completion(Box::new(req))).await {
            self.pending.lock().unwrap().remove(&id);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// Embed inputs; the answer is one `Embeddings` (or `Error`) event. The id cancels it.
    pub async fn embed(
        &self,
        inputs: Vec<String>,
        truncate: bool,
    ) -> Result<(u64, mpsc::UnboundedReceiver<RunnerEvent>), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().unwrap().insert(id, tx);
        let job = corral_api::runner::EmbedJob {
            id,
            inputs,
            truncate,
        };
        if let Err(e) = self.send(&RunnerRequest::Embed(job)).await {
            self.pending.lock().unwrap().remove(&id);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// A health check: true if the runner answers a ping within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().unwrap().insert(id, tx);
        let ok = self.send(&RunnerRequest::Ping { id }).await.is_ok()
            && matches!(
                tokio::time::timeout(timeout, rx.recv()).await,
                Ok(Some(RunnerEvent::Pong { .. }))
            );
        self.pending.lock().unwrap().remove(&id);
        ok
    }

    /// Ask the runner to stop a request at its next token.
    pub async fn cancel(&self, id: u64) {
        let _ = self.send(&RunnerRequest::Cancel { id }).await;
    }

    async fn send(&self, req: &RunnerRequest) -> Result<(), String> {
        if let Some(cause) = self.exited.borrow().clone() {
            return Err(cause);
        }
        let mut line = serde_json::to_vec(req).expect("requests serialize");
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        let Some(w) = stdin.as_mut() else {
            return Err("runner is stopping".into());
        };
        match w.write_all(&line).await {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("runner is not reachable: {e}")),
        }
    }

    /// Stop the runner: close its stdin (it exits by itself), then kill it if it lingers.
    pub async fn stop(&self) {
        self.stdin.lock().await.take();
        let mut exited = self.exited.clone();
        let gone =
            tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|c| c.is_some())).await;
        if gone.is_err() {
            tracing::warn!(pid = self.pid, "runner did not exit in 5s; killing it");
            corral_os::kill(self.pid);
        }
    }
}

/// The RPC workers among `endpoints` that do not answer a probe within [`WORKER_CHECK`], as
/// `; <error>` for each (every error names its worker: refused, no connection, or no
/// handshake), to append to the message of a failure. Empty when all answer.
pub async fn worker_faults(endpoints: &[String]) -> String {
    if endpoints.is_empty() {
        return String::new();
    }
    let endpoints = endpoints.to_vec();
    tokio::task::spawn_blocking(move || corral_devices::rpc::probe_all(&endpoints, WORKER_CHECK))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.error)
        .map(|e| format!("; {e}"))
        .collect()
}

async fn wait_cause(exited: &mut watch::Receiver<Option<String>>) -> String {
    match tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|c| c.is_some())).await {
        Ok(Ok(c)) => c.clone().unwrap_or_default(),
        _ => "runner exited before it was ready".to_string(),
    }
}
