//! `corral rpc-worker`: serve this machine's devices to other machines' runners over ggml's
//! RPC protocol, on loopback unless told otherwise (the protocol has no authentication).

use std::net::ToSocketAddrs;
use std::path::PathBuf;

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
    if let Some(c) = &args.cache {
        std::fs::create_dir_all(c).map_err(|e| anyhow::anyhow!("--cache {}: {e}", c.display()))?;
    }
    let threads = args
        .threads
        .unwrap_or_else(corral_os::default_threads)
        .max(1);
    corral_os::on_terminate(|signal| {
        tracing::info!(signal, "RPC worker stopping");
        std::process::exit(0);
    });
    tracing::info!(
        listen = %args.listen,
        threads,
        protocol = corral_engine::rpc::PROTOCOL,
        "RPC worker starting"
    );
    corral_engine::rpc::serve(&args.listen, args.cache.as_deref(), threads)?;
    Ok(())
}
