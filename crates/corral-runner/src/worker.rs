//! `corral rpc-worker`: serve this machine's devices to other machines' runners over ggml's
//! RPC protocol, on loopback unless told otherwise (the protocol has no authentication).

use std::net::ToSocketAddrs;
use std::path::PathBuf;

/// How long a client may stop answering before the worker drops it and serves the next.
const DEAD_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

/// How `corral rpc-worker` is started.
#[derive(Debug, Clone, clap::Args)]
pub struct RpcWorkerArgs {
    /// Address to listen on (`host:port`).
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub listen: String,
    /// Allow an address other machines can reach. The RPC protocol has no authentication:
    /// anyone who reaches the port can use this machine's devices and memory, so use it only
    /// on a private network or through a tunnel.
    #[arg(long)]
    pub allow_remote: bool,
    /// CPU threads for the CPU device (default: the physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A folder for ggml's tensor cache, so a model's weights cross the network once.
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Check the address, then serve until SIGTERM or SIGINT.
pub fn rpc_worker(args: RpcWorkerArgs) -> anyhow::Result<()> {
    let addrs: Vec<_> = args
        .listen
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("--listen {}: not a host:port address ({e})", args.listen))?
        .collect();
    let remote = addrs.iter().any(|a| !a.ip().is_loopback());
    if remote && !args.allow_remote {
        anyhow::bail!(
            "--listen {} is not a loopback address, and ggml's RPC protocol has no \
             authentication: anyone who reaches the port can use this machine's devices. Pass \
             --allow-remote to serve other machines, on a private network or through a tunnel only",
            args.listen
        );
    }
    if remote {
        tracing::warn!(
            listen = %args.listen,
            "serving other machines: the RPC protocol has no authentication; keep this port on a private network or tunnel"
        );
    }
    // The device rules of the server's runners (README, Devices): the visibility variables
    // in their normalized form, set before ggml loads a backend, and CORRAL_DEVICE=cpu
    // serving the CPU only.
    let mode =
        corral_devices::DeviceMode::parse(&std::env::var("CORRAL_DEVICE").unwrap_or_default())
            .map_err(|e| anyhow::anyhow!(e))?;
    let decisions = corral_devices::visibility::decide_all(|k| std::env::var(k).ok());
    for d in &decisions {
        tracing::info!(variable = %d.variable, "{}", d.reason);
    }
    for (k, v) in corral_devices::runner_env(&decisions) {
        // Still one thread: nothing reads the environment concurrently.
        std::env::set_var(k, v);
    }
    if let Some(c) = &args.cache {
        std::fs::create_dir_all(c).map_err(|e| anyhow::anyhow!("--cache {}: {e}", c.display()))?;
    }
    let threads = args
        .threads
        .unwrap_or_else(corral_os::default_threads)
        .max(1);
    // ggml's server prints "Accepted client connection" without saying who: its standard
    // output becomes log records, and each connection is logged with the peer's address and
    // given keepalive, since ggml serves one client at a time and would otherwise wait
    // forever on one whose link was cut.
    let port = addrs.first().map_or(0, |a| a.port());
    let mut peer: Option<String> = None;
    corral_os::capture_stdout(move |line| match line.trim() {
        "Accepted client connection" => {
            let peers: Vec<String> = corral_os::tcp_clients(port, DEAD_AFTER)
                .iter()
                .map(|a| a.to_string())
                .collect();
            let who = if peers.is_empty() {
                "unknown".to_string()
            } else {
                peers.join(",")
            };
            tracing::info!(peer = %who, "RPC client connected");
            peer = Some(who);
        }
        "Client connection closed" => {
            let who = peer.take().unwrap_or_else(|| "unknown".into());
            tracing::info!(peer = %who, "RPC client left");
        }
        "" => {}
        other => tracing::info!(target: "ggml", "{other}"),
    })
    .map_err(|e| anyhow::anyhow!("capture ggml's output: {e}"))?;
    corral_os::on_terminate(|signal| {
        tracing::info!(signal, "RPC worker stopping");
        // It may be computing for a server: leave without tearing ggml down under that.
        corral_os::exit_now(0);
    });
    tracing::info!(
        listen = %args.listen,
        threads,
        protocol = corral_devices::rpc::version_text(corral_devices::rpc::PROTOCOL),
        "RPC worker starting"
    );
    let gpus = mode != corral_devices::DeviceMode::Cpu;
    corral_engine::rpc::serve(&args.listen, args.cache.as_deref(), threads, gpus)?;
    Ok(())
}
