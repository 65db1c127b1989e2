//! Supervised runners and the scheduler: crashes become error messages, nothing hangs,
//! nothing is left behind, and many clients share a model.

use crate::common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn smol_server(env: &[(&str, &str)]) -> TestServer {
    let s = TestServer::start_with(env);
    s.create_smol();
    s
}

/// Start a streaming chat and return the reader once the first chunk has arrived.
fn start_stream(s: &TestServer, num_predict: u32) -> impl Iterator<Item = Value> {
    let body = json!({"model": "smol", "messages": [{"role": "user", "content": "Tell me a very long story about a dragon and a knight."}],
                      "options": {"num_predict": num_predict, "temperature": 0}});
    open_stream(s, "/api/chat", body)
}

/// POST a streaming request and return the reader once the first chunk has arrived; it ends
/// with the stream, or where the connection breaks.
fn open_stream(s: &TestServer, path: &str, body: Value) -> impl Iterator<Item = Value> {
    let resp = s.http.post(s.url(path)).json(&body).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = BufReader::new(resp)
        .lines()
        .map_while(Result::ok)
        .map(|l| serde_json::from_str::<Value>(&l).unwrap())
        .peekable();
    assert_eq!(lines.peek().unwrap()["done"], false);
    lines
}

/// The answer of a request whose load hung: the load timeout's error, and no runner left.
fn load_timed_out(s: &TestServer, status: u16, body: &Value) {
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("timed out waiting for the model to load"),
        "{body}"
    );
    assert!(wait_for(Duration::from_secs(2), || s
        .runner_pids()
        .is_empty()));
}

fn generate(s: &TestServer, body: Value) -> (u16, Value) {
    s.post("/api/generate", body)
}

/// Clients that leave before their first token (queued, or while their prompt is evaluated)
/// free the model at once: it does not evaluate prompts for nobody while others wait.
#[test]
fn clients_that_leave_before_their_first_token_free_the_model() {
    let s = smol_server(&[]);
    let long = |word: &str| format!("{word} ").repeat(1500);
    let ask = |prompt: String, stream: bool| json!({"model": "smol", "prompt": prompt, "stream": stream, "options": {"num_predict": 1}});
    // How long one such prompt takes here, evaluated in full (once the model is loaded).
    let (status, _) = generate(&s, ask("Hi".into(), false));
    assert_eq!(status, 200);
    let started = Instant::now();
    let (status, _) = generate(&s, ask(long("plum"), false));
    assert_eq!(status, 200);
    let one_prompt = started.elapsed();
    for (path, stream) in [
        ("/api/generate", true),
        ("/api/generate", false),
        ("/v1/completions", true),
    ] {
        // Three long prompts, one being evaluated and two queued, whose clients leave.
        let socks: Vec<std::net::TcpStream> = ["kiwi", "lemon", "mango"]
            .iter()
            .map(|w| {
                use std::io::Write;
                let mut body = ask(long(&format!("{w}{path}{stream}")), stream);
                body["max_tokens"] = json!(1);
                let body = body.to_string();
                let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
                write!(
                    c,
                    "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                c
            })
            .collect();
        std::thread::sleep(one_prompt / 4);
        drop(socks);
        // The next request waits for at most the piece of a prompt under way, not for three
        // whole prompts (which, unfreed, take three times `one_prompt`).
        let started = Instant::now();
        let (status, v) = generate(&s, ask("Hi".into(), false));
        assert_eq!(status, 200, "{v}");
        assert!(
            started.elapsed() < one_prompt,
            "{path} stream {stream}: waited {:?}; one prompt takes {one_prompt:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_killed_runner_ends_the_stream_with_the_signal_and_the_next_request_works() {
    let s = smol_server(&[]);
    let mut lines = start_stream(&s, 2000);
    let pids = s.runner_pids();
    assert_eq!(pids.len(), 1);
    let killed = Instant::now();
    signal(pids[0], 9);
    let last = lines
        .find(|l| l.get("error").is_some() || l["done"] == true)
        .expect("a last line");
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "error took {:?}",
        killed.elapsed()
    );
    let err = last["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error line, got {last}"));
    assert!(
        err.contains("runner process has terminated: signal 9 (SIGKILL)"),
        "{err}"
    );

    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 4);
    assert_eq!(s.runner_pids().len(), 1);
}

