//! Real `corral rpc-worker` processes for the RPC tests: on loopback ports, or in network
//! namespaces of their own (each with its address and a veth link that a test can cut).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{corral_exe, signal, wait_for, TestServer};

/// A running `corral rpc-worker`, its log in `log`.
pub struct Worker {
    child: Child,
    pub endpoint: String,
    log: tempfile::NamedTempFile,
}

impl Worker {
    /// A worker on a free loopback port.
    pub fn start() -> Worker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Worker::spawn(&[], &format!("127.0.0.1:{port}"), &[])
    }

    /// A worker started as `prefix... corral rpc-worker --listen <listen> <extra...>`.
    pub fn spawn(prefix: &[&str], listen: &str, extra: &[&str]) -> Worker {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend([
            corral_exe(),
            "rpc-worker",
            "--listen",
            listen,
            "--threads",
            "1",
        ]);
        argv.extend(extra);
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let w = Worker {
            child,
            endpoint: listen.to_string(),
            log,
        };
        // Without connecting: a connection of the test's own would show in the worker's log
        // as a client, and the tests check for the server's.
        let port: u16 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
        let pid = w.child.id();
        assert!(
            wait_for(Duration::from_secs(20), || listening(pid, port)),
            "the worker on {listen} did not start listening:\n{}",
            w.log()
        );
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
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

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) worker must be let go on too.
        signal(self.child.id(), 18);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` has a TCP socket listening on `port`, read from its own view of the
/// network (`/proc/PID/net`: a worker in a namespace sees the namespace's).
fn listening(pid: u32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3
                    && cols[3] == "0A"
                    && cols[1].rsplit(':').next() == Some(format!("{port:04X}").as_str())
            })
    })
}

/// How many clients a worker has logged.
pub fn clients(w: &Worker) -> usize {
    w.log().matches("RPC client connected").count()
}

/// A Modelfile for SmolLM2 with extra lines.
pub fn smol_with(lines: &str) -> String {
    format!("FROM {}\n{lines}", super::model_file(super::SMOL).display())
}

/// The greedy answer to a fixed question.
pub fn greedy_answer(s: &TestServer, model: &str) -> String {
    let (status, v) = s.post(
        "/api/generate",
        serde_json::json!({"model": model, "prompt": "Name the capital of France.", "stream": false,
               "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(status, 200, "{v}\n{}", s.log());
    assert_eq!(v["done"], true, "{v}");
    v["response"].as_str().unwrap().to_string()
}

/// How a long streamed answer ended after `act` ran once its first tokens had come: the
/// last line (an error object, or the final one) and the seconds from `act` to that line.
pub fn stream_then(s: &TestServer, model: &str, act: impl FnOnce()) -> (Value, f64) {
    use std::io::BufRead;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let resp = client
        .post(s.url("/api/generate"))
        .json(
            &serde_json::json!({"model": model, "prompt": "Write a long story about a ship.",
               "options": {"temperature": 0, "num_predict": 2000}}),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut act = Some(act);
    let mut acted = Instant::now();
    let mut tokens = 0;
    let mut last = Value::Null;
    for line in std::io::BufReader::new(resp).lines() {
        let Ok(line) = line else { break };
        last = serde_json::from_str(&line).unwrap();
        tokens += 1;
        if tokens == 5 {
            if let Some(a) = act.take() {
                a();
                acted = Instant::now();
            }
        }
    }
    assert!(act.is_none(), "the answer ended before 5 tokens: {last}");
    (last, acted.elapsed().as_secs_f64())
}
