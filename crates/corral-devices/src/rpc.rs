//! Asking an RPC worker (`corral rpc-worker`, or llama.cpp's `rpc-server`) what it offers,
//! with a deadline on every step: its protocol version, its devices and their memory.
//!
//! Written here over `std::net` rather than through ggml because ggml's client has no
//! timeouts and aborts the whole process on a failed connection or a version mismatch; this
//! probe runs first (in runners before a load, in `corral devices`, and in the server when a
//! runner with workers fails) and turns each of those into a sentence. It speaks only the
//! three commands it needs of ggml-rpc.cpp's protocol: HELLO, DEVICE_COUNT, GET_DEVICE_MEMORY.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks: `RPC_PROTO_*_VERSION` of ggml-rpc.h in the
/// llama.cpp sources of the pinned `llama-cpp-sys-2`. ggml accepts a worker with the same
/// major version and a minor version no newer than its own.
pub const PROTOCOL: (u8, u8, u8) = (7, 0, 0);

const CMD_GET_DEVICE_MEMORY: u8 = 11;
const CMD_HELLO: u8 = 14;
const CMD_DEVICE_COUNT: u8 = 15;
/// Bytes of transport capabilities in HELLO (`RPC_CONN_CAPS_SIZE`); all zero: plain TCP.
const CONN_CAPS: usize = 24;
/// More devices than this in one worker is not a worker's answer.
const MAX_DEVICES: u32 = 64;

/// One device a worker serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerDevice {
    pub memory_free: u64,
    pub memory_total: u64,
}

/// What a worker said, or why it said nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// `host:port` as configured.
    pub endpoint: String,
    /// It answered, speaks a protocol this build can use, and has a device.
    pub usable: bool,
    /// Its protocol version, when it answered the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<WorkerDevice>,
    /// Why it is not usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WorkerReport {
    /// A worker not (yet) found usable, for `why`.
    fn unusable(endpoint: &str, why: Option<String>) -> WorkerReport {
        WorkerReport {
            endpoint: endpoint.to_string(),
            usable: false,
            protocol: None,
            devices: Vec::new(),
            error: why,
        }
    }
}

/// The protocol version as `major.minor.patch`.
pub fn version_text(v: (u8, u8, u8)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// Whether a runner of this build can use a worker that speaks `v` (ggml's own rule).
pub fn compatible(v: (u8, u8, u8)) -> bool {
    v.0 == PROTOCOL.0 && v.1 <= PROTOCOL.1
}

/// Ask the worker at `endpoint`, every step (connect, handshake, each answer) within `timeout`
/// in all. The name lookup is not bounded here; [`probe_all`] bounds it.
pub fn probe(endpoint: &str, timeout: Duration) -> WorkerReport {
    let deadline = Instant::now() + timeout;
    let mut report = WorkerReport::unusable(endpoint, None);
    let mut stream = match connect(endpoint, deadline) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let busy = || {
        format!(
            "RPC worker {endpoint} accepted the connection but did not answer the handshake within {:.0} s: \
             it is stopped or hung, or it is serving another runner (a worker serves one at a time)",
            timeout.as_secs_f32()
        )
    };
    let version = match hello(&mut stream, deadline) {
        Ok(v) => v,
        Err(e) if is_timeout(&e) => {
            report.error = Some(busy());
            return report;
        }
        Err(e) => {
            report.error = Some(format!(
                "RPC worker {endpoint} broke off the handshake ({e}): it is not a ggml RPC worker, or one of another protocol"
            ));
            return report;
        }
    };
    report.protocol = Some(version_text(version));
    if !compatible(version) {
        report.error = Some(format!(
            "RPC worker {endpoint} speaks RPC protocol {}, and this Corral speaks {}: run the same Corral (or llama.cpp) version on both sides",
            version_text(version),
            version_text(PROTOCOL)
        ));
        return report;
    }
    let answer = |stream: &mut TcpStream| -> std::io::Result<Vec<WorkerDevice>> {
        let n = u32::from_le_bytes(
            command(stream, deadline, CMD_DEVICE_COUNT, &[], 4)?[..4]
                .try_into()
                .unwrap(),
        );
        if n > MAX_DEVICES {
            return Err(std::io::Error::other(format!("it reports {n} devices")));
        }
        (0..n)
            .map(|d| {
                let r = command(
                    stream,
                    deadline,
                    CMD_GET_DEVICE_MEMORY,
                    &d.to_le_bytes(),
                    16,
                )?;
                Ok(WorkerDevice {
                    memory_free: u64::from_le_bytes(r[..8].try_into().unwrap()),
                    memory_total: u64::from_le_bytes(r[8..16].try_into().unwrap()),
                })
            })
            .collect()
    };
    match answer(&mut stream) {
        Ok(d) if d.is_empty() => {
            report.error = Some(format!("RPC worker {endpoint} offers no device"))
        }
        Ok(d) => {
            report.devices = d;
            report.usable = true;
        }
        Err(e) => {
            report.error = Some(format!(
                "RPC worker {endpoint} did not answer a device query ({e})"
            ))
        }
    }
    report
}

/// Time left before `deadline`, never zero (a zero timeout means none to std).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn connect(endpoint: &str, deadline: Instant) -> Result<TcpStream, String> {
    let timeout = left(deadline);
    let addrs: Vec<SocketAddr> = endpoint
        .to_socket_addrs()
        .map_err(|e| format!("RPC worker {endpoint}: not a reachable host:port ({e})"))?
        .collect();
    let mut last = format!("RPC worker {endpoint}: the name has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, left(deadline)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if is_timeout(&e) || Instant::now() >= deadline => {
                last = format!(
                    "RPC worker {endpoint} ({a}) did not accept a connection within {:.0} s (link down or host gone?)",
                    timeout.as_secs_f32()
                )
            }
            Err(e) => last = format!("RPC worker {endpoint} ({a}) cannot be reached: {e}"),
        }
    }
    Err(last)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// HELLO: the worker's protocol version.
