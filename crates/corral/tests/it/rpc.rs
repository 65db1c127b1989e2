//! Models split across machines with ggml's RPC backend (issue 17): `corral rpc-worker` on
//! loopback ports, a server that names them in `CORRAL_RPC_SERVERS`.

use crate::common;

use common::*;
use serde_json::json;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `corral rpc-worker` on a loopback port, its log in `log`.
struct Worker {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Worker {
    fn start() -> Worker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(corral_exe())
            .args([
                "rpc-worker",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--threads",
                "1",
            ])
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "the worker did not start listening"
        );
        Worker { child, port, log }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        signal(self.child.id(), 15);
        for _ in 0..100 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("the worker did not stop on SIGTERM:\n{}", self.log());
    }
}

fn greedy_answer(s: &TestServer, model: &str) -> String {
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": model, "prompt": "Name the capital of France.", "stream": false,
               "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(status, 200, "{v}\n{}", s.log());
    assert_eq!(v["done"], true, "{v}");
    v["response"].as_str().unwrap().to_string()
}

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
    let servers = format!("{},{}", w1.endpoint(), w2.endpoint());
    let mut s = TestServer::start_with(&[("CORRAL_RPC_SERVERS", &servers)]);
    // 20 of SmolLM2's 30 layers on the workers, the rest on the local CPU.
    s.create(
        "smol-split",
        &format!(
            "FROM {}\nPARAMETER num_gpu 20\n",
            model_file(SMOL).display()
        ),
    );
    let split = greedy_answer(&s, "smol-split");
    assert_eq!(split, local, "the split model answered differently");
    let log = s.log();
    assert!(
        log.matches("RPC worker added").count() >= 2,
        "both workers were not added:\n{log}"
    );
    for w in [&w1, &w2] {
        assert!(
            w.log().contains("Accepted client connection"),
            "worker {} was not used:\n{}",
            w.endpoint(),
            w.log()
        );
    }
    s.stop();
    for w in [w1, w2] {
        let status = w.stop();
        assert!(status.success(), "a worker's exit on SIGTERM: {status:?}");
    }
}

#[test]
fn an_unreachable_worker_is_left_out_and_the_model_loads_without_it() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = TestServer::start_with(&[("CORRAL_RPC_SERVERS", &format!("127.0.0.1:{closed}"))]);
    s.create(
        "smol-split",
        &format!(
            "FROM {}\nPARAMETER num_gpu 20\n",
            model_file(SMOL).display()
        ),
    );
    assert!(!greedy_answer(&s, "smol-split").is_empty());
    let log = s.log();
    assert!(
        log.contains("RPC worker left out") && log.contains(&format!("127.0.0.1:{closed}")),
        "{log}"
    );
    s.stop();
}