#[test]
fn killing_the_server_leaves_no_runner() {
    let mut s = smol_server(&[("CORRAL_NUM_PARALLEL", "2")]);
    let a = start_stream(&s, 2000);
    let b = start_stream(&s, 2000);
    assert_eq!(s.runner_pids().len(), 1);
    let mut child = s.child.take().unwrap();
    let killed = Instant::now();
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || s.runner_pids().is_empty()),
        "runner outlived a SIGKILLed server"
    );
    assert!(killed.elapsed() < Duration::from_secs(2));
    drop((a, b));
    let _ = &mut s;
}

#[test]
fn sigterm_ends_open_streams_with_an_error_line_and_stops_runners() {
    let mut s = smol_server(&[]);
    let mut lines = start_stream(&s, 2000);
    let pid = s.child.as_ref().unwrap().id();
    signal(pid, 15);
    let last = lines
        .find(|l| l.get("error").is_some() || l["done"] == true)
        .expect("a last line");
    assert_eq!(last["error"], "the server is shutting down", "{last}");
    s.stop();
    assert!(wait_for(Duration::from_secs(2), || s
        .runner_pids()
        .is_empty()));
}

/// A request still waiting for room when the server shuts down is told so at once: no model
/// is unloaded and loaded for it first.
#[test]
fn shutdown_loads_nothing_for_a_request_still_waiting() {
    let mut s = smol_server(&[("CORRAL_MAX_LOADED_MODELS", "1")]);
    let wide = format!(
        "FROM {}\nPARAMETER num_ctx 8192\n",
        model_file(SMOL).display()
    );
    s.create("smol-wide", &wide);
    let lines = start_stream(&s, 2000);
    let pid = s.child.as_ref().unwrap().id();
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            generate(
                &s,
                json!({"model": "smol-wide", "prompt": "Hi", "stream": false}),
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        signal(pid, 15);
        let (status, body) = waiting.join().unwrap();
        assert_eq!(status, 500, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("shutting down"),
            "{body}"
        );
    });
    drop(lines);
    s.stop();
    assert!(
        !s.log().contains("unloading to make room"),
        "a model was swapped in for a server on its way out"
    );
}

#[test]
fn a_stalled_runner_is_reported_and_replaced() {
    let s = smol_server(&[
        ("CORRAL_RUNNER_FAULT", "stall@token:5"),
        // Short, but not so short that a busy machine (the suite runs tests side by side on
        // two cores) looks stalled to the fresh runner below.
        ("CORRAL_STALL_TIMEOUT", "4s"),
    ]);
    let started = Instant::now();
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Count to twenty.", "stream": false, "options": {"num_predict": 50}}),
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("stopped making progress"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4 + 8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        wait_for(Duration::from_secs(2), || s.runner_pids().is_empty()),
        "stuck runner still there"
    );
    // A fresh runner serves (the injected stall is at its 5th token; this asks for 3).
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 3}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 3);
}

