//! The runner's RPC workers: each one that answers in time has its devices added before the
//! model loads; one that does not is left out with the cause in the log, and the model loads
//! without it.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a worker has to accept a connection at load time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Add every worker that answers.
pub(crate) fn add_workers(endpoints: &[String]) {
    for e in endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        // ggml's own connect has no timeout and aborts on some failures: try first.
        if let Err(why) = reachable(e) {
            tracing::warn!(worker = e, "RPC worker left out: {why}");
            continue;
        }
        match corral_engine::rpc::add_worker(e) {
            Ok(n) => {
                tracing::info!(worker = e, devices = n, "RPC worker added")
            }
            Err(why) => tracing::warn!(worker = e, "RPC worker left out: {why}"),
        }
    }
}

fn reachable(endpoint: &str) -> Result<(), String> {
    let addrs: Vec<_> = endpoint
        .to_socket_addrs()
        .map_err(|e| format!("{endpoint} is not a host:port address ({e})"))?
        .collect();
    let mut last = format!("{endpoint}: no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(last)
}