fn hello(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<(u8, u8, u8)> {
    let r = command(
        stream,
        deadline,
        CMD_HELLO,
        &[0u8; CONN_CAPS],
        4 + CONN_CAPS,
    )?;
    Ok((r[0], r[1], r[2]))
}

/// One request: `| cmd (1 byte) | size (8 bytes LE) | data |`; the answer:
/// `| size (8 bytes LE) | data |`, which must be `answer` bytes long.
fn command(
    stream: &mut TcpStream,
    deadline: Instant,
    cmd: u8,
    data: &[u8],
    answer: usize,
) -> std::io::Result<Vec<u8>> {
    let mut msg = Vec::with_capacity(9 + data.len());
    msg.push(cmd);
    msg.extend_from_slice(&(data.len() as u64).to_le_bytes());
    msg.extend_from_slice(data);
    stream.set_write_timeout(Some(left(deadline)))?;
    stream.write_all(&msg)?;
    let mut size = [0u8; 8];
    stream.set_read_timeout(Some(left(deadline)))?;
    stream.read_exact(&mut size)?;
    let size = u64::from_le_bytes(size);
    if size != answer as u64 {
        return Err(std::io::Error::other(format!(
            "an answer of {size} bytes where {answer} were expected"
        )));
    }
    let mut out = vec![0u8; answer];
    stream.set_read_timeout(Some(left(deadline)))?;
    stream.read_exact(&mut out)?;
    Ok(out)
}

/// Probe every worker at once, each within `timeout` in all, its name lookup included: a
/// probe still running then is reported as silent and left to end on its own thread.
/// Reports come in the given order.
pub fn probe_all(endpoints: &[String], timeout: Duration) -> Vec<WorkerReport> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, e) in endpoints.iter().enumerate() {
        let (tx, e) = (tx.clone(), e.clone());
        std::thread::spawn(move || {
            let _ = tx.send((i, probe(&e, timeout)));
        });
    }
    drop(tx);
    let mut got: Vec<Option<WorkerReport>> = vec![None; endpoints.len()];
    // A little past the deadline, so that a probe that failed right at it gives its reason.
    let end = deadline + Duration::from_millis(100);
    while got.iter().any(Option::is_none) {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok((i, r)) => got[i] = Some(r),
            Err(_) => break,
        }
    }
    got.into_iter()
        .zip(endpoints)
        .map(|(r, e)| {
            r.unwrap_or_else(|| {
                WorkerReport::unusable(
                    e,
                    Some(format!(
                        "RPC worker {e} did not answer within {:.0} s (does its name resolve?)",
                        timeout.as_secs_f32()
                    )),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_version_rule() {
        assert!(compatible(PROTOCOL));
        assert!(compatible((PROTOCOL.0, PROTOCOL.1, PROTOCOL.2 + 1)));
        assert!(!compatible((PROTOCOL.0, PROTOCOL.1 + 1, 0)));
        assert!(!compatible((PROTOCOL.0 - 1, 0, 0)));
        assert!(!compatible((PROTOCOL.0 + 1, 0, 0)));
    }

    #[test]
    fn a_closed_port_is_named() {
        // Bind and drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = probe(&format!("127.0.0.1:{port}"), Duration::from_secs(1));
        assert!(!r.usable);
        let e = r.error.unwrap();
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(e.contains("cannot be reached"), "{e}");
    }
}
