//! RPC workers that go away mid-answer (issue 17): killed, or hung (SIGSTOP: the connection
//! stays open and nothing answers, as when a link is cut; `rpc_netns` cuts a real one). The
//! request ends with an error that names the worker within CORRAL_STALL_TIMEOUT, the next
//! request loads the model without it, and no runner is left behind.

use crate::common;

use common::worker::{clients, greedy_answer, smol_with, stream_then, Worker};
use common::*;
use std::time::Duration;

/// The stall timeout of these tests, in seconds.
const STALL: f64 = 6.0;

/// After a fault on `dead`: the next request answers with the model loaded without it, the
/// cause shown in `/api/ps`, and the other worker still used.
fn next_load_leaves_out(s: &TestServer, dead: &str, alive: &Worker) {
    let connected = clients(alive);
    assert!(!greedy_answer(s, "smol-split").is_empty());
    let ps = s.get("/api/ps");
    let m = &ps["models"][0];
    let warning = m["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains(dead) && warning.contains("left out"),
        "the dead worker is not named in /api/ps: {ps}"
    );
    assert!(m["size_remote"].as_u64().unwrap_or(0) > 0, "{ps}");
    assert!(
        clients(alive) > connected,
        "the live worker was not used again:\n{}",
        alive.log()
    );
}

fn split_server(w1: &Worker, w2: &Worker) -> TestServer {
    let servers = format!("{},{}", w1.endpoint, w2.endpoint);
    let s = TestServer::start_with(&[
        ("CORRAL_RPC_SERVERS", &servers),
        ("CORRAL_STALL_TIMEOUT", &format!("{STALL}s")),
    ]);
    s.create("smol-split", &smol_with("PARAMETER num_gpu 20\n"));
    s
}

#[test]
fn a_worker_killed_mid_answer_ends_it_with_an_error_naming_the_worker() {
    let (mut w1, w2) = (Worker::start(), Worker::start());
    let dead = w1.endpoint.clone();
    let mut s = split_server(&w1, &w2);
    let (last, secs) = stream_then(&s, "smol-split", || w1.kill());
    let e = last["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the answer did not end with an error: {last}"));
    eprintln!("the error, {secs:.1}s after the fault: {e}");
    assert!(e.contains(&dead), "the error does not name the worker: {e}");
    assert!(secs <= STALL, "the error came {secs:.1}s after the kill");
    assert!(
        wait_for(Duration::from_secs(5), || s.runner_pids().is_empty()),
        "a runner was left behind"
    );
    next_load_leaves_out(&s, &dead, &w2);
    s.stop();
    assert!(s.runner_pids().is_empty(), "a runner outlived the server");
    assert!(w2.stop().success());
}

#[test]
fn a_worker_that_hangs_mid_answer_is_named_within_the_stall_timeout() {
    let (w1, w2) = (Worker::start(), Worker::start());
    let hung = w1.endpoint.clone();
    let mut s = split_server(&w1, &w2);
    let mut pids = Vec::new();
    let (last, secs) = stream_then(&s, "smol-split", || {
        pids = s.runner_pids();
        signal(w1.pid(), 19)
    });
    assert_eq!(pids.len(), 1, "one runner was serving");
    let e = last["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the answer did not end with an error: {last}"));
    eprintln!("the error, {secs:.1}s after the fault: {e}");
    assert!(
        e.contains(&hung) && e.contains("stopped making progress"),
        "the error does not name the worker: {e}"
    );
    // The stall clock and the check of the workers both fit in CORRAL_STALL_TIMEOUT (with a
    // little room for this machine's scheduling).
    assert!(
        secs <= STALL + 1.0,
        "the error came {secs:.1}s after the hang"
    );
    assert!(
        !s.runner_pids().contains(&pids[0]),
        "the stuck runner was not stopped"
    );
    next_load_leaves_out(&s, &hung, &w2);
    s.stop();
    assert!(s.runner_pids().is_empty(), "a runner outlived the server");
    drop(w1);
    assert!(w2.stop().success());
}