#[test]
fn eight_clients_on_four_slots_with_three_leaving() {
    let s = smol_server(&[("CORRAL_NUM_PARALLEL", "4")]);
    // A first answer warms up llama.cpp's own thread pool, so later counts compare like with like.
    let (status, _) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200);
    let pid = s.runner_pids()[0];
    let threads = || {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        st.lines()
            .find(|l| l.starts_with("Threads:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    let threads_before = threads();
    let results: Vec<Option<Value>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let body = json!({"model": "smol", "messages": [{"role": "user", "content": format!("Story number {i} about a cat.")}],
                                      "options": {"num_predict": 40, "temperature": 0}});
                    let resp = s.http.post(s.url("/api/chat")).json(&body).send().unwrap();
                    let mut lines = BufReader::new(resp).lines();
                    if i < 3 {
                        // Leave after a few chunks.
                        for _ in 0..3 {
                            lines.next();
                        }
                        return None;
                    }
                    let all: Vec<Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
                    Some(all.last().unwrap().clone())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for last in results.into_iter().flatten() {
        assert_eq!(last["done"], true, "{last}");
        assert_eq!(last["eval_count"], 40, "{last}");
    }
    // Nothing leaked: one runner, as many threads, and all four slots serve again at once.
    assert_eq!(s.runner_pids(), vec![pid]);
    assert_eq!(threads(), threads_before);
    // Each of four streams holds its slot until all four have a first token, so a slot that was
    // not given back shows as a stream that never starts (not as a timing).
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let release = std::sync::atomic::AtomicBool::new(false);
    let started = std::thread::scope(|scope| {
        for _ in 0..4 {
            let (s, started_tx, release) = (&s, started_tx.clone(), &release);
            scope.spawn(move || {
                let mut lines = start_stream(s, 2000);
                started_tx.send(()).unwrap();
                while !release.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Still answering after the others started, then leave.
                assert_eq!(lines.next().unwrap()["done"], false);
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        while n < 4 {
            let left = deadline.saturating_duration_since(Instant::now());
            if started_rx.recv_timeout(left).is_err() {
                break;
            }
            n += 1;
        }
        let metrics = (n == 4).then(|| s.get_text("/metrics"));
        // Releasing lets the started streams leave, so a stream still waiting ends too.
        release.store(true, std::sync::atomic::Ordering::SeqCst);
        (n, metrics)
    });
    assert_eq!(
        started.0, 4,
        "only {} of four streams started on four slots",
        started.0
    );
    let metrics = started.1.unwrap();
    assert!(
        metrics.contains("corral_requests_running{model=\"smol:latest\"} 4"),
        "{metrics}"
    );
}

#[test]
fn a_full_queue_refuses_exactly_one_request() {
    let s = smol_server(&[("CORRAL_NUM_PARALLEL", "1"), ("CORRAL_MAX_QUEUE", "2")]);
    let (status, _) = generate(&s, json!({"model": "smol", "prompt": ""}));
    assert_eq!(status, 200);
    let _busy = start_stream(&s, 200);
    let statuses: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let s = &s;
                scope.spawn(move || generate(s, json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}})))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<&(u16, Value)> = statuses.iter().filter(|(st, _)| *st == 503).collect();
    assert_eq!(refused.len(), 1, "{statuses:?}");
    assert_eq!(
        refused[0].1["error"],
        "server busy, please try again.  maximum pending requests exceeded"
    );
    assert_eq!(
        statuses.iter().filter(|(st, _)| *st == 200).count(),
        2,
        "{statuses:?}"
    );
}

#[test]
fn keep_alive_unloads_on_time_and_models_load_side_by_side() {
    let s = smol_server(&[]);
    s.create("gemma", &format!("FROM {}\n", model_file(GEMMA).display()));
    let names = |s: &TestServer| -> Vec<String> {
        s.get("/api/ps")["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    // keep_alive 0: gone as soon as the answer is.
    let (status, _) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "keep_alive": 0, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200);
    assert!(
        wait_for(Duration::from_secs(2), || names(&s).is_empty()),
        "{:?}",
        names(&s)
    );
    // keep_alive "1s": there for a while, gone after about a second.
    let (status, _) = generate(
        &s,
        json!({"model": "smol", "prompt": "", "keep_alive": "1s"}),
    );
    assert_eq!(status, 200);
    assert_eq!(names(&s), vec!["smol:latest"]);
    let loaded = Instant::now();
    assert!(wait_for(Duration::from_secs(5), || names(&s).is_empty()));
    assert!(
        loaded.elapsed() >= Duration::from_millis(800),
        "unloaded too early: {:?}",
        loaded.elapsed()
    );
    // Out of `ps` first, then the process ends (it is stopped and reaped after).
    assert!(
        wait_for(Duration::from_secs(5), || s.runner_pids().is_empty()),
        "runner left: {:?}",
        s.runner_pids()
    );
    // Two models at once.
    for m in ["smol", "gemma"] {
        let (status, body) = generate(&s, json!({"model": m, "prompt": ""}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["done_reason"], "load");
    }
    assert_eq!(names(&s), vec!["gemma:latest", "smol:latest"]);
    assert_eq!(s.runner_pids().len(), 2);
    // An empty prompt with keep_alive 0 unloads.
    let (_, body) = generate(&s, json!({"model": "gemma", "prompt": "", "keep_alive": 0}));
    assert_eq!(body["done_reason"], "unload");
    // And so does `corral stop`.
    let out = s.corral(&["stop", "smol"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(names(&s).is_empty());
    // A model that is not loaded is already stopped (as Ollama); one the store lacks is an
    // error.
    let out = s.corral(&["stop", "smol"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.corral(&["stop", "nope"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "Error: couldn't find model \"nope\" to stop"
    );
}

#[test]
fn the_least_recently_used_idle_model_makes_room() {
    let s = smol_server(&[("CORRAL_MAX_LOADED_MODELS", "1")]);
    s.create("gemma", &format!("FROM {}\n", model_file(GEMMA).display()));
    for m in ["smol", "gemma"] {
        let (status, _) = generate(&s, json!({"model": m, "prompt": ""}));
        assert_eq!(status, 200);
    }
    let ps = s.get("/api/ps");
    let names: Vec<&str> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["gemma:latest"]);
    assert_eq!(s.runner_pids().len(), 1);
}

/// With one model loaded at most, a request for another model is served while two clients
/// keep the first busy back to back: once a request waits for the busy model, new requests
/// for it queue behind (as Ollama's scheduler takes requests in order) instead of keeping it
/// busy for ever.
#[test]
fn a_model_kept_busy_does_not_starve_a_request_for_another() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let s = smol_server(&[("CORRAL_MAX_LOADED_MODELS", "1")]);
    // The same weights with another context: a model of its own for the scheduler.
    s.create(
        "smol-wide",
        &format!(
            "FROM {}\nPARAMETER num_ctx 8192\n",
            model_file(SMOL).display()
        ),
    );
    let short = |m: &str| json!({"model": m, "prompt": "Hi", "stream": false, "options": {"num_predict": 4}});
    assert_eq!(generate(&s, short("smol")).0, 200);
    let started = Instant::now();
    // Without the fix the loops run out their three minutes before the other model loads.
    let limit = Duration::from_secs(180);
    let done = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(Ordering::SeqCst) && started.elapsed() < limit {
                    assert_eq!(generate(&s, short("smol")).0, 200);
                    served.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Both clients are at it before the other model is asked for.
        while served.load(Ordering::SeqCst) < 4 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, body) = generate(&s, short("smol-wide"));
        done.store(true, Ordering::SeqCst);
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() < limit - Duration::from_secs(10),
            "smol-wide waited until the clients of smol stopped: {:?}",
            started.elapsed()
        );
    });
}

/// A request that stops waiting for a busy model (its client left) takes its mark off that
/// model: new requests for it join it at once, though another request waits (for a reload of
/// another model), instead of queueing behind that other request.
#[test]
fn a_request_that_leaves_while_waiting_holds_nothing_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let s = smol_server(&[
        ("CORRAL_MAX_LOADED_MODELS", "2"),
        ("CORRAL_NUM_PARALLEL", "2"),
    ]);
    let from = |ctx: u32| {
        format!(
            "FROM {}\nPARAMETER num_ctx {ctx}\n",
            model_file(SMOL).display()
        )
    };
    s.create("smol-b", &from(4096));
    s.create("smol-c", &from(3072));
    // Counting on from a raw prompt never ends before the token limit.
    let count = |m: &str, n: u32| {
        json!({"model": m, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "raw": true,
               "options": {"num_predict": n, "temperature": 0}})
    };
    // Both places taken by busy models: smol first (the one a newcomer waits for), then smol-b.
    let _a = open_stream(&s, "/api/generate", count("smol", 3000));
    let b = open_stream(&s, "/api/generate", count("smol-b", 3000));
    let b_done = Arc::new(AtomicBool::new(false));
    let b_seen = b_done.clone();
    std::thread::spawn(move || {
        b.for_each(drop);
        b_seen.store(true, Ordering::SeqCst);
    });
    // A request for a third model waits for smol, then its client gives up.
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let left = impatient
        .post(s.url("/api/generate"))
        .json(&count("smol-c", 2))
        .send();
    assert!(left.is_err_and(|e| e.is_timeout()));
    // A reload of smol-b with other settings waits for smol-b's stream to end.
    let url = s.url("/api/generate");
    std::thread::spawn(move || {
        let body = json!({"model": "smol-b", "prompt": "Hi", "options": {"num_ctx": 2048, "num_predict": 2}});
        let patient = reqwest::blocking::Client::builder().timeout(None).build();
        let _ = patient.unwrap().post(url).json(&body).send();
    });
    std::thread::sleep(Duration::from_secs(1));
    // smol is no one's to drain now: a request for it is answered while smol-b still streams.
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        !b_done.load(Ordering::SeqCst),
        "the request for smol waited until smol-b's stream had ended"
    );
}

/// A load runs without holding up the rest of the server: while one hangs, `/api/ps`,
/// `/metrics` and a request for the same model (which waits for that load) do not stop the
/// others, and the load timeout still ends it.
#[test]
fn a_hanging_load_holds_up_nothing_else() {
    let s = smol_server(&[
        ("CORRAL_RUNNER_FAULT", "stall@load"),
        ("CORRAL_LOAD_TIMEOUT", "8s"),
    ]);
    std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            generate(
                &s,
                json!({"model": "smol", "prompt": "Hi", "stream": false}),
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        assert_eq!(s.get("/api/ps")["models"], json!([]));
        assert!(s.get_text("/metrics").contains("corral_"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "ps and metrics waited for the load: {:?}",
            started.elapsed()
        );
        let (status, body) = load.join().unwrap();
        load_timed_out(&s, status, &body);
    });
}

#[test]
fn a_model_that_can_never_fit_is_refused() {
    // Gemma 3 was trained with 32768 tokens (more is clamped to that): 64 slots of it need
    // far more memory than this machine has.
    let s = smol_server(&[]);
    s.create("gemma", &format!("FROM {}\n", model_file(GEMMA).display()));
    let (status, body) = generate(
        &s,
        json!({"model": "gemma", "prompt": "Hi", "options": {"num_ctx": 1048576, "num_parallel": 64}}),
    );
    assert_eq!(status, 500, "{body}");
    let err = body["error"].as_str().unwrap();
    assert!(
        err.starts_with("model requires") && err.contains("GiB of system memory"),
        "{err}"
    );
    assert!(s.runner_pids().is_empty());
}

#[test]
fn failed_loads_are_clear_errors_and_leave_no_process() {
    // A corrupt blob: the file no longer holds the model it was created from.
    let s = smol_server(&[]);
    let blob = s
        .models_dir()
        .join("blobs/sha256-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    std::fs::write(&blob, b"GGUF garbage").unwrap();
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false}),
    );
    assert_eq!(status, 500, "{body}");
    let err = body["error"].as_str().unwrap();
    assert!(
        err.starts_with("runner process has terminated: exit status 1; last output:"),
        "{err}"
    );
    assert!(err.contains("failed to load model"), "{err}");
    assert!(s.runner_pids().is_empty());
    assert_eq!(
        s.get("/api/version")["corral_version"],
        env!("CARGO_PKG_VERSION")
    );

    // A load that hangs is cut off by the load timeout.
    let s = smol_server(&[
        ("CORRAL_RUNNER_FAULT", "stall@load"),
        ("CORRAL_LOAD_TIMEOUT", "2s"),
    ]);
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false}),
    );
    load_timed_out(&s, status, &body);

    // A crash mid-answer (SIGABRT) names the signal.
    let s = smol_server(&[("CORRAL_RUNNER_FAULT", "crash@token:3")]);
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 10}}),
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("signal 6 (SIGABRT)"),
        "{body}"
    );
}

#[test]
fn runners_outlive_the_server_threads_that_started_them() {
    // Linux sends the parent-death signal when the forking *thread* ends; tokio retires idle
    // threads after 10 s. A runner must stay up as long as the server does.
    let s = smol_server(&[]);
    let (status, _) = generate(&s, json!({"model": "smol", "prompt": "", "keep_alive": -1}));
    assert_eq!(status, 200);
    let pids = s.runner_pids();
    std::thread::sleep(Duration::from_secs(13));
    assert_eq!(
        s.runner_pids(),
        pids,
        "the runner died with a server thread"
    );
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn an_idle_runner_that_stops_answering_fails_its_health_check() {
    let s = smol_server(&[("CORRAL_RUNNER_FAULT", "stall@idle")]);
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.runner_pids().len(), 1);
    assert!(
        wait_for(Duration::from_secs(25), || s.runner_pids().is_empty()),
        "hung runner was not stopped"
    );
    assert!(wait_for(Duration::from_secs(2), || s.get("/api/ps")
        ["models"]
        == json!([])));
    assert!(s.log().contains("failed its health check"));
    let (status, body) = generate(
        &s,
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
}
