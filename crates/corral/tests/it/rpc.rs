//! Models split across machines with ggml's RPC backend (issue 17): `corral rpc-worker` on
//! loopback ports, a server that names them in `CORRAL_RPC_SERVERS` or a Modelfile's
//! `PARAMETER rpc_servers`. Faults are in `rpc_faults`, namespaced hosts in `rpc_netns`.

use crate::common;

use common::worker::{greedy_answer, smol_with, Worker};
use common::*;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Command, Stdio};

#[test]
fn a_worker_refuses_a_remote_address_without_allow_remote() {
    let out = Command::new(corral_exe())
        .args(["rpc-worker", "--listen", "0.0.0.0:50999"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("not a loopback address") && e.contains("--allow-remote"),
        "{e}"
    );
    let out = Command::new(corral_exe())
        .args(["rpc-worker", "--listen", "no-port-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a host:port address"),
        "{}",
        stderr(&out)
    );
}

/// The `/api/ps` entry of a model.
fn ps_entry(s: &TestServer, name: &str) -> Value {
    let ps = s.get("/api/ps");
    ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == format!("{name}:latest"))
        .unwrap_or_else(|| panic!("{name} is not in /api/ps: {ps}"))
        .clone()
}

#[test]
fn a_model_split_over_two_workers_answers_as_it_does_locally() {
    let local = {
        let mut s = TestServer::start();
        s.create_smol();
        let a = greedy_answer(&s, "smol");
        s.stop();
        a
    };
    let (w1, w2) = (Worker::start(), Worker::start());
    let servers = format!("{},{}", w1.endpoint, w2.endpoint);

    // `corral devices` asks each worker what it has.
    let d = devices_json(&[("CORRAL_RPC_SERVERS", &servers)]);
    let workers = d["workers"].as_array().expect("workers in the report");
    assert_eq!(workers.len(), 2, "{d}");
    for (w, e) in workers.iter().zip([&w1.endpoint, &w2.endpoint]) {
        assert_eq!(w["endpoint"], e.as_str(), "{w}");
        assert_eq!(w["usable"], true, "{w}");
        assert_eq!(w["protocol"], "7.0.0", "{w}");
        assert_eq!(w["devices"].as_array().unwrap().len(), 1, "{w}");
        assert!(w["devices"][0]["memory_total"].as_u64().unwrap() > 0, "{w}");
    }

    let mut s = TestServer::start_with(&[("CORRAL_RPC_SERVERS", &servers)]);
    // 20 of SmolLM2's 31 layers (30 and the output layer) on the workers, the rest here.
    s.create("smol-split", &smol_with("PARAMETER num_gpu 20\n"));
    let split = greedy_answer(&s, "smol-split");
    assert_eq!(split, local, "the split model answered differently");
    let log = s.log();
    assert!(
        log.matches("RPC worker added").count() >= 2,
        "both workers were not added:\n{log}"
    );
    for w in [&w1, &w2] {
        // llama.cpp placed weights on each worker's device.
        assert!(
            log.contains(&format!("[{}] model buffer size", w.endpoint)),
            "no weights on {}:\n{log}",
            w.endpoint
        );
        // The worker names who connected (ggml itself does not).
        assert!(
            w.log().contains("RPC client connected peer=127.0.0.1:"),
            "worker {} did not name its clients:\n{}",
            w.endpoint,
            w.log()
        );
    }
    // The share on other machines: 20 of 31 layers, all of the offloaded part.
    let m = ps_entry(&s, "smol-split");
    let (size, vram, remote) = (
        m["size"].as_u64().unwrap(),
        m["size_vram"].as_u64().unwrap(),
        m["size_remote"].as_u64().unwrap_or(0),
    );
    assert_eq!(remote, size * 20 / 31, "{m}");
    assert_eq!(vram, remote, "{m}");
    assert!(m.get("warning").is_none(), "{m}");
    let out = s.corral(&["ps"]);
    assert!(stdout(&out).contains("35%/65% CPU/RPC"), "{}", stdout(&out));

    s.stop();
    for w in [w1, w2] {
        let log = w.log();
        assert!(log.contains("RPC client left"), "{log}");
        let status = w.stop();
        assert!(status.success(), "a worker's exit on SIGTERM: {status:?}");
    }
}

