//! RPC workers on hosts of their own (issue 17): each in a network namespace the test makes,
//! joined to this one by a veth pair, so each has its own address, serves with
//! `--allow-remote`, and has a link that the test can cut with `ip link set ... down` (on the
//! namespace's side, so that this side sees no error, only silence, as with a cable pulled
//! out between two machines).
//! Where namespaces cannot be made (no privilege), each test says so and returns; the
//! loopback tests in `rpc` and `rpc_faults` still run.

use crate::common;

use common::worker::{greedy_answer, smol_with, stream_then, Worker};
use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// A network namespace with a veth link to this one: `host` is this side's interface, `peer`
/// the namespace's.
struct Netns {
    name: String,
    host: String,
    peer: String,
    /// The namespace's address, and this side's.
    addr: String,
    peer_addr: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), stderr(&out).trim()))
    }
}

impl Netns {
    /// A namespace of its own, on a /30 of its own: named by this process and a count, as
    /// tests may run in one process (cargo test) or in one each (nextest).
    fn create() -> Result<Netns, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
        let pid = std::process::id();
        let name = format!("corral-{pid}-{i}");
        let host = format!("cr{}h{i}", pid % 1_000_000);
        let peer = format!("cr{}n{i}", pid % 1_000_000);
        let net = format!("10.{}.{}", 100 + (pid >> 8) % 150, pid % 256);
        let (h, n) = (4 * i + 1, 4 * i + 2);
        let ns = Netns {
            name: name.clone(),
            host: host.clone(),
            peer: peer.clone(),
            addr: format!("{net}.{n}"),
            peer_addr: format!("{net}.{h}"),
        };
        // Dropped on any failure below, which removes what was made.
        ip(&["netns", "add", &name])?;
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &name])?;
        ip(&["addr", "add", &format!("{net}.{h}/30"), "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        let inside = |args: &[&str]| {
            let mut a = vec!["netns", "exec", &name, "ip"];
            a.extend(args);
            ip(&a)
        };
        inside(&["addr", "add", &format!("{net}.{n}/30"), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Cut or restore the link, on the namespace's side.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "netns", "exec", &self.name, "ip", "link", "set", &self.peer, state,
        ])
        .unwrap();
    }

    /// A worker inside, listening on the namespace's address.
    fn worker(&self) -> Worker {
        Worker::spawn(
            &["ip", "netns", "exec", &self.name],
            &format!("{}:50052", self.addr),
            &["--allow-remote"],
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host]);
    }
}

/// Two namespaces, or why there are none.
fn two() -> Option<(Netns, Netns)> {
    match Netns::create().and_then(|a| Ok((a, Netns::create()?))) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!(
                "skipped: network namespaces cannot be made here ({e}); the loopback RPC tests still run"
            );
            None
        }
    }
}

#[test]
fn a_model_split_over_workers_on_two_hosts_answers_as_it_does_locally() {
    let Some((a, b)) = two() else { return };
    let local = {
        let mut s = TestServer::start();
        s.create_smol();
        let x = greedy_answer(&s, "smol");
        s.stop();
        x
    };
    let (wa, wb) = (a.worker(), b.worker());
    for w in [&wa, &wb] {
        assert!(w.log().contains("no authentication"), "{}", w.log());
    }
    let mut s = TestServer::start_with(&[(
        "CORRAL_RPC_SERVERS",
        &format!("{},{}", wa.endpoint, wb.endpoint),
    )]);
    s.create("smol-split", &smol_with("PARAMETER num_gpu 20\n"));
    assert_eq!(greedy_answer(&s, "smol-split"), local);
    // Each worker saw this host's address on its link.
    for (w, ns) in [(&wa, &a), (&wb, &b)] {
        assert!(
            w.log().contains(&format!("peer={}:", ns.peer_addr)),
            "{}",
            w.log()
        );
    }
    s.stop();
    assert!(wa.stop().success() && wb.stop().success());
}

#[test]
fn a_link_cut_mid_answer_ends_it_naming_the_worker_and_the_next_load_leaves_it_out() {
    let Some((a, b)) = two() else { return };
    let (wa, wb) = (a.worker(), b.worker());
    let stall = 6.0;
    let mut s = TestServer::start_with(&[
        (
            "CORRAL_RPC_SERVERS",
            &format!("{},{}", wa.endpoint, wb.endpoint),
        ),
        ("CORRAL_STALL_TIMEOUT", &format!("{stall}s")),
    ]);
    s.create("smol-split", &smol_with("PARAMETER num_gpu 20\n"));
    let (last, secs) = stream_then(&s, "smol-split", || a.link(false));
    let e = last["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the answer did not end with an error: {last}"));
    eprintln!("the error, {secs:.1}s after the fault: {e}");
    assert!(
        e.contains(&wa.endpoint),
        "the error does not name the worker: {e}"
    );
    assert!(
        secs <= stall + 1.0,
        "the error came {secs:.1}s after the cut"
    );
    assert!(s.runner_pids().is_empty(), "a runner was left behind");

    // The next request: the cut worker is left out, the other one is used.
    assert!(!greedy_answer(&s, "smol-split").is_empty());
    let ps = s.get("/api/ps");
    let warning = ps["models"][0]["warning"].as_str().unwrap_or_default();
    assert!(warning.contains(&wa.endpoint), "{ps}");
    assert!(
        ps["models"][0]["size_remote"].as_u64().unwrap_or(0) > 0,
        "{ps}"
    );

    // Still cut off, the worker drops the runner it lost (keepalive: about 20 s; ggml alone
    // would wait on it forever, serving no one else)...
    assert!(
        wait_for(Duration::from_secs(60), || {
            let log = wa.log();
            log.matches("RPC client left").count() == log.matches("RPC client connected").count()
        }),
        "the worker still holds the lost runner's connection:\n{}",
        wa.log()
    );
    // ...and once the link is back, it serves again.
    a.link(true);
    let mut last = Value::Null;
    assert!(
        wait_for(Duration::from_secs(60), || {
            last = devices_json(&[("CORRAL_RPC_SERVERS", &wa.endpoint)]);
            last["workers"][0]["usable"] == true
        }),
        "the worker did not serve again after its link came back: {last}\n{}",
        wa.log()
    );
    s.stop();
    assert!(s.runner_pids().is_empty());
    assert!(wb.stop().success());
}
