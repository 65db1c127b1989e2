//! RPC workers on hosts of their own (issue 17): each in a network namespace the test makes,
//! joined to this one by a veth pair, so each has its own address, serves with
//! `--allow-remote`, and has a link that the test can cut with `ip link set ... down`.
//! Where namespaces cannot be made (no privilege), each test says so and returns; the
//! loopback tests in `rpc` and `rpc_faults` still run.

use crate::common;

use common::worker::{greedy_answer, smol_with, stream_then, Worker};
use common::*;
use std::process::Command;

/// A network namespace with a veth link to this one: `host` is this side's interface.
struct Netns {
    name: String,
    host: String,
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
    /// Namespace `i` of this test process, on a /30 of its own.
    fn create(i: u32) -> Result<Netns, String> {
        let pid = std::process::id();
        let name = format!("corral-{pid}-{i}");
        let host = format!("cr{}h{i}", pid % 1_000_000);
        let peer = format!("cr{}n{i}", pid % 1_000_000);
        let net = format!("10.{}.{}", 100 + (pid >> 8) % 100, pid % 256);
        let (h, n) = (4 * i + 1, 4 * i + 2);
        let ns = Netns {
            name: name.clone(),
            host: host.clone(),
            addr: format!("{net}.{n}"),
            peer_addr: format!("{net}.{h}"),
        };
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
    match Netns::create(0).and_then(|a| Ok((a, Netns::create(1)?))) {
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
    let (last, secs) = stream_then(&s, "smol-split", || {
        ip(&["link", "set", &a.host, "down"]).unwrap()
    });
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
    s.stop();
    assert!(s.runner_pids().is_empty());
    assert!(wb.stop().success());
}