#[test]
fn a_modelfile_picks_among_the_servers_workers_and_requests_may_not() {
    let w = Worker::start();
    // Two workers for the server; one does not answer. A model that names only the other
    // uses it alone (and every layer goes to it), with no word of the silent one.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let servers = format!("127.0.0.1:{closed},{}", w.endpoint);
    let mut s = TestServer::start_with(&[("CORRAL_RPC_SERVERS", &servers)]);
    s.create(
        "smol-remote",
        &smol_with(&format!("PARAMETER rpc_servers {}\n", w.endpoint)),
    );
    assert!(!greedy_answer(&s, "smol-remote").is_empty());
    let m = ps_entry(&s, "smol-remote");
    assert_eq!(m["size_remote"], m["size"], "{m}");
    assert!(m.get("warning").is_none(), "{m}");
    assert!(stdout(&s.corral(&["ps"])).contains("100% RPC"));
    assert!(
        s.log()
            .contains(&format!("[{}] model buffer size", w.endpoint)),
        "{}",
        s.log()
    );
    // An empty list keeps a model off the server's workers.
    s.create("smol-here", &smol_with("PARAMETER rpc_servers \"\"\n"));
    assert!(!greedy_answer(&s, "smol-here").is_empty());
    let m = ps_entry(&s, "smol-here");
    assert_eq!(m["size_vram"], 0, "{m}");
    assert!(m.get("warning").is_none(), "{m}");

    // A model (made here, or pulled) may not name a machine the server does not list...
    s.create(
        "smol-elsewhere",
        &smol_with("PARAMETER rpc_servers 10.1.2.3:50052\n"),
    );
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "smol-elsewhere", "prompt": "hi", "stream": false}),
    );
    assert_eq!(status, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("10.1.2.3:50052") && e.contains("CORRAL_RPC_SERVERS"),
        "{e}"
    );
    // ...and a request may not set them at all.
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "smol-remote", "prompt": "hi", "stream": false,
               "options": {"rpc_servers": w.endpoint}}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("rpc_servers"), "{v}");
    // A Modelfile with a value that is not a list of addresses is refused, naming it.
    let out = s.try_create(
        "smol-bad",
        &smol_with("PARAMETER rpc_servers host-without-port\n"),
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("rpc_servers") && e.contains("host-without-port"),
        "{e}"
    );
    s.stop();
}

#[test]
fn an_unreachable_worker_is_left_out_and_the_model_loads_without_it() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{closed}");
    let mut s = TestServer::start_with(&[("CORRAL_RPC_SERVERS", &endpoint)]);
    s.create("smol-split", &smol_with("PARAMETER num_gpu 20\n"));
    assert!(!greedy_answer(&s, "smol-split").is_empty());
    let log = s.log();
    assert!(
        log.contains("RPC worker left out") && log.contains(&endpoint),
        "{log}"
    );
    // The cause is where users look: /api/ps and `corral ps`.
    let m = ps_entry(&s, "smol-split");
    let warning = m["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains(&endpoint) && warning.contains("left out"),
        "{m}"
    );
    assert_eq!(m["size_vram"], 0, "{m}");
    let out = stdout(&s.corral(&["ps"]));
    assert!(
        out.contains("100% CPU") && out.contains("warning: smol-split:latest: left out"),
        "{out}"
    );
    let d = devices_json(&[("CORRAL_RPC_SERVERS", &endpoint)]);
    assert_eq!(d["workers"][0]["usable"], false, "{d}");
    assert!(
        d["workers"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{d}"
    );
    s.stop();
}

/// A peer that answers ggml's handshake with another protocol version and then nothing: the
/// only way to meet a worker of another version here (there is one build of llama.cpp).
fn other_version_peer(version: [u8; 3]) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        for conn in l.incoming().take(10) {
            let Ok(mut c) = conn else { return };
            let mut hello = [0u8; 1 + 8 + 24];
            if c.read_exact(&mut hello).is_err() || hello[0] != 14 {
                continue;
            }
            let mut answer = 28u64.to_le_bytes().to_vec();
            answer.extend_from_slice(&version);
            answer.extend_from_slice(&[0u8; 25]);
            let _ = c.write_all(&answer);
        }
    });
    (endpoint, h)
}

#[test]
fn a_worker_of_another_protocol_version_is_refused_naming_both_versions() {
    let (endpoint, _peer) = other_version_peer([6, 1, 0]);
    let d = devices_json(&[("CORRAL_RPC_SERVERS", &endpoint)]);
    let w = &d["workers"][0];
    assert_eq!(w["usable"], false, "{d}");
    assert_eq!(w["protocol"], "6.1.0", "{d}");
    let e = w["error"].as_str().unwrap();
    assert!(
        e.contains("6.1.0") && e.contains("7.0.0") && e.contains(&endpoint),
        "{e}"
    );

    // A runner leaves it out (ggml would abort the runner) and the model loads here.
    let mut s = TestServer::start_with(&[("CORRAL_RPC_SERVERS", &endpoint)]);
    s.create_smol();
    assert!(!greedy_answer(&s, "smol").is_empty());
    let m = ps_entry(&s, "smol");
    let warning = m["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("6.1.0") && warning.contains("7.0.0"),
        "{m}"
    );
    s.stop();
}
