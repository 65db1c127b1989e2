//! Everything that differs between operating systems lives here, behind small functions, so
//! Windows (job objects) and macOS (kqueue parent watching) can be added without touching the
//! rest. Only Linux is implemented today.

use std::process::ExitStatus;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

/// Make a child process die with its parent, however the parent ends (SIGKILL included), and
/// put it in its own process group so a terminal's Ctrl-C reaches only the server, which then
/// stops its runners in order.
pub fn bind_child_to_parent(cmd: &mut tokio::process::Command) {
    imp::bind_child_to_parent(cmd)
}

/// Start a child bound with [`bind_child_to_parent`].
///
/// On Linux the parent-death signal fires when the *thread* that forked the child exits, not
/// the process, and tokio's threads come and go (blocking-pool threads end after 10 s idle;
/// `block_in_place` moves a worker's duties to a new thread). So every bound child is spawned
/// from one thread that lives as long as the process.
pub async fn spawn_bound(
    mut cmd: tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};
    type Job = (
        tokio::process::Command,
        tokio::runtime::Handle,
        tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
    );
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    bind_child_to_parent(&mut cmd);
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("corral-spawner".into())
            .spawn(move || {
                for (mut cmd, handle, reply) in rx {
                    let _rt = handle.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    tx.lock()
        .expect("spawner lock")
        .send((cmd, tokio::runtime::Handle::current(), reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .await
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// End this process now with `code`, after flushing its standard output and error, without
/// running exit handlers or C++ static destructors (`_exit` on Unix). For a process whose
/// other threads may still be inside llama.cpp: `std::process::exit` would destroy ggml's
/// static objects under its compute threads, which then crash (SIGSEGV) instead of the
/// process exiting.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    imp::exit_now(code)
}

/// End this process as one whose standard output was closed under it: killed by SIGPIPE on
/// Unix, as `yes | head -1` ends `yes` (shells report status 141 and print nothing). Rust
/// ignores SIGPIPE so that writes fail with an error instead; a client command that meets that
/// error on its standard output ends here.
pub fn die_of_broken_pipe() -> ! {
    use std::io::Write;
    let _ = std::io::stderr().flush();
    imp::die_of_broken_pipe()
}

/// Ask a process to stop (SIGTERM on Unix).
pub fn terminate(pid: u32) {
    imp::signal(pid, libc::SIGTERM)
}

/// Stop a process at once (SIGKILL on Unix).
pub fn kill(pid: u32) {
    imp::signal(pid, libc::SIGKILL)
}

/// Describe how a process ended: `exit status 1`, `signal 9 (SIGKILL)`.
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        format!("signal {sig} ({})", signal_name(sig))
    } else {
        "unknown exit".to_string()
    }
}

/// The conventional name of a signal number.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "unknown signal",
    }
}

/// Physical CPU cores (not hyper-threads), the default thread count for inference.
pub fn physical_cores() -> usize {
    imp::physical_cores()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// System memory in bytes: (total, available).
pub fn memory() -> Option<(u64, u64)> {
    imp::memory()
}

/// Facts about the CPU.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CpuInfo {
    pub model: String,
    pub logical_cores: usize,
    pub physical_cores: usize,
    /// The best SIMD level: `AVX-512`, `AVX2`, `AVX`, `SSE4.2`, `NEON`, or `none`.
    pub simd: String,
    /// CPUs allowed by a cgroup quota (`cpu.max`), when one is set.
    pub cgroup_cpu_quota: Option<f64>,
}

/// Read the CPU facts.
pub fn cpu_info() -> CpuInfo {
    imp::cpu_info()
}

/// The default inference thread count: physical cores, within the cgroup quota.
pub fn default_threads() -> usize {
    let info = cpu_info();
    let quota = info
        .cgroup_cpu_quota
        .map_or(usize::MAX, |q| q.ceil().max(1.0) as usize);
    physical_cores().min(quota).max(1)
}

/// The machine's host name, lowercased (empty when the OS gives none).
pub fn hostname() -> String {
    imp::hostname().unwrap_or_default().to_ascii_lowercase()
}

/// The addresses of this machine's network interfaces (loopback included).
pub fn interface_addrs() -> Vec<std::net::IpAddr> {
    if_addrs::get_if_addrs()
        .map(|list| list.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

/// Call `f` (on a thread of its own) when the process is asked to stop: SIGTERM or SIGINT.
/// For processes whose main thread is blocked in a call that never returns (an RPC worker in
/// ggml's accept loop), so they can still say why they stop and exit with status 0.
pub fn on_terminate(f: impl FnOnce(&'static str) + Send + 'static) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a signal runtime");
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            f(name);
        });
    });
}

/// Hand each line this process writes to its standard output (fd 1) to `f`, on a thread of
/// its own, instead of letting it reach the terminal: for a C library that reports with
/// `printf` (ggml's RPC server), so that its lines become log records.
pub fn capture_stdout(f: impl FnMut(&str) + Send + 'static) -> std::io::Result<()> {
    imp::capture_stdout(f)
}

/// The remote addresses of this process's connected TCP sockets whose local port is `port`:
/// who is connected to a server that reports no addresses itself (ggml's RPC server). Each
/// of those sockets is also set to drop a peer that stops answering for about `dead_after`
/// (TCP keepalive and user timeout), so that a server blocked reading from a client behind a
/// cut link gets an error instead of waiting forever.
pub fn tcp_clients(port: u16, dead_after: std::time::Duration) -> Vec<std::net::SocketAddr> {
    imp::tcp_clients(port, dead_after)
}
